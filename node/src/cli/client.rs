//! The client subcommands of the `shoal` binary — `put`, `get`, `delete`, `status` and
//! `locate` — built on the `shoal-client` SDK.
//!
//! Output is made for both people and scripts, and every command takes `--json` for one
//! JSON object: `put` and `delete` print the new context alone on one line, `get` prints
//! the values then a `context:` line, `status` prints a table, `locate` the partition then
//! one line per replica. Errors go to stderr as
//! `error: <message>`; the exit code is 0 on success, 1 when the request failed and 2 for
//! a usage or configuration problem.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Serialize;
use shoal_client::{
    Client, ClientConfig, ClientError, Context, GetResult, NodeId, ReadOptions, WriteOptions,
};

/// The environment variable naming the client config file when `--config` is not given.
pub const CONFIG_ENV: &str = "SHOAL_CONFIG";
/// The client config file used when neither `--config` nor [`CONFIG_ENV`] is given (what
/// the development cluster setup writes).
pub const DEFAULT_CONFIG_PATH: &str = "shoal-dev/client.toml";
/// Most bytes a value read from stdin may have: the largest object a node may be
/// configured to store, beyond which no node could accept it anyway.
pub const MAX_STDIN_VALUE_BYTES: usize = shoal_client::MAX_OBJECT_BYTES;

/// Exit code of a successful command.
const EXIT_OK: i32 = 0;
/// Exit code of a request that failed (the cluster said no, or could not be reached).
const EXIT_REQUEST_FAILED: i32 = 1;
/// Exit code of a usage or configuration error (nothing was sent).
const EXIT_USAGE: i32 = 2;

/// Client subcommands of `shoal`.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Write a value; prints the new context.
    Put {
        /// The key (its UTF-8 bytes).
        key: String,
        /// the value, or `-` to read it from stdin
        value: String,
        /// The context of an earlier read or write of the key: the write replaces the
        /// values it covers. Without it the value is added as a sibling.
        #[arg(long)]
        context: Option<String>,
        /// Acknowledgements to wait for (default: the cluster's W).
        #[arg(short = 'w', long)]
        w: Option<u8>,
        /// How many of the acknowledgements must come from primary replicas.
        #[arg(long)]
        pw: Option<u8>,
        /// How long the cluster may take before answering a timeout (e.g. `500ms`, `5s`).
        #[arg(long, value_parser = parse_request_timeout)]
        timeout: Option<Duration>,
        /// Print one JSON object: `{"context": "..."}`.
        #[arg(long)]
        json: bool,
    },
    /// Read a key: its values and context.
    Get {
        /// The key (its UTF-8 bytes).
        key: String,
        /// Print one JSON object: `{"values": [...], "context": "...", "found": bool}`.
        #[arg(long)]
        json: bool,
        /// Print values as base64 (standard alphabet), for values that are not text.
        #[arg(long)]
        base64: bool,
        /// Replies to wait for (default: the cluster's R).
        #[arg(short = 'r', long)]
        r: Option<u8>,
        /// How many of the replies must come from primary replicas.
        #[arg(long)]
        pr: Option<u8>,
        /// How long the cluster may take before answering a timeout (e.g. `500ms`, `5s`).
        #[arg(long, value_parser = parse_request_timeout)]
        timeout: Option<Duration>,
    },
    /// Delete a key (writes a tombstone). Without `--context`, the cluster reads the key
    /// first (R replicas) and deletes the values that read finds; a value written
    /// concurrently with the delete stays, as a sibling of the tombstone.
    Delete {
        /// The key (its UTF-8 bytes).
        key: String,
        /// The context of an earlier read or write of the key: the delete replaces the
        /// values it covers, and nothing else.
        #[arg(long)]
        context: Option<String>,
        /// Acknowledgements to wait for (default: the cluster's W).
        #[arg(short = 'w', long)]
        w: Option<u8>,
        /// How many of the acknowledgements must come from primary replicas.
        #[arg(long)]
        pw: Option<u8>,
        /// How long the cluster may take before answering a timeout (e.g. `500ms`, `5s`).
        #[arg(long, value_parser = parse_request_timeout)]
        timeout: Option<Duration>,
        /// Print one JSON object: `{"context": "..."}`.
        #[arg(long)]
        json: bool,
    },
    /// Members, their state, partitions owned and pending hints, as one node sees them.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The node to ask (default: the first that answers).
        #[arg(long)]
        node: Option<String>,
    },
    /// Where a key lives: its partition and its replicas (the preference list), from the
    /// ring the cluster hands the client.
    Locate {
        /// The key (its UTF-8 bytes).
        key: String,
        /// Print one JSON object: `{"key", "partition", "ring_version", "n", "replicas": [{"id", "addr"}]}`.
        #[arg(long)]
        json: bool,
    },
}

