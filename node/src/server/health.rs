//! What `GET /ready` answers: the node's serving state, written by the node's tasks and
//! read by the metrics listener's HTTP handler (see [`crate::metrics`]).
//!
//! Kubernetes semantics: `/health` (liveness) is 200 whenever the process answers at all,
//! so a restart is only triggered by a hung or dead process; `/ready` (readiness) is 200
//! only while the node can usefully coordinate requests, so a load balancer stops sending
//! it clients when it cannot. The rule for "serving": storage is open, the node is a
//! member of its own membership view (the ring), and at least `max(R, W)` members are up
//! counting itself — fewer, and every quorum request it coordinates would fail as
//! unavailable — and it is not restoring from a backup (it refuses requests until its
//! partitions match its peers') nor confirming the layout it started on with a peer (it
//! refuses client data requests until one did). The state is global because the metrics
//! listener is process-wide.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static STORAGE_OPEN: AtomicBool = AtomicBool::new(false);
static IN_MEMBERSHIP: AtomicBool = AtomicBool::new(false);
static MEMBERS_UP: AtomicUsize = AtomicUsize::new(0);
static MEMBERS_NEEDED: AtomicUsize = AtomicUsize::new(usize::MAX);
static RESTORING: AtomicBool = AtomicBool::new(false);
static CONFIRMING_LAYOUT: AtomicBool = AtomicBool::new(false);

/// Record whether the engine waits for a peer to confirm the layout it started on (it
/// refuses client data requests until then).
pub(crate) fn set_confirming_layout(confirming: bool) {
    CONFIRMING_LAYOUT.store(confirming, Ordering::Relaxed);
}

/// Record whether the node is in restore mode (started from a backup, not yet caught up
/// with its peers): it serves nothing until it is through.
pub(crate) fn set_restoring(restoring: bool) {
    RESTORING.store(restoring, Ordering::Relaxed);
}

/// Record whether storage is open (set after it opens, cleared on shutdown).
pub(crate) fn set_storage_open(open: bool) {
    STORAGE_OPEN.store(open, Ordering::Relaxed);
}

/// Record how many members must be up (the node included) for quorum requests to succeed.
pub(crate) fn set_members_needed(needed: usize) {
    MEMBERS_NEEDED.store(needed, Ordering::Relaxed);
}

/// Record the driver's membership view: whether the node is a member and how many
/// members are up (itself included).
pub(crate) fn set_membership(member: bool, up: usize) {
    IN_MEMBERSHIP.store(member, Ordering::Relaxed);
    MEMBERS_UP.store(up, Ordering::Relaxed);
}

/// `Ok` when the node is serving, else a short plain-text reason.
pub fn readiness() -> Result<(), String> {
    if !STORAGE_OPEN.load(Ordering::Relaxed) {
        return Err("storage is not open".into());
    }
    if RESTORING.load(Ordering::Relaxed) {
        return Err(
            "restoring from a backup: bringing each partition in line with a peer \
             (shoal_restore_partitions_left)"
                .into(),
        );
    }
    if CONFIRMING_LAYOUT.load(Ordering::Relaxed) {
        return Err("confirming the stored layout with a peer (shoal_layout_confirming)".into());
    }
    if !IN_MEMBERSHIP.load(Ordering::Relaxed) {
        return Err("this node is not in its membership view".into());
    }
    let up = MEMBERS_UP.load(Ordering::Relaxed);
    let needed = MEMBERS_NEEDED.load(Ordering::Relaxed);
    if up < needed {
        return Err(format!(
            "{up} members reachable (this node included), a quorum needs {needed}"
        ));
    }
    Ok(())
}
