//! Cluster administration messages (`shoal cluster ...`): the layout's status, staging
//! changes, previewing them and committing them (issue 9). A client sends them to any
//! node; the node answers from its layout and runs a commit through the layout's Paxos.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_ring::NodeId;

use super::Response;
use crate::layout::{Change, ClusterSettings, MemberState};
use crate::RequestError;

/// An administrative request about the cluster's layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// The layout, its members (and candidates) and the transfers in progress.
    Status,
    /// Stage a change; nothing moves until a commit.
    Stage(StageRequest),
    /// Drop every staged change.
    Unstage,
    /// What the staged changes would do.
    Plan,
    /// Apply the staged changes, only if the current layout version is `version`.
    Commit {
        /// The version the operator planned on.
        version: u64,
    },
    /// [`ClusterRequest::Commit`], only if the changes staged now are the plan `plan`
    /// (its [`PlanId`], as [`ClusterRequest::Plan`] reported it): a change unstaged or
    /// restaged since, by another operator on the same node, is refused
    /// ([`RequestError::PlanChanged`](crate::RequestError::PlanChanged)) rather than
    /// committed in the planner's name.
    CommitPlan {
        /// The version the operator planned on.
        version: u64,
        /// The plan the operator reviewed.
        plan: PlanId,
    },
}

/// A plan's identity: a 64-bit FNV-1a hash of the layout version it was made on and the
/// staged changes (their postcard encoding, as the wire carries them), shown as 16 hex
/// digits. Computed alike by a node and by a client from a [`PlanReport`]; no seed, no
/// process-local hashing, so it is stable across nodes, builds and restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlanId(pub u64);

impl PlanId {
    /// The id of the plan of `changes` on layout version `version`.
    pub fn of(version: u64, changes: &[Change]) -> PlanId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        // Serialising plain data into a Vec cannot fail.
        let bytes = postcard::to_stdvec(&(version, changes)).unwrap_or_default();
        PlanId(
            bytes
                .iter()
                .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME)),
        )
    }
}

impl std::fmt::Display for PlanId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why text is not a [`PlanId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a plan id (1 to 16 hex digits, as `shoal cluster plan` prints it)")]
pub struct PlanIdError(String);

impl std::str::FromStr for PlanId {
    type Err = PlanIdError;

    /// 1 to 16 hex digits, either case (what [`Display`](std::fmt::Display) prints).
    fn from_str(s: &str) -> Result<PlanId, PlanIdError> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PlanIdError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(PlanId)
            .map_err(|_| PlanIdError(s.to_owned()))
    }
}

/// A change as an operator names it: the node resolves addresses (a joining node must
/// have contacted the cluster, so its address is known) and checks it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StageRequest {
    /// A candidate becomes a member.
    Join {
        /// The candidate.
        id: NodeId,
        /// Its zone.
        zone: Option<String>,
        /// Its weight (at least 1).
        weight: u32,
    },
    /// A member hands its partitions over, then stops serving data.
    Leave {
        /// The member.
        id: NodeId,
    },
    /// A member dead for good: its partitions are rebuilt from the survivors.
    Remove {
        /// The member.
        id: NodeId,
    },
    /// `new` (a candidate) takes exactly `old`'s partitions; `old` must be down.
    Replace {
        /// The member replaced.
        old: NodeId,
        /// The candidate taking its place.
        new: NodeId,
    },
}

/// What a node answers a [`ClusterRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterReply {
    /// The answer to [`ClusterRequest::Status`].
    Status(ClusterStatus),
    /// The changes staged now (after a stage or unstage).
    Staged(Vec<Change>),
    /// The answer to [`ClusterRequest::Plan`].
    Plan(PlanReport),
    /// The layout version the commit made.
    Committed {
        /// The new current version.
        version: u64,
    },
}

/// A node's place in the cluster, as `status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberRole {
    /// Started and contacted the cluster, not in the layout: holds no partitions.
    Candidate,
    /// In the layout, in this state.
    Member(MemberState),
}

/// One member or candidate in [`ClusterStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The node.
    pub id: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Candidate, or its layout state.
    pub role: MemberRole,
    /// Its zone.
    pub zone: Option<String>,
    /// Its weight.
    pub weight: u32,
    /// Partitions it owns in the current layout.
    pub partitions: usize,
    /// Whether the answering node sees it up.
    pub up: bool,
}