/// Where the client config comes from: --config, else $SHOAL_CONFIG, else ./shoal-dev/client.toml.
pub fn resolve_config_path(flag: Option<PathBuf>) -> PathBuf {
    resolve_from(flag, std::env::var_os(CONFIG_ENV))
}

fn resolve_from(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Run one client command; returns the process exit code (0 ok, 1 request failed, 2 usage/config error).
///
/// Parses `--timeout` and checks it against the protocol's bounds, so that an absurd
/// value is a usage error (exit 2) instead of a request no node would accept.
fn parse_request_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    shoal_proto::wire::check_timeout(
        timeout,
        shoal_proto::wire::MIN_REQUEST_TIMEOUT,
        shoal_proto::wire::MAX_REQUEST_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    Ok(timeout)
}

/// Usage errors (a bad context string, node id or stdin) are found before the config is
/// read or anything is sent. The error message goes to stderr; `Err` is returned only when
/// writing the output itself fails.
pub async fn run(cmd: ClientCommand, config: Option<PathBuf>) -> anyhow::Result<i32> {
    let path = resolve_config_path(config);
    let explicit = path != Path::new(DEFAULT_CONFIG_PATH);
    let mut output = Vec::new();
    let result = match Prepared::from_command(cmd, &mut std::io::stdin()) {
        Ok(prepared) => execute(prepared, &path, explicit, &mut output).await,
        Err(failure) => Err(failure),
    };
    finish(&output, result)
}

/// Writes a command's output to stdout and its failure (with a note, if any) to stderr;
/// returns the exit code.
pub(super) fn finish(output: &[u8], result: Result<(), Failure>) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(output)?;
    stdout.flush()?;
    match result {
        Ok(()) => Ok(EXIT_OK),
        Err(failure) => {
            let mut stderr = std::io::stderr().lock();
            writeln!(stderr, "error: {failure}")?;
            if let Some(note) = failure.note() {
                writeln!(stderr, "note: {note}")?;
            }
            Ok(failure.exit_code())
        }
    }
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub(super) enum Failure {
    /// The command line (or stdin) is unusable; nothing was sent.
    Usage(String),
    /// The client configuration or its TLS files are unusable; nothing was sent.
    Config(String),
    /// The request failed; `write` says whether it was a put or delete, whose outcome a
    /// timeout leaves unknown.
    Request { error: ClientError, write: bool },
}

impl Failure {
    pub(super) fn from_client(error: ClientError, write: bool) -> Failure {
        if error.is_config() {
            Failure::Config(error.to_string())
        } else {
            Failure::Request { error, write }
        }
    }

    pub(super) fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) | Failure::Config(_) => EXIT_USAGE,
            Failure::Request { .. } => EXIT_REQUEST_FAILED,
        }
    }

    /// A second line for errors whose consequence is not obvious from the message.
    fn note(&self) -> Option<&'static str> {
        match self {
            Failure::Request {
                error: ClientError::Timeout { .. } | ClientError::Transport(_),
                write: true,
            } => Some("the write may still have landed on some replicas; read the key before writing again"),
            Failure::Request {
                error: ClientError::DiskFull,
                ..
            } => Some("reads are still served; the node accepts writes again by itself once space is freed"),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(m) | Failure::Config(m) => f.write_str(m),
            Failure::Request { error, .. } => write!(f, "{error}"),
        }
    }
}

