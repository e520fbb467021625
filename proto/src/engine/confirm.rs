//! Confirming the layout at start: the fence's W = 1 gap (issue 9).
//!
//! A node restarted from its store serves from the layout it had saved. If the cluster
//! removed or replaced it while it was down, that layout is stale, and with W = 1 its own
//! copy alone would meet W for it: a client write could be acknowledged and then lost with
//! the node, which its peers refuse (stale stamp). So a node started on a stored layout
//! in which it has peers coordinates no client data request (get, put, delete) until a
//! peer confirmed its layout: it heard a peer at its version, by a stamp on a peer's
//! request or by a history it fetched (a newer one is taken first, so a removed node
//! learns it is fenced). Meanwhile it answers [`RequestError::Unavailable`] with
//! `alive: 0`, which clients retry; it asks every peer for its layout at once and again
//! every `membership.probe_interval`. Confirming needs nothing of the peer but an answer,
//! so a whole cluster restarted together confirms as soon as any two nodes talk. A node
//! whose layout has no other member (a single-node cluster) has nothing to confirm. A
//! node that sends its peers a wire version before layouts skips it
//! ([`Engine::skip_layout_confirmation`]).
//!
//! One peer at the same version is enough: two nodes removed together and restarted
//! together on their old layout would confirm each other (their peers refuse both as
//! stale, so their writes are not acknowledged beyond the two of them).

use shoal_ring::NodeId;

use super::{Engine, InboundId, Timer};
use crate::error::RequestError;
use crate::layout::{LayoutHistory, MemberState};
use crate::wire::{ClientRequest, ClientResponse};

impl Engine {
    /// Whether this node, started on a stored layout, waits for a peer to confirm it
    /// (see the module doc): until then it coordinates no client data request.
    pub fn confirming_layout(&self) -> bool {
        self.agree.confirming.is_some()
    }

    /// Serves at once from the stored layout, without confirming it: for a node whose
    /// peers cannot confirm it, one that sends them a wire version before layouts (pinned
    /// during a rolling upgrade: its requests carry no stamp and its peers' layout answers
    /// cannot be carried back to it, so it would wait for good). The W = 1 gap of the fence
    /// is open for it then, as before layouts.
    pub fn skip_layout_confirmation(&mut self) {
        if self.agree.confirming.take().is_some() {
            metrics::gauge!(crate::metrics::LAYOUT_CONFIRMING).set(0.0);
            tracing::warn!(
                node = %self.me,
                version = self.layout.version(),
                "serving from the stored layout without confirming it with a peer"
            );
        }
    }

    /// The members this node asks to confirm its layout: every member of its current
    /// layout but itself and those removed.
    fn confirm_peers(&self) -> Vec<NodeId> {
        self.layout
            .current()
            .members()
            .iter()
            .filter(|m| m.id != self.me && m.state != MemberState::Removed)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Starts confirming the layout (a node started on its stored layout), unless this
    /// node has no peer to confirm it with.
    pub(super) fn start_confirming(&mut self) {
        if self.is_candidate() || self.confirming_layout() {
            return;
        }
        let peers = self.confirm_peers().len();
        if peers == 0 {
            return;
        }
        self.agree.confirming = Some(self.mono);
        metrics::gauge!(crate::metrics::LAYOUT_CONFIRMING).set(1.0);
        tracing::info!(
            node = %self.me,
            version = self.layout.version(),
            peers,
            "started on the stored layout: confirming it with a peer before coordinating \
             client data requests"
        );
        self.timers.insert((self.mono, Timer::ConfirmLayout));
    }

    /// Asks every peer for its layout (one fetch per peer at a time), and again after
    /// `probe_interval` while still confirming.
    pub(super) fn confirm_round(&mut self) {
        if !self.confirming_layout() {
            return;
        }
        for peer in self.confirm_peers() {
            self.fetch_layout(peer);
        }
        let next = self.mono + self.cfg.membership.probe_interval;
        self.timers.insert((next, Timer::ConfirmLayout));
    }

    /// A peer's request carried a stamp of `version`, of this node's cluster.
    pub(super) fn heard_stamp(&mut self, peer: &NodeId, version: u64) {
        // A newer version is fetched first (`check_stamp`); its history confirms.
        if version == self.layout.version() {
            self.layout_confirmed(peer);
        }
    }

    /// A peer sent its history (and this node took what it lacked).
    pub(super) fn heard_history(&mut self, peer: &NodeId, history: &LayoutHistory) {
        if !self.confirming_layout()
            || self
                .layout
                .settings()
                .mismatch(history.settings())
                .is_some()
        {
            return;
        }
        // An older history than ours confirms nothing: the peer lags.
        if history.version() == self.layout.version() {
            self.layout_confirmed(peer);
        }
    }

    fn layout_confirmed(&mut self, peer: &NodeId) {
        let Some(since) = self.agree.confirming.take() else {
            return;
        };
        let took = self.mono.saturating_since(since);
        metrics::gauge!(crate::metrics::LAYOUT_CONFIRMING).set(0.0);
        metrics::histogram!(crate::metrics::LAYOUT_CONFIRM_SECONDS).record(took.as_secs_f64());
        tracing::info!(
            node = %self.me,
            %peer,
            version = self.layout.version(),
            fenced = self.is_fenced(),
            "layout confirmed by a peer after {took:?}"
        );
    }

    /// A client data request while confirming: refused, retryable, nothing done.
    pub(super) fn refuse_unconfirmed(&mut self, id: InboundId, req: &ClientRequest) {
        self.meters
            .requests
            .get([req.op_name(), "confirming_layout"])
            .increment(1);
        let needed = super::forward::quorum_of(req, &self.cfg);
        self.respond_client(
            id,
            ClientResponse::Error(RequestError::Unavailable { needed, alive: 0 }),
        );
    }
}
