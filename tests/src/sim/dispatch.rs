//! How the simulator carries out events: delivering messages to engines, draining the
//! engines' commands into the network and storage, engine timers, crashes, restarts and
//! partitions.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use shoal_proto::wire::{
    self, ClientRequest, LayoutStamp, MemberState, PeerRequest, PeerResponse, Request, Response,
};
use shoal_proto::{
    split_at_sync, Command, Dot, InboundId, Monotonic, Now, Object, RequestError, RequestId,
    SendError, Sender, StorageFailure, StorageOp, StorageReply, StorageResult, Time,
};
use shoal_ring::{NodeId, PartitionId};

use super::config::StorageTiming;
use super::event::{Event, StorageWork};
use super::log;
use super::network::{refusal_delay, storage_delay, Fate, Partition, RpcKey};
use super::node::{ReplyTo, StartAs};
use super::{MemberChange, Phase, Sim, SimError};
use crate::history::{Coordination, OpId, Reaping};

impl Sim {
    /// Carry out one event.
    pub(super) fn handle(&mut self, event: Event) -> Result<(), SimError> {
        if let Some(node) = event.handler() {
            let until = self.nodes[node].paused_until;
            if until > self.now {
                // A paused node handles it when it resumes (in the order it arrived).
                self.queue.push(until, event);
                return Ok(());
            }
        }
        match event {
            Event::PeerRequest {
                rpc,
                to,
                to_incarnation,
                stamp,
                request,
                copy,
            } => self.deliver_peer_request(rpc, to, to_incarnation, stamp, request, copy),
            Event::PeerResponse { rpc, result } => self.finish_rpc(rpc, result),
            Event::RpcTimeout { rpc } => self.finish_rpc(rpc, Err(SendError::Timeout)),
            Event::StorageDone {
                node,
                incarnation,
                id,
                work,
                writes,
            } => self.storage_done(node, incarnation, id, work, writes),
            Event::GroupSync { node, incarnation } => self.group_sync(node, incarnation),
            Event::Timer { node, incarnation } => self.timer(node, incarnation),
            Event::ClientRequest {
                client,
                op,
                node,
                request,
            } => self.deliver_client_request(client, op, node, request),
            Event::ClientResponse {
                client,
                op,
                node,
                result,
            } => match self.operator_of(client) {
                Some(k) => self.operator_response(k, op, result),
                None => self.client_answer(client, op, node, result),
            },
            Event::ClientTimeout { client, op } => match self.operator_of(client) {
                Some(k) => self.operator_timeout(k, op),
                None => self.client_timeout(client, op),
            },
            Event::ClientWake { client } => self.client_wake(client),
            Event::FaultTick => self.fault_tick()?,
            Event::Partition {
                side,
                one_way,
                length,
            } => self.start_partition(side, one_way, length),
            Event::Heal { id } => self.heal(id),
            Event::Restart { node } => {
                if !self.nodes[node].is_up() && !self.nodes[node].dormant {
                    self.start_node(node)?;
                    self.faults.restarts += 1;
                }
            }
            Event::Crash { node, length } => {
                if self.phase == Phase::Safety {
                    self.crash(node, Some(length));
                }
            }
            Event::ScriptedOp { index } => self.scripted_op(index),
            Event::Pause { node, length } => {
                if self.phase == Phase::Safety && self.nodes[node].is_up() {
                    self.nodes[node].paused_until = self.now + length;
                    self.note(node, &format!("PAUSE for {length:?}"));
                }
            }
            Event::PowerCut { node, length } => self.power_cut(node, Some(length), Some(0)),
            Event::Backup { node } => {
                self.nodes[node].take_backup();
                self.note(node, "BACKUP");
            }
            Event::Restore { node } => self.restore(node)?,
            Event::LayoutChange { index } => self.layout_change(index)?,
            Event::OperatorWake { operator } => self.operator_wake(operator),
        }
        Ok(())
    }

    pub(super) fn name(&self, node: usize) -> String {
        self.nodes[node].id.to_string()
    }

    pub(super) fn note(&mut self, node: usize, what: &str) {
        let who = self.name(node);
        self.log.line(self.now, &who, what);
    }