/// A command with its arguments checked and converted, ready to send.
#[derive(Debug)]
enum Prepared {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        context: Option<Context>,
        opts: WriteOptions,
        json: bool,
    },
    Get {
        key: Vec<u8>,
        format: GetFormat,
        opts: ReadOptions,
    },
    Delete {
        key: Vec<u8>,
        context: Option<Context>,
        opts: WriteOptions,
        json: bool,
    },
    Status {
        json: bool,
        node: Option<NodeId>,
    },
    Locate {
        key: Vec<u8>,
        json: bool,
    },
}

/// How `get` prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct GetFormat {
    json: bool,
    base64: bool,
}

impl Prepared {
    fn from_command(cmd: ClientCommand, stdin: &mut impl Read) -> Result<Prepared, Failure> {
        Ok(match cmd {
            ClientCommand::Put {
                key,
                value,
                context,
                w,
                pw,
                timeout,
                json,
            } => Prepared::Put {
                key: key.into_bytes(),
                value: read_value(value, stdin)?,
                context: parse_context(context)?,
                opts: WriteOptions { w, pw, timeout },
                json,
            },
            ClientCommand::Get {
                key,
                json,
                base64,
                r,
                pr,
                timeout,
            } => Prepared::Get {
                key: key.into_bytes(),
                format: GetFormat { json, base64 },
                opts: ReadOptions { r, pr, timeout },
            },
            ClientCommand::Delete {
                key,
                context,
                w,
                pw,
                timeout,
                json,
            } => Prepared::Delete {
                key: key.into_bytes(),
                context: parse_context(context)?,
                opts: WriteOptions { w, pw, timeout },
                json,
            },
            ClientCommand::Status { json, node } => Prepared::Status {
                json,
                node: node
                    .map(|n| NodeId::new(n).map_err(|e| Failure::Usage(format!("--node: {e}"))))
                    .transpose()?,
            },
            ClientCommand::Locate { key, json } => {
                if key.is_empty() {
                    return Err(Failure::Usage("the key is empty".into()));
                }
                Prepared::Locate {
                    key: key.into_bytes(),
                    json,
                }
            }
        })
    }

    fn is_write(&self) -> bool {
        matches!(self, Prepared::Put { .. } | Prepared::Delete { .. })
    }
}

/// The value argument of `put`: the argument's bytes, or with `-` everything on stdin (at
/// most [`MAX_STDIN_VALUE_BYTES`]).
fn read_value(arg: String, stdin: &mut impl Read) -> Result<Vec<u8>, Failure> {
    if arg != "-" {
        return Ok(arg.into_bytes());
    }
    let mut value = Vec::new();
    stdin
        .take(MAX_STDIN_VALUE_BYTES as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| Failure::Usage(format!("cannot read the value from stdin: {e}")))?;
    if value.len() > MAX_STDIN_VALUE_BYTES {
        return Err(Failure::Usage(format!(
            "the value on stdin is larger than {MAX_STDIN_VALUE_BYTES} bytes"
        )));
    }
    Ok(value)
}

fn parse_context(context: Option<String>) -> Result<Option<Context>, Failure> {
    context
        .map(|c| {
            c.parse::<Context>()
                .map_err(|e| Failure::Usage(e.to_string()))
        })
        .transpose()
}

/// Loads the config, connects, sends the request and formats its answer into `out`.
async fn execute(
    prepared: Prepared,
    path: &Path,
    explicit: bool,
    out: &mut Vec<u8>,
) -> Result<(), Failure> {
    let write = prepared.is_write();
    let client = connect(path, explicit).await?;
    let result = send(&client, prepared, out).await.map_err(|e| match e {
        SendFailure::Client(e) => Failure::from_client(e, write),
        SendFailure::Format(m) => Failure::Usage(m),
    });
    client.close().await;
    result
}

/// Loads the client config at `path` (`explicit`: named by --config or $SHOAL_CONFIG, so
/// no hint is added to a load error) and connects.
pub(super) async fn connect(path: &Path, explicit: bool) -> Result<Client, Failure> {
    let config = ClientConfig::load(path).map_err(|e| {
        let hint = if explicit {
            String::new()
        } else {
            format!(" (pass --config or set {CONFIG_ENV})")
        };
        Failure::Config(format!("{e}{hint}"))
    })?;
    Client::connect(config)
        .await
        .map_err(|e| Failure::from_client(e, false))
}

