//! The record of a simulated run that the checkers judge: every client operation (what
//! was asked, when, and how it ended) and every write that a coordinator actually applied.
//!
//! Client operations are what the outside world saw; coordinations are the simulator's
//! god's-eye view of the writes that landed (including those whose answer was lost), so
//! that a checker can tell "superseded by a later write" from "lost"; reapings are the
//! tombstones that nodes deleted, so that a checker can tell "came back after its
//! tombstone was reaped" from "was never deleted".

use std::fmt;

use shoal_proto::{Actor, CausalContext, Dot, Object, SiblingValue, Time};

/// Index of an operation in [`History::ops`].
pub type OpId = usize;

/// What a client operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read the key; `r` overrides the read quorum.
    Get {
        /// The read quorum asked for (`None`: the cluster default).
        r: Option<u8>,
    },
    /// Write `value` (unique in the run: it names this write).
    Put {
        /// The value.
        value: String,
        /// The element this put adds, when it is the write half of a set-add.
        set_element: Option<String>,
    },
    /// Delete the key.
    Delete,
}

impl OpKind {
    /// A short name for summaries.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Get { .. } => "get",
            OpKind::Put {
                set_element: Some(_),
                ..
            } => "set_add",
            OpKind::Put { .. } => "put",
            OpKind::Delete => "delete",
        }
    }
}

/// How a client operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not ended yet.
    Pending,
    /// A get succeeded.
    Read {
        /// Whether the key was found.
        found: bool,
        /// The sibling values (as text; every value the workload writes is text).
        values: Vec<String>,
        /// The context the read returned.
        context: CausalContext,
    },
    /// A put or delete was acknowledged.
    Written {
        /// The context the write returned.
        context: CausalContext,
    },
    /// The node answered with an error, or could not be reached. The write may or may
    /// not have landed.
    Failed(String),
    /// No answer within the client's timeout. The write may or may not have landed.
    TimedOut,
}

impl Outcome {
    /// A short name for summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Read { .. } | Outcome::Written { .. } => "ok",
            Outcome::Failed(_) => "error",
            Outcome::TimedOut => "timeout",
        }
    }
}

/// One client operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Its index in the history.
    pub id: OpId,
    /// The client that made it.
    pub client: usize,
    /// The node it was sent to (its name).
    pub node: String,
    /// The key.
    pub key: String,
    /// What was asked.
    pub kind: OpKind,
    /// The context sent with a put or delete.
    pub context: Option<CausalContext>,
    /// When the client sent it.
    pub invoked: Time,
    /// When the client saw it end.
    pub completed: Option<Time>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Operation {
    /// The value of a put.
    pub fn put_value(&self) -> Option<&str> {
        match &self.kind {
            OpKind::Put { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The dot of an acknowledged put or delete (see [`write_dot`]).
    pub fn acked_dot(&self) -> Option<Dot> {
        match &self.outcome {
            Outcome::Written { context } => write_dot(self.context.as_ref(), context),
            _ => None,
        }
    }

    /// Whether this is an acknowledged put.
    pub fn is_acked_put(&self) -> bool {
        matches!(self.kind, OpKind::Put { .. }) && matches!(self.outcome, Outcome::Written { .. })
    }
}

/// A write a coordinator applied to its storage (`StorageOp::Coordinate` that replied
/// `Coordinated`), whether or not its client ever heard of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordination {
    /// The coordinating node.
    pub node: String,
    /// The key.
    pub key: String,
    /// The dot it minted.
    pub dot: Dot,
    /// The value written (a tombstone for a delete).
    pub value: SiblingValue,
    /// The request context: the dots this write replaces.
    pub context: CausalContext,
    /// When it was applied.
    pub at: Time,
}

impl Coordination {
    /// The written value as text, `None` for a tombstone.
    pub fn value_text(&self) -> Option<String> {
        match &self.value {
            SiblingValue::Data(v) => Some(String::from_utf8_lossy(v).into_owned()),
            SiblingValue::Tombstone => None,
        }
    }
}

/// A tombstoned key that a node deleted from its storage (`StorageOp::Reap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaping {
    /// The node.
    pub node: String,
    /// The key.
    pub key: String,
    /// The object deleted: tombstones only; its clock is every write it had seen.
    pub object: Object,
    /// When it was deleted.
    pub at: Time,
}

/// Everything the checkers need to know about what happened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Client operations, in invocation order (index = [`OpId`]).
    pub ops: Vec<Operation>,
    /// Writes applied by coordinators, in the order they were applied.
    pub coordinations: Vec<Coordination>,
    /// Coordinated writes taken out of `coordinations` before the final checks because
    /// they were never acknowledged and every copy was lost for a recorded cause
    /// (`sim::layout`, `forget_stranded_writes`). Until lost they could be read: a read
    /// that returned one saw what its context covered replaced
    /// ([`History::replaced_by_shown_stranded`]).
    pub stranded: Vec<Coordination>,
    /// Tombstones reaped, in the order they were deleted.
    pub reaps: Vec<Reaping>,
    /// Which clients were sessions, and what each session get was to its session.
    pub sessions: Sessions,
}

