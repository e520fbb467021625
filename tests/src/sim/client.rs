//! Simulated clients and their workload.
//!
//! Each client runs one operation at a time against a random node (or a replica of the
//! key), with a client-side timeout, and thinks for a random while between operations:
//!
//! - on plain keys: gets, puts and deletes, with no context or with the context of the
//!   client's own last read or write of the key;
//! - on set keys: set-adds, a read-modify-write through contexts — get, union the
//!   elements of the siblings, add a new element, put with the read's context.
//!
//! Every put writes a value no other put writes (`<key>=w<op id>`, plus `:<elements>` on
//! set keys), so that a value names one write.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use shoal_proto::session::{Coverage, Escalation, SessionState};
use shoal_proto::wire::{
    ClientRequest, ClientResponse, ReadOptions, ReplicaReply, Response, WriteOptions,
};
use shoal_proto::{judge_copies, CausalContext, CopiesVerdict};

use super::config::{SessionMode, CLIENT_TIMEOUT};
use super::event::Event;
use super::scenario::ScriptedAction;
use super::{Phase, Sim, SimError};
use crate::checkers;
use crate::history::{set_elements, OpId, OpKind, Outcome, SessionRead};

/// What a client does once its current operation ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// Think, then start another.
    Nothing,
    /// The get half of a set-add: on success, put the union plus `element`.
    AddToSet { element: String },
    /// A put: on success, sometimes read the key back at once (read your writes).
    MaybeReadBack,
}

/// The operation a client waits for.
#[derive(Clone, Debug)]
pub(crate) struct InFlight {
    pub op: OpId,
    pub then: Then,
    /// For a session client's get: the read quorums still to try after this one
    /// (`None` until the first step completes).
    pub escalation: Option<Escalation>,
    /// For a get asking R primaries for their copies: the answers so far.
    pub direct: Option<Direct>,
}

/// A get that asked R primaries for their own copies at once, as the SDK's direct reads
/// do: equal copies, or one including the others, answer it (`judge_copies`); anything
/// else sends it to a coordinator as a plain get, once every copy's answer is in (so
/// that no late one is taken for the get's).
#[derive(Clone, Debug)]
pub(crate) struct Direct {
    /// Answers still to come.
    left: usize,
    /// Each answer's copy; `None` for one that was not a copy (declined, refused).
    copies: Vec<Option<ReplicaReply>>,
    /// The node each answer came from, in the same order.
    answered: Vec<usize>,
    /// The get's R, for the coordinated read it may become.
    r: Option<u8>,
    /// Where that read goes.
    fallback: usize,
}

/// One client's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Client {
    /// The operation in flight.
    pub current: Option<InFlight>,
    /// The context of the client's last successful read or write, per key.
    pub contexts: BTreeMap<String, CausalContext>,
    /// For a session client: what it must see, per key.
    pub session: Option<SessionState>,
}

/// How long a client waits before its next operation.
pub(crate) fn think_time(rng: &mut ChaCha8Rng) -> Duration {
    Duration::from_millis(rng.random_range(10..=250))
}

/// What a client asks for.
struct Ask {
    key: String,
    kind: OpKind,
    context: Option<CausalContext>,
    quorum: Option<u8>,
    then: Then,
    /// Send to this node (by index) instead of choosing one.
    node: Option<usize>,
}

