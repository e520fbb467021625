//! [`Session`]: read-your-writes and monotonic reads, even under sloppy quorums.
//!
//! A session remembers, per key, the contexts its acknowledged writes returned and the
//! contexts of the reads it answered (the decision logic is `shoal_proto::session`,
//! shared with the simulator). A read is answered only if the replies' merged context
//! includes them: then it returns every value the session wrote or saw, or a value that
//! replaced it. Otherwise the read is asked again with one more replica at a time, up to
//! N; if no read covers them the call fails with [`ClientError::NotCovered`] rather than
//! returning older data.
//!
//! Under a sloppy quorum a write may be acknowledged by a fallback holding a hint while
//! its primaries are unreachable; reads ask the primaries (a down primary's first healthy
//! fallback stands in), so even R = N can miss it until the hint is delivered. That is
//! the case `NotCovered` reports; retrying later (the error is
//! [retryable](ClientError::is_retryable)) succeeds once the hint is delivered or the
//! partition heals.
//!
//! A key the session deleted (every value it knew replaced by its delete) or read as
//! deleted is absent for it: a read that finds nothing is answered, also once the
//! tombstone is reaped and no replica holds the delete's dot any more, and the
//! session's next write of the key carries the deleted context along.
//!
//! Bounds: a session remembers at most `max_keys` keys ([`DEFAULT_SESSION_KEYS`] by
//! default); the least recently used key is forgotten to make room, counted in
//! `shoal_client_session_evictions_total` and [`Session::evicted`]. A forgotten key
//! loses the guarantee until the session reads or writes it again.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use shoal_proto::session::{Coverage, Escalation, SessionState};

pub use shoal_proto::session::DEFAULT_SESSION_KEYS;

use crate::client::{Client, GetResult};
use crate::context::Context;
use crate::error::ClientError;
use crate::options::{ReadOptions, WriteOptions};

/// A sequence of operations by one user that sees its own writes and never reads older
/// data than it read before, key by key. Made by [`Client::session`].
///
/// It is `Send + Sync`, but it is meant for one logical user: two tasks sharing it share
/// the guarantees (each sees the other's writes).
#[derive(Debug)]
pub struct Session {
    client: Client,
    state: Mutex<SessionState>,
}

impl Client {
    /// A new [`Session`] on this client, remembering at most [`DEFAULT_SESSION_KEYS`]
    /// keys.
    pub fn session(&self) -> Session {
        Session::new(self.clone(), SessionState::default())
    }

    /// A new [`Session`] remembering at most `max_keys` keys (the least recently used
    /// one is forgotten, and loses the guarantee, when more are used).
    pub fn session_with_capacity(&self, max_keys: NonZeroUsize) -> Session {
        Session::new(self.clone(), SessionState::new(max_keys))
    }
}

impl Session {
    fn new(client: Client, state: SessionState) -> Session {
        Session {
            client,
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `key` with the cluster's default R, escalating as the module says.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<GetResult, ClientError> {
        self.get_opts(key, ReadOptions::default()).await
    }

    /// Reads `key` starting at `opts.r` (or the cluster's R): if the answer does not
    /// include what this session wrote and read of the key, reads again with one more
    /// replica at a time up to N. The first read's own error is returned as it is; a
    /// failed or uncovering escalation ends in [`ClientError::NotCovered`]. An R outside
    /// `1..=N` is [`ClientError::InvalidOptions`].
    pub async fn get_opts(
        &self,
        key: impl AsRef<[u8]>,
        opts: ReadOptions,
    ) -> Result<GetResult, ClientError> {
        let key = key.as_ref();
        let info = self.client.cluster_info().await;
        let (n, start) = (info.n, opts.r.unwrap_or(info.r));
        if start == 0 || start > n {
            // Refused here rather than clamped: the schedule would hide a bad R.
            return Err(ClientError::InvalidOptions(format!(
                "r must be in 1..={n}, got {start}"
            )));
        }
        let mut asked = start;
        for (step, r) in Escalation::new(start, n).enumerate() {
            asked = r;
            if step > 0 {
                metrics::counter!("shoal_client_session_escalations_total").increment(1);
            }
            let read = match self.client.get_opts(key, opts.r(r)).await {
                Ok(read) => read,
                Err(e) if step == 0 => return Err(e),
                Err(e) => return Err(self.not_covered(key, r, n, Some(e))),
            };
            let mut state = self.state();
            let context = read.context.as_causal();
            let coverage = state.check(key, context, read.found);
            if coverage != Coverage::NeedMore {
                if coverage == Coverage::Absent {
                    metrics::counter!("shoal_client_session_absent_answers_total").increment(1);
                }
                let evicted = state.record_read(key, context, read.found);
                count_evictions(evicted);
                return Ok(read);
            }
        }
        Err(self.not_covered(key, asked, n, None))
    }

    fn not_covered(&self, key: &[u8], r: u8, n: u8, last: Option<ClientError>) -> ClientError {
        metrics::counter!("shoal_client_session_not_covered_total").increment(1);
        ClientError::NotCovered {
            key: key.to_vec(),
            r,
            n,
            last_error: last.map(|e| e.to_string()),
        }
    }

    /// Writes `value` under `key` without a context (see [`Client::put`]); the session
    /// remembers the write.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Context, ClientError> {
        self.put_opts(key, value, None, WriteOptions::default())
            .await
    }