    /// Start (or restart) node `i` on its storage: a new engine seed and a new actor id,
    /// both from the run's RNG.
    pub(super) fn start_node(&mut self, i: usize) -> Result<(), SimError> {
        let seed: u64 = self.rng.random();
        let actor: u64 = self.rng.random();
        self.sync_due(i);
        let now = self.node_now(i);
        let members = self.setup.nodes;
        let how = if !self.cfg.layout_agreement {
            StartAs::Member {
                decided: &self.decided,
            }
        } else if i < members {
            StartAs::Seed {
                decided: &self.decided,
            }
        } else {
            StartAs::Candidate {
                addr: super::node::address(i),
                partitions: super::PARTITIONS,
                bootstrap: (0..members)
                    .map(|j| (self.nodes[j].id.clone(), super::node::address(j)))
                    .collect(),
            }
        };
        let node = &mut self.nodes[i];
        node.start(&self.engine_cfg, &how, seed, actor, now)
            .map_err(|source| SimError::Start {
                node: node.id.to_string(),
                source,
            })?;
        let what = format!(
            "START incarnation {} actor {}{}",
            node.incarnation,
            node.running
                .as_ref()
                .map(|r| crate::history::short_actor(r.executor.actor()))
                .unwrap_or_default(),
            if node.disk_is_full() {
                " on a FULL disk"
            } else {
                ""
            }
        );
        self.note(i, &what);
        self.check_versions(i, true);
        self.arm_timer(i);
        Ok(())
    }

    /// Restore node `i` from its backup: crash it (if up), put the backup's copy in place
    /// of its data, and start it in restore mode at once.
    fn restore(&mut self, i: usize) -> Result<(), SimError> {
        if self.nodes[i].is_up() {
            // Restarted here, not by the crash's own restart (which finds it up).
            self.crash(i, Some(Duration::from_secs(3600)));
        }
        if !self.nodes[i].use_backup() {
            self.note(i, "RESTORE skipped: no backup taken");
            return Ok(());
        }
        self.start_node(i)?;
        if let Some(r) = self.nodes[i].running.as_mut() {
            r.engine.begin_restore();
        }
        self.note(i, "RESTORE from backup: restore mode");
        self.drain(i);
        self.arm_timer(i);
        Ok(())
    }

    /// Crash node `i`: its engine, its pending storage completions and the requests it
    /// was serving are gone; its peers' sends to it time out. It restarts after `down`
    /// (`None`: a random while).
    pub(super) fn crash(&mut self, i: usize, down: Option<Duration>) {
        if self.nodes[i].crash().is_none() {
            return;
        }
        self.net.forget_sender(i);
        // Peers with requests in flight to it see the connection drop (or, half the
        // time, hear nothing until their timeout).
        for rpc in self.net.sent_to(i) {
            if self.rng.random_bool(0.5) {
                let at = self.now + refusal_delay(&mut self.rng);
                let result = Err(SendError::Lost("connection lost".into()));
                self.queue.push(at, Event::PeerResponse { rpc, result });
            }
        }
        self.faults.crashes += 1;
        self.note(i, "CRASH");
        let down =
            down.unwrap_or_else(|| Duration::from_millis(self.rng.random_range(100..=3_000)));
        self.queue.push(self.now + down, Event::Restart { node: i });
    }

    fn fault_tick(&mut self) -> Result<(), SimError> {
        if self.phase != Phase::Safety {
            return Ok(());
        }
        let k = self.nodes.len();
        let f = self.net.faults;
        if f.crash > 0.0 && self.rng.random_bool(f.crash) {
            let up: Vec<usize> = (0..k).filter(|&i| self.nodes[i].is_up()).collect();
            // At most two nodes down at once (one in a 3-node cluster).
            let max_down = (k - 1).min(2);
            if k - up.len() < max_down && !up.is_empty() {
                let victim = up[self.rng.random_range(0..up.len())];
                self.crash(victim, None);
            }
        }
        if f.partition > 0.0 && self.net.partition.is_none() && self.rng.random_bool(f.partition) {
            let mut all: Vec<usize> = (0..k).collect();
            all.shuffle(&mut self.rng);
            let size = self.rng.random_range(1..=k / 2);
            let side: BTreeSet<usize> = all.into_iter().take(size).collect();
            let length = Duration::from_millis(self.rng.random_range(200..=3_000));
            let one_way = self.rng.random_bool(0.25);
            self.start_partition(side, one_way, length);
        }
        self.power_cut_tick();
        self.queue
            .push(self.now + super::config::FAULT_TICK, Event::FaultTick);
        Ok(())
    }

