//! Layout agreement and distribution (issue 9): how a node learns, checks, persists and
//! decides layout versions.
//!
//! - Stamps: every node-to-node message carries the sender's settings and layout version
//!   ([`LayoutStamp`]). A node of another cluster is refused
//!   ([`RequestError::ClusterMismatch`]); a sender with a newer version makes the
//!   receiver fetch its history; a sender with an older one is refused data work
//!   ([`RequestError::StaleLayout`]) and fetches the refuser's history in turn.
//! - Distribution: histories spread by fetch (`PeerRequest::LayoutFetch`) and push (after
//!   a commit, to every member and candidate); both merge with
//!   [`LayoutHistory::merge`], which only moves forward, so the order of arrival does
//!   not matter.
//! - Agreement: each version `v + 1` is decided by one single-decree Paxos instance
//!   (slot `v + 1`) among the members owning partitions in version `v`. The acceptor's
//!   state is saved, synced, before any reply that depends on it leaves; the proposer's
//!   ballot round is saved before it is used, so a restarted node never reuses one.
//! - Candidates: a node in no layout serves nothing; it says hello to its bootstrap
//!   contacts (with backoff) until a layout that makes it a member reaches it.
//!
//! Everything the node must not forget (history, acceptor state, staged changes, the
//! proposer's round) is saved as one [`PersistedLayout`] through
//! [`StorageOp::SaveLayout`]; saves carry a sequence number so that a slow one never
//! overwrites a newer one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_ring::NodeId;

use crate::error::RequestError;
use crate::layout::{Change, Layout, LayoutHistory};
use crate::paxos::{Acceptor, PaxosReply, PaxosRequest, Proposer, ProposerStep, Sends};
use crate::storage_ops::{StorageOp, StorageReply, StorageResult};
use crate::time::Monotonic;
use crate::wire::{
    ClientResponse, ClusterReply, Hello, LayoutStamp, PeerRequest, PeerResponse, PlanId, PlanReport,
};

use super::{Engine, InboundId, SendError, Timer, Waiter};

/// Most candidates a node remembers; the one heard from longest ago is forgotten first.
pub const MAX_CANDIDATES: usize = 64;
/// Most Paxos rounds one commit runs before it gives up.
pub const MAX_COMMIT_ROUNDS: u32 = 8;
/// Longest pause between a candidate's hellos (the pause doubles from the gossip
/// interval up to this).
pub const MAX_HELLO_INTERVAL: Duration = Duration::from_secs(5);
/// Most layout fetches in flight at once (one per peer at most).
const MAX_FETCHES: usize = 8;
/// Version byte of [`PersistedLayout::encode`].
const PERSISTED_FORMAT: u8 = 1;

/// What a node keeps of the layout on disk, saved whole on every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedLayout {
    /// Grows with every save: a save below the stored one is skipped.
    pub seq: u64,
    /// The layout versions in use and the trackers.
    pub history: LayoutHistory,
    /// This node's Paxos acceptor state, per slot not yet decided here.
    pub acceptors: BTreeMap<u64, Acceptor<Layout>>,
    /// Changes an operator staged on this node and did not commit yet.
    pub staged: Vec<Change>,
    /// The highest ballot round this node used as a proposer.
    pub round: u64,
}

impl PersistedLayout {
    /// The stored bytes: a format byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![PERSISTED_FORMAT];
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    /// Decodes [`PersistedLayout::encode`]'s bytes.
    ///
    /// # Errors
    /// Why the bytes are not a stored layout state.
    pub fn decode(bytes: &[u8]) -> Result<PersistedLayout, String> {
        match bytes.split_first() {
            Some((&PERSISTED_FORMAT, body)) => {
                postcard::from_bytes(body).map_err(|e| e.to_string())
            }
            Some((other, _)) => Err(format!("unknown layout state format {other}")),
            None => Err("empty layout state".into()),
        }
    }
}

/// A commit this node is proposing.
#[derive(Debug)]
struct Proposal {
    /// The operator's request, answered when the slot is decided or the commit gives up.
    inbound: InboundId,
    proposer: Proposer<Layout>,
    /// The layout this commit wants.
    own: Layout,
    /// Rounds started (the first included).
    rounds: u32,
    /// Acceptors that failed to answer (or refused) in the current round.
    failed: BTreeSet<NodeId>,
    acceptors: usize,
}

