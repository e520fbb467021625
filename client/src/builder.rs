//! [`ClientBuilder`]: a client configured in code — seeds given as addresses or host
//! names, certificates from files or from memory (a secret store, an environment
//! variable, a Kubernetes Secret mounted elsewhere).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_transport::TlsIdentity;

use crate::client::Client;
use crate::config::{ClientConfig, ConfigError, Seed, Settings, TlsFiles};
use crate::error::ClientError;
use crate::retry::RetryPolicy;
use crate::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FRAMES_PER_NODE, DEFAULT_RACE_DELAY, DEFAULT_REQUEST_TIMEOUT,
};

/// Where the client's certificates come from.
#[derive(Clone)]
enum Tls {
    /// Not given yet.
    Missing,
    /// PEM files.
    Files(TlsFiles),
    /// PEM text.
    Pem {
        ca: String,
        cert_chain: String,
        key: String,
    },
}

/// Builds a [`Client`] in code.
///
/// ```no_run
/// use shoal_client::{Client, RetryPolicy};
/// # async fn example(ca: String, cert: String, key: String) -> Result<(), shoal_client::ClientError> {
/// let client = Client::builder()
///     // A Kubernetes headless Service: resolved at connect and at every refresh.
///     .seed("shoal.default.svc.cluster.local:7000")
///     .seed("10.0.0.7:7000")
///     .tls_pem(ca, cert, key)
///     .retry(RetryPolicy::default().max_attempts(5))
///     .connect()
///     .await?;
/// client.put("greeting", "hello").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    seeds: Vec<String>,
    settings: Settings,
    tls: Tls,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        let tls = match &self.tls {
            Tls::Missing => "missing",
            Tls::Files(_) => "files",
            Tls::Pem { .. } => "pem",
        };
        f.debug_struct("ClientBuilder")
            .field("seeds", &self.seeds)
            .field("settings", &self.settings)
            .field("tls", &tls)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            seeds: Vec::new(),
            settings: Settings {
                seeds: Vec::new(),
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                retry: RetryPolicy::default(),
                race_delay: DEFAULT_RACE_DELAY,
                frames_per_node: DEFAULT_FRAMES_PER_NODE,
                direct_reads: true,
            },
            tls: Tls::Missing,
        }
    }
}

impl ClientBuilder {
    /// Everything a [`ClientConfig`] says (its seeds, timeouts, retry policy and TLS files).
    pub fn from_config(config: ClientConfig) -> ClientBuilder {
        let settings = config.settings();
        ClientBuilder {
            seeds: Vec::new(),
            settings,
            tls: Tls::Files(config.tls),
        }
    }

    /// Adds a seed: `"host:port"` or an address (`"10.0.0.1:7000"`, `"[::1]:7000"`).
    /// Host names are resolved when connecting and again at each cluster-info refresh.
    /// A malformed seed fails [`connect`](ClientBuilder::connect).
    pub fn seed(mut self, seed: impl Into<String>) -> ClientBuilder {
        self.seeds.push(seed.into());
        self
    }

    /// Adds a seed address.
    pub fn seed_addr(mut self, addr: SocketAddr) -> ClientBuilder {
        self.settings.seeds.push(Seed::Addr(addr));
        self
    }

    /// The certificates, from PEM files.
    pub fn tls_files(
        mut self,
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> ClientBuilder {
        self.tls = Tls::Files(TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// The certificates, as PEM text: the cluster CA, the client certificate chain (leaf
    /// first) and its private key.
    pub fn tls_pem(
        mut self,
        ca: impl Into<String>,
        cert_chain: impl Into<String>,
        key: impl Into<String>,
    ) -> ClientBuilder {
        self.tls = Tls::Pem {
            ca: ca.into(),
            cert_chain: cert_chain.into(),
            key: key.into(),
        };
        self
    }

    /// How long a call waits when its request sets no timeout.
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.settings.request_timeout = timeout;
        self
    }

    /// How long connecting to one node may take before the client gives up on it.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long to wait for a connection to a request's first-choice node before also
    /// connecting to the next one.
    pub fn race_delay(mut self, delay: Duration) -> ClientBuilder {
        self.settings.race_delay = delay;
        self
    }

    /// Frames to keep in flight to one node before reads and writes to it wait and go
    /// together in one batch frame ([`ClientConfig::frames_per_node`]; 0: never batch).
    pub fn frames_per_node(mut self, frames: usize) -> ClientBuilder {
        self.settings.frames_per_node = frames;
        self
    }

    /// Whether reads at R of 2 or more ask R primaries at once and compare their copies
    /// before reading through a coordinator ([`ClientConfig::direct_reads`]; default on).
    pub fn direct_reads(mut self, on: bool) -> ClientBuilder {
        self.settings.direct_reads = on;
        self
    }

    /// Which failed calls are tried again.
    pub fn retry(mut self, policy: RetryPolicy) -> ClientBuilder {
        self.settings.retry = policy;
        self
    }

    /// Checks the settings, loads the certificates and connects (see
    /// [`Client::connect`]).
    pub async fn connect(self) -> Result<Client, ClientError> {
        let mut settings = self.settings;
        for seed in &self.seeds {
            let parsed = seed.parse().map_err(|problem| ConfigError::Field {
                field: "seeds",
                problem,
            })?;
            settings.seeds.push(parsed);
        }
        settings.validate()?;
        let identity = match &self.tls {
            Tls::Missing => {
                return Err(ConfigError::Field {
                    field: "tls",
                    problem: "give the certificates with tls_files or tls_pem".into(),
                }
                .into())
            }
            Tls::Files(files) => TlsIdentity::load(&files.ca, &files.cert, &files.key)?,
            Tls::Pem {
                ca,
                cert_chain,
                key,
            } => TlsIdentity::from_pem(ca, cert_chain, key)?,
        };
        Client::connect_with(settings, identity).await
    }
}
