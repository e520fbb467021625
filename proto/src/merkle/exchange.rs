//! The exchange between two replicas: a descent through the differing subtrees, then a
//! comparison of the (key, digest) lists of the differing segments.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::{MerkleError, MerkleShape, MerkleTree};

/// How many differing nodes a descent follows per level when nothing else is configured.
///
/// Bounds every request to this many parents and every reply to this many times the
/// fan-out hashes (256 × 32 × 8 B = 64 KiB with the defaults); differences beyond it are
/// found by the next exchange.
pub const DEFAULT_MAX_DIFFERING: usize = 256;

/// A request in a descent: "send me the hashes of the children of `parents` at `level`".
///
/// Answered by [`MerkleTree::answer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildrenRequest {
    /// Level of the parents (0 = root).
    pub level: usize,
    /// Parent indices at `level`, strictly ascending.
    pub parents: Vec<u32>,
}

/// The answer to a [`ChildrenRequest`]: for each parent in order, the hashes of its
/// children in order (so `hashes.len()` is the number of parents times the level's
/// fan-out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildrenHashes {
    /// Level of the parents, as in the request.
    pub level: usize,
    /// Parent indices, as in the request.
    pub parents: Vec<u32>,
    /// The children's hashes, parent by parent.
    pub hashes: Vec<u64>,
}

impl MerkleTree {
    /// Answer a peer's descent request from this tree. The request is checked (level,
    /// range, order), so a malformed one is an error, never a panic; the reply holds at
    /// most one hash per node of the child level.
    pub fn answer(&self, request: &ChildrenRequest) -> Result<ChildrenHashes, MerkleError> {
        let hashes = self.children_hashes(request.level, &request.parents)?;
        Ok(ChildrenHashes {
            level: request.level,
            parents: request.parents.clone(),
            hashes,
        })
    }

    /// From a scan of the partition (any order), the [`SegmentDigest`]s of `segments`
    /// (strictly ascending): each lists the pairs whose key falls in that segment, sorted
    /// by key. One scan serves every differing segment of an exchange.
    pub fn segment_digests<K, I>(
        &self,
        segments: &[u32],
        pairs: I,
    ) -> Result<Vec<SegmentDigest>, MerkleError>
    where
        K: Into<Vec<u8>> + AsRef<[u8]>,
        I: IntoIterator<Item = (K, u64)>,
    {
        let leaf = self.level_count() - 1;
        self.check_indices(leaf, segments)?;
        let mut digests: Vec<SegmentDigest> = segments
            .iter()
            .map(|&segment| SegmentDigest {
                segment,
                entries: Vec::new(),
            })
            .collect();
        for (key, digest) in pairs {
            let segment = self.segment_of(key.as_ref());
            if let Ok(slot) = segments.binary_search(&segment) {
                digests[slot].entries.push((key.into(), digest));
            }
        }
        for d in &mut digests {
            d.entries.sort_unstable();
        }
        Ok(digests)
    }
}

/// One step of a [`Descent`]: what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DescentStep {
    /// Send this request to the peer and feed its [`ChildrenHashes`] to [`Descent::step`].
    Request(ChildrenRequest),
    /// The descent is over: these segments differ (strictly ascending; empty when the
    /// trees agree). Exchange their [`SegmentDigest`]s next.
    Done(Vec<u32>),
}

/// The initiator's side of a descent through two trees of the same shape, which visits only
/// the subtrees whose hashes differ.
///
/// It holds no tree: each call takes our current tree, so writes may land between the
/// steps (the descent is then best-effort: a difference that appears or vanishes meanwhile
/// is found or dropped by a later exchange). Per level it follows at most `max_differing`
/// nodes, the lowest indices first.
#[derive(Clone, Debug)]
pub struct Descent {
    shape: MerkleShape,
    max_differing: usize,
    /// The request awaiting its reply; `None` once done.
    pending: Option<ChildrenRequest>,
    hashes_compared: u64,
    round_trips: u32,
}

