//! [`ClientConfig`]: where the cluster is and which certificate to present, from a TOML
//! file or built in code.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::retry::RetryPolicy;

/// How long a call waits for its answer when neither the request nor the file says.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting to one node (QUIC + TLS handshake) may take before the client
/// tries the next one, when the file does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for a connection to its first-choice node before it also
/// starts connecting to the next one, when the file does not say.
pub const DEFAULT_RACE_DELAY: Duration = Duration::from_millis(50);
/// The default of [`ClientConfig::frames_per_node`].
pub const DEFAULT_FRAMES_PER_NODE: usize = 2;
/// The largest [`ClientConfig::frames_per_node`].
pub const MAX_FRAMES_PER_NODE: usize = 1024;
/// Most seeds a configuration may list (each is tried in turn when connecting).
pub const MAX_SEEDS: usize = 64;

/// Longest host name a seed may give (the DNS limit).
const MAX_HOST_CHARS: usize = 253;

/// A node to ask for the cluster's shape: an address, or a host name and port that the
/// client resolves (through the system resolver, with tokio's `lookup_host`) each time
/// it needs its seeds — when connecting and when refreshing the cluster info — so that a
/// name whose addresses change, such as a Kubernetes headless Service naming the current
/// pods, keeps working. Written `"10.0.0.1:7000"`, `"[::1]:7000"` or
/// `"shoal.default.svc.cluster.local:7000"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seed {
    /// An address, used as is.
    Addr(SocketAddr),
    /// A host name and port, resolved to every address it names.
    Host {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl From<SocketAddr> for Seed {
    fn from(addr: SocketAddr) -> Seed {
        Seed::Addr(addr)
    }
}

impl FromStr for Seed {
    type Err = String;

    fn from_str(s: &str) -> Result<Seed, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Seed::Addr(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: the port {port:?} is not a number in 0..=65535"))?;
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if host.is_empty() || host.len() > MAX_HOST_CHARS || !host.chars().all(valid) {
            return Err(format!("{s:?}: {host:?} is not a host name or address"));
        }
        Ok(Seed::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seed::Addr(addr) => write!(f, "{addr}"),
            Seed::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for Seed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seed, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a client configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read client config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown field, wrong type, missing
    /// section, ...).
    #[error("invalid client config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser says, with the line.
        message: String,
    },
    /// A field is out of range.
    #[error("invalid client config: {field}: {problem}")]
    Field {
        /// The field, as written in the file.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The client's TLS files: the cluster CA and a client certificate issued by it (URI SAN
/// `shoal://client/<name>`), as `shoal cert` writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// The client certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The client certificate's private key (PEM).
    pub key: PathBuf,
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
///
/// ```toml
/// # Nodes to contact first (any member works; the client learns the ring from them).
/// # Addresses or host names (resolved by DNS at connect and refresh).
/// seeds = ["127.0.0.1:7001", "127.0.0.1:7002", "shoal.example.internal:7000"]
/// request_timeout = "10s"     # optional, default 10s
/// connect_timeout = "3s"      # optional, default 3s
/// race_delay = "50ms"         # optional: when to also try the next node, default 50ms
/// frames_per_node = 2         # optional: requests beyond this many frames in flight to
///                             # one node go together in one batch frame; 0: never batch
/// direct_reads = true         # optional: reads ask R primaries at once and compare
/// [tls]
/// ca = "ca.pem"
/// cert = "client/client.pem"
/// key = "client/client.key"
/// [retry]                     # optional, see RetryPolicy
/// max_attempts = 3
/// ```
///
/// Relative TLS paths in a file are relative to the file's directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Nodes to ask for the cluster's shape, in order; any member works.
    pub seeds: Vec<Seed>,
    /// How long a call waits for its answer when the request sets no timeout of its own.
    /// Keep it at or above the nodes' `replication.request_timeout`, so that their
    /// `Timeout` answer (with its ack count) arrives before the client gives up.
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// How long connecting to one node may take before it counts as unreachable and the
    /// next one is tried.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Certificate files for mutual TLS.
    pub tls: TlsFiles,
    /// Which failed calls are tried again, and the waits in between.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How long a request waits for a connection to its first-choice node before it also
    /// starts connecting to the next candidate (happy-eyeballs style; the request is sent
    /// once, to whichever connects first), so that a dead node costs this, not
    /// `connect_timeout`.
    #[serde(with = "humantime_serde", default = "default_race_delay")]
    pub race_delay: Duration,
    /// Frames a client keeps in flight to one node before it batches: a read, write or
    /// delete sent while this many frames to its node are unanswered waits, and the
    /// requests that waited go together in one batch frame (wire version 6, at most 64
    /// requests and 256 KiB) as soon as one frame returns. Nothing waits to fill a batch,
    /// so a client with fewer requests in flight sends each alone, as before. 0 sends
    /// every request alone. A frame costs the client and the node a QUIC stream each; a
    /// batch shares one among its requests.
    #[serde(default = "default_frames_per_node")]
    pub frames_per_node: usize,
    /// Whether reads at R of 2 or more first ask R primaries of the key for their own
    /// copies at once (wire version 6), and answer when every copy is the same: one hop
    /// to the replicas instead of two through a coordinator. Copies that differ, a
    /// primary that declines (a layout change, a restore) or does not answer quickly,
    /// and nodes of an older release send the read through a coordinator as without it,
    /// which repairs divergent replicas. Default on.
    #[serde(default = "default_direct_reads")]
    pub direct_reads: bool,
}

fn default_direct_reads() -> bool {
    true
}

fn default_frames_per_node() -> usize {
    DEFAULT_FRAMES_PER_NODE
}

fn default_race_delay() -> Duration {
    DEFAULT_RACE_DELAY
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

impl ClientConfig {
    /// A configuration with default timeouts.
    pub fn new(seeds: impl IntoIterator<Item = impl Into<Seed>>, tls: TlsFiles) -> ClientConfig {
        ClientConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tls,
            retry: RetryPolicy::default(),
            race_delay: DEFAULT_RACE_DELAY,
            frames_per_node: DEFAULT_FRAMES_PER_NODE,
            direct_reads: true,
        }
    }

    /// Reads, parses and validates a TOML file; relative TLS paths are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        Self::parse(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text; relative TLS paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<ClientConfig, ConfigError> {
        let mut config: ClientConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        for file in [
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field: at least one seed (at most [`MAX_SEEDS`]), positive timeouts,
    /// a retry policy within its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().validate()
    }

    /// Everything but the TLS files.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            seeds: self.seeds.clone(),
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            retry: self.retry.clone(),
            race_delay: self.race_delay,
            frames_per_node: self.frames_per_node,
            direct_reads: self.direct_reads,
        }
    }
}

/// What a client runs with, wherever it came from (a [`ClientConfig`] or a
/// [`ClientBuilder`](crate::ClientBuilder)), TLS aside.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub seeds: Vec<Seed>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    pub race_delay: Duration,
    pub frames_per_node: usize,
    pub direct_reads: bool,
}