enum SendFailure {
    Client(ClientError),
    Format(String),
}

impl From<ClientError> for SendFailure {
    fn from(e: ClientError) -> SendFailure {
        SendFailure::Client(e)
    }
}

async fn send(client: &Client, prepared: Prepared, out: &mut Vec<u8>) -> Result<(), SendFailure> {
    let text = match prepared {
        Prepared::Put {
            key,
            value,
            context,
            opts,
            json,
        } => {
            let ctx = client
                .put_with(key, value)
                .context(context.as_ref())
                .options(opts)
                .send()
                .await?;
            format_context(&ctx, json)
        }
        Prepared::Get { key, format, opts } => {
            let result = client.get_with(key).options(opts).send().await?;
            format_get(&result, format).map_err(SendFailure::Format)?
        }
        Prepared::Delete {
            key,
            context,
            opts,
            json,
        } => {
            let ctx = client
                .delete_with(key)
                .context(context.as_ref())
                .options(opts)
                .send()
                .await?;
            format_context(&ctx, json)
        }
        Prepared::Status { json, node } => {
            let report = client.status(node.as_ref()).await?;
            if json {
                super::status::format_status_json(&report)
            } else {
                super::status::format_status_table(&report)
            }
        }
        Prepared::Locate { key, json } => {
            // The ring as the cluster has it now, not as it was when this client connected.
            client.refresh().await?;
            super::locate::format_locate(&client.cluster_info().await, &key, json)
        }
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// What `put` and `delete` print: the new context alone on a line, or with `--json`
/// `{"context": "..."}`.
fn format_context(ctx: &Context, json: bool) -> String {
    if json {
        format!("{}\n", serde_json::json!({ "context": ctx.to_string() }))
    } else {
        format!("{ctx}\n")
    }
}

/// `get`'s JSON form.
#[derive(Serialize)]
struct GetJson {
    values: Vec<String>,
    context: String,
    found: bool,
    /// When each value was written (RFC 3339, UTC, microseconds), parallel to `values`;
    /// empty when the node that answered runs the previous release.
    written_at: Vec<String>,
}

/// Formats a read: each value on its own line then `context: <CTX>` (values as lossy
/// UTF-8, or base64), or one JSON object. In JSON without base64 a value that is not
/// UTF-8 is an error, since JSON strings cannot carry it faithfully.
fn format_get(result: &GetResult, format: GetFormat) -> Result<String, String> {
    let context = result.context.to_string();
    if format.json {
        let values = result
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if format.base64 {
                    Ok(BASE64.encode(v))
                } else {
                    String::from_utf8(v.clone()).map_err(|_| {
                        format!(
                            "value {} of {} is not valid UTF-8; pass --base64 to print values as base64",
                            i + 1,
                            result.values.len()
                        )
                    })
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let json = GetJson {
            values,
            context,
            found: result.found,
            written_at: result
                .written_at
                .iter()
                .map(|t| humantime::format_rfc3339_micros(*t).to_string())
                .collect(),
        };
        let mut text = serde_json::to_string(&json).map_err(|e| e.to_string())?;
        text.push('\n');
        return Ok(text);
    }
    let mut text = String::new();
    if !result.found {
        text.push_str("not found\n");
    }
    for value in &result.values {
        if format.base64 {
            text.push_str(&BASE64.encode(value));
        } else {
            text.push_str(&String::from_utf8_lossy(value));
        }
        text.push('\n');
    }
    text.push_str(&format!("context: {context}\n"));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    fn parse(args: &[&str]) -> ClientCommand {
        Cli::try_parse_from(std::iter::once("shoal").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn timeouts_outside_the_protocol_bounds_are_usage_errors() {
        for bad in [
            "100000000000s",
            "18446744073709551615s",
            "0s",
            "999us",
            "61m",
        ] {
            for cmd in ["get", "put", "delete"] {
                let mut args = vec!["shoal", cmd, "k"];
                if cmd == "put" {
                    args.push("v");
                }
                args.extend(["--timeout", bad]);
                let err = Cli::try_parse_from(args).unwrap_err();
                // clap exits with 2 on a usage error.
                assert_eq!(err.exit_code(), 2, "{cmd} --timeout {bad}");
                assert!(err.to_string().contains("timeout"), "{err}");
            }
        }
        for good in ["1ms", "5s", "1h"] {
            assert!(Cli::try_parse_from(["shoal", "get", "k", "--timeout", good]).is_ok());
        }
    }

    fn sample_context() -> Context {
        // A context as a node would hand out: made by a write, carried as a string.
        let mut ctx = shoal_proto::CausalContext::new();
        ctx.insert(shoal_proto::Dot::new(shoal_proto::Actor(3), 7));
        Context::from(ctx)
    }

    #[test]
    fn config_path_prefers_flag_then_env_then_default() {
        assert_eq!(
            resolve_from(Some("/a.toml".into()), Some("/b.toml".into())),
            PathBuf::from("/a.toml")
        );
        assert_eq!(
            resolve_from(None, Some("/b.toml".into())),
            PathBuf::from("/b.toml")
        );
        assert_eq!(
            resolve_from(None, Some("".into())),
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
        assert_eq!(resolve_from(None, None), PathBuf::from(DEFAULT_CONFIG_PATH));
    }

    #[test]
    fn dash_value_reads_all_of_stdin_and_other_values_are_taken_as_given() {
        let bytes = vec![0u8, 159, 146, 150, b'\n', b'x'];
        let mut stdin = &bytes[..];
        assert_eq!(read_value("-".into(), &mut stdin).unwrap(), bytes);
        let mut untouched = &b"ignored"[..];
        assert_eq!(
            read_value("hello".into(), &mut untouched).unwrap(),
            b"hello".to_vec()
        );
        assert_eq!(untouched, b"ignored");
    }

    #[test]
    fn oversized_stdin_value_is_a_usage_error() {
        let mut stdin = std::io::repeat(b'a');
        let failure = read_value("-".into(), &mut stdin).unwrap_err();
        assert_eq!(failure.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn commands_parse_with_their_flags() {
        match parse(&[
            "put",
            "k",
            "v",
            "-w",
            "3",
            "--pw",
            "2",
            "--timeout",
            "1s 500ms",
        ]) {
            ClientCommand::Put {
                key,
                value,
                w,
                pw,
                timeout,
                context,
                json,
            } => {
                assert!(!json);
                assert_eq!((key.as_str(), value.as_str()), ("k", "v"));
                assert_eq!((w, pw, context), (Some(3), Some(2), None));
                assert_eq!(timeout, Some(Duration::from_millis(1500)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["get", "k", "--json", "--base64", "-r", "1"]),
            ClientCommand::Get {
                json: true,
                base64: true,
                r: Some(1),
                ..
            }
        ));
        assert!(matches!(
            parse(&["delete", "k", "--json"]),
            ClientCommand::Delete { json: true, .. }
        ));
        assert!(matches!(
            parse(&["put", "k", "v", "--json"]),
            ClientCommand::Put { json: true, .. }
        ));
        assert!(matches!(
            parse(&["status", "--node", "n2"]),
            ClientCommand::Status { json: false, node: Some(n) } if n == "n2"
        ));
    }

    #[test]
    fn bad_context_and_node_are_usage_errors_before_anything_is_sent() {
        let mut stdin = std::io::empty();
        let failure = Prepared::from_command(
            parse(&["delete", "k", "--context", "not-a-context!"]),
            &mut stdin,
        )
        .unwrap_err();
        assert_eq!(failure.exit_code(), EXIT_USAGE);
        assert!(
            failure.to_string().starts_with("invalid context"),
            "{failure}"
        );
        let failure =
            Prepared::from_command(parse(&["status", "--node", "bad id"]), &mut stdin).unwrap_err();
        assert_eq!(failure.exit_code(), EXIT_USAGE);
        let ctx = sample_context();
        let prepared = Prepared::from_command(
            parse(&["put", "k", "v", "--context", &ctx.to_string()]),
            &mut stdin,
        )
        .unwrap();
        assert!(matches!(prepared, Prepared::Put { context: Some(c), .. } if c == ctx));
    }

    #[test]
    fn get_prints_values_then_context() {
        let ctx = sample_context();
        let result = GetResult {
            found: true,
            values: vec![b"one".to_vec(), b"two\xff".to_vec()],
            context: ctx.clone(),
            written_at: vec![],
        };
        assert_eq!(
            format_get(&result, GetFormat::default()).unwrap(),
            format!("one\ntwo\u{fffd}\ncontext: {ctx}\n")
        );
        assert_eq!(
            format_get(
                &result,
                GetFormat {
                    json: false,
                    base64: true
                }
            )
            .unwrap(),
            format!("b25l\ndHdv/w==\ncontext: {ctx}\n")
        );
    }

    #[test]
    fn get_of_a_missing_key_prints_not_found_and_the_context() {
        let result = GetResult {
            found: false,
            values: vec![],
            context: Context::empty(),
            written_at: vec![],
        };
        assert_eq!(
            format_get(&result, GetFormat::default()).unwrap(),
            format!("not found\ncontext: {}\n", Context::empty())
        );
        let json: serde_json::Value = serde_json::from_str(
            &format_get(
                &result,
                GetFormat {
                    json: true,
                    base64: false,
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(json["found"], false);
        assert_eq!(json["values"], serde_json::json!([]));
    }

    #[test]
    fn get_json_is_one_object_with_text_or_base64_values() {
        let ctx = sample_context();
        let result = GetResult {
            found: true,
            values: vec![b"caf\xc3\xa9".to_vec(), b"x".to_vec()],
            context: ctx.clone(),
            written_at: vec![
                std::time::SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_micros(1_764_752_400_000_001),
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_752_401),
            ],
        };
        let text = format_get(
            &result,
            GetFormat {
                json: true,
                base64: false,
            },
        )
        .unwrap();
        assert_eq!(text.lines().count(), 1);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "values": ["café", "x"],
                "context": ctx.to_string(),
                "found": true,
                "written_at": ["2025-12-03T09:00:00.000001Z", "2025-12-03T09:00:01.000000Z"],
            })
        );
        let json: serde_json::Value = serde_json::from_str(
            &format_get(
                &result,
                GetFormat {
                    json: true,
                    base64: true,
                },
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(json["values"], serde_json::json!(["Y2Fmw6k=", "eA=="]));
        // The context printed parses back to the same context.
        let back: Context = json["context"].as_str().unwrap().parse().unwrap();
        assert_eq!(back, ctx);
    }

    #[test]
    fn get_json_refuses_binary_values_without_base64() {
        let result = GetResult {
            found: true,
            values: vec![b"ok".to_vec(), vec![0xff, 0xfe]],
            context: Context::empty(),
            written_at: vec![],
        };
        let err = format_get(
            &result,
            GetFormat {
                json: true,
                base64: false,
            },
        )
        .unwrap_err();
        assert!(err.contains("--base64"), "{err}");
        assert!(err.contains("value 2"), "{err}");
    }

    #[test]
    fn timeout_of_a_write_adds_a_note_and_exits_one() {
        let failure = Failure::from_client(ClientError::Timeout { acks: 1, needed: 2 }, true);
        assert_eq!(failure.exit_code(), EXIT_REQUEST_FAILED);
        assert_eq!(
            failure.to_string(),
            "timeout: 1 of 2 replies arrived in time"
        );
        assert!(failure.note().is_some());
        let read = Failure::from_client(ClientError::Timeout { acks: 1, needed: 2 }, false);
        assert!(read.note().is_none());
        let unavailable = Failure::from_client(
            ClientError::Unavailable {
                needed: 2,
                alive: 1,
            },
            true,
        );
        assert_eq!(
            unavailable.to_string(),
            "unavailable: 2 replicas needed, 1 reachable"
        );
    }

    #[tokio::test]
    async fn missing_config_file_exits_two_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        let mut out = Vec::new();
        let failure = execute(
            Prepared::Status {
                json: false,
                node: None,
            },
            &path,
            false,
            &mut out,
        )
        .await
        .unwrap_err();
        assert_eq!(failure.exit_code(), EXIT_USAGE);
        let message = failure.to_string();
        assert!(message.contains("client.toml"), "{message}");
        assert!(message.contains(CONFIG_ENV), "{message}");
        assert!(out.is_empty());
    }
}
