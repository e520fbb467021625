//! Read-modify-write: [`Client::update`] reads a key, lets a function turn its siblings
//! into one value, writes it with the read's context, and checks by reading back that no
//! concurrent write left a sibling next to it; [`resolve`] has ready-made functions.
//!
//! # How a concurrent change is detected
//!
//! Shoal has no compare-and-set: a write with a context always succeeds, and a write
//! another client made concurrently (not in the context) stays next to it as a sibling.
//! So the helper cannot prevent a concurrent change, only notice and resolve it:
//!
//! 1. read the key (R replies): siblings `S`, context `C`;
//! 2. write `f(S)` with `C`: it replaces exactly `S`; the write's context is `C'`;
//! 3. read the key again: if the answer has one value and its context includes `C'`,
//!    the update is done (nothing was written concurrently that this read saw);
//!    otherwise a concurrent write landed: wait a jittered backoff (the client's
//!    [`RetryPolicy`](crate::RetryPolicy) waits, so that racing updaters spread out),
//!    read again and start again from step 2 with that read's siblings (our value among
//!    them), at most [`Update::attempts`] writes in all, then
//!    [`ClientError::UpdateConflict`].
//!
//! A success means "at the read-back, R replicas agreed on our value (or a value that
//! replaced it)": a write that lands later, or that no replica of the read-back had yet,
//! can still make siblings, which the next update (or read) resolves. The function is
//! called again on every retry, with every sibling, its own previous result included, so
//! it must merge rather than assume it sees the original values: set union and
//! last-writer-wins do. An update costs two reads and one write when nothing races it, and one more read and
//! write per race.
//!
//! Retries of the individual requests follow the client's [`RetryPolicy`](crate::RetryPolicy);
//! a write whose outcome is unknown ends the update with that error, like any write.

use std::collections::BTreeSet;

use crate::client::{Client, GetResult, Sibling};
use crate::context::Context;
use crate::error::ClientError;
use crate::options::{ReadOptions, WriteOptions};

/// Default [`Update::attempts`].
pub const DEFAULT_UPDATE_ATTEMPTS: u32 = 5;
/// Most writes one update may make.
pub const MAX_UPDATE_ATTEMPTS: u32 = 100;

/// A function from a key's siblings to the value an update writes, which may fail
/// (implemented by every such closure).
pub trait Resolver: FnMut(&[Vec<u8>]) -> Result<Vec<u8>, ClientError> {}

impl<F: FnMut(&[Vec<u8>]) -> Result<Vec<u8>, ClientError>> Resolver for F {}