/// This node is a candidate: in no layout yet.
#[derive(Debug)]
struct CandidateMode {
    /// Where this node listens (sent in its hello).
    addr: SocketAddr,
    /// Who it says hello to.
    bootstrap: Vec<(NodeId, SocketAddr)>,
    /// The pause before the next hello.
    interval: Duration,
}

/// The engine's layout agreement state.
#[derive(Debug, Default)]
pub(super) struct Agreement {
    acceptors: BTreeMap<u64, Acceptor<Layout>>,
    pub(super) staged: Vec<Change>,
    round: u64,
    /// The sequence number of the last save emitted.
    seq: u64,
    /// The highest sequence number known durable.
    durable: u64,
    /// The save that holds the latest acceptor change.
    acceptor_seq: u64,
    proposal: Option<Proposal>,
    /// Candidates that said hello: address and when.
    pub(super) candidates: BTreeMap<NodeId, (SocketAddr, Monotonic)>,
    candidate: Option<CandidateMode>,
    fetching: BTreeSet<NodeId>,
    /// Peers a write's refusal made this node push its history to, while the push runs.
    pushing: BTreeSet<NodeId>,
    /// Since when this node, started on its stored layout, waits for a peer to confirm
    /// it (`confirm.rs`); `None` once confirmed, or with nothing to confirm.
    pub(super) confirming: Option<Monotonic>,
    /// Peers of another cluster already logged (bounded by [`MAX_CANDIDATES`]).
    mismatched: BTreeSet<NodeId>,
}

impl Agreement {
    /// Whether a layout fetch from `peer` is running.
    pub(super) fn is_fetching(&self, peer: &NodeId) -> bool {
        self.fetching.contains(peer)
    }
}

/// What a layout `Send` was for.
#[derive(Clone, Debug)]
pub(super) enum LayoutSend {
    Fetch,
    Push,
    Hello,
    Paxos,
}

/// Who waits for an acceptor's reply: a peer's request, or this node's own proposer.
#[derive(Clone, Debug)]
pub(super) enum PaxosTo {
    Remote(InboundId),
    Local,
}

/// What a layout save was for.
#[derive(Clone, Debug)]
pub(super) enum LayoutSave {
    /// A history change: nothing waits.
    History,
    /// An acceptor's reply, sent once its state is durable.
    Acceptor {
        to: PaxosTo,
        reply: Box<PaxosReply<Layout>>,
    },
    /// A stage/unstage answer, sent once the staged changes are durable.
    Cluster {
        inbound: InboundId,
        reply: ClusterReply,
    },
    /// The proposer's requests, sent once its round is durable.
    Propose { sends: Sends<Layout> },
}

/// Requests a node accepts from a node that is not in its membership: what a candidate,
/// or a member this node does not know yet, needs to learn the layout.
pub(super) fn open_to_non_members(req: &PeerRequest) -> bool {
    matches!(
        req,
        PeerRequest::LayoutFetch
            | PeerRequest::LayoutPush(_)
            | PeerRequest::Hello(_)
            | PeerRequest::Paxos(_)
    )
}

/// Requests that do data work under the sender's layout: refused from a sender whose
/// layout is older than the receiver's.
fn is_data_work(req: &PeerRequest) -> bool {
    matches!(
        req,
        PeerRequest::Forward(_)
            | PeerRequest::Replicate { .. }
            | PeerRequest::Read { .. }
            | PeerRequest::Aae(_)
    )
}

impl Engine {
    /// An engine for a candidate: node `me`, listening at `addr`, in no layout yet. It
    /// serves no data, says hello to `bootstrap` until a layout makes it a member, and
    /// takes only a layout with `partitions` and N as configured.
    ///
    /// # Errors
    /// Invalid settings or partition count.
    pub fn candidate(
        cfg: crate::config::EngineConfig,
        me: NodeId,
        addr: SocketAddr,
        partitions: u32,
        bootstrap: Vec<(NodeId, SocketAddr)>,
        seed: u64,
        now: crate::time::Now,
    ) -> Result<Engine, super::EngineError> {
        cfg.validate(usize::from(cfg.replication.n))?;
        let layout = Layout::unknown(me.clone(), partitions, cfg.replication.n)
            .map_err(|e| super::EngineError::Addresses(e.to_string()))?;
        let interval = cfg.membership.gossip_interval;
        let mut engine = Engine::build(cfg, me, LayoutHistory::new(layout), seed, now);
        engine.replica_partitions.clear();
        engine.agree.candidate = Some(CandidateMode {
            addr,
            bootstrap,
            interval,
        });
        engine.timers.insert((now.mono, Timer::Hello));
        engine.publish_layout_gauge();
        Ok(engine)
    }

