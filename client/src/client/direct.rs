//! Direct reads: a read at R of 2 or more asks R primaries of its key for their own
//! copies at once ([`ClientRequest::GetReplica`], wire version 6) and answers with them
//! when every copy is the same, or when one copy includes every other, under the same
//! settled layout version ([`judge_copies`]).
//!
//! A read through a coordinator makes two hops in a row (client to coordinator,
//! coordinator to the other replicas); a direct read makes one, to R replicas in
//! parallel. It answers only what a coordinator reading those R primaries would answer:
//! the merge of equal copies is that copy, and so is the merge of copies one of which
//! includes the others (a replica that has not yet applied a write in flight, or that
//! missed one). In that second case the copies behind are repaired as a coordinator's
//! read would repair them: the client reads the key in the background through a node
//! whose copy is behind (its own copy differs from the others it reads, so its repair
//! reaches every copy behind), at most [`MAX_BACKGROUND_REPAIRS`] at once. Whenever
//! the answer is not certain, the read goes through a coordinator as before, with its
//! quorum, speculation, fallbacks and read repair: concurrent copies, a primary that
//! declines (a layout change in progress, a restoring or fenced node, a dropping
//! partition) or fails, an answer slower than [`DIRECT_READ_WAIT`] (that node is then
//! marked down for a moment, as a coordinated read marks a node that fails it), fewer
//! than R primaries not marked down, and nodes that do not speak version 6. A direct
//! read does not take part in the nodes' sampled read repair
//! (`read_repair_chance_percent`); anti-entropy reaches the replicas no read asks.
//!
//! Metrics: `shoal_client_direct_reads_total{result}` (`agreed` and `superseding`:
//! answered directly; `differed`, `declined`, `failed`: sent through a coordinator after
//! asking; `skipped`: not asked, as above) and
//! `shoal_client_direct_read_repairs_total{result}` (`ok`, `failed`, `skipped`: the
//! background repairs of superseding reads).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use shoal_proto::wire::{encode_request, ClientRequest, ClientResponse, GetReply, Request};
use shoal_proto::{judge_copies, CopiesVerdict, RequestError};
use tokio::time::Instant;
use tracing::debug;

use super::wire::SendError;
use super::{Client, Route};
use crate::options::ReadOptions;
use crate::routing::Target;
use crate::NodeId;

/// How long a direct read waits for its copies before it reads through a coordinator
/// instead (the request's own timeout when that is shorter).
pub const DIRECT_READ_WAIT: Duration = Duration::from_millis(250);

/// Counter: direct reads by `result`.
const DIRECT_READS_TOTAL: &str = "shoal_client_direct_reads_total";

/// Counter: background reads through a coordinator that repair the copies a
/// superseding direct read found behind, by `result`.
const DIRECT_READ_REPAIRS_TOTAL: &str = "shoal_client_direct_read_repairs_total";

/// The most background repairs of superseding direct reads a client runs at once.
pub const MAX_BACKGROUND_REPAIRS: usize = 64;

/// How a direct read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Agreed,
    Superseding,
    Differed,
    Declined,
    Failed,
    Skipped,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Agreed => "agreed",
            Outcome::Superseding => "superseding",
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

    /// Asks every target for its copy at once and judges the copies once all are in
    /// ([`judge_copies`]); stops at the first answer that is not a copy.
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
        let mut asked: FuturesUnordered<_> = targets
            .iter()
            .map(|t| async move { (t, wire.send(t, payload, wait, true).await) })
            .collect();
        let mut copies = Vec::with_capacity(targets.len());
        // Who answered each copy, in the same order.
        let mut answered: Vec<&Target> = Vec::with_capacity(targets.len());
        while let Some((target, answer)) = asked.next().await {
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
            copies.push(copy);
            answered.push(target);
        }
        let version = copies.first().map(|c| c.layout_version);
        let (outcome, reply) = match judge_copies(&copies) {
            CopiesVerdict::Agreed(reply) => (Outcome::Agreed, reply),
            CopiesVerdict::Superseding { reply, behind } => {
                let behind = behind
                    .iter()
                    .find_map(|&i| answered.get(i).and_then(|t| t.id.clone()));
                self.repair_copies_behind(key, opts, behind);
                (Outcome::Superseding, reply)
            }
            CopiesVerdict::Differ if copies.is_empty() => return (Outcome::Failed, None),
            CopiesVerdict::Differ => return (Outcome::Differed, None),
        };
        self.learn_layout(version).await;
        (outcome, Some(reply))
    }

    /// Reads `key` through a coordinator in the background, so that its read repair
    /// brings the copies a superseding direct read found behind up to date (the read
    /// itself was answered). The coordinator is a node whose copy is behind (`behind`)
    /// when known: a coordinator reads its own copy and R - 1 others, so its replies
    /// differ and its repair reaches every copy behind; another coordinator whose R
    /// copies agree would repair nothing. Should that node not serve the read, any
    /// replica coordinates it. At most [`MAX_BACKGROUND_REPAIRS`] run at once; beyond,
    /// the copies are left to the replica writes in flight, hinted handoff and
    /// anti-entropy.
    fn repair_copies_behind(&self, key: &[u8], opts: &ReadOptions, behind: Option<NodeId>) {
        let Some(turn) = RepairTurn::take(&self.inner.background_repairs) else {
            metrics::counter!(DIRECT_READ_REPAIRS_TOTAL, "result" => "skipped").increment(1);
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            metrics::counter!(DIRECT_READ_REPAIRS_TOTAL, "result" => "skipped").increment(1);
            return;
        };
        let (client, key, opts) = (self.clone(), key.to_vec(), *opts);
        runtime.spawn(async move {
            let _turn = turn;
            let request = ClientRequest::Get {
                key: key.clone(),
                options: opts.to_wire(),
            };
            let wait = client.wait(opts.timeout);
            let through_behind = match &behind {
                Some(node) => client
                    .call_retrying(request.clone(), Route::Node(node), wait)
                    .await
                    .ok(),
                None => None,
            };
            let answer = match through_behind {
                Some(read @ ClientResponse::Get(_)) => Ok(read),
                _ => client.call_retrying(request, Route::Key(&key), wait).await,
            };
            let result = match answer {
                Ok(ClientResponse::Get(_)) => "ok",
                Ok(other) => {
                    debug!(?other, "a repairing read was refused");
                    "failed"
                }
                Err(e) => {
                    debug!(error = %e, "a repairing read failed");
                    "failed"
                }
            };
            metrics::counter!(DIRECT_READ_REPAIRS_TOTAL, "result" => result).increment(1);
        });
    }
}

/// A place among the background repairs of [`Client::repair_copies_behind`]; dropping
/// it frees the place.
struct RepairTurn(Arc<AtomicUsize>);

impl RepairTurn {
    fn take(running: &Arc<AtomicUsize>) -> Option<RepairTurn> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BACKGROUND_REPAIRS).then_some(n + 1)
            })
            .ok()
            .map(|_| RepairTurn(Arc::clone(running)))
    }
}

impl Drop for RepairTurn {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