impl Settings {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.seeds.is_empty() {
            return Err(ConfigError::Field {
                field: "seeds",
                problem: "list at least one node address".into(),
            });
        }
        if self.seeds.len() > MAX_SEEDS {
            return Err(ConfigError::Field {
                field: "seeds",
                problem: format!("at most {MAX_SEEDS} seeds, found {}", self.seeds.len()),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::Field {
                field: "request_timeout",
                problem: "must be positive".into(),
            });
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::Field {
                field: "connect_timeout",
                problem: "must be positive".into(),
            });
        }
        if self.frames_per_node > MAX_FRAMES_PER_NODE {
            return Err(ConfigError::Field {
                field: "frames_per_node",
                problem: format!(
                    "must be in 0..={MAX_FRAMES_PER_NODE}, got {}",
                    self.frames_per_node
                ),
            });
        }
        if self.race_delay.is_zero() || self.race_delay > Duration::from_secs(10) {
            return Err(ConfigError::Field {
                field: "race_delay",
                problem: format!("must be in 1ns..=10s, got {:?}", self.race_delay),
            });
        }
        self.retry
            .validate()
            .map_err(|problem| ConfigError::Field {
                field: "retry",
                problem,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# Nodes to contact first.
seeds = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
request_timeout = "2s 500ms"
[tls]
ca = "ca.pem"
cert = "client/client.pem"
key = "/etc/shoal/client.key"
"#;

    #[test]
    fn good_file_parses_and_resolves_relative_paths_against_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(&path, GOOD).unwrap();
        let config = ClientConfig::load(&path).unwrap();
        assert_eq!(config.seeds.len(), 3);
        assert_eq!(
            config.seeds[1],
            Seed::Addr("127.0.0.1:7002".parse().unwrap())
        );
        assert_eq!(config.request_timeout, Duration::from_millis(2500));
        assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.tls.ca, dir.path().join("ca.pem"));
        assert_eq!(
            config.tls.cert,
            dir.path().join("client").join("client.pem")
        );
        assert_eq!(config.tls.key, PathBuf::from("/etc/shoal/client.key"));
    }

