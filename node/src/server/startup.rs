//! Node start-up and shutdown: open storage, load TLS, bind QUIC, create the engine, and
//! spawn the driver, the storage workers and the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use shoal_proto::wire::WireVersion;
use shoal_proto::{Engine, RequestId, StorageFailure, StorageOp, StorageReply};
use shoal_ring::NodeId;
use shoal_storage::{RocksOptions, RocksStorage, Storage as _};
use shoal_transport::Endpoint;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use super::background::{report_storage_stats, verify_trees, watch_disk};
use super::backup::Backups;
use super::driver::{storage_worker, Clock, Driver, WalWriteOut};
use super::handler::NodeHandler;
use super::replica_reads::{Merges, ReplicaReads};
use super::tls_reload::{record_expiry, TlsFiles};
use super::{Completion, Inbound};
use crate::config::NodeConfig;
use shoal_executor::Executor;

/// A running node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    id: NodeId,
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    driver: JoinHandle<()>,
    serve: JoinHandle<()>,
    workers: Vec<std::thread::JoinHandle<()>>,
    endpoint: Endpoint,
    storage: Arc<RocksStorage>,
    tls_files: TlsFiles,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("id", &self.id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningNode {
    /// The node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The address the node serves on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Reads the TLS files again and, if they are valid for this node, uses them for new
    /// connections (open ones stay up); otherwise keeps the current ones. See
    /// [`super::tls_reload`].
    pub fn reload_tls(&self) -> anyhow::Result<()> {
        self.tls_files.reload(&self.endpoint)
    }

    /// Stop serving, finish the driver, flush and close storage.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        info!(node = %self.id, "shutting down");
        super::health::set_storage_open(false);
        let _ = self.shutdown.send(true);
        self.endpoint.close().await;
        self.serve.abort();
        let _ = self.serve.await;
        let _ = self.driver.await;
        let workers = self.workers;
        tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await
        .context("joining storage workers")?;
        self.storage.close().context("closing storage")?;
        info!(node = %self.id, "stopped");
        Ok(())
    }
}

/// The engine, from the layout stored in the data directory if there is one (it wins
/// over the config); otherwise version 1 made from the `[[seeds]]` (saved before the
/// node serves), or a candidate when this node is not a seed.
fn make_engine(
    cfg: &NodeConfig,
    executor: &Executor<Arc<RocksStorage>>,
    local_addr: SocketAddr,
    addresses: &[(NodeId, SocketAddr)],
    clock: &mut Clock,
) -> anyhow::Result<Engine> {
    let stored = match executor.execute(StorageOp::LoadLayout) {
        Ok(StorageReply::Layout(stored)) => stored,
        Ok(other) => anyhow::bail!("loading the layout gave {other:?}"),
        Err(e) => return Err(anyhow::anyhow!("loading the stored layout: {e}")),
    };
    match stored {
        Some(saved) if saved.history.is_member(&cfg.id) => {
            info!(
                node = %cfg.id,
                version = saved.history.version(),
                cluster = %saved.history.settings().cluster_id,
                "layout loaded from the data directory (it wins over [[seeds]])"
            );
            let mut engine = Engine::with_layout(
                cfg.engine_config(),
                cfg.id.clone(),
                saved.history.clone(),
                rand::random(),
                clock.now(),
            )?;
            engine.restore_agreement(&saved);
            Ok(engine)
        }
        _ if cfg.is_candidate() => {
            info!(
                node = %cfg.id,
                contacts = addresses.len(),
                "not a seed and no stored layout: starting as a candidate (serving nothing \
                 until an operator joins it)"
            );
            Ok(Engine::candidate(
                cfg.engine_config(),
                cfg.id.clone(),
                local_addr,
                cfg.partitions,
                addresses.to_vec(),
                rand::random(),
                clock.now(),
            )?)
        }
        _ => {
            let mut engine = Engine::new(
                cfg.engine_config(),
                cfg.id.clone(),
                cfg.ring()?,
                addresses.to_vec(),
                rand::random(),
                clock.now(),
            )?;
            // Saved before serving: from now on the stored layout is the truth.
            let state = engine.persisted_layout_state();
            match executor.execute(StorageOp::SaveLayout(Box::new(state))) {
                Ok(_) => {}
                Err(e) => anyhow::bail!("saving layout version 1: {e}"),
            }
            info!(
                node = %cfg.id,
                cluster = %engine.layout().settings().cluster_id,
                "created layout version 1 from [[seeds]]"
            );
            Ok(engine)
        }
    }
}

