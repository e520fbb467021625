//! Anti-entropy peer messages, what an exchange decodes from a peer: any bytes decode as a
//! request and as a response to a value or a typed error; what decodes re-encodes to
//! bytes that decode to the same value (and re-encode to the same bytes). For the AAE
//! steps themselves (`PeerRequest::Aae`, `PeerResponse::Aae`), the accessors the node
//! uses agree with the message, a node-hash request inside the tree's shape can be
//! served from a tree of that shape, and an answer turns into an exchange `Answer` whose
//! digest traffic is the sum of its keys and digests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_proto::{
    merkle::Answer,
    wire::{
        decode_request, decode_response, encode_request, encode_response, AaeRequest, AaeResponse,
        PeerRequest, PeerResponse, Request, Response, MAX_AAE_BATCH,
    },
    MerkleTree, AAE_SEGMENTS, AAE_SHAPE,
};

fn check_request(request: &AaeRequest) {
    let (partition, len) = match request {
        AaeRequest::Nodes {
            partition, indices, ..
        } => (partition, indices.len()),
        AaeRequest::Segments {
            partition,
            segments,
        } => (partition, segments.len()),
        AaeRequest::Fetch { partition, keys } | AaeRequest::Digests { partition, keys } => {
            (partition, keys.len())
        }
        AaeRequest::Push { partition, objects } => (partition, objects.len()),
        AaeRequest::Reap { partition, keys } => (partition, keys.len()),
    };
    assert_eq!(request.partition(), *partition);
    assert_eq!(request.batch_len(), len);
    assert!(request.op_name().starts_with("aae_"));
    if len > MAX_AAE_BATCH {
        // A node refuses it before touching its tree.
        return;
    }
    match request {
        AaeRequest::Nodes { level, indices, .. } => {
            let Some(width) = AAE_SHAPE.level_width(usize::from(*level)) else {
                return;
            };
            if indices.iter().all(|i| *i < width) {
                let tree = MerkleTree::with_shape(AAE_SHAPE);
                for &i in indices {
                    tree.node_hashes(usize::from(*level), i..i + 1)
                        .expect("an index the node admits is in its tree");
                }
            }
        }
        AaeRequest::Segments { segments, .. } => {
            let tree = MerkleTree::with_shape(AAE_SHAPE);
            for &s in segments {
                assert_eq!(tree.segment_hash(s).is_some(), s < AAE_SEGMENTS);
            }
        }
        _ => {}
    }
}

fn check_response(response: &AaeResponse) {
    let answer = match response.clone() {
        AaeResponse::Nodes(hashes) => Answer::Nodes(hashes),
        AaeResponse::Segments(lists) => Answer::Segments(lists),
        _ => return,
    };
    let expected: u64 = match &answer {
        Answer::Nodes(_) => 0,
        Answer::Segments(lists) => lists
            .iter()
            .flat_map(|(_, list)| list)
            .map(|(key, _)| key.len() as u64 + 8)
            .sum(),
    };
    assert_eq!(answer.digest_bytes(), expected);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let bytes = encode_request(&request);
        let again = decode_request(&bytes).expect("re-encoded request decodes");
        assert_eq!(again, request);
        assert_eq!(encode_request(&again), bytes, "encoding is not canonical");
        if let Request::Peer(PeerRequest::Aae(aae)) = &request {
            check_request(aae);
        }
    }
    if let Ok(response) = decode_response(data) {
        let bytes = encode_response(&response);
        let again = decode_response(&bytes).expect("re-encoded response decodes");
        assert_eq!(again, response);
        assert_eq!(encode_response(&again), bytes, "encoding is not canonical");
        if let Response::Peer(PeerResponse::Aae(aae)) = &response {
            check_response(aae);
        }
    }
});