    #[test]
    fn request_timeout_defaults_to_ten_seconds() {
        let text = "seeds = [\"127.0.0.1:7001\"]\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let config = ClientConfig::parse(text, Path::new("/base")).unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.tls.key, PathBuf::from("/base/c"));
    }

    #[test]
    fn direct_reads_are_on_unless_the_file_turns_them_off() {
        let tls = "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let seeds = "seeds = [\"127.0.0.1:7001\"]\n";
        let on = ClientConfig::parse(&format!("{seeds}{tls}"), Path::new("/")).unwrap();
        assert!(on.direct_reads);
        let text = format!("{seeds}direct_reads = false\n{tls}");
        let off = ClientConfig::parse(&text, Path::new("/")).unwrap();
        assert!(!off.direct_reads);
        assert!(!off.settings().direct_reads);
    }

    #[test]
    fn unknown_field_is_refused_with_its_name() {
        for (text, name) in [
            (GOOD.replace("[tls]", "colour = \"red\"\n[tls]"), "colour"),
            (format!("{GOOD}password = \"x\"\n"), "password"),
        ] {
            match ClientConfig::parse(&text, Path::new(".")).unwrap_err() {
                ConfigError::Parse { message, .. } => assert!(message.contains(name), "{message}"),
                other => panic!("expected a parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_tls_section_is_refused() {
        let err =
            ClientConfig::parse("seeds = [\"127.0.0.1:7001\"]\n", Path::new(".")).unwrap_err();
        match err {
            ConfigError::Parse { message, .. } => assert!(message.contains("tls"), "{message}"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn empty_seed_list_and_zero_timeout_are_refused() {
        let text = "seeds = []\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        assert!(matches!(
            ClientConfig::parse(text, Path::new(".")),
            Err(ConfigError::Field { field: "seeds", .. })
        ));
        let text = "seeds = [\"127.0.0.1:1\"]\nrequest_timeout = \"0s\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        assert!(matches!(
            ClientConfig::parse(text, Path::new(".")),
            Err(ConfigError::Field {
                field: "request_timeout",
                ..
            })
        ));
    }

    #[test]
    fn retry_table_is_optional_parsed_and_validated() {
        let base = "seeds = [\"127.0.0.1:7001\"]\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let config = ClientConfig::parse(base, Path::new(".")).unwrap();
        assert_eq!(config.retry, RetryPolicy::default());
        let text = format!("{base}[retry]\nmax_attempts = 5\nbase = \"10ms\"\ncap = \"1s\"\nidempotent_writes = true\n");
        let config = ClientConfig::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            config.retry,
            RetryPolicy::default()
                .max_attempts(5)
                .backoff(Duration::from_millis(10), Duration::from_secs(1))
                .idempotent_writes(true)
        );
        let text = format!("{base}[retry]\nmax_attempts = 0\n");
        assert!(matches!(
            ClientConfig::parse(&text, Path::new(".")),
            Err(ConfigError::Field { field: "retry", .. })
        ));
    }

    #[test]
    fn missing_file_is_a_read_error_naming_it() {
        let err = ClientConfig::load(Path::new("/nonexistent/shoal/client.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/shoal/client.toml"));
    }

    #[test]
    fn bad_seed_address_is_a_parse_error() {
        for bad in [
            "localhost",
            "host:port",
            "bad host:7000",
            ":7000",
            "h:70000",
        ] {
            let text =
                format!("seeds = [\"{bad}\"]\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n");
            assert!(
                matches!(
                    ClientConfig::parse(&text, Path::new(".")),
                    Err(ConfigError::Parse { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn seeds_may_be_host_names() {
        let text = "seeds = [\"shoal-0.shoal.default.svc.cluster.local:7000\", \"[::1]:7001\"]\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let config = ClientConfig::parse(text, Path::new(".")).unwrap();
        assert_eq!(
            config.seeds,
            [
                Seed::Host {
                    host: "shoal-0.shoal.default.svc.cluster.local".into(),
                    port: 7000
                },
                Seed::Addr("[::1]:7001".parse().unwrap()),
            ]
        );
        let round: ClientConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(round, config);
    }
}