/// What a session client's get was to its session (`shoal_proto::session`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRead {
    /// The session answered its user with this read: the read-your-writes and
    /// monotonic-reads checks apply to it.
    Answered,
    /// Its reply did not cover the session's writes and reads; the session asked more
    /// replicas.
    Escalated,
    /// Neither it nor an earlier step covered them, and no step was left (or this
    /// escalated step failed): the session read failed `NotCovered`.
    NotCovered,
}

/// The session clients of a run and the role of each of their gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    /// The clients that ran as sessions.
    pub clients: std::collections::BTreeSet<usize>,
    /// The gets of session clients that completed with a reply, by role.
    pub reads: std::collections::BTreeMap<OpId, SessionRead>,
}

impl Sessions {
    /// Session reads with `role`.
    pub fn count(&self, role: SessionRead) -> usize {
        self.reads.values().filter(|r| **r == role).count()
    }
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Record a new operation, pending; returns its id.
    pub fn invoke(
        &mut self,
        client: usize,
        node: String,
        key: String,
        kind: OpKind,
        context: Option<CausalContext>,
        now: Time,
    ) -> OpId {
        let id = self.ops.len();
        self.ops.push(Operation {
            id,
            client,
            node,
            key,
            kind,
            context,
            invoked: now,
            completed: None,
            outcome: Outcome::Pending,
        });
        id
    }

    /// Record how operation `id` ended (only the first end counts).
    pub fn complete(&mut self, id: OpId, outcome: Outcome, now: Time) {
        if let Some(op) = self.ops.get_mut(id) {
            if op.outcome == Outcome::Pending {
                op.outcome = outcome;
                op.completed = Some(now);
            }
        }
    }

    /// The operations on `key`.
    pub fn ops_on<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Operation> + 'a {
        self.ops.iter().filter(move |o| o.key == key)
    }

    /// The coordinated writes on `key`.
    pub fn coordinations_on<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = &'a Coordination> + 'a {
        self.coordinations.iter().filter(move |c| c.key == key)
    }

    /// Whether some coordinated write on `key` (applied no later than `by`, if given) had
    /// a request context covering `dot`: that write replaced the one `dot` names.
    pub fn superseded(&self, key: &str, dot: Dot, by: Option<Time>) -> Option<&Coordination> {
        self.coordinations
            .iter()
            .find(|c| c.key == key && c.context.covers(dot) && by.is_none_or(|t| c.at <= t))
    }

    /// Whether a stranded write on `key` (see [`History::stranded`]) applied no later
    /// than `by` had a context covering `dot` and wrote one of `values` (what a read
    /// returned): that read saw the write, so `dot`'s value was replaced in its view.
    pub fn replaced_by_shown_stranded(
        &self,
        key: &str,
        dot: Dot,
        by: Time,
        values: &[String],
    ) -> bool {
        self.stranded.iter().any(|c| {
            c.key == key
                && c.context.covers(dot)
                && c.at <= by
                && c.value_text().is_some_and(|v| values.contains(&v))
        })
    }

    /// The dots of every coordinated write of `value` (a data value) to `key`: usually
    /// one; more if a forwarded put was coordinated twice; none if it never landed.
    pub fn dots_of_value(&self, key: &str, value: &str) -> Vec<Dot> {
        self.coordinations_on(key)
            .filter(|c| matches!(&c.value, SiblingValue::Data(v) if v == value.as_bytes()))
            .map(|c| c.dot)
            .collect()
    }

    /// The reapings of `key`.
    pub fn reaps_of<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Reaping> + 'a {
        self.reaps.iter().filter(move |r| r.key == key)
    }

    /// Every put ever attempted on `key` whose value is `value`.
    pub fn puts_of<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = &'a Operation> + 'a {
        self.ops_on(key)
            .filter(move |o| o.put_value() == Some(value))
    }
}

