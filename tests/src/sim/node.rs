//! One simulated node: the real [`Engine`] and the real storage [`Executor`] on a
//! [`MemStorage`] that outlives crashes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use shoal_executor::{ExecError, Executor};
use shoal_proto::layout::LayoutHistory;
use shoal_proto::{Engine, EngineConfig, EngineError, Now, Time};
use shoal_ring::NodeId;
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
    /// The layout history the node had when it last stopped: what it would have
    /// persisted (the layout agreement stores it; here the simulator keeps it).
    pub stored_layout: Option<LayoutHistory>,
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
            stored_layout: None,
        }
    }

    /// Fills the node's disk until `until` (see [`MemStorage::set_disk_full`]).
    pub(crate) fn fill_disk(&mut self, until: Time) {
        self.disk_full_until = Some(until);
        self.data.set_disk_full(true);
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
    /// directory mints one); `seed` seeds the engine.
    pub(crate) fn start(
        &mut self,
        cfg: &EngineConfig,
        decided: &LayoutHistory,
        seed: u64,
        actor: u64,
        now: Now,
    ) -> Result<(), StartError> {
        // Opening writes the executor's metadata, which a full disk refuses: a node does
        // not start on a full disk, so a spell ends when the node is restarted.
        self.disk_full_until = None;
        self.data.set_disk_full(false);
        let executor = Executor::open(self.data.reopen(), || actor)?;
        // Its stored history, plus the versions decided while it was down (a node
        // learns them from its peers).
        let mut layout = self.stored_layout.take().unwrap_or_else(|| decided.clone());
        layout
            .merge(decided)
            .map_err(|e| StartError::Engine(EngineError::Addresses(e.to_string())))?;
        let engine = Engine::with_layout(cfg.clone(), self.id.clone(), layout, seed, now)?;
        self.incarnation += 1;
        self.running = Some(Running {
            engine,
            executor,
            inbound: BTreeMap::new(),
            next_inbound: 1,
            timer_at: None,
            down: BTreeSet::new(),
        });
        Ok(())
    }

    /// Kill the running incarnation: its engine and everything in flight are gone, its
    /// storage handle is closed; the data stays for the next start.
    pub(crate) fn crash(&mut self) -> Option<Running> {
        let running = self.running.take()?;
        self.stored_layout = Some(running.engine.layout().clone());
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
