//! The Shoal node: configuration and the tokio driver that runs the replication engine
//! of `shoal-proto` over QUIC and RocksDB (storage ops through `shoal-executor`). The `shoal` binary
//! (CLI) is built on this library; integration tests start nodes through it too.
#![warn(missing_docs)]

pub mod cli;
pub mod cli_aae;
pub mod cli_client;
pub mod config;
pub mod dev;
pub mod metrics;
pub mod server;

pub use config::NodeConfig;
pub use server::{start, RunningNode};