    /// Writes `value` under `key` with a context and options (see [`Client::put_with`]);
    /// the session remembers the write once it is acknowledged. A write that fails
    /// (even one whose outcome is unknown) is not remembered: its dot is unknown.
    ///
    /// A write of a key the session deleted (or read as deleted) also carries what the
    /// session remembers of it, all of it deleted: it replaces nothing a write with the
    /// tombstone's context would not, and later reads can include it again even after
    /// the tombstone was reaped.
    pub async fn put_opts(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Vec<u8>>,
        context: Option<&Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        let key = key.as_ref();
        let merged = self.write_context(key, context);
        let context = merged.as_ref().or(context);
        let ctx = self
            .client
            .put_opts(key, value.into(), context, opts)
            .await?;
        self.remember_write(key, &ctx, false);
        Ok(ctx)
    }

    /// Deletes `key` (see [`Client::delete`]); the session remembers the delete, so its
    /// later reads do not return what it deleted.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<Context, ClientError> {
        self.delete_opts(key, None, WriteOptions::default()).await
    }

    /// Deletes `key` with a context and options (see [`Client::delete_with`]).
    ///
    /// A delete that replaces all the session wrote and read of the key (its context
    /// covers them) leaves the key absent for the session: a later read that finds
    /// nothing is answered, also once the tombstone is reaped (after the nodes'
    /// tombstone grace period) and no replica holds the delete's dot any more. A delete
    /// that leaves values the session knew (a blind one) does not.
    pub async fn delete_opts(
        &self,
        key: impl AsRef<[u8]>,
        context: Option<&Context>,
        opts: WriteOptions,
    ) -> Result<Context, ClientError> {
        let key = key.as_ref();
        let merged = self.write_context(key, context);
        let context = merged.as_ref().or(context);
        let ctx = self.client.delete_opts(key, context, opts).await?;
        self.remember_write(key, &ctx, true);
        Ok(ctx)
    }

    /// An acknowledged put (or, with `delete`, delete) of `key` returned `ctx`.
    fn remember_write(&self, key: &[u8], ctx: &Context, delete: bool) {
        let mut state = self.state();
        let evicted = if delete {
            state.record_delete(key, ctx.as_causal())
        } else {
            state.record_write(key, ctx.as_causal())
        };
        count_evictions(evicted);
    }

    /// The context a write of `key` carries instead of the caller's, if any (see
    /// [`SessionState::write_context`]).
    fn write_context(&self, key: &[u8], given: Option<&Context>) -> Option<Context> {
        self.state()
            .write_context(key, given.map(Context::as_causal))
            .map(Context::from)
    }

    /// Forgets what the session wrote and read of `key`: its next read is answered
    /// whatever it returns.
    pub fn forget(&self, key: impl AsRef<[u8]>) {
        self.state().forget(key.as_ref());
    }

    /// Keys the session remembers.
    pub fn keys(&self) -> usize {
        self.state().len()
    }

    /// Keys forgotten so far to stay within the bound (each lost the guarantee).
    pub fn evicted(&self) -> u64 {
        self.state().evicted()
    }

    /// The client the session runs on.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn count_evictions(evicted: usize) {
    if evicted > 0 {
        metrics::counter!("shoal_client_session_evictions_total").increment(evicted as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Session>();
    }

    #[test]
    fn not_covered_is_retryable_and_says_how_far_it_asked() {
        let e = ClientError::NotCovered {
            key: b"k".to_vec(),
            r: 3,
            n: 3,
            last_error: None,
        };
        assert!(e.is_retryable());
        assert!(!e.is_not_applied());
        assert_eq!(e.label(), "not_covered");
        let text = e.to_string();
        assert!(text.contains("R = 3") && text.contains("N = 3"), "{text}");
    }
}