/// Hands the WAL records that writes run without waiting left in the process to the OS
/// (`RocksOptions::buffer_try_writes`).
fn wal_write_out(storage: &Arc<RocksStorage>) -> WalWriteOut {
    let store = storage.clone();
    Arc::new(move || {
        store.write_out_wal().map_err(|e| match e {
            shoal_storage::StorageError::DiskFull => StorageFailure::DiskFull,
            other => StorageFailure::Engine(format!(
                "the write may not survive the process: writing out the write-ahead log failed: {other}"
            )),
        })
    })
}

/// Start a node from its config: open storage, bind QUIC, start the engine.
pub async fn start(cfg: NodeConfig) -> anyhow::Result<RunningNode> {
    let data_dir = cfg.resolve(&cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    // Group commit: the store writes without syncing, and the committer syncs the WAL
    // before any write's completion reaches the engine (`group_commit.rs`).
    let group_commit = cfg.storage.group_commits();
    // Inline writes may leave their WAL records in the process (`buffer_try_writes`)
    // until they go to the OS together: with `buffered` the driver writes a round's out
    // at once (`Driver::with_wal_write_out`); with group commit the committer's sync
    // writes out everything since the last one, then syncs.
    let group_wal_writes = cfg.storage.writes_out_wal_per_round();
    let options = RocksOptions {
        buffer_try_writes: cfg.storage.buffers_wal_records(),
        durability: if group_commit {
            shoal_storage::Durability::Buffered
        } else {
            cfg.storage.durability
        },
        block_cache_bytes: cfg.storage.block_cache_bytes,
        write_buffer_bytes: cfg.storage.write_buffer_bytes,
        object_cache_bytes: cfg.storage.object_cache_bytes,
        min_free_bytes: cfg.storage.min_free_bytes,
        spare_space_bytes: cfg.storage.spare_space_bytes,
        background_priority: cfg.storage.background_priority,
        ..RocksOptions::default()
    };
    let restored = super::backup::check_restored(&data_dir, &cfg.id)?;
    let storage = Arc::new(
        RocksStorage::open(&data_dir, options)
            .with_context(|| format!("opening storage in {}", data_dir.display()))?,
    );
    let executor = Arc::new(
        Executor::open(storage.clone(), rand::random::<u64>).context("opening the executor")?,
    );
    info!(node = %cfg.id, actor = %executor.actor(), "storage open");
    if let Some(marker) = &restored {
        // The executor minted a new actor above (synced before any dot), so no dot the
        // backup's incarnation used can be minted again. The marker stays until the
        // restore is through (the driver removes it).
        info!(
            node = %cfg.id,
            from = %marker.from.display(),
            taken_at_micros = marker.manifest.taken_at_micros,
            "started from a restored backup under a new actor: restoring (not ready) until \
             every partition matches a peer"
        );
    }

    let tls_files = TlsFiles::new(&cfg);
    let identity = tls_files.load()?;
    record_expiry(&identity);
    let transport = cfg.transport_config();
    let endpoint = Endpoint::server(cfg.listen, &identity, transport)
        .with_context(|| format!("binding {}", cfg.listen))?;
    let local_addr = endpoint.local_addr();

    let peer_wire_version = cfg.cluster.peer_wire_version()?;
    metrics::gauge!(crate::metrics::WIRE_VERSION_SENT).set(f64::from(peer_wire_version.get()));
    if peer_wire_version < WireVersion::CURRENT {
        info!(%peer_wire_version, "sending peers an older wire version ([cluster] wire_version)");
    }
    let addresses: Vec<(NodeId, SocketAddr)> =
        cfg.seeds.iter().map(|s| (s.id.clone(), s.addr)).collect();
    let mut clock = Clock::new();
    let mut engine = make_engine(&cfg, &executor, local_addr, &addresses, &mut clock)?;
    if peer_wire_version < WireVersion::LAYOUTS {
        // Its peers cannot confirm its stored layout in that version (no stamps, no
        // layout answers): it would refuse client data for good.
        engine.skip_layout_confirmation();
    }

    let (input_tx, input_rx) = mpsc::channel::<Inbound>(cfg.limits.max_queued_requests);
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
    let (storage_tx, storage_rx) =
        crossbeam::channel::bounded::<(RequestId, StorageOp)>(cfg.limits.max_queued_storage_ops);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut workers = Vec::new();
    // Bounded by the storage ops that can be queued or running: each sends one completion.
    let commit_tx = if group_commit {
        let (tx, rx) = crossbeam::channel::bounded::<Completion>(
            cfg.limits.max_queued_storage_ops + cfg.limits.storage_threads,
        );
        let done = done_tx.clone();
        let store = storage.clone();
        let window = super::group_commit::Window {
            length: cfg.storage.group_commit_window,
            min_waiting: cfg.storage.group_commit_window_min_waiting,
            quiet: cfg.storage.group_commit_window_quiet,
        };
        let handle = std::thread::Builder::new()
            .name("shoal-commit".into())
            .spawn(move || super::group_commit::committer(store, rx, done, window))
            .context("spawning the group-commit thread")?;
        workers.push(handle);
        Some(tx)
    } else {
        None
    };
    for i in 0..cfg.limits.storage_threads {
        let rx = storage_rx.clone();
        let done = done_tx.clone();
        let exec = executor.clone();
        let commit = commit_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("shoal-storage-{i}"))
            .spawn(move || storage_worker(exec, rx, done, commit))
            .context("spawning a storage thread")?;
        workers.push(handle);
    }

    let driver = Driver::new(
        engine,
        clock,
        endpoint.clone(),
        addresses.into_iter().collect(),
        storage_tx,
        done_tx,
    )
    .with_wire_version(peer_wire_version);
    // Writes run inline only when the store does not sync them (an fsync is a wait):
    // with `buffered`, or with group commit, whose store writes unsynced and whose
    // committer releases the inline writes' completions too.
    let inline_writes = cfg.storage.runs_inline_writes();
    let driver = match (&commit_tx, inline_writes) {
        (Some(commit), true) => {
            driver.with_group_commit(commit.clone(), cfg.limits.storage_threads)
        }
        _ => driver,
    };
    // Clients' replica reads, and peers' replica writes, served by the request handler
    // from memory, with the engine's rules the driver publishes (`replica_reads.rs`).
    // Writes only where the driver runs them inline too and nothing waits for a sync
    // (`buffered`): under group commit a write is acknowledged by the committer.
    let write_out = wal_write_out(&storage);
    let replica_reads = cfg.storage.inline_reads.then(|| {
        let exec = executor.clone();
        let merges = (inline_writes && !group_commit).then(|| {
            let exec = executor.clone();
            Merges {
                run: Arc::new(move |op: &StorageOp| match op {
                    StorageOp::Merge { .. } => exec.try_execute(op),
                    _ => None,
                }),
                write_out: group_wal_writes.then(|| write_out.clone()),
                limits: cfg.limits,
            }
        });
        ReplicaReads::new(
            Arc::new(move |op: &StorageOp| match op {
                StorageOp::Read { .. } => exec.try_execute(op),
                _ => None,
            }),
            merges,
        )
    });
    let driver = match &replica_reads {
        Some(reads) => driver.with_replica_reads(reads.clone()),
        None => driver,
    };
    let driver = if cfg.storage.inline_reads || inline_writes {
        let (exec, reads) = (executor.clone(), cfg.storage.inline_reads);
        driver.with_inline_ops(Arc::new(move |op: &StorageOp| {
            let allowed = match op {
                StorageOp::Read { .. } => reads,
                _ => inline_writes,
            };
            if allowed {
                exec.try_execute(op)
            } else {
                None
            }
        }))
    } else {
        driver
    };
    drop(commit_tx);
    let driver = if group_wal_writes {
        driver.with_wal_write_out(write_out)
    } else {
        driver
    };
    let driver = if restored.is_some() {
        driver.with_restore(data_dir.join(super::backup::RESTORED_MARKER))
    } else {
        driver
    };
    let driver = tokio::spawn(driver.run(input_rx, done_rx, shutdown_rx));
    let handler = NodeHandler::new(
        input_tx,
        &cfg.replication,
        cfg.limits.max_frame_bytes(),
        cfg.id.clone(),
        storage.clone(),
        Arc::new(Backups::new(&cfg, storage.clone())),
    )
    .with_admin_clients(cfg.tls.admin_clients.clone());
    let handler = match replica_reads {
        Some(reads) => handler.with_replica_reads(reads),
        None => handler,
    };
    let handler = Arc::new(handler);
    let serve = endpoint.serve(handler);
    tokio::spawn(report_storage_stats(
        storage.clone(),
        shutdown_tx.subscribe(),
    ));
    tokio::spawn(watch_disk(storage.clone(), shutdown_tx.subscribe()));
    tokio::spawn(super::process_stats::report_process_stats(
        shutdown_tx.subscribe(),
        endpoint.clone(),
    ));
    tokio::spawn(verify_trees(
        executor.clone(),
        cfg.aae.verify_interval,
        shutdown_tx.subscribe(),
    ));
    // Quorum reads and writes need max(R, W) members up, never more than there are.
    let needed = usize::from(cfg.replication.r.max(cfg.replication.w)).min(cfg.seeds.len().max(1));
    super::health::set_members_needed(needed);
    super::health::set_storage_open(true);
    info!(node = %cfg.id, addr = %local_addr, "serving");
    Ok(RunningNode {
        id: cfg.id.clone(),
        local_addr,
        shutdown: shutdown_tx,
        driver,
        serve,
        workers,
        endpoint,
        storage,
        tls_files,
    })
}
