//! The fault mode: kill a node's process mid-run (SIGKILL, like a crash) and start it again
//! later, so the report and plot show what clients see during a failure.
//!
//! A node is found by its command line in `/proc`: the process whose arguments are
//! `node --config <path>` with `<path>` naming the node's config file (relative paths are
//! resolved against the process's working directory). It is restarted the way `shoal dev
//! up` starts it, `shoal node --config <path>`, with its output appended to `node.log` next
//! to the config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Longest wait for a killed process to disappear before the run goes on regardless.
const DEATH_WAIT: Duration = Duration::from_secs(5);
/// How often to look whether the killed process is gone.
const DEATH_POLL: Duration = Duration::from_millis(20);

/// Why a node could not be found, killed or restarted.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// No running process has `node --config <path>` on its command line.
    #[error("no running `shoal node --config {}` process found (is the cluster up?)", .0.display())]
    NotFound(PathBuf),
    /// Several processes run the same node config.
    #[error("{} processes run `shoal node --config {}`: {pids:?}; pass --kill-pid", pids.len(), config.display())]
    Ambiguous {
        /// The config file.
        config: PathBuf,
        /// The processes.
        pids: Vec<u32>,
    },
    /// The node's config file does not exist.
    #[error("node config {}: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// Why it could not be resolved.
        #[source]
        source: std::io::Error,
    },
    /// A process given by pid could not be inspected.
    #[error("process {pid}: {source}")]
    Process {
        /// The process.
        pid: u32,
        /// The error reading `/proc/<pid>`.
        #[source]
        source: std::io::Error,
    },
    /// The process's command line names no node config, so it cannot be restarted.
    #[error("process {0} is not running `shoal node --config <file>`: cannot restart it; pass --kill-node")]
    NoConfig(u32),
    /// The kill signal could not be sent.
    #[error("cannot kill process {pid}: {source}")]
    Kill {
        /// The process.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The `shoal` binary to restart the node with does not exist.
    #[error("no shoal binary at {}: pass --shoal-bin", .0.display())]
    NoBinary(PathBuf),
    /// The node could not be started again.
    #[error("cannot start {} node --config {}: {source}", bin.display(), config.display())]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The node config.
        config: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The node config a `shoal node` command line runs, as written on it: the value of
/// `--config` (or `--config=`) when the arguments include the `node` subcommand.
pub fn node_config_arg(argv: &[String]) -> Option<&str> {
    let mut config = None;
    let mut is_node = false;
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            config = args.next().map(String::as_str);
        } else if let Some(value) = arg.strip_prefix("--config=") {
            config = Some(value);
        } else if arg == "node" {
            is_node = true;
        }
    }
    config.filter(|_| is_node)
}

/// The state letter of a `/proc/<pid>/stat` line (`R`, `S`, `Z`, ...). The command name in
/// parentheses may itself contain spaces and parentheses, so the state follows the last `)`.
pub fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// What `/proc` says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process id.
    pub pid: u32,
    /// Its arguments.
    pub argv: Vec<String>,
    /// Its working directory.
    pub cwd: PathBuf,
    /// Its executable.
    pub exe: Option<PathBuf>,
}

impl ProcessInfo {
    /// Reads `/proc/<pid>`.
    pub fn read(pid: u32) -> Result<ProcessInfo, FaultError> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let err = |source| FaultError::Process { pid, source };
        let raw = std::fs::read(dir.join("cmdline")).map_err(err)?;
        let argv = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let cwd = std::fs::read_link(dir.join("cwd")).map_err(err)?;
        let exe = std::fs::read_link(dir.join("exe")).ok();
        Ok(ProcessInfo {
            pid,
            argv,
            cwd,
            exe,
        })
    }

    /// The node config it runs, as an absolute path, if it is a `shoal node` process.
    pub fn node_config(&self) -> Option<PathBuf> {
        let arg = Path::new(node_config_arg(&self.argv)?);
        let path = if arg.is_absolute() {
            arg.to_path_buf()
        } else {
            self.cwd.join(arg)
        };
        Some(path.canonicalize().unwrap_or(path))
    }
}