    fn start_partition(&mut self, side: BTreeSet<usize>, one_way: bool, length: Duration) {
        if self.phase != Phase::Safety {
            return;
        }
        self.net.partitions_started += 1;
        let id = self.net.partitions_started;
        let names: Vec<String> = side.iter().map(|&i| self.name(i)).collect();
        self.log.line(
            self.now,
            "net",
            &format!(
                "PARTITION #{id} {names:?} {} rest for {length:?}",
                if one_way { "->X" } else { "|" }
            ),
        );
        self.net.partition = Some(Partition { id, side, one_way });
        self.faults.partitions += 1;
        self.queue.push(self.now + length, Event::Heal { id });
    }

    fn heal(&mut self, id: u64) {
        if self.net.partition.as_ref().is_some_and(|p| p.id == id) {
            self.net.partition = None;
            self.log.line(self.now, "net", &format!("HEAL #{id}"));
        }
    }

    /// Node `i`'s clocks now: what its engine is handed. Its wall clock is skewed
    /// ([`clock::Clocks`]); its monotonic clock is the same local reading, so that timers
    /// the engine sets are on the node's own (drifting, never backwards) clock.
    pub(crate) fn node_now(&self, i: usize) -> Now {
        Now::from_virtual(self.clocks.local(i, self.now))
    }

    /// Schedule the node's next engine timer, if it is earlier than the one scheduled.
    /// The engine names it on its own clock; it fires when that clock reaches it.
    pub(super) fn arm_timer(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let incarnation = node.incarnation;
        let Some(r) = node.running.as_mut() else {
            return;
        };
        let Some(t) = r.engine.poll_timeout().map(Monotonic::as_virtual) else {
            return;
        };
        let at = self.clocks.virtual_at(i, t, now);
        if r.timer_at.is_none_or(|scheduled| at < scheduled) {
            r.timer_at = Some(at);
            self.queue.push(
                at,
                Event::Timer {
                    node: i,
                    incarnation,
                },
            );
        }
    }

    fn timer(&mut self, i: usize, incarnation: u32) {
        let now = self.now;
        let clocks = self.node_now(i);
        let node = &mut self.nodes[i];
        if node.incarnation != incarnation {
            return;
        }
        let Some(r) = node.running.as_mut() else {
            return;
        };
        // `<=`, not `==`: a paused node handles its timer event late.
        if r.timer_at.is_some_and(|at| at <= now) {
            r.timer_at = None;
        }
        if r.engine.poll_timeout().is_some_and(|t| t <= clocks.mono) {
            r.engine.handle_timeout(clocks);
            self.drain(i);
        } else {
            self.arm_timer(i);
        }
    }

    /// Carry out every command the engine of node `i` has queued.
    pub(super) fn drain(&mut self, i: usize) {
        while let Some(cmd) = self.nodes[i]
            .running
            .as_mut()
            .and_then(|r| r.engine.poll_command())
        {
            match cmd {
                Command::Respond { id, response } => {
                    let reply_to = self.nodes[i]
                        .running
                        .as_mut()
                        .and_then(|r| r.inbound.remove(&id.0));
                    self.note(
                        i,
                        &format!("respond #{} {}", id.0, log::response(&response)),
                    );
                    match reply_to {
                        Some(ReplyTo::Peer(rpc)) => self.respond_peer(i, rpc, response),
                        Some(ReplyTo::Client { client, op }) => {
                            self.check_durable_at_ack(i, op, &response);
                            self.respond_client(i, client, op, response)
                        }
                        None => self.note(i, &format!("respond to unknown request #{}", id.0)),
                    }
                }
                Command::Send {
                    id,
                    to,
                    request,
                    timeout,
                } => self.send(i, id, &to, request, timeout),
                Command::Storage { id, op } => self.run_storage(i, id, op),
            }
        }
        self.arm_timer(i);
        self.note_member_changes(i);
        self.check_versions(i, false);
    }