    /// Restores what [`Engine::persisted_layout`] saved besides the history (pass the
    /// history itself to the constructor): the acceptor state, the staged changes, the
    /// proposer's round and the save sequence. A node restarted so serves from a stored
    /// layout, which may be stale: it confirms it with a peer before it coordinates
    /// client data requests ([`Engine::confirming_layout`]).
    pub fn restore_agreement(&mut self, saved: &PersistedLayout) {
        self.agree.acceptors = saved.acceptors.clone();
        self.agree.staged = saved.staged.clone();
        self.agree.round = saved.round;
        self.agree.seq = saved.seq;
        self.agree.durable = saved.seq;
        self.agree.acceptor_seq = saved.seq;
        self.start_confirming();
    }

    /// Whether this node is a candidate (in no layout yet: it serves nothing).
    pub fn is_candidate(&self) -> bool {
        self.agree.candidate.is_some()
    }

    /// Whether this node's current layout says it was removed, replaced or left: it is
    /// fenced. Its peers no longer count it as a member, and it coordinates no client
    /// data request either, so that a client still talking to it gets a clear refusal
    /// instead of the peers' "unknown node" relayed as a failed quorum.
    pub fn is_fenced(&self) -> bool {
        self.layout
            .current()
            .member(&self.me)
            .is_some_and(|m| m.state == crate::layout::MemberState::Removed)
    }

    /// The stamp this node's messages carry.
    pub fn stamp(&self) -> LayoutStamp {
        LayoutStamp {
            settings: self.layout.settings().clone(),
            version: self.layout.version(),
        }
    }

    /// Where `id` listens, as far as this node knows (a member of any version in use, a
    /// candidate that said hello, a bootstrap contact): drivers address sends with it.
    pub fn peer_addr(&self, id: &NodeId) -> Option<SocketAddr> {
        if let Some(v) = self.membership.get(id) {
            return Some(v.addr);
        }
        if let Some(m) = self
            .layout
            .versions()
            .iter()
            .rev()
            .find_map(|l| l.member(id))
        {
            return Some(m.addr);
        }
        if let Some((addr, _)) = self.agree.candidates.get(id) {
            return Some(*addr);
        }
        self.agree
            .candidate
            .as_ref()
            .and_then(|c| c.bootstrap.iter().find(|(b, _)| b == id).map(|(_, a)| *a))
    }

    /// The state to save (see [`PersistedLayout`]), with the next sequence number: what
    /// a driver saves itself before the engine runs (a node's first layout).
    pub fn persisted_layout_state(&mut self) -> PersistedLayout {
        self.agree.seq += 1;
        PersistedLayout {
            seq: self.agree.seq,
            history: self.layout.clone(),
            acceptors: self.agree.acceptors.clone(),
            staged: self.agree.staged.clone(),
            round: self.agree.round,
        }
    }

    fn save_layout(&mut self, why: LayoutSave) {
        let state = self.persisted_layout_state();
        self.storage(
            StorageOp::SaveLayout(Box::new(state)),
            Waiter::LayoutSave {
                why,
                seq: self.agree.seq,
            },
        );
    }

    /// Saves the layout history (and the rest of the layout state) whenever it changed.
    /// A candidate that knows no layout has nothing to save.
    pub(super) fn persist_layout(&mut self) {
        if self.layout.version() == 0 {
            return;
        }
        self.save_layout(LayoutSave::History);
    }

    pub(super) fn publish_layout_gauge(&self) {
        metrics::gauge!(crate::metrics::LAYOUT_VERSION).set(self.layout.version() as f64);
    }

    // ---- stamps ----