impl Descent {
    /// Start a descent against a peer whose tree has `their_shape` and root `their_root`.
    /// Returns the descent and its first step: `Done(vec![])` if the roots agree.
    pub fn start(
        ours: &MerkleTree,
        their_shape: MerkleShape,
        their_root: u64,
        max_differing: usize,
    ) -> Result<(Descent, DescentStep), MerkleError> {
        if ours.shape() != their_shape {
            return Err(MerkleError::ShapeMismatch {
                ours: ours.shape(),
                theirs: their_shape,
            });
        }
        let mut descent = Descent {
            shape: their_shape,
            max_differing: max_differing.max(1),
            pending: None,
            hashes_compared: 1,
            round_trips: 0,
        };
        if ours.root() == their_root {
            return Ok((descent, DescentStep::Done(Vec::new())));
        }
        let request = ChildrenRequest {
            level: 0,
            parents: vec![0],
        };
        descent.pending = Some(request.clone());
        Ok((descent, DescentStep::Request(request)))
    }

    /// Take the peer's reply to the last request: compare its hashes with ours, and either
    /// ask for the children of the nodes that differ or, at the segments, finish. A reply
    /// that does not answer the request is an error, after which the descent is over.
    pub fn step(
        &mut self,
        ours: &MerkleTree,
        reply: &ChildrenHashes,
    ) -> Result<DescentStep, MerkleError> {
        let request = self.pending.take().ok_or(MerkleError::DescentFinished)?;
        if ours.shape() != self.shape {
            return Err(MerkleError::ShapeMismatch {
                ours: ours.shape(),
                theirs: self.shape,
            });
        }
        if reply.level != request.level {
            return Err(MerkleError::UnexpectedReply("wrong level"));
        }
        if reply.parents != request.parents {
            return Err(MerkleError::UnexpectedReply("wrong parents"));
        }
        let our_hashes = ours.children_hashes(request.level, &request.parents)?;
        if reply.hashes.len() != our_hashes.len() {
            return Err(MerkleError::LengthMismatch {
                expected: our_hashes.len(),
                found: reply.hashes.len(),
            });
        }
        self.round_trips += 1;
        self.hashes_compared += our_hashes.len() as u64;
        let per_parent = our_hashes.len() / request.parents.len().max(1);
        let child_level = request.level + 1;
        let mut differing = Vec::new();
        for (slot, (a, b)) in our_hashes.iter().zip(&reply.hashes).enumerate() {
            if a != b {
                if differing.len() == self.max_differing {
                    break;
                }
                let parent = request.parents[slot / per_parent];
                let offset = (slot % per_parent) as u32;
                differing.push(parent * per_parent as u32 + offset);
            }
        }
        if child_level + 1 == ours.level_count() || differing.is_empty() {
            return Ok(DescentStep::Done(differing));
        }
        let next = ChildrenRequest {
            level: child_level,
            parents: differing,
        };
        self.pending = Some(next.clone());
        Ok(DescentStep::Request(next))
    }

    /// Whether the descent is over (no reply awaited).
    pub fn is_done(&self) -> bool {
        self.pending.is_none()
    }

    /// Node hashes compared so far (the root included): the descent's cost, which grows
    /// with the differences (at most `differing × fan-out` per level), not with the keys.
    pub fn hashes_compared(&self) -> u64 {
        self.hashes_compared
    }

    /// Replies taken so far (at most the number of levels below the root).
    pub fn round_trips(&self) -> u32 {
        self.round_trips
    }
}

/// The (key, version digest) pairs of one segment on one replica, sorted by key, as built
/// by [`MerkleTree::segment_digests`] from a storage scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentDigest {
    /// The segment.
    pub segment: u32,
    /// Its keys and their objects' digests ([`Object::digest`](crate::Object::digest)).
    pub entries: Vec<(Vec<u8>, u64)>,
}