/// A function from a key's siblings with their write times to the value an update
/// writes, which may fail (implemented by every such closure); see
/// [`Client::update_siblings_with`].
pub trait SiblingResolver: FnMut(&[Sibling<'_>]) -> Result<Vec<u8>, ClientError> {}

impl<F: FnMut(&[Sibling<'_>]) -> Result<Vec<u8>, ClientError>> SiblingResolver for F {}

/// What an update calls with each read to get the value to write: a [`Resolver`] of the
/// values ([`ByValues`]) or a [`SiblingResolver`] that also sees write times
/// ([`BySiblings`]). Built by the `update*` methods of [`Client`].
pub trait ResolveRead {
    /// The value to write, given the read's answer.
    fn resolve_read(&mut self, read: &GetResult) -> Result<Vec<u8>, ClientError>;
}

/// A [`Resolver`] in an [`Update`]: sees the sibling values.
pub struct ByValues<F>(F);

impl<F: Resolver> ResolveRead for ByValues<F> {
    fn resolve_read(&mut self, read: &GetResult) -> Result<Vec<u8>, ClientError> {
        (self.0)(&read.values)
    }
}

/// A [`SiblingResolver`] in an [`Update`]: sees the siblings with their write times.
pub struct BySiblings<F>(F);

impl<F: SiblingResolver> ResolveRead for BySiblings<F> {
    fn resolve_read(&mut self, read: &GetResult) -> Result<Vec<u8>, ClientError> {
        (self.0)(&read.siblings())
    }
}

/// A read-modify-write being set up: `client.update_with(key, f).attempts(3).send().await`.
#[must_use = "an update does nothing until it is sent"]
pub struct Update<'a, F> {
    client: &'a Client,
    key: Vec<u8>,
    resolve: F,
    attempts: u32,
    read: ReadOptions,
    write: WriteOptions,
}

impl<'a, F: ResolveRead> Update<'a, F> {
    pub(crate) fn new(client: &'a Client, key: Vec<u8>, resolve: F) -> Update<'a, F> {
        Update {
            client,
            key,
            resolve,
            attempts: DEFAULT_UPDATE_ATTEMPTS,
            read: ReadOptions::default(),
            write: WriteOptions::default(),
        }
    }

    /// Most writes to make before giving up with [`ClientError::UpdateConflict`]
    /// (1..=[`MAX_UPDATE_ATTEMPTS`]).
    pub fn attempts(mut self, attempts: u32) -> Update<'a, F> {
        self.attempts = attempts;
        self
    }

    /// Options of the reads (the first and the read-backs).
    pub fn read_options(mut self, opts: ReadOptions) -> Update<'a, F> {
        self.read = opts;
        self
    }

    /// Options of the writes.
    pub fn write_options(mut self, opts: WriteOptions) -> Update<'a, F> {
        self.write = opts;
        self
    }

    /// Runs the update; returns the context of the read-back that found the key resolved.
    pub async fn send(mut self) -> Result<Context, ClientError> {
        if !(1..=MAX_UPDATE_ATTEMPTS).contains(&self.attempts) {
            return Err(ClientError::InvalidOptions(format!(
                "update attempts must be in 1..={MAX_UPDATE_ATTEMPTS}, got {}",
                self.attempts
            )));
        }
        let client = self.client;
        let mut read = client.get_opts(&self.key, self.read).await?;
        for attempt in 1..=self.attempts {
            let value = self.resolve.resolve_read(&read)?;
            let written = client
                .put_opts(&self.key, value, Some(&read.context), self.write)
                .await?;
            read = client.get_opts(&self.key, self.read).await?;
            if read.values.len() == 1 && read.context.as_causal().includes(written.as_causal()) {
                return Ok(read.context);
            }
            metrics::counter!("shoal_client_update_conflicts_total").increment(1);
            if attempt == self.attempts {
                break;
            }
            // Racing updaters that all resolve at once race again: back off (jittered,
            // as the retry policy says) and read afresh.
            let delay = client.backoff(attempt - 1);
            tracing::debug!(
                attempt,
                siblings = read.values.len(),
                ?delay,
                "a concurrent write raced the update; resolving again"
            );
            tokio::time::sleep(delay).await;
            read = client.get_opts(&self.key, self.read).await?;
        }
        Err(ClientError::UpdateConflict {
            attempts: self.attempts,
        })
    }
}

impl Client {
    /// Read-modify-write of `key` with the default options: `resolve` turns the key's
    /// siblings (none when the key is not found) into the value to write; concurrent
    /// writes are detected by reading back and resolved by calling `resolve` again (see
    /// the [`update`](crate::update) module for exactly what a success guarantees).
    ///
    /// ```no_run
    /// # async fn example(client: shoal_client::Client) -> Result<(), shoal_client::ClientError> {
    /// // A counter kept as the largest of the siblings plus one.
    /// client
    ///     .update("visits", |siblings| {
    ///         let n = siblings
    ///             .iter()
    ///             .filter_map(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
    ///             .max()
    ///             .unwrap_or(0);
    ///         (n + 1).to_string().into_bytes()
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update<F>(&self, key: impl AsRef<[u8]>, resolve: F) -> Result<Context, ClientError>
    where
        F: FnMut(&[Vec<u8>]) -> Vec<u8>,
    {
        self.update_with(key, resolve).send().await
    }

    /// A read-modify-write with options (attempts, quorums).
    pub fn update_with<F>(
        &self,
        key: impl AsRef<[u8]>,
        mut resolve: F,
    ) -> Update<'_, impl ResolveRead>
    where
        F: FnMut(&[Vec<u8>]) -> Vec<u8>,
    {
        self.try_update_with(key, move |siblings| Ok(resolve(siblings)))
    }

    /// A read-modify-write whose function may fail (for example a value that does not
    /// decode): its error ends the update before anything more is written.
    pub fn try_update_with<F: Resolver>(
        &self,
        key: impl AsRef<[u8]>,
        resolve: F,
    ) -> Update<'_, ByValues<F>> {
        Update::new(self, key.as_ref().to_vec(), ByValues(resolve))
    }

    /// A read-modify-write whose function sees each sibling's write time too, for
    /// example to keep the value written last:
    ///
    /// ```no_run
    /// # async fn example(client: shoal_client::Client) -> Result<(), shoal_client::ClientError> {
    /// use shoal_client::resolve;
    /// client
    ///     .update_siblings_with("profile", |siblings| {
    ///         Ok(resolve::last_written(siblings).unwrap_or_default())
    ///     })
    ///     .send()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn update_siblings_with<F: SiblingResolver>(
        &self,
        key: impl AsRef<[u8]>,
        resolve: F,
    ) -> Update<'_, BySiblings<F>> {
        Update::new(self, key.as_ref().to_vec(), BySiblings(resolve))
    }
}

/// Ready-made sibling resolvers, for [`Client::update`] or a read's values.
pub mod resolve {
    use super::{BTreeSet, Sibling};

    /// Union of sets: each sibling decoded with `decode` (siblings that do not decode
    /// are skipped), the union encoded with `encode`. Never loses an element any sibling
    /// had (so removals need tombstone elements of the application's own).
    pub fn union<T: Ord>(
        siblings: &[Vec<u8>],
        decode: impl Fn(&[u8]) -> Option<BTreeSet<T>>,
        encode: impl Fn(&BTreeSet<T>) -> Vec<u8>,
    ) -> Vec<u8> {
        let all: BTreeSet<T> = siblings
            .iter()
            .filter_map(|s| decode(s))
            .flatten()
            .collect();
        encode(&all)
    }

