//! The node process's own resource use, read from `/proc/self` (Linux): CPU time,
//! resident memory, open file descriptors and their limit. Published as the
//! `shoal_process_*` gauges every [`PROCESS_STATS_INTERVAL`] by a background task, so that
//! a dashboard shows what the node costs and an alert can see descriptors run out before
//! QUIC or RocksDB fail to open one. The data directory's free space is the storage
//! engine's `shoal_storage_free_bytes` (checked every second with the disk), not repeated
//! here.
//!
//! The same task publishes what the node's UDP socket reports: its receive buffer and the
//! datagrams the kernel dropped on it (`shoal_udp_receive_*`), the first thing to look
//! at when requests between nodes stall on a loaded machine.
//!
//! Read directly rather than through a crate: four numbers from two files and one
//! directory listing, with no dependency to keep up to date.

use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

use shoal_transport::Endpoint;

use crate::metrics::{
    PROCESS_CPU_SECONDS_TOTAL, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY_BYTES,
    UDP_RECEIVE_BUFFER_BYTES, UDP_RECEIVE_DROPS_TOTAL,
};

/// How often the process statistics are read and published: about what a scrape
/// interval is, and one `/proc/self/fd` listing per interval costs microseconds.
pub(super) const PROCESS_STATS_INTERVAL: Duration = Duration::from_secs(5);

/// One reading of the process's resource use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProcessStats {
    /// User plus system CPU time since the process started, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_bytes: u64,
    /// Open file descriptors (sockets, RocksDB files, ...).
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`: opening more descriptors than this fails.
    pub max_fds: u64,
}

/// Why the process statistics could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessStatsError {
    /// A `/proc` file or directory could not be read (not Linux, or no `/proc` mounted).
    #[error("reading {path}: {source}")]
    Read {
        /// What was read.
        path: &'static str,
        /// The IO error.
        source: std::io::Error,
    },
    /// `/proc/self/stat` did not have the documented layout.
    #[error("/proc/self/stat: {0}")]
    Malformed(String),
}

/// The CPU ticks (user plus system) and resident pages in the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`: field 3 (the state) is the
/// first after it; `utime` and `stime` are fields 14 and 15, `rss` field 24 (proc(5)).
pub(crate) fn parse_stat(text: &str) -> Result<(u64, u64), ProcessStatsError> {
    let (_, rest) = text
        .rsplit_once(')')
        .ok_or_else(|| ProcessStatsError::Malformed("no `)` after the command name".into()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, ProcessStatsError> {
        let raw = fields
            .get(n - 3)
            .ok_or_else(|| ProcessStatsError::Malformed(format!("no field {n}")))?;
        raw.parse()
            .map_err(|_| ProcessStatsError::Malformed(format!("field {n} is {raw:?}")))
    };
    Ok((field(14)? + field(15)?, field(24)?))
}

fn sysconf(name: libc::c_int, fallback: u64) -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(fallback)
}

/// Read this process's statistics now.
pub(crate) fn read() -> Result<ProcessStats, ProcessStatsError> {
    let stat =
        std::fs::read_to_string("/proc/self/stat").map_err(|source| ProcessStatsError::Read {
            path: "/proc/self/stat",
            source,
        })?;
    let (ticks, pages) = parse_stat(&stat)?;
    let ticks_per_second = sysconf(libc::_SC_CLK_TCK, 100);
    let page_bytes = sysconf(libc::_SC_PAGESIZE, 4096);
    // The listing's own descriptor is among the entries: one more than the node holds,
    // as in every other exporter that counts this way.
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map_err(|source| ProcessStatsError::Read {
            path: "/proc/self/fd",
            source,
        })?
        .count() as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    };
    Ok(ProcessStats {
        cpu_seconds: ticks as f64 / ticks_per_second as f64,
        resident_bytes: pages.saturating_mul(page_bytes),
        open_fds,
        max_fds,
    })
}

/// Publish `stats` as the `shoal_process_*` gauges.
fn publish(stats: &ProcessStats) {
    metrics::gauge!(PROCESS_CPU_SECONDS_TOTAL).set(stats.cpu_seconds);
    metrics::gauge!(PROCESS_RESIDENT_MEMORY_BYTES).set(stats.resident_bytes as f64);
    metrics::gauge!(PROCESS_OPEN_FDS).set(stats.open_fds as f64);
    metrics::gauge!(PROCESS_MAX_FDS).set(stats.max_fds as f64);
}

/// Read and publish the process statistics and the endpoint's socket figures every
/// [`PROCESS_STATS_INTERVAL`] until shutdown. Where `/proc` cannot be read (not Linux)
/// the task says so once and ends: the gauges are then absent, which the dashboards show
/// as no data.
pub(super) async fn report_process_stats(mut shutdown: watch::Receiver<bool>, endpoint: Endpoint) {
    metrics::gauge!(UDP_RECEIVE_BUFFER_BYTES).set(endpoint.udp_receive_buffer_bytes() as f64);
    let mut tick = tokio::time::interval(PROCESS_STATS_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let socket = endpoint.clone();
        let read = move || (read(), socket.udp_receive_drops());
        match tokio::task::spawn_blocking(read).await {
            Ok((Ok(stats), drops)) => {
                publish(&stats);
                if let Some(drops) = drops {
                    metrics::counter!(UDP_RECEIVE_DROPS_TOTAL).absolute(drops);
                }
            }
            Ok((Err(e), _)) => {
                debug!("process statistics unavailable, not exported: {e}");
                return;
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields are counted from the last `)`, so a command name with spaces and
    /// parentheses does not shift them.
    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    150 50 0 0 20 0 9 0 123456 987654321 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(text).unwrap(), (200, 2500));
        assert!(matches!(
            parse_stat("4242 shoal S 1"),
            Err(ProcessStatsError::Malformed(_))
        ));
        assert!(matches!(
            parse_stat("4242 (shoal) S 1 2 3"),
            Err(ProcessStatsError::Malformed(_))
        ));
    }

    /// This process's own reading is plausible: it holds memory and descriptors (stdin,
    /// stdout, stderr at least), within its limit, and its CPU time only grows.
    #[test]
    fn this_process_reads_plausible_statistics() {
        let first = read().expect("/proc/self on Linux");
        assert!(first.resident_bytes > 1 << 20, "{first:?}");
        assert!(
            first.open_fds >= 3 && first.open_fds <= first.max_fds,
            "{first:?}"
        );
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        let second = read().expect("/proc/self on Linux");
        assert!(
            second.cpu_seconds >= first.cpu_seconds,
            "{first:?} {second:?}"
        );
        let files: Vec<std::fs::File> = (0..10)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let third = read().expect("/proc/self on Linux");
        assert!(third.open_fds >= 3 + 10, "{third:?}");
        drop(files);
    }
}
