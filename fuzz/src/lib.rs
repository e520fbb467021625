//! What the `aae_exchange` target and the seed writer share: the replica the exchange runs
//! on, how a replica answers an exchange question, and how the peer's answers are laid
//! out in a fuzz input.

use shoal_proto::{
    merkle::Question,
    wire::{encode_response, AaeResponse, KeyDigests, PeerResponse, Response},
    MerkleTree, AAE_SHAPE,
};

/// The (key, digest) pairs of a replica, sorted by key.
pub type Pairs = Vec<(Vec<u8>, u64)>;

/// Keys per repair batch in the `aae_exchange` target: small, so that one segment step
/// takes several batches.
pub const REPAIR_BATCH: usize = 4;

/// The replica the exchange runs on (`Side::Ours`): 48 keys, spread over the tree.
pub fn our_pairs() -> Pairs {
    let mut pairs: Pairs = (0..48u64)
        .map(|i| (format!("key-{i:02}").into_bytes(), i * 7919 + 1))
        .collect();
    pairs.sort();
    pairs
}

/// The tree of a replica's pairs, in the shape every node uses.
pub fn tree_of(pairs: &Pairs) -> MerkleTree {
    let mut tree = MerkleTree::with_shape(AAE_SHAPE);
    for (key, digest) in pairs {
        tree.insert(key, *digest);
    }
    tree
}

/// A correct replica's answer to `question`, as its storage serves it.
pub fn answer(tree: &MerkleTree, pairs: &Pairs, question: &Question) -> AaeResponse {
    match question {
        Question::Nodes { level, indices } => AaeResponse::Nodes(
            indices
                .iter()
                .map(|&i| {
                    tree.node_hashes(usize::from(*level), i..i + 1)
                        .expect("the exchange asks for nodes of its shape")[0]
                })
                .collect(),
        ),
        Question::Segments(segments) => AaeResponse::Segments(
            segments
                .iter()
                .map(|&s| {
                    let list: KeyDigests = pairs
                        .iter()
                        .filter(|(key, _)| tree.segment_of(key) == s)
                        .cloned()
                        .collect();
                    (s, list)
                })
                .collect(),
        ),
    }
}

/// One answer of the peer as the fuzz input carries it: a big-endian `u16` length, then a
/// response frame body (`Response::Peer(PeerResponse::Aae(..))` when well formed).
pub fn peer_frame(response: &AaeResponse) -> Vec<u8> {
    let body = encode_response(&Response::Peer(PeerResponse::Aae(response.clone())));
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Splits the next peer frame off `input` (`None` when the input is used up).
pub fn next_frame<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = input.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (frame, rest) = rest.split_at(len);
    *input = rest;
    Some(frame)
}
