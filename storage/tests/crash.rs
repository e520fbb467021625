//! A process killed with SIGKILL loses no acknowledged write.
//!
//! The test re-executes its own binary as a child (selected by the test's own name and an
//! environment variable). The child opens a store and writes keys 0, 1, 2, ... printing
//! `acked N` after each write returns; the parent waits for enough acks, SIGKILLs the child
//! mid-stream, reopens the store and checks every acknowledged key. In the group-commit
//! mode the child acknowledges its writes in groups, each after the `sync_wal` that covers
//! it, as the node's committer does.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use shoal_storage::{Durability, PartitionId, RocksOptions, RocksStorage, Storage};

/// Set in the child's environment to the store directory.
const CHILD_ENV: &str = "SHOAL_CRASH_CHILD";
/// Acks the parent waits for before killing the child.
const ACKS_BEFORE_KILL: u64 = 2_000;
/// The child stops itself after this many writes or this long, if never killed.
const CHILD_MAX_WRITES: u64 = 1_000_000;
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(60);
/// How long the parent waits for the acks, then for the child's output to end.
const PARENT_DEADLINE: Duration = Duration::from_secs(45);
/// Lines in flight between the reader thread and the test.
const ACK_CHANNEL_BOUND: usize = 4096;

/// Writes the group-commit child makes between two syncs.
const GROUP: u64 = 7;

/// How the child writes and when it acknowledges.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Each `Storage::write` with this durability acknowledges its write.
    Write(Durability),
    /// Group commit as a node with `durability = "sync"` runs it: the store writes
    /// without syncing and leaves `try_write`'s WAL records in the process
    /// (`buffer_try_writes`); a `sync_wal` (which writes them out, then syncs) acknowledges
    /// every write since the last one.
    GroupCommit,
}

fn options(mode: Mode) -> RocksOptions {
    let (durability, buffer_try_writes) = match mode {
        Mode::Write(durability) => (durability, false),
        Mode::GroupCommit => (Durability::Buffered, true),
    };
    RocksOptions {
        durability,
        buffer_try_writes,
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 4 << 20,
        ..RocksOptions::default()
    }
}

fn partition_of(i: u64) -> PartitionId {
    PartitionId((i % 64) as u32)
}

fn value_of(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

/// The child: write until killed (or the bounds run out), acking each write on stdout
/// once it is as durable as `mode` makes it.
fn run_child(dir: &Path, mode: Mode) -> ! {
    let storage = RocksStorage::open(dir, options(mode)).expect("child opens the store");
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    // Start on a fresh line: the test harness may have printed a partial one.
    writeln!(out).expect("stdout");
    let mut unacked = Vec::new();
    for i in 0..CHILD_MAX_WRITES {
        let (p, key, value) = (partition_of(i), i.to_be_bytes(), value_of(i));
        match mode {
            Mode::Write(_) => storage.put_object(p, &key, &value).expect("child write"),
            Mode::GroupCommit => {
                if !storage
                    .try_put_object(p, &key, &value)
                    .expect("child try_write")
                {
                    storage.put_object(p, &key, &value).expect("child write");
                }
            }
        }
        unacked.push(i);
        if matches!(mode, Mode::GroupCommit) {
            if (i + 1) % GROUP != 0 {
                continue;
            }
            storage.sync_wal().expect("child sync");
        }
        for acked in unacked.drain(..) {
            writeln!(out, "acked {acked}").expect("stdout");
        }
        out.flush().expect("stdout");
        if started.elapsed() > CHILD_MAX_RUNTIME {
            break;
        }
    }
    std::process::exit(0);
}

/// Kills the child if the test fails before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Acks arrive in order, one per write: `n` must be the next one.
fn record(next: &mut u64, n: u64) {
    assert_eq!(n, *next, "acks out of order");
    *next += 1;
}

fn parse_ack(line: &str) -> Option<u64> {
    let (_, number) = line.rsplit_once("acked ")?;
    number.trim().parse().ok()
}

fn crash_test(test_name: &str, mode: Mode) {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        run_child(Path::new(&dir), mode);
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().unwrap();
    let (acks, acks_rx) = mpsc::sync_channel::<u64>(ACK_CHANNEL_BOUND);
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = parse_ack(&line) {
                if acks.send(n).is_err() {
                    break;
                }
            }
        }
    });

    let deadline = Instant::now() + PARENT_DEADLINE;
    let mut next = 0u64;
    while next < ACKS_BEFORE_KILL {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match acks_rx.recv_timeout(remaining) {
            Ok(n) => record(&mut next, n),
            Err(error) => panic!("child gave {next} acks, then {error:?}"),
        }
    }
    let pid = libc::pid_t::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) with a pid of our own child that has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // Every ack printed before the kill counts: drain the pipe to its end.
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match acks_rx.recv_timeout(remaining) {
            Ok(n) => record(&mut next, n),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("child output did not end"),
        }
    }
    reader.join().unwrap();
    let status = child.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "child was not killed mid-stream: {status:?}"
    );
    let acked = next;
    assert!(acked >= ACKS_BEFORE_KILL);

    let storage = RocksStorage::open(dir.path(), options(mode)).unwrap();
    for i in 0..acked {
        let found = storage
            .get_object(partition_of(i), &i.to_be_bytes())
            .unwrap();
        assert!(
            found.as_deref() == Some(value_of(i).as_slice()),
            "acknowledged write {i} of {acked} lost after SIGKILL ({mode:?})"
        );
    }
    // Writes in flight at the kill may or may not have landed, but never half-written.
    for i in acked..acked + 100 {
        if let Some(found) = storage
            .get_object(partition_of(i), &i.to_be_bytes())
            .unwrap()
        {
            assert_eq!(found, value_of(i), "write {i} came back altered");
        }
    }
}

#[test]
fn acknowledged_buffered_writes_survive_sigkill() {
    crash_test(
        "acknowledged_buffered_writes_survive_sigkill",
        Mode::Write(Durability::Buffered),
    );
}

#[test]
fn acknowledged_sync_writes_survive_sigkill() {
    crash_test(
        "acknowledged_sync_writes_survive_sigkill",
        Mode::Write(Durability::Sync),
    );
}

#[test]
fn group_committed_writes_left_in_the_process_survive_sigkill() {
    crash_test(
        "group_committed_writes_left_in_the_process_survive_sigkill",
        Mode::GroupCommit,
    );
}