    /// Record the changes of node `i`'s failure detector since it was last looked at.
    fn note_member_changes(&mut self, i: usize) {
        let Some(r) = self.nodes[i].running.as_mut() else {
            return;
        };
        let membership = r.engine.membership();
        let down: BTreeSet<NodeId> = membership
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !membership.is_up(id))
            .cloned()
            .collect();
        if down == r.down {
            return;
        }
        let changes: Vec<(NodeId, MemberState)> = down
            .difference(&r.down)
            .map(|id| (id.clone(), MemberState::Down))
            .chain(
                r.down
                    .difference(&down)
                    .map(|id| (id.clone(), MemberState::Up)),
            )
            .collect();
        r.down = down;
        for (peer, state) in changes {
            self.note(i, &format!("MEMBER {peer} {}", state.as_str()));
            self.member_changes.push(MemberChange {
                at: self.now,
                observer: self.name(i),
                peer: peer.to_string(),
                state,
            });
        }
    }

    fn send(
        &mut self,
        from: usize,
        id: RequestId,
        to: &NodeId,
        request: PeerRequest,
        timeout: Duration,
    ) {
        let rpc = RpcKey {
            from,
            incarnation: self.nodes[from].incarnation,
            id,
        };
        let desc = log::peer_request(&request);
        let Some(target) = self.index.get(to).copied() else {
            self.note(from, &format!("send #{} -> {to} unknown: {desc}", id.0));
            let at = self.now + refusal_delay(&mut self.rng);
            self.net.rpcs.insert(rpc, None);
            let result = Err(SendError::Unreachable(format!("no such node {to}")));
            self.queue.push(at, Event::PeerResponse { rpc, result });
            return;
        };
        self.net.rpcs.insert(rpc, Some(target));
        self.queue
            .push(self.now + timeout, Event::RpcTimeout { rpc });
        // The transport refuses a request larger than a frame before sending it; the
        // node's driver reports that as an outcome-unknown error.
        let len = wire::peer_request_len(&request);
        let max = self.engine_cfg.limits.max_frame_bytes();
        if len > max {
            self.faults.frames_too_large += 1;
            self.note(
                from,
                &format!(
                    "send #{} -> {to} TOO LARGE ({len} > {max} bytes): {desc}",
                    id.0
                ),
            );
            let result = Err(SendError::Lost(format!(
                "frame of {len} bytes exceeds the limit of {max}"
            )));
            self.queue.push(
                self.now + refusal_delay(&mut self.rng),
                Event::PeerResponse { rpc, result },
            );
            return;
        }
        if !self.nodes[target].is_up() {
            self.faults.refused += 1;
            self.note(
                from,
                &format!("send #{} -> {to} REFUSED (down): {desc}", id.0),
            );
            let at = self.now + refusal_delay(&mut self.rng);
            let result = Err(SendError::Unreachable(format!(
                "{to} refused the connection"
            )));
            self.queue.push(at, Event::PeerResponse { rpc, result });
            return;
        }
        if !self.net.connected(from, target) {
            self.faults.dropped += 1;
            self.note(
                from,
                &format!("send #{} -> {to} CUT (partition): {desc}", id.0),
            );
            return;
        }
        let to_incarnation = self.nodes[target].incarnation;
        let Some(stamp) = self.nodes[from].running.as_ref().map(|r| r.engine.stamp()) else {
            return;
        };
        let copies = if self.net.duplicates(&mut self.rng) {
            self.faults.duplicated += 1;
            2
        } else {
            1
        };
        for copy in 0..copies {
            let (fate, slow) = self.net.fate(&mut self.rng);
            if slow {
                self.faults.slowed += 1;
            }
            match fate {
                Fate::Drop => {
                    self.faults.dropped += 1;
                    self.note(from, &format!("send #{} -> {to} DROPPED: {desc}", id.0));
                }
                Fate::Deliver(delay) => {
                    self.note(
                        from,
                        &format!("send #{} -> {to} in {}us: {desc}", id.0, delay.as_micros()),
                    );
                    self.queue.push(
                        self.now + delay,
                        Event::PeerRequest {
                            rpc,
                            to: target,
                            to_incarnation,
                            stamp: stamp.clone(),
                            request: request.clone(),
                            copy,
                        },
                    );
                }
            }
        }
    }

    fn deliver_peer_request(
        &mut self,
        rpc: RpcKey,
        to: usize,
        to_incarnation: u32,
        stamp: LayoutStamp,
        request: PeerRequest,
        copy: u8,
    ) {
        let desc = log::peer_request(&request);
        let from = self.name(rpc.from);
        if self.nodes[to].incarnation != to_incarnation || !self.nodes[to].is_up() {
            self.faults.dropped += 1;
            self.note(
                to,
                &format!("lost (receiver restarted or down) from {from}: {desc}"),
            );
            return;
        }
        if !self.net.connected(rpc.from, to) {
            self.faults.dropped += 1;
            self.note(to, &format!("CUT in flight from {from}: {desc}"));
            return;
        }
        let now = self.node_now(to);
        let sender = self.nodes[rpc.from].id.clone();
        let Some(r) = self.nodes[to].running.as_mut() else {
            return;
        };
        let inbound = r.next_inbound;
        r.next_inbound += 1;
        r.inbound.insert(inbound, ReplyTo::Peer(rpc));
        let dup = if copy > 0 { " (duplicate)" } else { "" };
        self.note(to, &format!("recv #{inbound} from {from}{dup}: {desc}"));
        if let Some(r) = self.nodes[to].running.as_mut() {
            r.engine.handle_request(
                now,
                InboundId(inbound),
                Sender::Node(sender),
                Request::Stamped(stamp, request),
            );
        }
        self.drain(to);
    }

    /// A node answered a peer's request: the answer travels back (or is lost).
    fn respond_peer(&mut self, responder: usize, rpc: RpcKey, response: Response) {
        // The node's handler answers a typed error in place of a response larger than a
        // frame (the transport would not send it).
        let response = wire::fit_response(response, self.engine_cfg.limits.max_frame_bytes());
        if let Response::Error(RequestError::ResponseTooLarge { len, max }) = &response {
            self.faults.frames_too_large += 1;
            let line = format!("response TOO LARGE ({len} > {max} bytes): sent as an error");
            self.note(responder, &line);
        }
        let result = Ok(response.into_peer());
        if !self.net.connected(responder, rpc.from) {
            self.faults.dropped += 1;
            self.note(responder, "response CUT (partition)");
            return;
        }
        let (fate, slow) = self.net.fate(&mut self.rng);
        if slow {
            self.faults.slowed += 1;
        }
        match fate {
            Fate::Drop => {
                self.faults.dropped += 1;
                self.note(responder, "response DROPPED");
            }
            Fate::Deliver(delay) => {
                self.queue
                    .push(self.now + delay, Event::PeerResponse { rpc, result });
            }
        }
    }

    /// The one outcome of a send reaches its sender; later ones are ignored.
    fn finish_rpc(&mut self, rpc: RpcKey, result: Result<PeerResponse, SendError>) {
        if self.net.rpcs.remove(&rpc).is_none() {
            return;
        }
        let node = &self.nodes[rpc.from];
        if node.incarnation != rpc.incarnation || !node.is_up() {
            return;
        }
        let what = format!("outcome #{}: {}", rpc.id.0, log::send_result(&result));
        self.note(rpc.from, &what);
        let now = self.node_now(rpc.from);
        if let Some(r) = self.nodes[rpc.from].running.as_mut() {
            r.engine.handle_response(now, rpc.id, result);
        }
        self.drain(rpc.from);
    }

    /// A storage op: applied now or when it completes (per the run's
    /// [`StorageTiming`]); its completion arrives after a small random delay.
    ///
    /// An injected storage failure on a data write is a full disk rather than a failing
    /// one: the node's storage refuses every write with `DiskFull` (through the real
    /// executor) and serves reads for [`DISK_FULL_SPELL`], then frees up.
    fn run_storage(&mut self, i: usize, id: RequestId, op: StorageOp) {
        let incarnation = self.nodes[i].incarnation;
        let writes = op.writes();
        if self.nodes[i].free_disk_if_due(self.now) {
            self.note(i, "disk has room again");
        }
        let fail = self.net.faults.storage_failure;
        let mut injected = fail > 0.0 && self.rng.random_bool(fail);
        if injected && fills_disk(&op) {
            self.faults.storage_failures += 1;
            self.nodes[i].fill_disk(self.now + DISK_FULL_SPELL);
            self.note(i, &format!("disk FULL (injected) for {DISK_FULL_SPELL:?}"));
            injected = false;
        }
        let work = if injected {
            self.faults.storage_failures += 1;
            let what = format!(
                "storage #{} FAILED (injected) {}",
                id.0,
                log::storage_op(&op)
            );
            self.note(i, &what);
            StorageWork::Applied(Err(StorageFailure::Engine(
                "injected storage failure".into(),
            )))
        } else {
            match self.setup.storage_timing {
                StorageTiming::AtIssue => StorageWork::Applied(self.apply_storage(i, id, op)),
                StorageTiming::AtCompletion => {
                    let what = format!("storage #{} queued {}", id.0, log::storage_op(&op));
                    self.note(i, &what);
                    StorageWork::Due(op)
                }
            }
        };
        let stall = self.net.faults.slow;
        let mut at = self.now + storage_delay(&mut self.rng, stall);
        let service = self.cfg.storage_service_time;
        if !service.is_zero() {
            // One operation at a time: this one waits for those before it.
            let node = &mut self.nodes[i];
            let start = node.disk_free_at.max(self.now);
            node.disk_free_at = start + service;
            at = at + node.disk_free_at.saturating_since(self.now);
        }
        self.queue.push(
            at,
            Event::StorageDone {
                node: i,
                incarnation,
                id,
                work,
                writes,
            },
        );
    }

    /// Run a storage op through node `i`'s executor, recording coordinated writes.
    fn apply_storage(&mut self, i: usize, id: RequestId, op: StorageOp) -> StorageResult {
        self.sync_due(i);
        let now = self.now;
        let desc = log::storage_op(&op);
        let coordinate = match &op {
            StorageOp::Coordinate {
                key,
                context,
                value,
                ..
            } => Some((key.clone(), context.clone(), value.clone())),
            _ => None,
        };
        let Some(r) = self.nodes[i].running.as_ref() else {
            return Err(StorageFailure::Engine("node is down".into()));
        };
        // What a reap is about to delete, to record what it did delete.
        let reaping: Vec<(PartitionId, Vec<u8>, Object)> = match &op {
            StorageOp::Reap { partition, keys } => keys
                .iter()
                .filter_map(|(key, _)| {
                    let o = r.executor.stored_object(*partition, key).ok()??;
                    Some((*partition, key.clone(), o))
                })
                .collect(),
            _ => Vec::new(),
        };
        let actor = r.executor.actor();
        let dropping = match &op {
            StorageOp::DropPartition { partition } => Some(*partition),
            _ => None,
        };
        let written = op.data_partition();
        let n = usize::from(self.setup.quorum.n);
        let holds = |p| r.engine.layout().holds(&self.nodes[i].id, p, n);
        // A write landing on a partition this node dropped and does not hold again:
        // data (a replayed hint, a late replica write) nobody reads, left for good.
        let after_drop = written.filter(|&p| {
            !holds(p)
                && self
                    .drops
                    .iter()
                    .any(|(node, d, _)| *d == p && *node == self.nodes[i].id.to_string())
        });
        // The keys whose objects this op may store, to record the dots they hold after.
        let touched: Vec<(PartitionId, Vec<u8>)> = match &op {
            StorageOp::Coordinate { partition, key, .. }
            | StorageOp::Merge { partition, key, .. } => vec![(*partition, key.clone())],
            StorageOp::MergeMany {
                partition, objects, ..
            } => objects
                .iter()
                .map(|(k, _)| (*partition, k.clone()))
                .collect(),
            StorageOp::ReplaceMany { partition, objects } => objects
                .iter()
                .map(|(k, _)| (*partition, k.clone()))
                .collect(),
            _ => Vec::new(),
        };
        let result = r.executor.execute(op);
        let stored: Vec<(PartitionId, Vec<Dot>)> = if result.is_ok() {
            touched
                .into_iter()
                .filter_map(|(partition, key)| {
                    let o = r.executor.stored_object(partition, &key).ok()??;
                    Some((partition, o.siblings().iter().map(|s| s.dot).collect()))
                })
                .collect()
        } else {
            Vec::new()
        };
        let name = self.name(i);
        for (partition, dots) in stored {
            self.copies.stored(&name, partition, dots, now);
        }
        if let (Some(p), Ok(_)) = (dropping, &result) {
            self.drops.push((self.name(i), p, now));
            self.copies.dropped(&name, p, now);
        }
        let late_write = match (after_drop, &result) {
            (Some(p), Ok(_)) => vec![crate::checkers::Violation::new(
                "write_after_drop",
                "*",
                format!(
                    "{} stored a write of partition {p} ({desc}) after dropping it, not \
                     holding it again",
                    self.name(i)
                ),
            )],
            _ => Vec::new(),
        };
        for (partition, key, object) in reaping {
            if matches!(r.executor.stored_object(partition, &key), Ok(None)) {
                let key = String::from_utf8_lossy(&key).into_owned();
                self.log.line(
                    now,
                    self.nodes[i].id.as_ref(),
                    &format!("REAPED {key} {}", log::object(&object)),
                );
                self.history.reaps.push(Reaping {
                    node: self.nodes[i].id.to_string(),
                    key,
                    object,
                    at: now,
                });
            }
        }
        if let (Some((key, context, value)), Ok(StorageReply::Coordinated { context: reply, .. })) =
            (coordinate, &result)
        {
            self.history.coordinations.push(Coordination {
                node: self.name(i),
                key: String::from_utf8_lossy(&key).into_owned(),
                dot: Dot::new(actor, reply.max_counter(actor)),
                value,
                context,
                at: now,
            });
        }
        let what = format!(
            "storage #{} {desc} -> {}",
            id.0,
            log::storage_reply(&result)
        );
        self.note(i, &what);
        self.add_violations(late_write);
        result
    }

    fn storage_done(
        &mut self,
        i: usize,
        incarnation: u32,
        id: RequestId,
        work: StorageWork,
        writes: bool,
    ) {
        if self.nodes[i].incarnation != incarnation || !self.nodes[i].is_up() {
            return;
        }
        let result = match work {
            StorageWork::Applied(result) => result,
            StorageWork::Due(op) => self.apply_storage(i, id, op),
        };
        if writes && self.setup.group_commit {
            self.await_sync(i, id, result);
        } else {
            let now = self.node_now(i);
            if let Some(r) = self.nodes[i].running.as_mut() {
                r.engine.handle_storage(now, id, result);
            }
        }
        self.drain(i);
    }

    /// Group commit, as the node's driver and committer do it: the write's completion
    /// waits for the next sync (started now if none is under way); a coordinator's own
    /// write reaches the engine applied at once, and only its durability waits.
    fn await_sync(&mut self, i: usize, id: RequestId, result: StorageResult) {
        let now = self.node_now(i);
        let incarnation = self.nodes[i].incarnation;
        let Some(r) = self.nodes[i].running.as_mut() else {
            return;
        };
        let (applied, later) = split_at_sync(result);
        if let Some(result) = applied {
            r.engine.handle_storage_applied(now, id, result);
        }
        // A sync is under way exactly while completions wait for it.
        let idle = r.awaiting_sync.is_empty();
        r.awaiting_sync.push((id, later));
        if idle {
            let at = self.now + self.setup.power_cuts.sync_interval;
            self.queue.push(
                at,
                Event::GroupSync {
                    node: i,
                    incarnation,
                },
            );
        }
    }

    /// Group commit: node `i`'s sync ends. Every write that waited for it was applied
    /// before now, so syncing the disk now covers them all; they reach the engine, as
    /// failures if the sync failed (injected with the storage-failure probability: the
    /// writes stay on the disk unsynced, not known durable).
    fn group_sync(&mut self, i: usize, incarnation: u32) {
        if self.nodes[i].incarnation != incarnation || !self.nodes[i].is_up() {
            return;
        }
        let fail = self.net.faults.storage_failure;
        let failed = fail > 0.0 && self.rng.random_bool(fail);
        if !failed {
            self.nodes[i].disk().sync();
        }
        let now = self.node_now(i);
        let Some(r) = self.nodes[i].running.as_mut() else {
            return;
        };
        let done = std::mem::take(&mut r.awaiting_sync);
        let count = done.len();
        for (id, result) in done {
            let result = if failed {
                Err(StorageFailure::Engine(
                    "injected: syncing the write-ahead log failed".into(),
                ))
            } else {
                result
            };
            r.engine.handle_storage(now, id, result);
        }
        if failed {
            self.faults.storage_failures += 1;
            self.note(
                i,
                &format!("group sync FAILED (injected) for {count} write(s)"),
            );
        }
        self.drain(i);
    }

    fn deliver_client_request(&mut self, client: usize, op: OpId, i: usize, req: ClientRequest) {
        let desc = log::client_request(&req);
        if !self.nodes[i].is_up() {
            self.note(i, &format!("client {client} REFUSED (down): {desc}"));
            let at = self.now + refusal_delay(&mut self.rng);
            let result = Err(format!("{} refused the connection", self.name(i)));
            self.queue.push(
                at,
                Event::ClientResponse {
                    client,
                    op,
                    node: i,
                    result,
                },
            );
            return;
        }
        let now = self.node_now(i);
        let Some(r) = self.nodes[i].running.as_mut() else {
            return;
        };
        let inbound = r.next_inbound;
        r.next_inbound += 1;
        r.inbound.insert(inbound, ReplyTo::Client { client, op });
        self.note(
            i,
            &format!("recv #{inbound} from client {client} op {op}: {desc}"),
        );
        if let Some(r) = self.nodes[i].running.as_mut() {
            r.engine.handle_request(
                now,
                InboundId(inbound),
                Sender::Client(format!("client{client}")),
                Request::Client(req),
            );
        }
        self.drain(i);
    }

    /// A node answered a client: the answer travels back (or is lost).
    fn respond_client(&mut self, i: usize, client: usize, op: OpId, response: Response) {
        let (fate, slow) = self.net.fate(&mut self.rng);
        if slow {
            self.faults.slowed += 1;
        }
        match fate {
            Fate::Drop => {
                self.faults.dropped += 1;
                self.log.line(
                    self.now,
                    "net",
                    &format!("answer to client {client} op {op} DROPPED"),
                );
            }
            Fate::Deliver(delay) => self.queue.push(
                self.now + delay,
                Event::ClientResponse {
                    client,
                    op,
                    node: i,
                    result: Ok(response),
                },
            ),
        }
    }

    /// Send a client's request to node `i` (or lose it on the way).
    pub(super) fn send_client_request(
        &mut self,
        client: usize,
        op: OpId,
        i: usize,
        request: ClientRequest,
        now: Time,
    ) {
        let (fate, slow) = self.net.fate(&mut self.rng);
        if slow {
            self.faults.slowed += 1;
        }
        match fate {
            Fate::Drop => {
                self.faults.dropped += 1;
                self.log.line(
                    now,
                    "net",
                    &format!("request of client {client} op {op} DROPPED"),
                );
            }
            Fate::Deliver(delay) => self.queue.push(
                now + delay,
                Event::ClientRequest {
                    client,
                    op,
                    node: i,
                    request,
                },
            ),
        }
    }
}

/// How long an injected full disk lasts on a node.
const DISK_FULL_SPELL: Duration = Duration::from_secs(2);

/// Whether an injected failure of `op` models a full disk: ops that write data.
fn fills_disk(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::Coordinate { .. }
            | StorageOp::Merge { .. }
            | StorageOp::StoreHint { .. }
            | StorageOp::MergeMany { .. }
    )
}