/// Partition transfers of the layout change in progress, as the answering node knows
/// them (pending: not started; running; done).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSummary {
    /// Partitions of the version it syncs it has not started pulling.
    pub pending: u64,
    /// Partitions it is pulling now (an exchange running).
    pub running: u64,
    /// Partitions of that version pulled in full.
    pub done: u64,
    /// Bytes its transfer exchanges received for that version.
    pub bytes_done: u64,
    /// Bytes still to move, estimated from the bytes per partition pulled so far, or
    /// before the first from its tree key counts.
    pub bytes_left: u64,
}

/// The answer to [`ClusterRequest::Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node: NodeId,
    /// The current layout version.
    pub version: u64,
    /// The cluster's settings.
    pub settings: ClusterSettings,
    /// Every layout version still in use (more than one while a change is in progress).
    pub versions_in_use: Vec<u64>,
    /// Members (every state) and candidates.
    pub members: Vec<MemberReport>,
    /// Transfers of the change in progress.
    pub transfers: TransferSummary,
    /// Changes staged and not yet committed.
    pub staged: Vec<Change>,
}

/// The answer to [`ClusterRequest::Plan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    /// The version the plan was made on (what `commit --version` must name).
    pub version: u64,
    /// The version a commit would make.
    pub next_version: u64,
    /// The staged changes.
    pub changes: Vec<Change>,
    /// Per node: partitions owned before and after.
    pub partitions: Vec<(NodeId, usize, usize)>,
    /// Partitions whose owner changes.
    pub moves: usize,
    /// An estimate of the bytes that move (replica copies that must be streamed).
    pub bytes_estimate: u64,
    /// The most and fewest partitions any owner holds after.
    pub balance: (usize, usize),
    /// Distinct zones among the owners after.
    pub zones_after: usize,
}

impl PlanReport {
    /// The plan's id (of its version and changes): what
    /// [`ClusterRequest::CommitPlan`] names.
    pub fn id(&self) -> PlanId {
        PlanId::of(self.version, &self.changes)
    }
}

/// `resp` as a requester older than wire version 4 can decode it, when it holds a
/// [`RequestError::PlanChanged`] (added in version 4): that refusal as
/// [`RequestError::LayoutRefused`] with its text. `None` when nothing needs replacing.
pub(super) fn before_plan_ids(resp: &Response) -> Option<Response> {
    super::replace_error(resp, |e| {
        matches!(e, RequestError::PlanChanged { .. })
            .then(|| RequestError::LayoutRefused(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).expect("a valid node id")
    }

    fn join(name: &str, port: u16) -> Change {
        Change::Join {
            id: node(name),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone: Some("z1".into()),
            weight: 2,
        }
    }

    /// The id is a pure function of the version and the changes, pinned here: a client
    /// and a node of another build must compute the same one (a change of encoding or
    /// hash shows up as a changed value).
    #[test]
    fn a_plan_id_is_stable_and_depends_on_the_version_and_every_change() {
        let changes = vec![join("d", 7003), Change::Leave { id: node("b") }];
        let id = PlanId::of(1, &changes);
        const PINNED: u64 = 0x2e0e_d579_a9dc_66d0;
        assert_eq!(id, PlanId(PINNED));
        assert_eq!(id, PlanId::of(1, &changes.clone()));
        assert_ne!(id, PlanId::of(2, &changes), "another version");
        let swapped = vec![changes[1].clone(), changes[0].clone()];
        assert_ne!(id, PlanId::of(1, &swapped), "another order");
        assert_ne!(id, PlanId::of(1, &changes[..1]), "one change fewer");
        assert_ne!(
            id,
            PlanId::of(1, &[join("d", 7004), changes[1].clone()]),
            "another address"
        );
        assert_ne!(PlanId::of(1, &[]), PlanId::of(2, &[]));
    }

    #[test]
    fn a_plan_id_prints_as_16_hex_digits_and_parses_back() {
        let id = PlanId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse(), Ok(id));
        assert_eq!("ABCDEF01234567".parse(), Ok(id));
        assert_eq!("0".parse(), Ok(PlanId(0)));
        for bad in ["", "xyz", "12345678901234567", "-1", "+1", "0x12", " 12"] {
            let err = bad.parse::<PlanId>().expect_err(bad);
            assert!(err.to_string().contains("not a plan id"), "{err}");
        }
    }

    #[test]
    fn a_plan_report_names_the_id_of_its_version_and_changes() {
        let report = PlanReport {
            version: 4,
            next_version: 5,
            changes: vec![Change::Remove { id: node("c") }],
            partitions: Vec::new(),
            moves: 0,
            bytes_estimate: 0,
            balance: (0, 0),
            zones_after: 1,
        };
        assert_eq!(report.id(), PlanId::of(4, &report.changes));
    }
}
