//! One simulated node: the real [`Engine`] and the real storage [`Executor`] on a
//! [`MemStorage`] that outlives crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use shoal_executor::{ExecError, Executor};
use shoal_proto::layout::LayoutHistory;
use shoal_proto::{
    Engine, EngineConfig, EngineError, Now, Object, RequestId, StorageOp, StorageReply,
    StorageResult, Time,
};
use shoal_ring::{NodeId, PartitionId};
use shoal_storage::MemStorage;

use super::network::RpcKey;
use crate::history::OpId;

/// Who is waiting for the answer to a request a node received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplyTo {
    /// A peer's `Send`.
    Peer(RpcKey),
    /// A client's operation.
    Client { client: usize, op: OpId },
}

/// A running incarnation of a node.
pub(crate) struct Running {
    pub engine: Engine,
    pub executor: Executor<MemStorage>,
    /// Requests received and not answered yet, by inbound id.
    pub inbound: BTreeMap<u64, ReplyTo>,
    pub next_inbound: u64,
    /// The earliest engine timer event scheduled, if any.
    pub timer_at: Option<Time>,
    /// The peers its failure detector holds down, as last looked at.
    pub down: BTreeSet<NodeId>,
    /// Group commit: completions of writes waiting for the sync under way (a
    /// [`super::event::Event::GroupSync`] is due exactly while this is not empty), in
    /// order.
    pub awaiting_sync: Vec<(RequestId, StorageResult)>,
}

impl Running {
    /// The object this node stores for `key` of `partition`, if any (a storage failure
    /// reads as none).
    pub(crate) fn stored(&self, partition: PartitionId, key: &[u8]) -> Option<Object> {
        self.executor.stored_object(partition, key).ok().flatten()
    }
}

/// A node: its data (kept across crashes) and, while it runs, its engine and executor.
pub(crate) struct SimNode {
    pub id: NodeId,
    /// The node's data: every incarnation opens a new handle on it.
    data: MemStorage,
    pub running: Option<Running>,
    /// Bumped at every start, so that events meant for an older incarnation are dropped.
    pub incarnation: u32,
    /// When the node's storage is free to serve its next operation (when the run makes
    /// storage a queue).
    pub disk_free_at: Time,
    /// A paused node handles nothing before this instant (see `ScriptedPause`).
    pub paused_until: Time,
    /// While set, the node's disk is full until then: its storage refuses writes with
    /// `DiskFull` and serves reads (across crashes: the disk is the data's).
    disk_full_until: Option<Time>,
    /// A copy of the data taken by a scripted backup, until a restore uses it.
    backup: Option<MemStorage>,
    /// Not in the cluster: a spare not joined yet, or a member removed or replaced (dead
    /// for good). Never started or restarted.
    pub dormant: bool,
    /// The newest layout version the checker of "one layout per version" has looked at on
    /// this node (see `versions.rs`).
    pub versions_checked: u64,
}