    /// Checks a peer's stamp before its request runs: `Err` is the refusal to answer.
    pub(super) fn check_stamp(
        &mut self,
        from: &NodeId,
        stamp: &LayoutStamp,
        req: &PeerRequest,
    ) -> Result<(), RequestError> {
        let mine = self.layout.version();
        // A candidate's stamp (or ours, while a candidate) carries no cluster id yet.
        if mine > 0 && stamp.version > 0 {
            if let Some(m) = self.layout.settings().mismatch(&stamp.settings) {
                metrics::counter!(crate::metrics::PEER_REFUSED_TOTAL, "reason" => "cluster_mismatch")
                    .increment(1);
                // Logged once per peer (bounded): it refuses every message of the peer.
                if self.agree.mismatched.len() < MAX_CANDIDATES
                    && self.agree.mismatched.insert(from.clone())
                {
                    tracing::warn!(
                        node = %self.me,
                        peer = %from,
                        "refusing a node of another cluster: {m} (check its [[seeds]] and \
                         data directory)"
                    );
                }
                return Err(RequestError::ClusterMismatch(format!(
                    "node {from} is in another cluster than node {}: {m}",
                    self.me
                )));
            }
        }
        if stamp.version > mine {
            self.fetch_layout(from.clone());
        } else if stamp.version == mine {
            self.heard_stamp(from, mine);
        } else if stamp.version < mine && is_data_work(req) {
            metrics::counter!(crate::metrics::PEER_REFUSED_TOTAL, "reason" => "stale_layout")
                .increment(1);
            return Err(RequestError::StaleLayout { current: mine });
        }
        Ok(())
    }

    /// A peer answered a request of ours: a stale-layout refusal means it knows a newer
    /// layout, which this node fetches from it.
    pub(super) fn check_answer(&mut self, to: &NodeId, result: &Result<PeerResponse, SendError>) {
        if let Ok(PeerResponse::Error(RequestError::StaleLayout { current })) = result {
            // At our version too while we keep older ones: the peer's trackers may have
            // let it prune one (it refused data of a partition it held only there).
            let mine = self.layout.version();
            if *current > mine || (*current == mine && self.layout.versions().len() > 1) {
                self.fetch_layout(to.clone());
            }
        }
    }

    /// Asks `peer` for its layout history (at most one fetch per peer at a time).
    pub(super) fn fetch_layout(&mut self, peer: NodeId) {
        if peer == self.me
            || self.agree.fetching.contains(&peer)
            || self.agree.fetching.len() >= MAX_FETCHES
        {
            return;
        }
        metrics::counter!(crate::metrics::LAYOUT_FETCHES_TOTAL).increment(1);
        self.agree.fetching.insert(peer.clone());
        let timeout = self.cfg.membership.probe_timeout;
        self.send(
            peer,
            PeerRequest::LayoutFetch,
            timeout,
            Waiter::LayoutSend(LayoutSend::Fetch),
        );
    }

    /// Pushes this node's history to `peer`, a replica behind it that refused a write
    /// (at most one such push per peer at a time: the writes parked on it are rechecked
    /// when it ends).
    pub(super) fn push_layout_to(&mut self, peer: NodeId) {
        if peer == self.me || !self.agree.pushing.insert(peer.clone()) {
            return;
        }
        let timeout = self.cfg.membership.probe_timeout;
        let history = Box::new(self.layout.clone());
        self.send(
            peer,
            PeerRequest::LayoutPush(history),
            timeout,
            Waiter::LayoutSend(LayoutSend::Push),
        );
    }

    /// Takes what `other` knows that this node does not. Whether anything changed.
    pub(super) fn learn_layout(&mut self, other: &LayoutHistory) -> bool {
        let before = self.layout.version();
        match self.layout.adopt(other) {
            Ok(true) => {
                self.layout_installed(before);
                true
            }
            Ok(false) => false,
            Err(e) => {
                metrics::counter!(crate::metrics::PEER_REFUSED_TOTAL, "reason" => "cluster_mismatch")
                    .increment(1);
                tracing::warn!(node = %self.me, "a layout of another cluster was refused: {e}");
                false
            }
        }
    }

    /// The history changed (new versions or trackers): follow it everywhere.
    pub(super) fn layout_installed(&mut self, before: u64) {
        let version = self.layout.version();
        if version > before {
            self.agree.acceptors.retain(|slot, _| *slot > version);
            if self.agree.candidate.is_some() && self.layout.current().member(&self.me).is_some() {
                tracing::info!(node = %self.me, version, "joined the cluster: serving as a member");
                self.agree.candidate = None;
            }
            self.agree
                .candidates
                .retain(|id, _| self.layout.current().member(id).is_none());
            // Before the decided layout is pushed: its new members need addresses.
            self.follow_members();
            self.finish_proposal_if_decided();
        }
        self.on_layout_changed();
        self.persist_layout();
        self.publish_layout_gauge();
    }

    // ---- peer requests ----

