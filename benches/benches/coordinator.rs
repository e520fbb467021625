//! The replication engine's coordinator as a pure state machine: the CPU cost of one
//! put and one get, with no IO (storage replies and peer acks are fed by hand).

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_proto::wire::{ClientRequest, PeerResponse, ReadOptions, Request, WriteOptions};
use shoal_proto::{
    Actor, CausalContext, Command, Dot, Engine, EngineConfig, InboundId, Now, Object, Sender,
    SiblingValue, StorageOp, StorageReply, Time,
};
use shoal_ring::{Member, NodeId, Ring};

fn engine() -> (Engine, Vec<Vec<u8>>) {
    let ids: Vec<NodeId> = ["a", "b", "c"]
        .iter()
        .map(|s| NodeId::new(*s).expect("valid id"))
        .collect();
    let ring = Ring::new(64, ids.iter().cloned().map(Member::new).collect()).expect("ring");
    let addrs = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 7001 + i).parse().expect("addr");
            (id.clone(), addr)
        })
        .collect();
    let me = ids[0].clone();
    // Keys for which `a` is a primary (with N=3 and 3 nodes: every key).
    let keys = (0..1024u32)
        .map(|i| format!("key-{i}").into_bytes())
        .filter(|k| ring.preference_list_for_key(k, 3).nodes.contains(&me))
        .collect();
    let engine = Engine::new(
        EngineConfig::default(),
        me,
        ring,
        addrs,
        1,
        Now::from_virtual(Time::ZERO),
    )
    .expect("engine");
    (engine, keys)
}

fn object(value: &[u8], counter: u64) -> Object {
    let mut o = Object::new();
    o.update(
        &CausalContext::new(),
        SiblingValue::Data(value.to_vec()),
        Dot::new(Actor(1), counter),
        Time::ZERO,
    )
    .expect("fresh dot");
    o
}

fn bench_put(c: &mut Criterion) {
    let (mut e, keys) = engine();
    let value = vec![7u8; 1024];
    let stored = object(&value, 1);
    let mut inbound = 0u64;
    let mut now = Time::from_micros(1);
    c.bench_function("coordinator put (W=2, N=3, 1 KiB)", |b| {
        b.iter(|| {
            inbound += 1;
            now = now + std::time::Duration::from_micros(1);
            let key = keys[(inbound as usize) % keys.len()].clone();
            e.handle_request(
                Now::from_virtual(now),
                InboundId(inbound),
                Sender::Client("bench".into()),
                Request::Client(ClientRequest::Put {
                    key,
                    value: value.clone(),
                    context: None,
                    options: WriteOptions::default(),
                }),
            );
            let mut sends = Vec::new();
            let mut answered = false;
            while let Some(cmd) = e.poll_command() {
                match cmd {
                    Command::Storage {
                        id,
                        op: StorageOp::Coordinate { .. },
                    } => e.handle_storage(
                        Now::from_virtual(now),
                        id,
                        Ok(StorageReply::Coordinated {
                            object: stored.clone(),
                            context: CausalContext::new(),
                        }),
                    ),
                    Command::Send { id, .. } => sends.push(id),
                    Command::Respond { .. } => answered = true,
                    Command::Storage { .. } => {}
                }
                if let Some(id) = sends.pop() {
                    e.handle_response(Now::from_virtual(now), id, Ok(PeerResponse::Ack));
                }
            }
            for id in sends {
                e.handle_response(Now::from_virtual(now), id, Ok(PeerResponse::Ack));
            }
            while e.poll_command().is_some() {}
            black_box(answered)
        })
    });
}

fn bench_get(c: &mut Criterion) {
    let (mut e, keys) = engine();
    let stored = object(&[7u8; 1024], 1);
    let mut inbound = 0u64;
    let mut now = Time::from_micros(1);
    c.bench_function("coordinator get (R=2, N=3, 1 KiB)", |b| {
        b.iter(|| {
            inbound += 1;
            now = now + std::time::Duration::from_micros(1);
            let key = keys[(inbound as usize) % keys.len()].clone();
            e.handle_request(
                Now::from_virtual(now),
                InboundId(inbound),
                Sender::Client("bench".into()),
                Request::Client(ClientRequest::Get {
                    key,
                    options: ReadOptions::default(),
                }),
            );
            let mut answered = false;
            while let Some(cmd) = e.poll_command() {
                match cmd {
                    Command::Storage { id, .. } => e.handle_storage(
                        Now::from_virtual(now),
                        id,
                        Ok(StorageReply::Object(Some(stored.clone()))),
                    ),
                    Command::Send { id, .. } => e.handle_response(
                        Now::from_virtual(now),
                        id,
                        Ok(PeerResponse::Object(Some(stored.clone()))),
                    ),
                    Command::Respond { .. } => answered = true,
                }
            }
            black_box(answered)
        })
    });
}

criterion_group!(benches, bench_put, bench_get);
criterion_main!(benches);