impl Sim {
    pub(super) fn client_wake(&mut self, c: usize) {
        if self.clients[c].current.is_some() || self.phase != Phase::Safety {
            return;
        }
        if self.is_burst_client(c) {
            self.burst_wake(c);
            return;
        }
        if c >= self.cfg.clients || self.ops_issued >= self.cfg.ops {
            return;
        }
        let plain = self.cfg.keys;
        let sets = self.cfg.set_keys;
        let use_set = sets > 0 && (plain == 0 || self.rng.random_bool(0.3));
        let quorum = self.pick_quorum();
        if use_set {
            let key = format!("s{}", self.rng.random_range(0..sets));
            let element = format!("x{}", self.history.ops.len());
            self.issue(
                c,
                Ask {
                    key,
                    kind: OpKind::Get { r: quorum },
                    context: None,
                    quorum,
                    then: Then::AddToSet { element },
                    node: None,
                },
            );
            return;
        }
        let key = format!("k{}", self.rng.random_range(0..plain));
        let own = self.clients[c].contexts.get(&key).cloned();
        let roll: f64 = self.rng.random();
        let (kind, context, then) = if roll < 0.40 {
            (OpKind::Get { r: quorum }, None, Then::Nothing)
        } else if roll < 1.0 - self.cfg.delete_fraction {
            let value = self.plain_value(&key);
            let context = if self.rng.random_bool(0.7) { own } else { None };
            (
                OpKind::Put {
                    value,
                    set_element: None,
                },
                context,
                Then::MaybeReadBack,
            )
        } else {
            let context = if self.rng.random_bool(0.8) { own } else { None };
            (OpKind::Delete, context, Then::Nothing)
        };
        self.issue(
            c,
            Ask {
                key,
                kind,
                context,
                quorum,
                then,
                node: None,
            },
        );
    }

    /// A burst client's next operation: a get or a put (with its last context for the
    /// key) on one of the burst's keys, until the burst ends.
    fn burst_wake(&mut self, c: usize) {
        let Some(keys) = self.cfg.burst.as_ref().map(|b| b.keys) else {
            return;
        };
        if keys == 0 || self.burst_end().is_none_or(|end| self.now >= end) {
            return;
        }
        let key = super::scenario::Burst::key(self.rng.random_range(0..keys));
        let (kind, context) = if self.rng.random_bool(0.5) {
            (OpKind::Get { r: None }, None)
        } else {
            let value = self.plain_value(&key);
            let own = self.clients[c].contexts.get(&key).cloned();
            (
                OpKind::Put {
                    value,
                    set_element: None,
                },
                own,
            )
        };
        self.issue(
            c,
            Ask {
                key,
                kind,
                context,
                quorum: None,
                then: Then::Nothing,
                node: None,
            },
        );
    }

    /// Scripted operation `index` is due: the scripted client runs it now, or once its
    /// previous operation has ended.
    pub(super) fn scripted_op(&mut self, index: usize) {
        let c = self.scripted_client();
        if self.phase != Phase::Safety {
            return;
        }
        if self.clients[c].current.is_some() {
            self.queue.push(
                self.now + Duration::from_millis(10),
                Event::ScriptedOp { index },
            );
            return;
        }
        let Some(op) = self.cfg.scripted_ops.get(index).cloned() else {
            return;
        };
        self.scripted_issued += 1;
        let own = self.clients[c].contexts.get(&op.key).cloned();
        let (kind, context, quorum) = match op.action {
            ScriptedAction::Get { r } => (OpKind::Get { r }, None, r),
            ScriptedAction::Put { with_context } => (
                OpKind::Put {
                    value: self.plain_value(&op.key),
                    set_element: None,
                },
                own.filter(|_| with_context),
                None,
            ),
            ScriptedAction::Delete { with_context } => {
                (OpKind::Delete, own.filter(|_| with_context), None)
            }
        };
        self.issue(
            c,
            Ask {
                key: op.key,
                kind,
                context,
                quorum,
                then: Then::Nothing,
                node: Some(op.node),
            },
        );
    }

    /// A per-request R or W, sometimes, when the run varies quorums.
    fn pick_quorum(&mut self) -> Option<u8> {
        if self.cfg.vary_quorums && self.rng.random_bool(0.2) {
            Some(self.rng.random_range(1..=self.setup.quorum.n))
        } else {
            None
        }
    }