/// The process running `shoal node --config <config>`.
pub fn find_node_process(config: &Path) -> Result<ProcessInfo, FaultError> {
    let target = config.canonicalize().map_err(|source| FaultError::Config {
        path: config.to_path_buf(),
        source,
    })?;
    let me = std::process::id();
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir("/proc").map_err(|source| FaultError::Process { pid: 0, source })?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes come and go, and some are not ours to read: skip those.
        let Ok(info) = ProcessInfo::read(pid) else {
            continue;
        };
        if info.node_config().as_deref() == Some(target.as_path()) && is_alive(pid) {
            found.push(info);
        }
    }
    match found.len() {
        0 => Err(FaultError::NotFound(config.to_path_buf())),
        1 => Ok(found.remove(0)),
        _ => Err(FaultError::Ambiguous {
            config: config.to_path_buf(),
            pids: found.iter().map(|p| p.pid).collect(),
        }),
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_state(&stat), Some('Z' | 'X') | None),
        Err(_) => false,
    }
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: u32) -> Result<(), FaultError> {
    let raw = i32::try_from(pid).map_err(|_| FaultError::Kill {
        pid,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: kill(2) takes plain integers and has no memory effects in this process.
    let rc = unsafe { libc::kill(raw, libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(FaultError::Kill {
            pid,
            source: std::io::Error::last_os_error(),
        })
    }
}

/// Waits (at most [`DEATH_WAIT`]) for `pid` to be gone; returns whether it is.
pub async fn wait_for_death(pid: u32) -> bool {
    let deadline = tokio::time::Instant::now() + DEATH_WAIT;
    while is_alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DEATH_POLL).await;
    }
    true
}

/// `shoal` next to the running executable (where cargo and installs put both binaries).
pub fn default_shoal_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join("shoal"))
}

/// Starts `bin node --config <config>` in its own process group (so a Ctrl-C aimed at the
/// benchmark does not stop it), output appended to `node.log` beside the config.
pub fn spawn_node(bin: &Path, config: &Path) -> Result<Child, FaultError> {
    use std::os::unix::process::CommandExt;
    let spawn_err = |source| FaultError::Spawn {
        bin: bin.to_path_buf(),
        config: config.to_path_buf(),
        source,
    };
    if !bin.is_file() {
        return Err(FaultError::NoBinary(bin.to_path_buf()));
    }
    let log_path = config.parent().unwrap_or(Path::new(".")).join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(spawn_err)?;
    let stderr = log.try_clone().map_err(spawn_err)?;
    Command::new(bin)
        .arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(spawn_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn node_config_is_read_from_any_flag_position() {
        assert_eq!(
            node_config_arg(&argv(&["/bin/shoal", "node", "--config", "d/n2/node.toml"])),
            Some("d/n2/node.toml")
        );
        assert_eq!(
            node_config_arg(&argv(&["shoal", "--config", "x.toml", "node"])),
            Some("x.toml")
        );
        assert_eq!(
            node_config_arg(&argv(&["shoal", "node", "--config=y.toml"])),
            Some("y.toml")
        );
    }

    #[test]
    fn client_commands_and_other_programs_are_not_nodes() {
        assert_eq!(
            node_config_arg(&argv(&["shoal", "--config", "c.toml", "get", "k"])),
            None
        );
        assert_eq!(node_config_arg(&argv(&["shoal", "node"])), None);
        assert_eq!(
            node_config_arg(&argv(&["node", "--config", "x"])),
            None,
            "argv[0] is the program"
        );
        assert_eq!(node_config_arg(&[]), None);
    }

    #[test]
    fn stat_state_skips_command_names_with_parentheses() {
        assert_eq!(stat_state("42 (shoal) S 1 2 3"), Some('S'));
        assert_eq!(stat_state("42 (a) b) Z 1"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn relative_config_paths_resolve_against_the_process_cwd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("n1")).unwrap();
        std::fs::write(dir.path().join("n1/node.toml"), "").unwrap();
        let info = ProcessInfo {
            pid: 1,
            argv: argv(&["shoal", "node", "--config", "./n1/node.toml"]),
            cwd: dir.path().to_path_buf(),
            exe: None,
        };
        assert_eq!(
            info.node_config(),
            Some(dir.path().join("n1/node.toml").canonicalize().unwrap())
        );
    }

    /// A stand-in node: `sh -c 'read line' node --config <path>` waits on its stdin and
    /// shows that command line in /proc.
    #[test]
    fn a_node_process_is_found_by_its_config_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("n9").join("node.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, "").unwrap();
        let mut child = Command::new("sh")
            .args(["-c", "read line", "node", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Between fork and exec the child still shows the test's own command line: wait
        // (with a deadline) until it shows its own.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let info = loop {
            match find_node_process(&config) {
                Ok(info) => break info,
                Err(FaultError::NotFound(_)) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(e) => panic!("the stand-in node was not found: {e}"),
            }
        };
        assert_eq!(info.pid, pid);
        assert!(is_alive(pid));
        kill(pid).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed by the signal");
        assert!(!is_alive(pid));
        assert!(matches!(
            find_node_process(&config),
            Err(FaultError::NotFound(_))
        ));
    }

    #[test]
    fn a_missing_config_or_binary_is_reported() {
        assert!(matches!(
            find_node_process(Path::new("/nonexistent/n1/node.toml")),
            Err(FaultError::Config { .. })
        ));
        assert!(matches!(
            spawn_node(Path::new("/nonexistent/shoal"), Path::new("x.toml")),
            Err(FaultError::NoBinary(_))
        ));
    }
}