/// What a node with no stored layout starts as.
pub(crate) enum StartAs<'a> {
    /// A member of the scripted layouts: the history decided so far (also merged into a
    /// stored one, as scripted installs bypass the agreement).
    Member { decided: &'a LayoutHistory },
    /// A seed of the cluster: the first layout, made from the seeds (a stored history
    /// wins and is not merged with anything).
    Seed { decided: &'a LayoutHistory },
    /// A node in no layout: a candidate that says hello to `bootstrap`.
    Candidate {
        addr: SocketAddr,
        partitions: u32,
        bootstrap: Vec<(NodeId, SocketAddr)>,
    },
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine refused its settings or ring.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// The executor could not open the storage.
    #[error("executor: {0}")]
    Executor(#[from] ExecError),
    /// Its first layout could not be saved.
    #[error("saving the layout: {0}")]
    Storage(String),
}

/// The nominal address of node `i` (never dialled: the simulator routes by id).
pub(crate) fn address(i: usize) -> SocketAddr {
    let port = u16::try_from(7000 + i).unwrap_or(u16::MAX);
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

impl SimNode {
    /// A node that has never run, with empty storage; `track_syncs`: storage that knows
    /// which writes are synced, for power cuts.
    pub(crate) fn new(id: NodeId, track_syncs: bool) -> SimNode {
        SimNode {
            id,
            data: if track_syncs {
                MemStorage::with_sync_tracking()
            } else {
                MemStorage::new()
            },
            running: None,
            incarnation: 0,
            disk_free_at: Time::ZERO,
            paused_until: Time::ZERO,
            disk_full_until: None,
            backup: None,
            dormant: false,
            versions_checked: 0,
        }
    }

    /// Fills the node's disk until `until` (see [`MemStorage::set_disk_full`]).
    pub(crate) fn fill_disk(&mut self, until: Time) {
        self.disk_full_until = Some(until);
        self.data.set_disk_full(true);
    }

    /// Whether the node's disk is in a full spell.
    pub(crate) fn disk_is_full(&self) -> bool {
        self.disk_full_until.is_some()
    }

    /// Frees the node's disk once its full spell is over; returns whether it did.
    pub(crate) fn free_disk_if_due(&mut self, now: Time) -> bool {
        if self.disk_full_until.is_some_and(|until| now >= until) {
            return self.free_disk();
        }
        false
    }

    /// Ends the node's full spell now, if it is in one; returns whether it was.
    pub(crate) fn free_disk(&mut self) -> bool {
        if self.disk_full_until.take().is_some() {
            self.data.set_disk_full(false);
            return true;
        }
        false
    }

    /// Start a new incarnation on the node's data with a new `actor` (every open of a data
    /// directory mints one); `seed` seeds the engine. As a node starts: the layout state
    /// stored in its data (history, Paxos acceptor state, staged changes) wins; with
    /// none, `how` says what it starts as.
    pub(crate) fn start(
        &mut self,
        cfg: &EngineConfig,
        how: &StartAs,
        seed: u64,
        actor: u64,
        now: Now,
    ) -> Result<(), StartError> {
        // A full-disk spell goes on across a restart, as on a real node, which opens on a
        // full disk by giving back its spare file (`RocksOptions::spare_space_bytes`):
        // opening writes only the executor's metadata, which a full disk's reserve lets
        // through (`MemStorage::set_disk_full`), and object and hint writes stay refused
        // until the spell ends.
        let executor = Executor::open(self.data.reopen(), || actor)?;
        let stored = match executor.execute(StorageOp::LoadLayout) {
            Ok(StorageReply::Layout(stored)) => stored.filter(|s| s.history.is_member(&self.id)),
            _ => None,
        };
        let bad = |e: String| StartError::Engine(EngineError::Addresses(e));
        let engine = match (stored, how) {
            (Some(saved), StartAs::Member { decided }) => {
                let mut history = saved.history.clone();
                // Scripted installs: the versions decided while it was down (a node
                // learns them from its peers).
                history.merge(decided).map_err(|e| bad(e.to_string()))?;
                let mut engine =
                    Engine::with_layout(cfg.clone(), self.id.clone(), history, seed, now)?;
                engine.restore_agreement(&saved);
                engine
            }
            (Some(saved), _) => {
                let mut engine = Engine::with_layout(
                    cfg.clone(),
                    self.id.clone(),
                    saved.history.clone(),
                    seed,
                    now,
                )?;
                engine.restore_agreement(&saved);
                engine
            }
            (None, StartAs::Member { decided } | StartAs::Seed { decided }) => {
                let mut engine = Engine::with_layout(
                    cfg.clone(),
                    self.id.clone(),
                    (*decided).clone(),
                    seed,
                    now,
                )?;
                // Saved before it serves, as a node saves its first layout.
                let state = engine.persisted_layout_state();
                executor
                    .execute(StorageOp::SaveLayout(Box::new(state)))
                    .map_err(|e| StartError::Storage(e.to_string()))?;
                engine
            }
            (
                None,
                StartAs::Candidate {
                    addr,
                    partitions,
                    bootstrap,
                },
            ) => Engine::candidate(
                cfg.clone(),
                self.id.clone(),
                *addr,
                *partitions,
                bootstrap.clone(),
                seed,
                now,
            )?,
        };
        self.incarnation += 1;
        self.running = Some(Running {
            engine,
            executor,
            inbound: BTreeMap::new(),
            next_inbound: 1,
            timer_at: None,
            down: BTreeSet::new(),
            awaiting_sync: Vec::new(),
        });
        Ok(())
    }

    /// Kill the running incarnation: its engine and everything in flight are gone, its
    /// storage handle is closed; the data stays for the next start.
    pub(crate) fn crash(&mut self) -> Option<Running> {
        let running = self.running.take()?;
        self.paused_until = Time::ZERO;
        // Killing fences off the dead incarnation's handle; the data is untouched (and
        // not synced: the page cache still holds the unsynced writes).
        running.executor.storage().kill();
        Some(running)
    }

    /// The node's data, across incarnations (for syncs, power cuts and inspection).
    pub(crate) fn disk(&self) -> &MemStorage {
        &self.data
    }

    /// Copy the node's disk as it is now (a backup's checkpoint: every write it holds,
    /// synced or not), for [`SimNode::use_backup`].
    pub(crate) fn take_backup(&mut self) {
        self.backup = Some(self.data.after_power_cut(usize::MAX));
    }

    /// Replace the node's data with its backup (the node must be down); whether there
    /// was one.
    pub(crate) fn use_backup(&mut self) -> bool {
        match self.backup.take() {
            Some(backup) => {
                self.data = backup;
                true
            }
            None => false,
        }
    }

    /// Whether an incarnation is running.
    pub(crate) fn is_up(&self) -> bool {
        self.running.is_some()
    }
}
