//! Single-decree Paxos, one instance per slot: how the cluster will agree on each layout
//! version (issue 9: "at most one layout ever exists per version, also under concurrent
//! commits from two operators, partitions and crashes").
//!
//! Slot `v` decides the layout of version `v`; its acceptors are the voting members of
//! layout `v - 1`, so the set that decides a version is fixed before anyone proposes for
//! it. The data path stays leaderless: only layout changes go through here, rarely and
//! off the request path. Sans-IO like the rest of the crate: an [`Acceptor`] answers
//! [`PaxosRequest`]s with [`PaxosReply`]s, a [`Proposer`] turns replies into the next
//! requests or a decision, and the caller carries the messages and keeps the acceptor's
//! state durable (an acceptor's promise and acceptance must be synced before its reply
//! leaves: an acceptor that forgets them after a crash can let two values be chosen,
//! which `proto/tests/paxos.rs` shows).
//!
//! This is the classic protocol (Lamport, "Paxos Made Simple"): a proposer picks a ballot
//! higher than any it has seen, gathers promises from a majority (phase 1), proposes the
//! value of the highest-ballot acceptance among them or else its own (phase 2), and the
//! value is chosen once a majority accepts the same ballot. Nothing waits on a timer for
//! safety; timers (the caller's) only decide when a proposer that heard nothing retries.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_ring::NodeId;

/// A proposal number: rounds are compared first, the proposer's id breaks ties, so two
/// proposers never use the same ballot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every retry.
    pub round: u64,
    /// Who proposes with it.
    pub proposer: NodeId,
}

/// A value an acceptor accepted, and under which ballot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted<V> {
    /// The ballot of the accepted proposal.
    pub ballot: Ballot,
    /// The value proposed with it.
    pub value: V,
}

/// Requests to send, each with the acceptor it goes to.
pub type Sends<V> = Vec<(NodeId, PaxosRequest<V>)>;

/// A request from a proposer to an acceptor, for one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosRequest<V> {
    /// Phase 1: promise to ignore ballots below `ballot`, and say what you accepted.
    Prepare {
        /// The instance.
        slot: u64,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Phase 2: accept `value` under `ballot` unless you promised a higher ballot.
    Accept {
        /// The instance.
        slot: u64,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The value proposed.
        value: V,
    },
}

impl<V> PaxosRequest<V> {
    /// The instance the request is for.
    pub fn slot(&self) -> u64 {
        match self {
            PaxosRequest::Prepare { slot, .. } | PaxosRequest::Accept { slot, .. } => *slot,
        }
    }
}

/// An acceptor's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosReply<V> {
    /// Phase 1 granted: the acceptor will ignore lower ballots; `accepted` is the value
    /// it accepted last, if any.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// What the acceptor accepted before, if anything.
        accepted: Option<Accepted<V>>,
    },
    /// Phase 2 granted.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
    },
    /// Refused: the acceptor promised `promised`, higher than the request's ballot.
    Rejected {
        /// The ballot of the refused request.
        ballot: Ballot,
        /// The higher ballot the acceptor promised.
        promised: Ballot,
    },
}

/// One acceptor's state for one slot: what it must keep durably.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptor<V> {
    promised: Option<Ballot>,
    accepted: Option<Accepted<V>>,
}

impl<V> Default for Acceptor<V> {
    fn default() -> Self {
        Acceptor {
            promised: None,
            accepted: None,
        }
    }
}

impl<V: Clone> Acceptor<V> {
    /// Answers `request` and updates the state. When the second value is `true` the
    /// state changed, and must be durable before the reply is sent.
    pub fn handle(&mut self, request: &PaxosRequest<V>) -> (PaxosReply<V>, bool) {
        match request {
            PaxosRequest::Prepare { ballot, .. } => match &self.promised {
                Some(p) if p > ballot => (self.rejected(ballot, p), false),
                // A repeated prepare of the promised ballot is granted again, unchanged.
                Some(p) if p == ballot => (self.promise(ballot), false),
                _ => {
                    self.promised = Some(ballot.clone());
                    (self.promise(ballot), true)
                }
            },
            PaxosRequest::Accept { ballot, value, .. } => match &self.promised {
                Some(p) if p > ballot => (self.rejected(ballot, p), false),
                _ => {
                    let changed = self.accepted.as_ref().map(|a| &a.ballot) != Some(ballot);
                    self.promised = Some(ballot.clone());
                    self.accepted = Some(Accepted {
                        ballot: ballot.clone(),
                        value: value.clone(),
                    });
                    (
                        PaxosReply::Accepted {
                            ballot: ballot.clone(),
                        },
                        changed,
                    )
                }
            },
        }
    }

