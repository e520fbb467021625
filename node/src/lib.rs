//! The Shoal node: configuration and the tokio driver that runs the replication engine
//! of `shoal-proto` over QUIC and RocksDB (storage ops through `shoal-executor`). The `shoal` binary is
//! [`main`]; the process tests run the same function in their own binary.
//!
//! The modules are private; what other crates use is exported here: the CLI entry point,
//! the configuration file's types, and [`start`] to run a node inside a process.
#![warn(missing_docs)]

mod cli;
mod config;
mod idle_poll;
mod metrics;
mod server;

pub use cli::main;
pub use config::{
    ClusterConfig, ConfigError, LogFormat, NodeConfig, SeedConfig, StorageConfig, TlsConfig,
    DEFAULT_CONFIG_TOML,
};
pub use server::{start, RunningNode};