    fn issue(&mut self, c: usize, mut ask: Ask) {
        let n = usize::from(self.setup.quorum.n);
        // A session's write of a key it knows deleted carries what it remembers of the
        // key, as the SDK's `Session` does.
        if let (OpKind::Put { .. } | OpKind::Delete, Some(session)) =
            (&ask.kind, &self.clients[c].session)
        {
            if let Some(merged) = session.write_context(ask.key.as_bytes(), ask.context.as_ref()) {
                ask.context = Some(merged);
            }
        }
        let node = match ask.node {
            Some(i) => i,
            None if self.rng.random_bool(0.5) => self.rng.random_range(0..self.nodes.len()),
            None => {
                let prefs = self
                    .ring
                    .preference_list_for_key(ask.key.as_bytes(), n)
                    .nodes;
                let pick = &prefs[self.rng.random_range(0..prefs.len())];
                self.index.get(pick).copied().unwrap_or(0)
            }
        };
        let direct_to = match &ask.kind {
            OpKind::Get { r } if ask.node.is_none() => self.direct_targets(&ask.key, *r),
            _ => None,
        };
        let key = ask.key.as_bytes().to_vec();
        let request = match &ask.kind {
            OpKind::Get { .. } if direct_to.is_some() => ClientRequest::GetReplica { key },
            OpKind::Get { r } => ClientRequest::Get {
                key,
                options: ReadOptions {
                    r: *r,
                    ..ReadOptions::default()
                },
            },
            OpKind::Put { value, .. } => ClientRequest::Put {
                key,
                value: value.as_bytes().to_vec(),
                context: ask.context.clone(),
                options: WriteOptions {
                    w: ask.quorum,
                    ..WriteOptions::default()
                },
            },
            OpKind::Delete => ClientRequest::Delete {
                key,
                context: ask.context.clone(),
                options: WriteOptions {
                    w: ask.quorum,
                    ..WriteOptions::default()
                },
            },
        };
        let direct = match (&ask.kind, &direct_to) {
            (OpKind::Get { r }, Some(targets)) => Some(Direct {
                left: targets.len(),
                copies: Vec::new(),
                answered: Vec::new(),
                r: *r,
                fallback: node,
            }),
            _ => None,
        };
        let targets = direct_to.unwrap_or_else(|| vec![node]);
        let now = self.now;
        let op = self.history.invoke(
            c,
            self.nodes[targets[0]].id.to_string(),
            ask.key,
            ask.kind,
            ask.context,
            now,
        );
        if c < self.cfg.clients {
            self.ops_issued += 1;
        }
        self.clients[c].current = Some(InFlight {
            op,
            then: ask.then,
            escalation: None,
            direct,
        });
        for target in targets {
            self.send_client_request(c, op, target, request.clone(), now);
        }
        self.queue
            .push(now + CLIENT_TIMEOUT, Event::ClientTimeout { client: c, op });
    }

    /// The primaries (by index) a get of `key` at `r` asks for their copies, for the
    /// run's share of direct reads: the first R of the key's preference list, when R
    /// is 2 or more (and at most N).
    fn direct_targets(&mut self, key: &str, r: Option<u8>) -> Option<Vec<usize>> {
        let n = self.setup.quorum.n;
        let r = r.unwrap_or(self.setup.quorum.r);
        // No draw when direct reads are off: a seed's schedule stays what it was.
        let share = self.cfg.direct_reads;
        if r < 2 || r > n || share <= 0.0 || !self.rng.random_bool(share.min(1.0)) {
            return None;
        }
        let prefs = self
            .ring
            .preference_list_for_key(key.as_bytes(), usize::from(n))
            .nodes;
        let targets: Vec<usize> = prefs
            .iter()
            .take(usize::from(r))
            .filter_map(|id| self.index.get(id).copied())
            .collect();
        (targets.len() == usize::from(r)).then_some(targets)
    }

