//! Ports, child processes and their logs: what every server a test starts (a node,
//! `shoal dev`, Prometheus) needs.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng as _;

/// Ports are drawn below Linux's ephemeral range (32768..), so that no socket bound to
/// port 0 by anything else on the machine can take a server's port between our check and
/// the server's bind, nor while a killed node is down.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
/// Attempts to find a free block of ports.
const PORT_ATTEMPTS: usize = 500;
/// Attempts to start a server when it finds its port taken.
const START_ATTEMPTS: usize = 3;

/// Ports handed out by this process, never handed out twice (tests run in parallel
/// threads under `cargo test`).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Finds `count` consecutive ports, each free on 127.0.0.1 for both UDP (QUIC) and TCP
/// (the metrics exporter, Prometheus), so one block serves as `--base-port` and
/// `--metrics-base-port`. The sockets are released before returning.
pub fn free_port_block(count: u16) -> u16 {
    let mut rng = rand::rng();
    for _ in 0..PORT_ATTEMPTS {
        let base = rng.random_range(PORT_RANGE.start..PORT_RANGE.end - count);
        let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        let handed = handed.get_or_insert_with(HashSet::new);
        if (base..base + count).any(|p| handed.contains(&p)) {
            continue;
        }
        let free = (base..base + count).all(|p| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
                && TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        });
        if free {
            handed.extend(base..base + count);
            return base;
        }
    }
    panic!("no block of {count} free ports in {PORT_RANGE:?} after {PORT_ATTEMPTS} attempts");
}

/// Whether a server's failure (its log tail) says that its port was taken after
/// [`free_port_block`] found it free: Rust's "Address already in use" (a node) and Go's
/// "address already in use" (Prometheus).
fn port_taken(failure: &str) -> bool {
    failure
        .to_ascii_lowercase()
        .contains("address already in use")
}

/// Runs `start` until it succeeds, again (on other ports: `start` draws them) when it
/// fails because a port was taken, at most [`START_ATTEMPTS`] times; panics naming
/// `what` on any other failure or after the last attempt.
pub async fn retry_on_port_conflict<T, F, Fut>(what: &str, mut start: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    for attempt in 1..=START_ATTEMPTS {
        match start().await {
            Ok(started) => return started,
            Err(why) if port_taken(&why) && attempt < START_ATTEMPTS => {
                eprintln!("attempt {attempt}: a port of {what} was taken; retrying on other ports");
            }
            Err(why) => panic!("{what} did not start: {why}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Spawns `cmd` with stdin from /dev/null and stdout and stderr appended to `log` (after
/// a line naming `note`), as a child the kernel kills when the thread that started it
/// dies (the test thread, killed with the test binary), so that no server outlives an
/// aborted test run; normal ends are the owner's `Drop`.
pub fn spawn_logged(mut cmd: Command, log: &Path, note: &str) -> Child {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    writeln!(file, "===== test harness: {note} =====").expect("writing the log");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("cloning the log handle"))
        .stderr(file);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting {:?} ({note}): {e}", cmd.get_program()))
}

/// Waits (bounded, polling) for `child` to exit and reaps it; panics naming `what` past
/// `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => panic!("{what} did not exit within {timeout:?}"),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// The last `lines` lines of the file `log` (empty when it cannot be read).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `pid` is a live (not zombie) process.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z") | Some("X") | None
        ),
        Err(_) => false,
    }
}

/// The resident set size of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`), `None`
/// when the process is gone.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
