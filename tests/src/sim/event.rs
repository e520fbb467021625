//! The simulator's events and their queue, ordered by (virtual time, sequence number) so
//! that events due at the same instant run in the order they were scheduled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_proto::wire::{ClientRequest, LayoutStamp, PeerRequest, PeerResponse, Response};
use shoal_proto::{RequestId, SendError, StorageOp, StorageResult, Time};

use super::network::RpcKey;
use crate::history::OpId;

/// Something that happens at an instant of virtual time.
#[derive(Debug)]
pub(crate) enum Event {
    /// A node-to-node request reaches its target (`copy` > 0: a duplicate), stamped
    /// with the sender's layout as it was when sent (as the node's driver stamps it).
    PeerRequest {
        rpc: RpcKey,
        to: usize,
        to_incarnation: u32,
        stamp: LayoutStamp,
        request: PeerRequest,
        copy: u8,
    },
    /// The outcome of a `Send` reaches its sender.
    PeerResponse {
        rpc: RpcKey,
        result: Result<PeerResponse, SendError>,
    },
    /// A `Send`'s timeout expires.
    RpcTimeout { rpc: RpcKey },
    /// A storage operation completes: applied when issued (`Applied`) or now (`Due`).
    /// `writes`: the op writes (with group commit its completion then waits for a sync).
    StorageDone {
        node: usize,
        incarnation: u32,
        id: RequestId,
        work: StorageWork,
        writes: bool,
    },
    /// Group commit: `node`'s sync of the writes whose completions wait for it ends.
    GroupSync { node: usize, incarnation: u32 },
    /// A node's engine timer is due.
    Timer { node: usize, incarnation: u32 },
    /// A client request reaches a node.
    ClientRequest {
        client: usize,
        op: OpId,
        node: usize,
        request: ClientRequest,
    },
    /// An answer (or a connection failure) reaches a client.
    ClientResponse {
        client: usize,
        op: OpId,
        /// The node the request went to.
        node: usize,
        result: Result<Response, String>,
    },
    /// A client gives up on an operation.
    ClientTimeout { client: usize, op: OpId },
    /// A client starts its next operation.
    ClientWake { client: usize },
    /// The fault injector's periodic decision.
    FaultTick,
    /// A scripted power cut of `node` that loses every unsynced write (restarted after
    /// `length`).
    PowerCut { node: usize, length: Duration },
    /// Cut the network: `side` cannot talk to the other nodes (or only hear them, when
    /// `one_way`) for `length`.
    Partition {
        side: BTreeSet<usize>,
        one_way: bool,
        length: Duration,
    },
    /// End partition number `id` (if it is still the current one).
    Heal { id: u64 },
    /// Restart a crashed node.
    Restart { node: usize },
    /// A scripted crash: crash `node` (if up) and restart it after `length`.
    Crash { node: usize, length: Duration },
    /// Scripted client operation number `index` is due.
    ScriptedOp { index: usize },
    /// A scripted pause: stop `node` (if up) for `length`.
    Pause { node: usize, length: Duration },
    /// A scripted backup: copy `node`'s disk as it is now.
    Backup { node: usize },
    /// Scripted layout change number `index` is due.
    LayoutChange { index: usize },
    /// A scripted restore: crash `node` (if up) and start it on its backup, in restore
    /// mode.
    Restore { node: usize },
    /// Operator `operator` (of a layout change through the agreement) takes its next
    /// step.
    OperatorWake { operator: usize },
}

impl Event {
    /// The node that handles this event, if one does (a paused node's wait).
    pub(crate) fn handler(&self) -> Option<usize> {
        match self {
            Event::PeerRequest { to, .. } => Some(*to),
            Event::PeerResponse { rpc, .. } | Event::RpcTimeout { rpc } => Some(rpc.from),
            Event::StorageDone { node, .. }
            | Event::GroupSync { node, .. }
            | Event::Timer { node, .. }
            | Event::ClientRequest { node, .. } => Some(*node),
            _ => None,
        }
    }
}

/// A storage operation on its way to completion.
#[derive(Debug)]
pub(crate) enum StorageWork {
    /// Already applied, with this result.
    Applied(StorageResult),
    /// To apply when it completes.
    Due(StorageOp),
}

/// Pending events, earliest first; ties run in scheduling order.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    events: BTreeMap<(Time, u64), Event>,
    seq: u64,
}

impl EventQueue {
    /// Schedule `event` at `at`.
    pub(crate) fn push(&mut self, at: Time, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    /// The earliest event, if it is due no later than `until`.
    pub(crate) fn pop_until(&mut self, until: Time) -> Option<(Time, Event)> {
        let entry = self.events.first_entry()?;
        if entry.key().0 > until {
            return None;
        }
        let ((at, _), event) = entry.remove_entry();
        Some((at, event))
    }

    /// Events waiting.
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_scheduling_order() {
        let mut q = EventQueue::default();
        q.push(Time::from_micros(5), Event::Restart { node: 1 });
        q.push(Time::from_micros(3), Event::Restart { node: 2 });
        q.push(Time::from_micros(5), Event::Restart { node: 3 });
        let order: Vec<usize> = std::iter::from_fn(|| q.pop_until(Time::from_micros(10)))
            .map(|(_, e)| match e {
                Event::Restart { node } => node,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, vec![2, 1, 3]);
        q.push(Time::from_micros(20), Event::FaultTick);
        assert!(q.pop_until(Time::from_micros(19)).is_none());
        assert_eq!(q.len(), 1);
    }
}
