//! Cluster administration messages (`shoal cluster ...`): the layout's status, staging
//! changes, previewing them and committing them (issue 9). A client sends them to any
//! node; the node answers from its layout and runs a commit through the layout's Paxos.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_ring::NodeId;

use crate::layout::{Change, ClusterSettings, MemberState};

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
