//! What a test can script on top of the random run: partitions, crashes and client
//! operations at fixed instants, and a burst of foreground load. Times count from the
//! start of the run; everything scripted happens in the safety phase only.

use std::collections::BTreeSet;
use std::time::Duration;

/// A scripted partition that cuts some nodes off from the rest for a while, on top of the
/// random faults. A partition that starts while another is in force replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedPartition {
    /// The nodes (by index) on one side.
    pub side: BTreeSet<usize>,
    /// Only messages leaving `side` are lost.
    pub one_way: bool,
    /// When it starts, from the beginning of the run.
    pub start: Duration,
    /// How long it lasts.
    pub length: Duration,
}

/// A scripted crash: node `node` crashes at `at` (if it is up) and restarts `length`
/// later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedCrash {
    /// The node, by index.
    pub node: usize,
    /// When it crashes, from the beginning of the run.
    pub at: Duration,
    /// How long it stays down.
    pub length: Duration,
}

/// What a scripted client operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptedAction {
    /// A get with this read quorum (`None`: the default).
    Get {
        /// R for this request.
        r: Option<u8>,
    },
    /// A put of a fresh value, with the scripted client's last context for the key when
    /// `with_context`.
    Put {
        /// Send the last context seen for the key.
        with_context: bool,
    },
    /// A delete, with the scripted client's last context for the key when
    /// `with_context`.
    Delete {
        /// Send the last context seen for the key.
        with_context: bool,
    },
}

/// A client operation at a fixed instant, sent to a fixed node, by the scripted client
/// (one operation at a time: one that is due while the previous is still running waits
/// for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedOp {
    /// When it is sent, from the beginning of the run.
    pub at: Duration,
    /// The node it is sent to, by index.
    pub node: usize,
    /// The key (one of the run's keys, so that the checkers see it).
    pub key: String,
    /// What it does.
    pub action: ScriptedAction,
}

/// Extra clients that hammer their own keys (`b0`, `b1`, ...) with gets and puts for a
/// while, thinking at most `think_max` between operations: foreground load that does not
/// touch the workload's keys, so it repairs nothing of theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Burst {
    /// When it starts, from the beginning of the run.
    pub start: Duration,
    /// How long it lasts (no operation starts after it).
    pub length: Duration,
    /// Concurrent burst clients.
    pub clients: usize,
    /// Keys the burst uses.
    pub keys: usize,
    /// Longest think time between two operations of a burst client.
    pub think_max: Duration,
}

impl Burst {
    /// The name of burst key `i`.
    pub fn key(i: usize) -> String {
        format!("b{i}")
    }
}

/// The replicas of `key` in a simulated cluster of `nodes` nodes with `n` replicas per
/// key, by node index: its primaries in preference order, then its fallbacks in the order
/// a coordinator tries them. Scripted scenarios use it to aim at a key's replicas.
pub fn replicas_of(
    nodes: usize,
    key: &str,
    n: u8,
) -> Result<(Vec<usize>, Vec<usize>), shoal_ring::RingError> {
    let ids: Vec<shoal_ring::NodeId> = (0..nodes)
        .map(|i| shoal_ring::NodeId::new(format!("n{i}")))
        .collect::<Result<_, _>>()?;
    let ring = shoal_ring::Ring::new(
        super::PARTITIONS,
        ids.iter().cloned().map(shoal_ring::Member::new).collect(),
    )?;
    let index = |id: &shoal_ring::NodeId| ids.iter().position(|x| x == id);
    let partition = ring.partition_of(key.as_bytes());
    let primaries = ring
        .preference_list(partition, usize::from(n))
        .nodes
        .iter()
        .filter_map(index)
        .collect();
    let fallbacks = ring
        .fallbacks(partition, usize::from(n))
        .iter()
        .filter_map(index)
        .collect();
    Ok((primaries, fallbacks))
}

/// A scripted pause: node `node` stops at `at` for `length`, as a process stopped with
/// SIGSTOP (or stuck in a long GC pause or a hung disk) would: it is not crashed, its
/// connections stay open and nothing it holds is lost, but it handles nothing — requests
/// to it, its peers' answers, its storage completions and its timers all wait — until it
/// resumes and handles everything that waited, late.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedPause {
    /// The node, by index.
    pub node: usize,
    /// When it stops, from the beginning of the run.
    pub at: Duration,
    /// How long it stays stopped.
    pub length: Duration,
}

/// A scripted restore from a backup, as `shoal backup` and `shoal restore` make it: at
/// `backup_at` node `node`'s disk is copied (a checkpoint: everything it holds then); at
/// `restore_at` the node crashes (if up) and starts at once on that copy, under a new
/// actor and in restore mode (`Engine::begin_restore`: it serves nothing until each of
/// its partitions had a peer-wins exchange).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedRestore {
    /// The node, by index.
    pub node: usize,
    /// When its backup is taken, from the beginning of the run.
    pub backup_at: Duration,
    /// When it is restored from it (after `backup_at`).
    pub restore_at: Duration,
}