    /// Node `node`'s answer to a direct read's copies: once all are in, the SDK's rule
    /// answers the get (equal copies, or one including the others, whose repair then
    /// goes to a node behind as the SDK's background read), or sends it to a coordinator.
    fn direct_answer(&mut self, c: usize, op: OpId, node: usize, result: Result<Response, String>) {
        let Some(flight) = self.clients[c].current.as_mut() else {
            return;
        };
        let Some(direct) = flight.direct.as_mut() else {
            return;
        };
        direct.copies.push(match result {
            Ok(Response::Client(ClientResponse::Replica(copy))) => Some(copy),
            _ => None,
        });
        direct.answered.push(node);
        direct.left -= 1;
        if direct.left > 0 {
            return;
        }
        let Some(direct) = flight.direct.take() else {
            return;
        };
        // The SDK's rule (`judge_copies`) on the copies, once every one came back.
        let copies: Option<Vec<ReplicaReply>> = direct.copies.iter().cloned().collect();
        let verdict = copies.map_or(CopiesVerdict::Differ, |c| judge_copies(&c));
        // The coordinated read, built only when the copies do not answer alone.
        let coordinated = |key: &str| ClientRequest::Get {
            key: key.as_bytes().to_vec(),
            options: ReadOptions {
                r: direct.r,
                ..ReadOptions::default()
            },
        };
        let now = self.now;
        match verdict {
            CopiesVerdict::Agreed(get) => {
                let line = format!("client {c} op {op}: {} copies agree", direct.copies.len());
                self.log.line(self.now, "cli", &line);
                self.client_response(c, op, Ok(Response::Client(ClientResponse::Get(get))));
            }
            CopiesVerdict::Superseding { reply, behind } => {
                // The SDK's background read, through a node behind (its own copy differs
                // from the others it reads, so its repair reaches every copy behind): the
                // op has ended, so its answer is dropped.
                let through = behind
                    .first()
                    .and_then(|&k| direct.answered.get(k).copied())
                    .unwrap_or(direct.fallback);
                let line = format!(
                    "client {c} op {op}: a copy includes the others ({} behind): answered, \
                     repaired through {}",
                    behind.len(),
                    self.name(through)
                );
                self.log.line(self.now, "cli", &line);
                self.superseding_reads += 1;
                self.client_response(c, op, Ok(Response::Client(ClientResponse::Get(reply))));
                let request = coordinated(&self.history.ops[op].key);
                self.send_client_request(c, op, through, request, now);
            }
            CopiesVerdict::Differ => {
                let line = format!("client {c} op {op}: copies differ or declined: coordinated");
                self.log.line(self.now, "cli", &line);
                let request = coordinated(&self.history.ops[op].key);
                self.send_client_request(c, op, direct.fallback, request, now);
            }
        }
    }

    /// The value of the next put on plain key `key`: `<key>=w<op id>`, padded with `~` to
    /// a drawn size when the run has large values (the padding is the same for every
    /// put, so the value still names its write).
    fn plain_value(&mut self, key: &str) -> String {
        let mut value = format!("{key}=w{}", self.history.ops.len());
        if let Some(large) = self.cfg.large_values {
            let size = self.rng.random_range(large.min..=large.max.max(large.min));
            value.extend(std::iter::repeat_n('~', size.saturating_sub(value.len())));
        }
        value
    }

    pub(super) fn client_timeout(&mut self, c: usize, op: OpId) {
        if self.clients[c].current.as_ref().is_some_and(|f| f.op == op) {
            self.log
                .line(self.now, "cli", &format!("client {c} op {op} TIMED OUT"));
            self.end_op(c, op, Outcome::TimedOut);
        }
    }

    /// Node `node`'s answer to client `c`'s request for op `op`: one of a direct read's
    /// copies, or the op's answer.
    pub(super) fn client_answer(
        &mut self,
        c: usize,
        op: OpId,
        node: usize,
        result: Result<Response, String>,
    ) {
        if self.clients[c]
            .current
            .as_ref()
            .is_some_and(|f| f.op == op && f.direct.is_some())
        {
            self.direct_answer(c, op, node, result);
        } else {
            self.client_response(c, op, result);
        }
    }

    pub(super) fn client_response(&mut self, c: usize, op: OpId, result: Result<Response, String>) {
        if self.clients[c].current.as_ref().is_none_or(|f| f.op != op) {
            return;
        }
        let outcome = match result {
            Err(why) => Outcome::Failed(why),
            Ok(Response::Client(ClientResponse::Get(r))) => Outcome::Read {
                found: r.found,
                values: r
                    .values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect(),
                context: r.context,
            },
            Ok(Response::Client(ClientResponse::Put(r) | ClientResponse::Delete(r))) => {
                Outcome::Written { context: r.context }
            }
            Ok(Response::Client(ClientResponse::Error(e)) | Response::Error(e)) => {
                Outcome::Failed(e.to_string())
            }
            Ok(other) => Outcome::Failed(format!("unexpected answer {other:?}")),
        };
        let line = format!("client {c} op {op} ended: {}", describe(&outcome));
        self.log.line(self.now, "cli", &line);
        self.end_op(c, op, outcome);
    }

