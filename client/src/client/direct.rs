//! Direct reads: a read at R of 2 or more asks R primaries of its key for their own
//! copies at once ([`ClientRequest::GetReplica`], wire version 6) and answers with them
//! when every copy is the same, under the same settled layout version.
//!
//! A read through a coordinator makes two hops in a row (client to coordinator,
//! coordinator to the other replicas); a direct read makes one, to R replicas in
//! parallel. It answers only what a coordinator reading those R primaries would answer:
//! the merge of equal copies is that copy. Whenever that is not certain, the read goes
//! through a coordinator as before, with its quorum, speculation, fallbacks and read
//! repair: copies that differ (the coordinator's read repairs them), a primary that
//! declines (a layout change in progress, a restoring or fenced node, a dropping
//! partition) or fails, an answer slower than [`DIRECT_READ_WAIT`] (that node is then
//! marked down for a moment, as a coordinated read marks a node that fails it), fewer
//! than R primaries not marked down, and nodes that do not speak version 6. A direct read does
//! not take part in the nodes' sampled read repair (`read_repair_chance_percent`);
//! anti-entropy reaches the replicas no read asks.
//!
//! Metrics: `shoal_client_direct_reads_total{result}` (`agreed`: answered directly;
//! `differed`, `declined`, `failed`: sent through a coordinator after asking;
//! `skipped`: not asked, as above).

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use shoal_proto::wire::{encode_request, ClientRequest, ClientResponse, GetReply, Request};
use shoal_proto::RequestError;
use tokio::time::Instant;
use tracing::debug;

use super::wire::SendError;
use super::Client;
use crate::options::ReadOptions;
use crate::routing::Target;

/// How long a direct read waits for its copies before it reads through a coordinator
/// instead (the request's own timeout when that is shorter).
pub const DIRECT_READ_WAIT: Duration = Duration::from_millis(250);

/// Counter: direct reads by `result`.
const DIRECT_READS_TOTAL: &str = "shoal_client_direct_reads_total";

/// How a direct read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Agreed,
    Differed,
    Declined,
    Failed,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Agreed => "agreed",
            Outcome::Differed => "differed",
            Outcome::Declined => "declined",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

impl Client {
    /// The answer of R primaries' equal copies of `key`, or `None` when the read must go
    /// through a coordinator (module docs).
    pub(super) async fn direct_read(&self, key: &[u8], opts: &ReadOptions) -> Option<GetReply> {
        if !self.inner.settings.direct_reads {
            return None;
        }
        let targets = self.direct_targets(key, opts);
        let (outcome, reply) = match targets {
            Some(targets) => self.ask_copies(key, &targets, opts).await,
            None => (Outcome::Skipped, None),
        };
        metrics::counter!(DIRECT_READS_TOTAL, "result" => outcome.label()).increment(1);
        reply
    }

    /// The R primaries a direct read of `key` asks, or `None` if it should not be tried:
    /// R below 2 (one copy is what a coordinator that is a primary reads alone, in one
    /// hop already) or above N, fewer than R primaries not marked down, or one of them
    /// taken to speak an older wire version.
    fn direct_targets(&self, key: &[u8], opts: &ReadOptions) -> Option<Vec<Target>> {
        let view = self.view();
        let r = usize::from(opts.r.unwrap_or(view.info.r));
        if r < 2 || r > usize::from(view.info.n) {
            return None;
        }
        let now = Instant::now();
        let targets: Vec<Target> = view
            .primaries(key)
            .into_iter()
            .filter(|t| !self.inner.down.is_down(t.addr, now))
            .take(r)
            .collect();
        let usable = targets.len() == r
            && targets
                .iter()
                .all(|t| self.inner.wire.speaks_current(t.addr));
        usable.then_some(targets)
    }

    /// Asks every target for its copy at once; stops at the first answer that is not a
    /// copy equal to the others.
    async fn ask_copies(
        &self,
        key: &[u8],
        targets: &[Target],
        opts: &ReadOptions,
    ) -> (Outcome, Option<GetReply>) {
        let payload = encode_request(&Request::Client(ClientRequest::GetReplica {
            key: key.to_vec(),
        }));
        // At most the read's own timeout: the coordinated read that may follow has all
        // of it again.
        let timeout = opts.timeout.unwrap_or(self.inner.settings.request_timeout);
        let wait = timeout.min(DIRECT_READ_WAIT);
        let (wire, payload) = (&self.inner.wire, &payload);
        let mut copies: FuturesUnordered<_> = targets
            .iter()
            .map(|t| async move { (t, wire.send(t, payload, wait, true).await) })
            .collect();
        let mut agreed: Option<(u64, GetReply)> = None;
        while let Some((target, answer)) = copies.next().await {
            let copy = match answer {
                Ok((ClientResponse::Replica(copy), _)) => copy,
                Ok((ClientResponse::Error(RequestError::Declined(why)), _)) => {
                    debug!(addr = %target.addr, why, "replica read declined");
                    return (Outcome::Declined, None);
                }
                Ok((other, _)) => {
                    debug!(addr = %target.addr, ?other, "replica read refused");
                    return (Outcome::Failed, None);
                }
                Err(SendError::Transport(e)) => {
                    // Unreachable, or no answer in time (hung or far behind): routed
                    // around for a moment, as a coordinated read does with a node that
                    // fails it, so that the next reads do not wait for it again.
                    self.inner.down.mark(target.addr, Instant::now());
                    debug!(addr = %target.addr, error = %e, "replica read failed");
                    return (Outcome::Failed, None);
                }
                Err(SendError::Protocol(m)) => {
                    debug!(addr = %target.addr, error = m, "replica read failed");
                    return (Outcome::Failed, None);
                }
            };
            self.inner.down.clear(target.addr);
            match &agreed {
                None => agreed = Some((copy.layout_version, copy.get)),
                Some((version, get)) if *version == copy.layout_version && *get == copy.get => {}
                Some(_) => return (Outcome::Differed, None),
            }
        }
        match agreed {
            Some((version, get)) => {
                self.learn_layout(Some(version)).await;
                (Outcome::Agreed, Some(get))
            }
            None => (Outcome::Failed, None),
        }
    }
}