impl SegmentDigest {
    /// The XOR of the entries' pair hashes: what the segment's hash in a tree holding
    /// exactly these pairs is. When our own scan's digest disagrees with our tree's
    /// [`MerkleTree::segment_hash`], the tree has drifted from storage; fix it with
    /// [`MerkleTree::rebuild_segment`].
    pub fn hash(&self) -> u64 {
        self.entries.iter().fold(0, |h, (key, digest)| {
            h ^ MerkleTree::pair_hash(key, *digest)
        })
    }

    /// Check a peer's digest against our tree: the segment exists and every key hashes
    /// into it, so a peer cannot steer a repair to keys outside the segment it was asked
    /// about.
    pub fn validate(&self, tree: &MerkleTree) -> Result<(), MerkleError> {
        let leaf = tree.level_count() - 1;
        tree.check_indices(leaf, &[self.segment])?;
        for (key, _) in &self.entries {
            let actual = tree.segment_of(key);
            if actual != self.segment {
                return Err(MerkleError::KeyOutsideSegment {
                    segment: self.segment,
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// Which keys of a segment differ between two replicas, and in which direction. Each list is
/// sorted and holds each key once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentDiff {
    /// Keys only we have: send our objects to the peer.
    pub only_ours: Vec<Vec<u8>>,
    /// Keys only the peer has: fetch its objects.
    pub only_theirs: Vec<Vec<u8>>,
    /// Keys both have with different digests: exchange both ways and merge.
    pub different: Vec<Vec<u8>>,
}

impl SegmentDiff {
    /// Whether the two lists agree.
    pub fn is_empty(&self) -> bool {
        self.only_ours.is_empty() && self.only_theirs.is_empty() && self.different.is_empty()
    }

    /// Keys to repair, all directions together.
    pub fn len(&self) -> usize {
        self.only_ours.len() + self.only_theirs.len() + self.different.len()
    }
}

/// Compare our (key, digest) list of a segment with the peer's. The lists may come in any
/// order. A key listed twice on one side with different digests (which a correct peer never
/// sends) counts as `different`, so that it is repaired rather than trusted.
/// O((n + m) log(n + m)), for the segment's keys only.
pub fn diff_segment(ours: &[(Vec<u8>, u64)], theirs: &[(Vec<u8>, u64)]) -> SegmentDiff {
    let ours = canonical(ours);
    let theirs = canonical(theirs);
    let mut diff = SegmentDiff::default();
    let (mut i, mut j) = (0, 0);
    while i < ours.len() && j < theirs.len() {
        let (ok, od) = ours[i];
        let (tk, td) = theirs[j];
        match ok.cmp(tk) {
            Ordering::Less => {
                diff.only_ours.push(ok.to_vec());
                i += 1;
            }
            Ordering::Greater => {
                diff.only_theirs.push(tk.to_vec());
                j += 1;
            }
            Ordering::Equal => {
                if od.is_none() || od != td {
                    diff.different.push(ok.to_vec());
                }
                i += 1;
                j += 1;
            }
        }
    }
    diff.only_ours
        .extend(ours[i..].iter().map(|(k, _)| k.to_vec()));
    diff.only_theirs
        .extend(theirs[j..].iter().map(|(k, _)| k.to_vec()));
    diff
}

/// Sorted by key, one entry per key; `None` for a key listed with conflicting digests.
fn canonical(entries: &[(Vec<u8>, u64)]) -> Vec<(&[u8], Option<u64>)> {
    let mut refs: Vec<(&[u8], u64)> = entries.iter().map(|(k, d)| (k.as_slice(), *d)).collect();
    refs.sort_unstable();
    let mut out: Vec<(&[u8], Option<u64>)> = Vec::with_capacity(refs.len());
    for (key, digest) in refs {
        match out.last_mut() {
            Some((last, d)) if *last == key => {
                if *d != Some(digest) {
                    *d = None;
                }
            }
            _ => out.push((key, Some(digest))),
        }
    }
    out
}
