//! Invariant checkers: each judges a [`History`] (and, at the end of a run, the
//! [`FinalState`] of every replica) against one invariant of `DESIGN.md` and returns the
//! [`Violation`]s it finds. They know nothing of the simulator, so they can be fed
//! hand-made histories (their unit tests do, to show that each one can fail) or, later,
//! histories recorded against real processes.

pub mod convergence;
pub mod no_lost_writes;
pub mod no_phantoms;
pub mod no_resurrection;
pub mod read_your_writes;
pub mod refused_writes;
pub mod session_guarantees;

use std::collections::BTreeMap;
use std::fmt;

use shoal_proto::Object;

use crate::history::{History, OpId};

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker that found it (its module name).
    pub checker: &'static str,
    /// The key concerned.
    pub key: String,
    /// What is wrong: the values, dots and operations involved.
    pub detail: String,
}

impl Violation {
    /// A violation of `checker` on `key`.
    pub fn new(checker: &'static str, key: &str, detail: impl Into<String>) -> Violation {
        Violation {
            checker,
            key: key.to_owned(),
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] key {:?}: {}", self.checker, self.key, self.detail)
    }
}

/// What one node stores for one key at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaCopy {
    /// The node's name.
    pub node: String,
    /// Whether the node is one of the key's N primaries.
    pub primary: bool,
    /// Its stored object, if any.
    pub object: Option<Object>,
}

/// The end state of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Every node's copy, primaries first in preference order.
    pub replicas: Vec<ReplicaCopy>,
}

impl KeyState {
    /// The merge of every stored copy: what the cluster knows of the key.
    pub fn merged(&self) -> Object {
        let mut out = Object::new();
        for r in &self.replicas {
            if let Some(o) = &r.object {
                out.merge(o);
            }
        }
        out
    }
}

/// One primary's Merkle tree of one partition at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeCopy {
    /// The node's name.
    pub node: String,
    /// The root hash.
    pub root: u64,
    /// Keys in the tree.
    pub keys: u64,
}

/// The end state of every replica, read from each node's storage after the liveness
/// phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalState {
    /// Every key the workload used.
    pub keys: BTreeMap<String, KeyState>,
    /// Hints still stored, per node name (count over all targets).
    pub pending_hints: BTreeMap<String, u64>,
    /// Per partition, the Merkle tree of each of its primaries (empty when the state was
    /// not read from executors).
    pub trees: BTreeMap<u32, Vec<TreeCopy>>,
    /// Trees whose incremental form differed from a rebuild from storage, described.
    pub tree_mismatches: Vec<String>,
}

/// The checks that can run as soon as operation `op` ends (during the safety phase).
/// `ryw` says whether [`read_your_writes`] applies: only in runs free of faults whose
/// quorums overlap (R + W > N).
pub fn check_completed(history: &History, op: OpId, ryw: bool) -> Vec<Violation> {
    let mut out = no_phantoms::check_read(history, op);
    out.extend(no_resurrection::check_read(history, op));
    if ryw {
        out.extend(read_your_writes::check_read(history, op));
    }
    out
}

/// Every check, over the whole history and the final state (`ryw` as for
/// [`check_completed`]).
pub fn check_final(history: &History, state: &FinalState, ryw: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    out.extend(no_lost_writes::check(history, state));
    out.extend(no_phantoms::check(history, state));
    out.extend(no_resurrection::check(history, state));
    if ryw {
        out.extend(read_your_writes::check(history));
    }
    out.extend(session_guarantees::check(history));
    out.extend(convergence::check(state));
    out
}

/// Values longer than this are shown by their head and length.
const MAX_SHOWN_VALUE: usize = 4096;

/// A value for a message or log line: as text, or its head and length when it is long
/// (runs with large values would otherwise print megabytes per line).
pub fn show_value(v: &[u8]) -> String {
    match v.get(..64) {
        Some(head) if v.len() > MAX_SHOWN_VALUE => {
            format!("{}...({} bytes)", String::from_utf8_lossy(head), v.len())
        }
        _ => String::from_utf8_lossy(v).into_owned(),
    }
}