    /// Union of sets of lines (newline-separated UTF-8 or bytes), sorted: the simplest
    /// set encoding, used by the shopping-cart example.
    pub fn union_lines(siblings: &[Vec<u8>]) -> Vec<u8> {
        union(
            siblings,
            |s| {
                Some(
                    s.split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect(),
                )
            },
            |set: &BTreeSet<Vec<u8>>| set.iter().cloned().collect::<Vec<_>>().join(&b'\n'),
        )
    }

    /// Last writer wins by a timestamp each value carries: the sibling whose `timestamp`
    /// is largest (ties and values without one: the larger bytes, so every client picks
    /// the same). `None` only when there are no siblings. The timestamp is the
    /// application's (for example a field of the value), so clock skew between writers
    /// decides ties of concurrent writes; values written later are not guaranteed to win.
    /// To order by the write times the cluster stores instead, see [`last_written`].
    pub fn last_writer_wins<K: Ord>(
        siblings: &[Vec<u8>],
        timestamp: impl Fn(&[u8]) -> Option<K>,
    ) -> Option<Vec<u8>> {
        siblings
            .iter()
            .max_by(|a, b| timestamp(a).cmp(&timestamp(b)).then_with(|| a.cmp(b)))
            .cloned()
    }

    /// Last writer wins by the write time the cluster stored with each sibling
    /// ([`GetResult::written_at`](crate::GetResult::written_at)): no timestamp of the
    /// application's needed. Ties, and siblings without a write time (an answer from a
    /// node of the previous release), go to the larger bytes, after every timed one, so
    /// that every client picks the same. `None` only when there are no siblings. The
    /// times are the coordinating nodes' wall clocks: skew between nodes decides between
    /// writes closer together than it.
    pub fn last_written(siblings: &[Sibling<'_>]) -> Option<Vec<u8>> {
        siblings
            .iter()
            .max_by(|a, b| {
                a.written_at
                    .cmp(&b.written_at)
                    .then_with(|| a.value.cmp(b.value))
            })
            .map(|s| s.value.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{resolve, Sibling};

    #[test]
    fn last_written_takes_the_latest_write_time_then_the_larger_bytes() {
        let at = |s: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let sibling = |value: &'static [u8], written_at| Sibling { value, written_at };
        let siblings = [
            sibling(b"zzz-old", at(10)),
            sibling(b"new", at(30)),
            sibling(b"middle", at(20)),
        ];
        assert_eq!(resolve::last_written(&siblings), Some(b"new".to_vec()));
        // The same time: the larger bytes, whatever the order.
        let tied = [sibling(b"b", at(5)), sibling(b"a", at(5))];
        assert_eq!(resolve::last_written(&tied), Some(b"b".to_vec()));
        // A sibling without a time (a previous-release node's answer) loses to a timed one.
        let unknown = [sibling(b"zzz", None), sibling(b"a", at(1))];
        assert_eq!(resolve::last_written(&unknown), Some(b"a".to_vec()));
        let none = [sibling(b"x", None), sibling(b"y", None)];
        assert_eq!(resolve::last_written(&none), Some(b"y".to_vec()));
        assert_eq!(resolve::last_written(&[]), None);
    }

    #[test]
    fn a_read_pairs_each_value_with_its_write_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(7);
        let mut read = crate::GetResult {
            found: true,
            values: vec![b"a".to_vec(), b"b".to_vec()],
            context: crate::Context::default(),
            written_at: vec![t, t + Duration::from_secs(1)],
        };
        let siblings = read.siblings();
        assert_eq!(siblings[1].value, b"b");
        assert_eq!(siblings[1].written_at, Some(t + Duration::from_secs(1)));
        read.written_at.clear();
        assert!(read.siblings().iter().all(|s| s.written_at.is_none()));
    }

    #[test]
    fn union_of_lines_keeps_every_element_once_in_order() {
        let siblings = vec![b"milk\neggs".to_vec(), b"bread\nmilk".to_vec(), Vec::new()];
        assert_eq!(
            resolve::union_lines(&siblings),
            b"bread\neggs\nmilk".to_vec()
        );
        assert_eq!(resolve::union_lines(&[]), Vec::<u8>::new());
        // Resolving a resolved value again changes nothing.
        let once = resolve::union_lines(&siblings);
        assert_eq!(resolve::union_lines(&[once.clone(), once.clone()]), once);
    }

    #[test]
    fn last_writer_wins_takes_the_largest_timestamp_and_breaks_ties_by_bytes() {
        let ts = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()?
                .split(':')
                .next()?
                .parse::<u64>()
                .ok()
        };
        let siblings = vec![b"10:a".to_vec(), b"30:b".to_vec(), b"20:c".to_vec()];
        assert_eq!(
            resolve::last_writer_wins(&siblings, ts),
            Some(b"30:b".to_vec())
        );
        let tied = vec![b"5:x".to_vec(), b"5:y".to_vec(), b"junk".to_vec()];
        assert_eq!(resolve::last_writer_wins(&tied, ts), Some(b"5:y".to_vec()));
        assert_eq!(resolve::last_writer_wins(&[], ts), None);
    }
}