    /// A layout message from `from`.
    pub(super) fn handle_layout_peer(&mut self, id: InboundId, from: NodeId, req: PeerRequest) {
        match req {
            PeerRequest::LayoutFetch => {
                let h = Box::new(self.layout.clone());
                self.respond_peer(id, PeerResponse::Layout(h));
            }
            PeerRequest::LayoutPush(h) => {
                self.learn_layout(&h);
                self.heard_history(&from, &h);
                let mine = Box::new(self.layout.clone());
                self.respond_peer(id, PeerResponse::Layout(mine));
            }
            PeerRequest::Hello(hello) => self.on_hello(id, from, hello),
            PeerRequest::Paxos(req) => self.on_paxos_request(PaxosTo::Remote(id), &from, *req),
            _ => self.respond_peer(
                id,
                PeerResponse::Error(RequestError::Internal("not a layout message".into())),
            ),
        }
    }

    fn on_hello(&mut self, id: InboundId, from: NodeId, hello: Hello) {
        if hello.id != from {
            metrics::counter!(crate::metrics::PEER_REFUSED_TOTAL, "reason" => "certificate_mismatch")
                .increment(1);
            tracing::warn!(certificate = %from, claimed = %hello.id, "hello refused: the node certificate is for another id");
            self.respond_peer(
                id,
                PeerResponse::Error(RequestError::NotAllowed(format!(
                    "the node certificate is for {from}, the hello claims {}",
                    hello.id
                ))),
            );
            return;
        }
        if self.agree.candidate.is_some() && self.layout.version() == 0 {
            self.respond_peer(
                id,
                PeerResponse::Error(RequestError::LayoutRefused(format!(
                    "node {} is a candidate itself and knows no layout",
                    self.me
                ))),
            );
            return;
        }
        let mine = self.layout.settings();
        let differs = if hello.settings.cluster_id.is_empty() {
            let mut theirs = hello.settings.clone();
            theirs.cluster_id.clone_from(&mine.cluster_id);
            mine.mismatch(&theirs)
        } else {
            mine.mismatch(&hello.settings)
        };
        if let Some(m) = differs {
            metrics::counter!(crate::metrics::PEER_REFUSED_TOTAL, "reason" => "cluster_mismatch")
                .increment(1);
            tracing::warn!(node = %from, "hello refused: {m}");
            self.respond_peer(
                id,
                PeerResponse::Error(RequestError::ClusterMismatch(format!(
                    "candidate {from} does not fit this cluster: {m}"
                ))),
            );
            return;
        }
        if self.layout.current().member(&from).is_none() {
            if !self.agree.candidates.contains_key(&from)
                && self.agree.candidates.len() >= MAX_CANDIDATES
            {
                let oldest = self
                    .agree
                    .candidates
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(id, _)| id.clone());
                if let Some(o) = oldest {
                    self.agree.candidates.remove(&o);
                }
            }
            self.agree.candidates.insert(from, (hello.addr, self.mono));
        }
        let h = Box::new(self.layout.clone());
        self.respond_peer(id, PeerResponse::Layout(h));
    }

    /// A candidate's hello round: to every bootstrap contact, then wait longer.
    pub(super) fn hello_round(&mut self) {
        let Some(c) = &mut self.agree.candidate else {
            return;
        };
        let hello = Hello {
            id: self.me.clone(),
            addr: c.addr,
            settings: self.layout.settings().clone(),
        };
        let targets: Vec<NodeId> = c
            .bootstrap
            .iter()
            .map(|(id, _)| id.clone())
            .filter(|id| *id != self.me)
            .collect();
        let next = c.interval;
        c.interval = (c.interval * 2).min(MAX_HELLO_INTERVAL);
        let timeout = self.cfg.membership.probe_timeout;
        for to in targets {
            self.send(
                to,
                PeerRequest::Hello(hello.clone()),
                timeout,
                Waiter::LayoutSend(LayoutSend::Hello),
            );
        }
        self.timers.insert((self.mono + next, Timer::Hello));
    }

    /// The outcome of a layout `Send`.
    pub(super) fn on_layout_send(
        &mut self,
        what: LayoutSend,
        to: Option<NodeId>,
        result: Result<PeerResponse, SendError>,
    ) {
        let Some(to) = to else {
            return;
        };
        let fetch = matches!(what, LayoutSend::Fetch);
        let recheck = fetch || matches!(what, LayoutSend::Push);
        if fetch {
            self.agree.fetching.remove(&to);
        } else if recheck {
            self.agree.pushing.remove(&to);
        }
        match (what, result) {
            (_, Ok(PeerResponse::Layout(h))) => {
                self.learn_layout(&h);
                self.heard_history(&to, &h);
            }
            (LayoutSend::Paxos, Ok(PeerResponse::Paxos(reply))) => self.on_paxos_reply(&to, *reply),
            (LayoutSend::Paxos, _) => self.on_paxos_failed(&to),
            _ => {}
        }
        if recheck {
            // Answered or not: writes waiting on its refusal are settled now.
            self.recheck_parked_writes(&to);
        }
    }

    // ---- Paxos: acceptor ----

    fn on_paxos_request(&mut self, to: PaxosTo, from: &NodeId, req: PaxosRequest<Layout>) {
        let slot = req.slot();
        let mine = self.layout.version();
        if slot <= mine {
            // Decided here already: the proposer learns the outcome from the history.
            match to {
                PaxosTo::Remote(id) => {
                    let h = Box::new(self.layout.clone());
                    self.respond_peer(id, PeerResponse::Layout(h));
                }
                PaxosTo::Local => self.finish_proposal_if_decided(),
            }
            return;
        }
        let refusal = if slot > mine + 1 {
            self.fetch_layout(from.clone());
            Some(format!(
                "node {} is at layout version {mine}: slot {slot} is not open here yet",
                self.me
            ))
        } else if !self.layout.current().owners().any(|m| m.id == self.me) {
            Some(format!(
                "node {} owns no partitions in version {mine}: not an acceptor",
                self.me
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            match to {
                PaxosTo::Remote(id) => {
                    self.respond_peer(id, PeerResponse::Error(RequestError::LayoutRefused(why)))
                }
                PaxosTo::Local => self.on_paxos_failed(&self.me.clone()),
            }
            return;
        }
        let acceptor = self.agree.acceptors.entry(slot).or_default();
        let (reply, changed) = acceptor.handle(&req);
        if changed {
            self.agree.acceptor_seq = self.agree.seq + 1;
        }
        if changed || self.agree.durable < self.agree.acceptor_seq {
            self.save_layout(LayoutSave::Acceptor {
                to,
                reply: Box::new(reply),
            });
        } else {
            self.paxos_answer(to, reply);
        }
    }

    fn paxos_answer(&mut self, to: PaxosTo, reply: PaxosReply<Layout>) {
        match to {
            PaxosTo::Remote(id) => self.respond_peer(id, PeerResponse::Paxos(Box::new(reply))),
            PaxosTo::Local => self.on_paxos_reply(&self.me.clone(), reply),
        }
    }

    /// A layout save finished.
    pub(super) fn on_layout_saved(&mut self, why: LayoutSave, seq: u64, result: StorageResult) {
        let ok = matches!(result, Ok(StorageReply::LayoutSaved));
        let label = if ok { "ok" } else { "failed" };
        metrics::counter!(crate::metrics::LAYOUT_SAVES_TOTAL, "result" => label).increment(1);
        if ok {
            self.agree.durable = self.agree.durable.max(seq);
        }
        let failure = || {
            RequestError::Storage(match &result {
                Err(e) => format!("saving the layout state failed: {e}"),
                Ok(_) => "saving the layout state failed".into(),
            })
        };
        match why {
            LayoutSave::History => {
                if !ok {
                    tracing::warn!(node = %self.me, "saving the layout history failed: {}", failure());
                }
            }
            LayoutSave::Acceptor { to, reply } => match (ok, to) {
                (true, to) => self.paxos_answer(to, *reply),
                (false, PaxosTo::Remote(id)) => {
                    self.respond_peer(id, PeerResponse::Error(failure()));
                }
                (false, PaxosTo::Local) => self.on_paxos_failed(&self.me.clone()),
            },
            LayoutSave::Cluster { inbound, reply } => {
                let response = if ok {
                    ClientResponse::Cluster(reply)
                } else {
                    ClientResponse::Error(failure())
                };
                self.respond_client(inbound, response);
            }
            LayoutSave::Propose { sends } => {
                if ok {
                    self.paxos_sends(sends);
                } else {
                    self.end_proposal("failed", Err(failure()));
                }
            }
        }
    }

    // ---- Paxos: proposer ----

    /// Runs `commit --version version` of the staged changes: refused unless the layout
    /// is at `version` and something is staged, and, when the commit names the plan it
    /// applies (`plan`), unless the changes staged now are that plan (another operator
    /// may have unstaged and restaged on this node since); otherwise proposes the next
    /// layout.
    pub(super) fn start_commit(&mut self, id: InboundId, version: u64, plan: Option<PlanId>) {
        let next = if self.agree.proposal.is_some() {
            Err(RequestError::LayoutRefused(
                "a commit is already running on this node; wait for its answer".to_string(),
            ))
        } else {
            let current = self.layout.current();
            let staged = PlanId::of(version, &self.agree.staged);
            match plan {
                // A version mismatch or nothing staged is refused as for a plain commit
                // (below): that names the version to plan on, or that nothing is staged.
                Some(planned)
                    if planned != staged
                        && version == current.version()
                        && !self.agree.staged.is_empty() =>
                {
                    Err(RequestError::PlanChanged { planned, staged })
                }
                _ => current
                    .commit(&self.agree.staged, version)
                    .map_err(|e| RequestError::LayoutRefused(e.to_string())),
            }
        };
        let next = match next {
            Ok(n) => n,
            Err(why) => {
                let result = match why {
                    RequestError::PlanChanged { .. } => "plan_changed",
                    _ => "refused",
                };
                metrics::counter!(crate::metrics::LAYOUT_COMMITS_TOTAL, "result" => result)
                    .increment(1);
                self.respond_client(id, ClientResponse::Error(why));
                return;
            }
        };
        let acceptors: Vec<NodeId> = self
            .layout
            .current()
            .owners()
            .map(|m| m.id.clone())
            .collect();
        let n_acceptors = acceptors.len();
        self.agree.round += 1;
        let started = Proposer::start(
            version + 1,
            self.me.clone(),
            acceptors,
            self.agree.round,
            next.clone(),
        );
        let (proposer, sends) = match started {
            Ok(p) => p,
            Err(e) => {
                self.refuse_layout(id, e.to_string());
                return;
            }
        };
        self.agree.proposal = Some(Proposal {
            inbound: id,
            proposer,
            own: next,
            rounds: 1,
            failed: BTreeSet::new(),
            acceptors: n_acceptors,
        });
        self.arm_commit_timer();
        // The round is durable before any acceptor sees it.
        self.save_layout(LayoutSave::Propose { sends });
    }

    fn arm_commit_timer(&mut self) {
        let Some(p) = &self.agree.proposal else {
            return;
        };
        let rounds = p.rounds;
        let wait = self.cfg.membership.probe_timeout * 2;
        self.timers
            .insert((self.mono + wait, Timer::CommitRetry(rounds)));
    }

    fn paxos_sends(&mut self, sends: Sends<Layout>) {
        let Some(p) = &self.agree.proposal else {
            return;
        };
        let ballot = p.proposer.ballot().clone();
        let timeout = self.cfg.membership.probe_timeout;
        for (to, req) in sends {
            // Requests of a round that was superseded before its save finished are dropped.
            let current = match &req {
                PaxosRequest::Prepare { ballot: b, .. }
                | PaxosRequest::Accept { ballot: b, .. } => *b == ballot,
            };
            if !current {
                continue;
            }
            if to == self.me {
                let me = self.me.clone();
                self.on_paxos_request(PaxosTo::Local, &me, req);
            } else {
                self.send(
                    to,
                    PeerRequest::Paxos(Box::new(req)),
                    timeout,
                    Waiter::LayoutSend(LayoutSend::Paxos),
                );
            }
        }
    }

    fn on_paxos_reply(&mut self, from: &NodeId, reply: PaxosReply<Layout>) {
        let Some(p) = &mut self.agree.proposal else {
            return;
        };
        match p.proposer.on_reply(from, reply) {
            ProposerStep::Wait => {}
            ProposerStep::Send(sends) => self.paxos_sends(sends),
            ProposerStep::Decided(layout) => self.on_decided(layout),
            ProposerStep::Preempted => {
                // Another proposer is ahead: retry after a random pause, so that two
                // proposers do not keep pre-empting each other.
                let rounds = p.rounds;
                let base = self.cfg.membership.probe_interval;
                let wait = base + self.jitter(base * rounds.min(8));
                self.timers
                    .insert((self.mono + wait, Timer::CommitRetry(rounds)));
            }
        }
    }

    fn on_paxos_failed(&mut self, from: &NodeId) {
        let Some(p) = &mut self.agree.proposal else {
            return;
        };
        p.failed.insert(from.clone());
        let majority = p.acceptors / 2 + 1;
        if p.acceptors - p.failed.len() < majority {
            // No majority can answer this round: start the next one at once.
            let rounds = p.rounds;
            self.on_commit_timer(rounds);
        }
    }

    /// The timer of round `rounds` fired (or the round cannot succeed): start the next
    /// round, or give up after [`MAX_COMMIT_ROUNDS`].
    pub(super) fn on_commit_timer(&mut self, rounds: u32) {
        let Some(p) = &mut self.agree.proposal else {
            return;
        };
        if p.rounds != rounds || p.proposer.decided().is_some() {
            return;
        }
        if p.rounds >= MAX_COMMIT_ROUNDS {
            let slot = p.proposer.slot();
            self.end_proposal(
                "failed",
                Err(RequestError::LayoutRefused(format!(
                    "the commit of version {slot} reached no majority of the layout's members \
                     in {MAX_COMMIT_ROUNDS} rounds; it may still be decided later: check \
                     `cluster status` before committing again"
                ))),
            );
            return;
        }
        p.rounds += 1;
        p.failed.clear();
        let sends = p.proposer.retry();
        self.agree.round = self.agree.round.max(p.proposer.ballot().round);
        self.arm_commit_timer();
        self.save_layout(LayoutSave::Propose { sends });
    }

    fn on_decided(&mut self, layout: Layout) {
        let v = layout.version();
        if v == self.layout.version() + 1 {
            let before = self.layout.version();
            if self.layout.push(layout).is_ok() {
                self.layout_installed(before);
            }
        }
        self.finish_proposal_if_decided();
        self.push_layout();
    }

    /// Ends the proposal once its slot is decided in this node's history (by its own
    /// proposer, or learned from a peer): its own layout won, or another did.
    fn finish_proposal_if_decided(&mut self) {
        let Some(p) = &self.agree.proposal else {
            return;
        };
        let slot = p.proposer.slot();
        let Some(decided) = self.layout.get(slot).cloned().or_else(|| {
            // Pruned already: decided long ago, by someone; compare what we can.
            (self.layout.version() >= slot).then(|| self.layout.current().clone())
        }) else {
            return;
        };
        let current = self.layout.version();
        if decided == p.own {
            self.agree.staged.clear();
            self.end_proposal("committed", Ok(ClusterReply::Committed { version: slot }));
            self.persist_layout();
        } else {
            self.end_proposal(
                "lost",
                Err(RequestError::LayoutRefused(format!(
                    "a concurrent commit decided version {slot} first; the layout is now at \
                     version {current}: look at `cluster plan` again and commit --version \
                     {current}"
                ))),
            );
        }
    }

    fn end_proposal(&mut self, label: &'static str, answer: Result<ClusterReply, RequestError>) {
        let Some(p) = self.agree.proposal.take() else {
            return;
        };
        metrics::counter!(crate::metrics::LAYOUT_COMMITS_TOTAL, "result" => label).increment(1);
        let response = match answer {
            Ok(r) => ClientResponse::Cluster(r),
            Err(e) => ClientResponse::Error(e),
        };
        self.respond_client(p.inbound, response);
    }

    /// Sends the history to every member (removed ones excepted) and candidate.
    fn push_layout(&mut self) {
        let mut targets: BTreeSet<NodeId> = self
            .layout
            .current()
            .members()
            .iter()
            .filter(|m| m.state != crate::layout::MemberState::Removed)
            .map(|m| m.id.clone())
            .collect();
        targets.extend(self.agree.candidates.keys().cloned());
        targets.remove(&self.me);
        let timeout = self.cfg.membership.probe_timeout;
        for to in targets {
            let h = Box::new(self.layout.clone());
            self.send(
                to,
                PeerRequest::LayoutPush(h),
                timeout,
                Waiter::LayoutSend(LayoutSend::Push),
            );
        }
    }

    // ---- staging ----

    /// Saves the staged changes, then answers `reply`.
    pub(super) fn save_staged(&mut self, inbound: InboundId, reply: ClusterReply) {
        self.save_layout(LayoutSave::Cluster { inbound, reply });
    }

    /// A plan's answer once the tree summaries of the partitions that move are known.
    pub(super) fn answer_plan(
        &mut self,
        inbound: InboundId,
        mut report: PlanReport,
        copies: &[(shoal_ring::PartitionId, u64)],
        result: StorageResult,
    ) {
        if let Ok(StorageReply::TreeSummaries(s)) = result {
            report.bytes_estimate = super::cluster::bytes_estimate(copies, &s);
        }
        self.respond_client(inbound, ClientResponse::Cluster(ClusterReply::Plan(report)));
    }
}
