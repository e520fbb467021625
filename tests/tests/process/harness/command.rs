//! One bounded run of the `shoal` CLI, as an operator runs it.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use super::{Cluster, BIN};

/// The outcome of one CLI run.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// The exit code (`None`: killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics with the output unless the command exited 0.
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    /// Stdout parsed as JSON; panics with the output if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `shoal ARGS` with `stdin` (none: /dev/null); the process is killed, and the run
/// is an `Err`, past `timeout`. Stdout and stderr are read while it runs, so a chatty
/// command can never block on a full pipe.
pub async fn shoal(args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Result<Run, String> {
    let what = format!("`shoal {}`", args.join(" "));
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("starting {what}: {e}"))?;
    let run = async {
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(bytes)
                .await
                .map_err(|e| format!("writing the stdin of {what}: {e}"))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| format!("running {what}: {e}"))
    };
    let out = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("{what} took over {timeout:?}"))??;
    let text = |bytes: Vec<u8>, stream: &str| {
        String::from_utf8(bytes).map_err(|e| format!("the {stream} of {what} is not UTF-8: {e}"))
    };
    Ok(Run {
        status: out.status,
        stdout: text(out.stdout, "stdout")?,
        stderr: text(out.stderr, "stderr")?,
    })
}

impl Cluster {
    /// Runs `shoal --config DIR/client.toml ARGS` against the cluster (see [`shoal`]).
    pub async fn cli(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Run, String> {
        let config = self.dir().join("client.toml");
        let config = config.to_str().expect("a UTF-8 temporary directory");
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        shoal(&all, stdin, timeout).await
    }
}
