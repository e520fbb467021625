//! Writes the seed corpus: a few valid encodings of each input the fuzz targets decode,
//! so that the fuzzer starts from real messages rather than from nothing.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --bin seed_corpus` (run from the repository
//! root) rewrites `fuzz/corpus/<target>/seed-*`.

use std::{fs, path::Path, time::Duration};

use shoal_fuzz::{answer, our_pairs, peer_frame, tree_of, Pairs, REPAIR_BATCH};
use shoal_proto::{
    merkle::{Answer, Exchange, Side, Step},
    wire::{
        encode_context, encode_request, encode_response, AaeRequest, AaeResponse, ClientRequest,
        ClientResponse, GetReply, PeerRequest, PeerResponse, ReadOptions, Request, Response,
        WriteOptions, WriteReply,
    },
    Actor, CausalContext, Dot, GossipDigest, Object, RequestError, SiblingValue, Time, AAE_SHAPE,
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
        Response::Client(ClientResponse::Get(GetReply {
            found: true,
            values: vec![b"v1".to_vec(), b"v2".to_vec()],
            context: context.clone(),
            written_at: vec![Time::from_micros(1), Time::from_micros(2)],
        })),
        Response::Client(ClientResponse::Put(WriteReply {
            context: context.clone(),
        })),
        Response::Client(ClientResponse::Error(RequestError::Overloaded)),
        Response::Peer(PeerResponse::Ack),
        Response::Peer(PeerResponse::Object(Some(siblings.clone()))),
        Response::Peer(PeerResponse::Pong),
        Response::Error(RequestError::Malformed("bad frame".into())),
    ];
    let mut response_bytes: Vec<Vec<u8>> = responses.iter().map(encode_response).collect();
    response_bytes.push(encode_context(&context));
    write("wire_response", &response_bytes);

    write("object_codec", &[object.encode(), siblings.encode()]);

    write("aae_messages", &aae_messages(&siblings));
    write("aae_exchange", &aae_exchanges());

    let frames: Vec<Vec<u8>> = request_bytes
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, payload)| framed(payload, [1, 3, 200][i]))
        .collect();
    write("frame_decoder", &frames);
}

/// Each AAE request and response, framed as the peers send them.
fn aae_messages(object: &Object) -> Vec<Vec<u8>> {
    let partition = PartitionId(3);
    let requests = [
        AaeRequest::Nodes {
            partition,
            level: 0,
            indices: vec![0],
        },
        AaeRequest::Nodes {
            partition,
            level: 1,
            indices: vec![0, 5, 31],
        },
        AaeRequest::Segments {
            partition,
            segments: vec![7, 1023],
        },
        AaeRequest::Fetch {
            partition,
            keys: vec![b"a".to_vec(), b"greeting".to_vec()],
        },
        AaeRequest::Push {
            partition,
            objects: vec![(b"greeting".to_vec(), object.clone())],
        },
        AaeRequest::Digests {
            partition,
            keys: vec![b"gone".to_vec()],
        },
        AaeRequest::Reap {
            partition,
            keys: vec![(b"gone".to_vec(), 0x0123_4567_89ab_cdef)],
        },
    ];
    let responses = [
        AaeResponse::Nodes(vec![0, u64::MAX, 42]),
        AaeResponse::Segments(vec![
            (7, vec![(b"a".to_vec(), 1), (b"b".to_vec(), 2)]),
            (9, Vec::new()),
        ]),
        AaeResponse::Objects(vec![
            (b"greeting".to_vec(), Some(object.clone())),
            (b"missing".to_vec(), None),
        ]),
        AaeResponse::Pushed(2),
        AaeResponse::Digests(vec![Some(17), None]),
        AaeResponse::Reaped(1),
    ];
    requests
        .into_iter()
        .map(|r| encode_request(&Request::Peer(PeerRequest::Aae(r))))
        .chain(
            responses
                .into_iter()
                .map(|r| encode_response(&Response::Peer(PeerResponse::Aae(r)))),
        )
        .collect()
}

/// Whole exchanges with a correct peer, as the `aae_exchange` target reads them: the
/// order byte, then the peer's answers.
fn aae_exchanges() -> Vec<Vec<u8>> {
    let ours = our_pairs();
    // The same keys.
    let same = ours.clone();
    // A key missing, a key changed, a key only they have.
    let mut few = ours.clone();
    few.remove(3);
    few[10].1 += 1;
    few.push((b"theirs-only".to_vec(), 99));
    few.sort();
    // Many differences: every third key changed, and ten keys only they have.
    let mut many: Pairs = ours
        .iter()
        .enumerate()
        .map(|(i, (k, d))| (k.clone(), if i % 3 == 0 { d ^ 1 } else { *d }))
        .collect();
    many.extend((0..10).map(|i| (format!("extra-{i}").into_bytes(), i)));
    many.sort();
    let mut seeds = vec![
        exchange_input(&ours, &same, 0),
        exchange_input(&ours, &few, 0),
        exchange_input(&ours, &few, 0b1010_1010),
        exchange_input(&ours, &many, 0xff),
    ];
    // A peer that answers with the wrong kind of message.
    let mut wrong = vec![0];
    wrong.extend(peer_frame(&AaeResponse::Pushed(1)));
    seeds.push(wrong);
    seeds
}

/// Runs an exchange between `ours` and a correct peer holding `theirs`, and records the
/// peer's answers.
fn exchange_input(ours: &Pairs, theirs: &Pairs, order: u8) -> Vec<u8> {
    let (our_tree, their_tree) = (tree_of(ours), tree_of(theirs));
    let to_answer = |r: AaeResponse| match r {
        AaeResponse::Nodes(h) => Answer::Nodes(h),
        AaeResponse::Segments(s) => Answer::Segments(s),
        _ => unreachable!(),
    };
    let mut input = vec![order];
    let (mut exchange, mut step) = Exchange::start(AAE_SHAPE);
    loop {
        step = match step {
            Step::Done => return input,
            Step::Wait => unreachable!("nothing in flight"),
            Step::Ask(question) => {
                let their_answer = answer(&their_tree, theirs, &question);
                input.extend(peer_frame(&their_answer));
                let our_answer = answer(&our_tree, ours, &question);
                exchange
                    .answer(Side::Ours, to_answer(our_answer))
                    .expect("a correct answer");
                exchange
                    .answer(Side::Theirs, to_answer(their_answer))
                    .expect("a correct answer")
            }
            Step::Repair => {
                let repairs = exchange.take_repairs(REPAIR_BATCH);
                let mut step = Step::Wait;
                for _ in [&repairs.fetch, &repairs.push]
                    .into_iter()
                    .filter(|keys| !keys.is_empty())
                {
                    step = exchange.repaired();
                }
                step
            }
        };
    }
}
