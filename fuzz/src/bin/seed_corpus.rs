//! Writes the seed corpus: a few valid encodings of each input the fuzz targets decode,
//! so that the fuzzer starts from real messages rather than from nothing.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --bin seed_corpus` (run from the repository
//! root) rewrites `fuzz/corpus/<target>/seed-*`.

use std::{fs, path::Path, time::Duration};

use shoal_proto::{
    merkle::MerkleTree,
    wire::{
        encode_context, encode_request, encode_response, ClientRequest, ClientResponse,
        PeerRequest, ReadOptions, Request, Response, WriteOptions,
    },
    Actor, CausalContext, Dot, GossipDigest, Object, RequestError, SiblingValue, Time,
};
use shoal_ring::PartitionId;

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new("fuzz/corpus").join(target);
    fs::create_dir_all(&dir).expect("create the corpus folder");
    for (i, seed) in seeds.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i}")), seed).expect("write a seed");
    }
}

fn framed(payload: &[u8], chunk: u8) -> Vec<u8> {
    let mut bytes = vec![chunk];
    bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn main() {
    let mut context = CausalContext::new();
    context.insert(Dot::new(Actor(7), 3));
    context.insert(Dot::new(Actor(9), 1));
    let mut object = Object::new();
    object
        .update(
            &CausalContext::new(),
            SiblingValue::Data(b"v1".to_vec()),
            Dot::new(Actor(7), 1),
            Time::from_micros(1_000_000),
        )
        .expect("a fresh dot");
    let mut sibling = Object::new();
    sibling
        .update(
            &CausalContext::new(),
            SiblingValue::Tombstone,
            Dot::new(Actor(9), 1),
            Time::from_micros(2_000_000),
        )
        .expect("a fresh dot");
    let mut siblings = object.clone();
    siblings.merge(&sibling);

    let requests = [
        Request::Client(ClientRequest::Get {
            key: b"greeting".to_vec(),
            options: ReadOptions {
                r: Some(2),
                pr: None,
                timeout: Some(Duration::from_secs(1)),
            },
        }),
        Request::Client(ClientRequest::Put {
            key: b"greeting".to_vec(),
            value: b"hello".to_vec(),
            context: Some(context.clone()),
            options: WriteOptions::default(),
        }),
        Request::Client(ClientRequest::Delete {
            key: b"k".to_vec(),
            context: None,
            options: WriteOptions {
                w: Some(3),
                pw: Some(1),
                timeout: None,
            },
        }),
        Request::Client(ClientRequest::Status),
        Request::Peer(PeerRequest::Replicate {
            partition: PartitionId(5),
            key: b"greeting".to_vec(),
            object: siblings.clone(),
            hint_for: None,
        }),
        Request::Peer(PeerRequest::Read {
            partition: PartitionId(5),
            key: b"greeting".to_vec(),
            hint_for: None,
        }),
        Request::Peer(PeerRequest::Gossip(GossipDigest {
            ring_version: 1,
            members: Vec::new(),
        })),
        Request::Peer(PeerRequest::Ping),
    ];
    let request_bytes: Vec<Vec<u8>> = requests.iter().map(encode_request).collect();
    write("wire_request", &request_bytes);

    let responses = [
        Response::Client(ClientResponse::Error(RequestError::Overloaded)),
        Response::Error(RequestError::Overloaded),
    ];
    let mut response_bytes: Vec<Vec<u8>> = responses.iter().map(encode_response).collect();
    response_bytes.push(encode_context(&context));
    write("wire_response", &response_bytes);

    write("object_codec", &[object.encode(), siblings.encode()]);

    let mut tree = MerkleTree::new(64, 8).expect("a valid shape");
    tree.insert(b"greeting", 42);
    tree.insert(b"k", 7);
    write("merkle_codec", &[tree.encode()]);

    let frames: Vec<Vec<u8>> = request_bytes
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, payload)| framed(payload, [1, 3, 200][i]))
        .collect();
    write("frame_decoder", &frames);
}