    fn end_op(&mut self, c: usize, op: OpId, outcome: Outcome) {
        let Some(flight) = self.clients[c].current.take() else {
            return;
        };
        let key = self.history.ops[op].key.clone();
        if self.clients[c].session.is_some() {
            if let Some((esc, next_r)) = self.session_step(c, op, &flight, &outcome) {
                // Not covered: ask one more replica, with the same follow-up.
                self.history.complete(op, outcome, self.now);
                let found = checkers::check_completed(&self.history, op, self.ryw);
                self.add_violations(found);
                self.issue(
                    c,
                    Ask {
                        key: key.clone(),
                        kind: OpKind::Get { r: Some(next_r) },
                        context: None,
                        quorum: Some(next_r),
                        then: flight.then.clone(),
                        node: None,
                    },
                );
                if let Some(f) = self.clients[c].current.as_mut() {
                    f.escalation = Some(esc);
                }
                return;
            }
        }
        let session_refused = self
            .history
            .sessions
            .reads
            .get(&op)
            .is_some_and(|r| *r != SessionRead::Answered);
        match &outcome {
            _ if session_refused => {}
            Outcome::Read { context, .. } | Outcome::Written { context } => {
                self.clients[c]
                    .contexts
                    .insert(key.clone(), context.clone());
            }
            _ => {}
        }
        let next = match (&flight.then, &outcome) {
            _ if session_refused => None,
            (
                Then::AddToSet { element },
                Outcome::Read {
                    values, context, ..
                },
            ) => {
                let mut set: BTreeSet<String> =
                    values.iter().flat_map(|v| set_elements(v)).collect();
                set.insert(element.clone());
                let elems: Vec<String> = set.into_iter().collect();
                let value = format!("{key}=w{}:{}", self.history.ops.len(), elems.join(","));
                let quorum = self.pick_quorum();
                Some(Ask {
                    key: key.clone(),
                    kind: OpKind::Put {
                        value,
                        set_element: Some(element.clone()),
                    },
                    context: Some(context.clone()),
                    quorum,
                    then: Then::Nothing,
                    node: None,
                })
            }
            (Then::MaybeReadBack, Outcome::Written { .. }) if self.rng.random_bool(0.3) => {
                let quorum = self.pick_quorum();
                Some(Ask {
                    key: key.clone(),
                    kind: OpKind::Get { r: quorum },
                    context: None,
                    quorum,
                    then: Then::Nothing,
                    node: None,
                })
            }
            _ => None,
        };
        self.history.complete(op, outcome, self.now);
        let found = checkers::check_completed(&self.history, op, self.ryw);
        self.add_violations(found);
        match next {
            Some(ask) => self.issue(c, ask),
            // The scripted client acts only when its script says so.
            None if c == self.scripted_client() => {}
            None if self.is_burst_client(c) => {
                let max = self
                    .cfg
                    .burst
                    .as_ref()
                    .map(|b| b.think_max)
                    .unwrap_or_default();
                let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
                let at = self.now + Duration::from_micros(self.rng.random_range(0..=max_us));
                self.queue.push(at, Event::ClientWake { client: c });
            }
            None => {
                let at = self.now + think_time(&mut self.rng);
                self.queue.push(at, Event::ClientWake { client: c });
            }
        }
    }