/// The dot a write minted, from its request and reply contexts: the reply is the request
/// context plus the new dot, so the dot is the one of the actor whose highest counter
/// grew (`reply.max_counter(a) > request.max_counter(a)`). `None` if no actor grew.
pub fn write_dot(request: Option<&CausalContext>, reply: &CausalContext) -> Option<Dot> {
    let empty = CausalContext::new();
    let request = request.unwrap_or(&empty);
    let actors = reply
        .vv()
        .iter()
        .map(|(a, _)| a)
        .chain(reply.cloud().iter().map(|d| d.actor));
    let mut best: Option<Dot> = None;
    for a in actors {
        let got = reply.max_counter(a);
        if got > request.max_counter(a) {
            let dot = Dot::new(a, got);
            if best.is_none_or(|b| dot > b) {
                best = Some(dot);
            }
        }
    }
    best
}

/// The elements of an add-only set value as the workload writes them:
/// `<key>=<write id>:<element>,<element>,...`. A value of another shape has none.
pub fn set_elements(value: &str) -> Vec<String> {
    match value.split_once(':') {
        Some((_, elems)) if !elems.is_empty() => elems.split(',').map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// A compact, stable rendering of a context for messages and the event log.
pub fn show_context(ctx: &CausalContext) -> String {
    let mut out = String::from("{");
    for (i, (a, c)) in ctx.vv().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{}:{c}", short_actor(a)));
    }
    for d in ctx.cloud() {
        out.push_str(&format!(" +{}:{}", short_actor(d.actor), d.counter));
    }
    out.push('}');
    out
}

/// The first 4 hex digits of an actor id: enough to tell a run's actors apart.
pub fn short_actor(a: Actor) -> String {
    format!("{:04x}", a.0 >> 48)
}

/// A dot as `actor:counter`, short.
pub struct ShowDot(pub Dot);

impl fmt::Display for ShowDot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", short_actor(self.0.actor), self.0.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_dot_is_the_dot_the_reply_adds() {
        let mut req = CausalContext::new();
        req.insert(Dot::new(Actor(1), 1));
        req.insert(Dot::new(Actor(2), 4));
        let mut reply = req.clone();
        reply.insert(Dot::new(Actor(2), 9));
        assert_eq!(write_dot(Some(&req), &reply), Some(Dot::new(Actor(2), 9)));
        assert_eq!(write_dot(Some(&req), &req), None);
        let mut fresh = CausalContext::new();
        fresh.insert(Dot::new(Actor(3), 1));
        assert_eq!(write_dot(None, &fresh), Some(Dot::new(Actor(3), 1)));
    }

    #[test]
    fn set_elements_parse_the_workload_format() {
        assert_eq!(set_elements("s0=w5:a,b"), vec!["a", "b"]);
        assert!(set_elements("s0=w5:").is_empty());
        assert!(set_elements("k1=w3").is_empty());
    }
}