/// Renders the values of an object for a message: data values, `<tomb>` for tombstones.
pub fn show_object(obj: &Object) -> String {
    let sibs: Vec<String> = obj
        .siblings()
        .iter()
        .map(|s| match &s.value {
            shoal_proto::SiblingValue::Data(v) => {
                format!("{}@{}", show_value(v), crate::history::ShowDot(s.dot))
            }
            shoal_proto::SiblingValue::Tombstone => {
                format!("<tomb>@{}", crate::history::ShowDot(s.dot))
            }
        })
        .collect();
    format!(
        "[{}] clock {}",
        sibs.join(", "),
        crate::history::show_context(obj.clock())
    )
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Hand-made histories for the checkers' unit tests.

    use shoal_proto::{Actor, CausalContext, Dot, Object, Sibling, SiblingValue, Time};

    use super::{FinalState, KeyState, ReplicaCopy};
    use crate::history::{Coordination, History, OpKind, Outcome};

    pub const A: Actor = Actor(0xaaaa_0000_0000_0000);
    pub const B: Actor = Actor(0xbbbb_0000_0000_0000);

    pub fn t(ms: u64) -> Time {
        Time::from_micros(ms * 1000)
    }

    pub fn ctx(dots: &[Dot]) -> CausalContext {
        let mut c = CausalContext::new();
        for d in dots {
            c.insert(*d);
        }
        c
    }

    /// A put of `value` on `key` with `context`, coordinated with `dot` at `at_ms`,
    /// acknowledged at `at_ms + 1` when `acked`.
    pub fn put(
        h: &mut History,
        key: &str,
        value: &str,
        context: Option<CausalContext>,
        dot: Dot,
        at_ms: u64,
        acked: bool,
    ) -> usize {
        let id = h.invoke(
            0,
            "n0".into(),
            key.into(),
            OpKind::Put {
                value: value.into(),
                set_element: None,
            },
            context.clone(),
            t(at_ms),
        );
        let request = context.unwrap_or_default();
        h.coordinations.push(Coordination {
            node: "n0".into(),
            key: key.into(),
            dot,
            value: SiblingValue::Data(value.as_bytes().to_vec()),
            context: request.clone(),
            at: t(at_ms),
        });
        let mut reply = request;
        reply.insert(dot);
        let outcome = if acked {
            Outcome::Written { context: reply }
        } else {
            Outcome::TimedOut
        };
        h.complete(id, outcome, t(at_ms + 1));
        id
    }

    /// An acknowledged delete on `key` with `context`, minting `dot` at `at_ms`.
    pub fn delete(h: &mut History, key: &str, context: CausalContext, dot: Dot, at_ms: u64) {
        let id = h.invoke(
            0,
            "n0".into(),
            key.into(),
            OpKind::Delete,
            Some(context.clone()),
            t(at_ms),
        );
        h.coordinations.push(Coordination {
            node: "n0".into(),
            key: key.into(),
            dot,
            value: SiblingValue::Tombstone,
            context: context.clone(),
            at: t(at_ms),
        });
        let mut reply = context;
        reply.insert(dot);
        h.complete(id, Outcome::Written { context: reply }, t(at_ms + 1));
    }

    /// A get on `key` invoked at `at_ms`, answered at `at_ms + 1` with `values`.
    pub fn get(h: &mut History, key: &str, values: &[&str], at_ms: u64) -> usize {
        let id = h.invoke(
            0,
            "n0".into(),
            key.into(),
            OpKind::Get { r: None },
            None,
            t(at_ms),
        );
        h.complete(
            id,
            Outcome::Read {
                found: !values.is_empty(),
                values: values.iter().map(|v| (*v).to_owned()).collect(),
                context: CausalContext::new(),
            },
            t(at_ms + 1),
        );
        id
    }

    /// An object holding `sibs` (value or `None` for a tombstone, dot) and clock `clock`.
    pub fn object(sibs: &[(Option<&str>, Dot)], clock: &[Dot]) -> Object {
        let siblings = sibs
            .iter()
            .map(|(v, d)| Sibling {
                dot: *d,
                timestamp: Time::ZERO,
                value: match v {
                    Some(v) => SiblingValue::Data(v.as_bytes().to_vec()),
                    None => SiblingValue::Tombstone,
                },
            })
            .collect();
        Object::from_parts(ctx(clock), siblings)
    }

    /// A final state where `key`'s three primaries hold `objects`.
    pub fn state(key: &str, objects: Vec<Option<Object>>) -> FinalState {
        let mut s = FinalState::default();
        s.keys.insert(
            key.to_owned(),
            KeyState {
                replicas: objects
                    .into_iter()
                    .enumerate()
                    .map(|(i, object)| ReplicaCopy {
                        node: format!("n{i}"),
                        primary: true,
                        object,
                    })
                    .collect(),
            },
        );
        s
    }
}
