//! The CPU cost of what every replicated write does to its object on each replica, apart
//! from storage: encode it for the store, decode the stored copy, merge the incoming one
//! into it. With 1 KiB values under the node's allocator (mimalloc).
//!
//! `encode/growing vector` is the encoding `Object::encode` used before it sized its
//! output first (postcard into a vector grown by doubling, then copied behind the
//! format version byte): the same bytes, kept here as the reference it is measured
//! against.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shoal_proto::{Actor, Dot, Object, SiblingValue, Time};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An object as a replica stores it after `writes` updates, each with the previous
/// one's context, of a `len`-byte value.
fn object(len: usize, writes: u64) -> Object {
    let mut o = Object::new();
    for counter in 1..=writes {
        let context = o.context();
        let value = SiblingValue::Data(vec![counter as u8; len]);
        o.update(&context, value, Dot::new(Actor(1), counter), Time::ZERO)
            .expect("fresh dot");
    }
    o
}

fn growing_vector(o: &Object) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend(postcard::to_stdvec(o).expect("plain data"));
    out
}

fn bench_object(c: &mut Criterion) {
    let stored = object(1024, 3);
    let incoming = object(1024, 4);
    let bytes = stored.encode();
    assert_eq!(bytes, growing_vector(&stored), "the same bytes either way");
    c.bench_function("object 1 KiB/encode", |b| {
        b.iter(|| black_box(&stored).encode())
    });
    c.bench_function("object 1 KiB/encode/growing vector", |b| {
        b.iter(|| growing_vector(black_box(&stored)))
    });
    c.bench_function("object 1 KiB/decode", |b| {
        b.iter(|| Object::decode(black_box(&bytes)).expect("valid"))
    });
    // A replica's merge of a newer write, storage aside: decode the stored copy, merge,
    // encode what is stored.
    c.bench_function("object 1 KiB/decode, merge, encode", |b| {
        b.iter(|| {
            let mut current = Object::decode(black_box(&bytes)).expect("valid");
            assert!(current.merge(black_box(&incoming)));
            current.encode()
        })
    });
}

criterion_group!(benches, bench_object);
criterion_main!(benches);
