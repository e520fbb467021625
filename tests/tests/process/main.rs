//! The real-process tests: every node a real `shoal node` process (the CLI built into
//! this package), talked to over real QUIC on loopback (or, in `netns`, across network
//! namespaces with loss, delay and partitions), through the SDK, raw requests,
//! the CLI, its metrics endpoint and a real Prometheus. One suite per module, all on the
//! one [`harness`].

mod harness;

mod aae;
mod cli;
mod cluster;
mod cluster_cli;
mod deploy;
mod disk_full;
mod durability;
mod failure_detection;
mod forwarding;
mod health;
mod hostile;
mod layout_faults;
mod limits;
mod membership;
mod metrics_catalogue;
mod netns;
mod operating;
mod power_cut;
mod prometheus;
mod runbook;
mod sdk;
mod single_node;
mod tls_reload;
mod upgrade;