    /// A session client's operation `op` ended with `outcome`: record writes and
    /// answered reads in its session state and the read's role in the history. Returns
    /// the remaining escalation and the next R when the read must be asked again.
    fn session_step(
        &mut self,
        c: usize,
        op: OpId,
        flight: &InFlight,
        outcome: &Outcome,
    ) -> Option<(Escalation, u8)> {
        let (n, default_r) = (self.setup.quorum.n, self.setup.quorum.r);
        let key = self.history.ops[op].key.clone();
        let kind = self.history.ops[op].kind.clone();
        let session = self.clients[c].session.as_mut()?;
        match (&kind, outcome) {
            (OpKind::Put { .. }, Outcome::Written { context }) => {
                session.record_write(key.as_bytes(), context);
                None
            }
            (OpKind::Delete, Outcome::Written { context }) => {
                session.record_delete(key.as_bytes(), context);
                None
            }
            (OpKind::Get { r }, Outcome::Read { context, found, .. }) => {
                let mut esc = flight.escalation.unwrap_or_else(|| {
                    // The first step (the R this get asked) is done.
                    let mut e = Escalation::new(r.unwrap_or(default_r), n);
                    e.next();
                    e
                });
                let covered = session.check(key.as_bytes(), context, *found) != Coverage::NeedMore;
                let escalate = self.cfg.sessions == SessionMode::On;
                let role = if covered || !escalate {
                    session.record_read(key.as_bytes(), context, *found);
                    SessionRead::Answered
                } else if let Some(next) = esc.next() {
                    self.history
                        .sessions
                        .reads
                        .insert(op, SessionRead::Escalated);
                    return Some((esc, next));
                } else {
                    SessionRead::NotCovered
                };
                self.history.sessions.reads.insert(op, role);
                None
            }
            (OpKind::Get { .. }, _) if flight.escalation.is_some() => {
                // An escalated step failed: the session read fails.
                self.history
                    .sessions
                    .reads
                    .insert(op, SessionRead::NotCovered);
                None
            }
            _ => None,
        }
    }

    /// Send a canary read of `key` to node `node` from the reader client, if the reader is
    /// idle; `false` if it was busy.
    pub(super) fn canary_read(&mut self, node: usize, key: String) -> bool {
        let reader = self.reader();
        if self.clients[reader].current.is_some() {
            return false;
        }
        self.issue(
            reader,
            Ask {
                key,
                kind: OpKind::Get { r: None },
                context: None,
                quorum: None,
                then: Then::Nothing,
                node: Some(node),
            },
        );
        true
    }

    /// Read every key once with R = N through one of its primaries (retrying on another
    /// primary if a read fails), as the liveness phase's repair pass.
    pub(super) fn final_reads(&mut self) -> Result<(), SimError> {
        let reader = self.reader();
        let n = self.setup.quorum.n;
        for key in self.keys.clone() {
            let prefs = self
                .ring
                .preference_list_for_key(key.as_bytes(), usize::from(n))
                .nodes;
            let mut ok = false;
            for attempt in 0..prefs.len() * 2 {
                let node = self.index.get(&prefs[attempt % prefs.len()]).copied();
                self.issue(
                    reader,
                    Ask {
                        key: key.clone(),
                        kind: OpKind::Get { r: Some(n) },
                        context: None,
                        quorum: Some(n),
                        then: Then::Nothing,
                        node,
                    },
                );
                let deadline = self.now + CLIENT_TIMEOUT + Duration::from_millis(100);
                while self.clients[reader].current.is_some() && self.now < deadline {
                    let until = self.now + Duration::from_millis(10);
                    self.step_until(until)?;
                }
                let last = self.history.ops.len() - 1;
                if matches!(self.history.ops[last].outcome, Outcome::Read { .. }) {
                    ok = true;
                    break;
                }
            }
            if !ok {
                self.add_violations(vec![checkers::Violation::new(
                    "liveness",
                    &key,
                    "no read with R = N succeeded after the faults stopped",
                )]);
            }
        }
        Ok(())
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pending => "pending".into(),
        Outcome::Read { found, values, .. } => format!("read found={found} {values:?}"),
        Outcome::Written { context } => {
            format!("written ctx={}", crate::history::show_context(context))
        }
        Outcome::Failed(why) => format!("failed: {why}"),
        Outcome::TimedOut => "timed out".into(),
    }
}