    /// The highest ballot promised, if any.
    pub fn promised(&self) -> Option<&Ballot> {
        self.promised.as_ref()
    }

    /// The value accepted last, if any.
    pub fn accepted(&self) -> Option<&Accepted<V>> {
        self.accepted.as_ref()
    }

    fn promise(&self, ballot: &Ballot) -> PaxosReply<V> {
        PaxosReply::Promise {
            ballot: ballot.clone(),
            accepted: self.accepted.clone(),
        }
    }

    fn rejected(&self, ballot: &Ballot, promised: &Ballot) -> PaxosReply<V> {
        PaxosReply::Rejected {
            ballot: ballot.clone(),
            promised: promised.clone(),
        }
    }
}

/// Where a proposer is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase<V> {
    /// Waiting for a majority of promises.
    Preparing {
        promises: BTreeMap<NodeId, Option<Accepted<V>>>,
    },
    /// Waiting for a majority to accept `value`.
    Accepting { value: V, accepts: BTreeSet<NodeId> },
    /// A majority accepted `value`: it is chosen.
    Decided(V),
    /// An acceptor promised a higher ballot; [`Proposer::retry`] starts over above it.
    Preempted,
}

/// What a reply made a proposer do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposerStep<V> {
    /// Nothing yet (a reply for an old ballot, a duplicate, or not a majority yet).
    Wait,
    /// Send these requests.
    Send(Sends<V>),
    /// `V` is chosen for the slot: the proposer's own value or one an earlier proposal
    /// got accepted (then the caller's change lost and must be re-planned).
    Decided(V),
    /// A higher ballot was promised elsewhere; retry later with [`Proposer::retry`].
    Preempted,
}

/// A proposer for one slot.
#[derive(Clone, Debug)]
pub struct Proposer<V> {
    slot: u64,
    me: NodeId,
    acceptors: BTreeSet<NodeId>,
    ballot: Ballot,
    /// The value this proposer wants, proposed when no acceptor reports an earlier one.
    own: V,
    /// The highest ballot seen in any reply (a retry goes above it).
    highest_seen: u64,
    phase: Phase<V>,
}

/// Why a proposer could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaxosError {
    /// No acceptors.
    #[error("a slot needs at least one acceptor")]
    NoAcceptors,
}

impl<V: Clone + PartialEq> Proposer<V> {
    /// A proposer of `own` for `slot` among `acceptors`, starting at `round` (use one
    /// above any round this node used before for the slot); returns it with its phase-1
    /// requests.
    pub fn start(
        slot: u64,
        me: NodeId,
        acceptors: impl IntoIterator<Item = NodeId>,
        round: u64,
        own: V,
    ) -> Result<(Proposer<V>, Sends<V>), PaxosError> {
        let acceptors: BTreeSet<NodeId> = acceptors.into_iter().collect();
        if acceptors.is_empty() {
            return Err(PaxosError::NoAcceptors);
        }
        let ballot = Ballot {
            round,
            proposer: me.clone(),
        };
        let mut p = Proposer {
            slot,
            me,
            acceptors,
            ballot,
            own,
            highest_seen: round,
            phase: Phase::Preempted,
        };
        let sends = p.prepare();
        Ok((p, sends))
    }

    /// The ballot in use.
    pub fn ballot(&self) -> &Ballot {
        &self.ballot
    }

    /// The slot.
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// The chosen value, once known.
    pub fn decided(&self) -> Option<&V> {
        match &self.phase {
            Phase::Decided(v) => Some(v),
            _ => None,
        }
    }

    /// Acceptors whose answers make a majority.
    pub fn majority(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    fn prepare(&mut self) -> Sends<V> {
        self.phase = Phase::Preparing {
            promises: BTreeMap::new(),
        };
        self.acceptors
            .iter()
            .map(|a| {
                (
                    a.clone(),
                    PaxosRequest::Prepare {
                        slot: self.slot,
                        ballot: self.ballot.clone(),
                    },
                )
            })
            .collect()
    }

    /// Starts over with a ballot above every one seen (after [`ProposerStep::Preempted`],
    /// or when the caller's timer says the replies are not coming). A decided proposer
    /// stays decided and sends nothing.
    pub fn retry(&mut self) -> Sends<V> {
        if matches!(self.phase, Phase::Decided(_)) {
            return Vec::new();
        }
        let round = self.highest_seen.saturating_add(1);
        self.highest_seen = round;
        self.ballot = Ballot {
            round,
            proposer: self.me.clone(),
        };
        self.prepare()
    }

    /// Handles acceptor `from`'s reply.
    pub fn on_reply(&mut self, from: &NodeId, reply: PaxosReply<V>) -> ProposerStep<V> {
        if !self.acceptors.contains(from) {
            return ProposerStep::Wait;
        }
        let majority = self.majority();
        match reply {
            PaxosReply::Rejected { ballot, promised } => {
                self.highest_seen = self.highest_seen.max(promised.round);
                if ballot != self.ballot || matches!(self.phase, Phase::Decided(_)) {
                    return ProposerStep::Wait;
                }
                self.phase = Phase::Preempted;
                ProposerStep::Preempted
            }
            PaxosReply::Promise { ballot, accepted } => {
                if ballot != self.ballot {
                    return ProposerStep::Wait;
                }
                let Phase::Preparing { promises } = &mut self.phase else {
                    return ProposerStep::Wait;
                };
                if let Some(a) = &accepted {
                    self.highest_seen = self.highest_seen.max(a.ballot.round);
                }
                promises.insert(from.clone(), accepted);
                if promises.len() < majority {
                    return ProposerStep::Wait;
                }
                // The value of the highest-ballot acceptance among the promises, else ours.
                let value = promises
                    .values()
                    .flatten()
                    .max_by(|x, y| x.ballot.cmp(&y.ballot))
                    .map_or_else(|| self.own.clone(), |a| a.value.clone());
                self.phase = Phase::Accepting {
                    value: value.clone(),
                    accepts: BTreeSet::new(),
                };
                let sends = self
                    .acceptors
                    .iter()
                    .map(|a| {
                        (
                            a.clone(),
                            PaxosRequest::Accept {
                                slot: self.slot,
                                ballot: self.ballot.clone(),
                                value: value.clone(),
                            },
                        )
                    })
                    .collect();
                ProposerStep::Send(sends)
            }
            PaxosReply::Accepted { ballot } => {
                if ballot != self.ballot {
                    return ProposerStep::Wait;
                }
                let Phase::Accepting { value, accepts } = &mut self.phase else {
                    return ProposerStep::Wait;
                };
                accepts.insert(from.clone());
                if accepts.len() < majority {
                    return ProposerStep::Wait;
                }
                let value = value.clone();
                self.phase = Phase::Decided(value.clone());
                ProposerStep::Decided(value)
            }
        }
    }

    /// Whether the value chosen (once decided) is this proposer's own.
    pub fn won(&self) -> bool {
        self.decided().is_some_and(|v| *v == self.own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("a valid id")
    }

    fn ballot(round: u64, p: &str) -> Ballot {
        Ballot {
            round,
            proposer: id(p),
        }
    }

    #[test]
    fn an_acceptor_refuses_ballots_below_its_promise_and_reports_what_it_accepted() {
        let mut a = Acceptor::<&str>::default();
        let (r, changed) = a.handle(&PaxosRequest::Prepare {
            slot: 2,
            ballot: ballot(2, "x"),
        });
        assert!(changed);
        assert_eq!(
            r,
            PaxosReply::Promise {
                ballot: ballot(2, "x"),
                accepted: None
            }
        );
        let (r, changed) = a.handle(&PaxosRequest::Prepare {
            slot: 2,
            ballot: ballot(1, "y"),
        });
        assert!(!changed);
        assert_eq!(
            r,
            PaxosReply::Rejected {
                ballot: ballot(1, "y"),
                promised: ballot(2, "x")
            }
        );
        let (r, changed) = a.handle(&PaxosRequest::Accept {
            slot: 2,
            ballot: ballot(1, "y"),
            value: "y",
        });
        assert!(!changed && matches!(r, PaxosReply::Rejected { .. }));
        let (r, changed) = a.handle(&PaxosRequest::Accept {
            slot: 2,
            ballot: ballot(2, "x"),
            value: "x",
        });
        assert!(changed);
        assert_eq!(
            r,
            PaxosReply::Accepted {
                ballot: ballot(2, "x")
            }
        );
        // Same round, higher proposer id: a higher ballot, promised, with the acceptance.
        let (r, _) = a.handle(&PaxosRequest::Prepare {
            slot: 2,
            ballot: ballot(2, "z"),
        });
        assert_eq!(
            r,
            PaxosReply::Promise {
                ballot: ballot(2, "z"),
                accepted: Some(Accepted {
                    ballot: ballot(2, "x"),
                    value: "x"
                })
            }
        );
    }

    #[test]
    fn a_proposer_adopts_the_highest_accepted_value_among_its_promises() {
        let acceptors = ["a", "b", "c"].map(id);
        let (mut p, sends) = Proposer::start(5, id("p"), acceptors.clone(), 7, "mine").unwrap();
        assert_eq!(sends.len(), 3);
        let promise = |accepted| PaxosReply::Promise {
            ballot: ballot(7, "p"),
            accepted,
        };
        assert_eq!(
            p.on_reply(
                &id("a"),
                promise(Some(Accepted {
                    ballot: ballot(3, "q"),
                    value: "older"
                }))
            ),
            ProposerStep::Wait
        );
        let step = p.on_reply(
            &id("b"),
            promise(Some(Accepted {
                ballot: ballot(4, "r"),
                value: "newer",
            })),
        );
        let ProposerStep::Send(accepts) = step else {
            panic!("expected accepts, got {step:?}");
        };
        assert!(accepts
            .iter()
            .all(|(_, r)| matches!(r, PaxosRequest::Accept { value: "newer", .. })));
        assert_eq!(
            p.on_reply(
                &id("a"),
                PaxosReply::Accepted {
                    ballot: ballot(7, "p")
                }
            ),
            ProposerStep::Wait
        );
        assert_eq!(
            p.on_reply(
                &id("c"),
                PaxosReply::Accepted {
                    ballot: ballot(7, "p")
                }
            ),
            ProposerStep::Decided("newer")
        );
        assert!(!p.won());
        assert!(p.retry().is_empty(), "a decided proposer sends nothing");
    }

    #[test]
    fn a_rejection_preempts_and_the_retry_goes_above_the_promised_ballot() {
        let (mut p, _) = Proposer::start(1, id("p"), ["a", "b", "c"].map(id), 1, 1u8).unwrap();
        let step = p.on_reply(
            &id("a"),
            PaxosReply::Rejected {
                ballot: ballot(1, "p"),
                promised: ballot(9, "q"),
            },
        );
        assert_eq!(step, ProposerStep::Preempted);
        let sends = p.retry();
        assert_eq!(p.ballot(), &ballot(10, "p"));
        assert_eq!(sends.len(), 3);
        // Replies from strangers and for old ballots change nothing.
        assert_eq!(
            p.on_reply(
                &id("zz"),
                PaxosReply::Accepted {
                    ballot: ballot(10, "p")
                }
            ),
            ProposerStep::Wait
        );
        assert_eq!(
            p.on_reply(
                &id("a"),
                PaxosReply::Promise {
                    ballot: ballot(1, "p"),
                    accepted: None
                }
            ),
            ProposerStep::Wait
        );
    }

    #[test]
    fn a_proposer_needs_acceptors() {
        let none: [NodeId; 0] = [];
        assert_eq!(
            Proposer::start(1, id("p"), none, 1, ()).unwrap_err(),
            PaxosError::NoAcceptors
        );
    }
}
