//! Merkle tree micro-benchmarks: the per-write update, the start-up rebuild of a 1M-key
//! partition, the descent between two 1M-key trees with 0, 10 and 1,000 differences, and
//! the comparison of one segment's key lists.
//!
//! Run with `cargo bench -p shoal-bench --bench merkle`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_proto::merkle::{Answer, Exchange, Question, Side, Step};
use shoal_proto::{diff_segment, MerkleShape, MerkleTree};

/// Keys per tree: a large partition.
const KEYS: u32 = 1_000_000;
/// Keys cycled through by the update benchmarks: a write's key is in the CPU cache (it was
/// just received and stored), so the timed loop should not wait on memory for it either.
const HOT_KEYS: usize = 4096;

fn key(i: u32) -> Vec<u8> {
    format!("user:{i:010}").into_bytes()
}

/// A version digest of key `i` at version `v`, spread over the u64 range.
fn digest(i: u32, v: u32) -> u64 {
    u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(v).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

/// The index after `i`, wrapping at `len` (no division in the timed loop).
fn next(i: usize, len: usize) -> usize {
    if i + 1 == len {
        0
    } else {
        i + 1
    }
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS).map(key).collect()
}

fn tree(keys: &[Vec<u8>]) -> MerkleTree {
    let shape = MerkleShape::DEFAULT;
    MerkleTree::from_pairs(
        shape.segments(),
        shape.fanout(),
        keys.iter()
            .enumerate()
            .map(|(i, k)| (k.as_slice(), digest(i as u32, 0))),
    )
    .expect("the default shape is valid")
}

/// One write on a 1M-key tree (new digest for an existing key; the cost does not depend on
/// the key count), an insert followed by a remove, and the pair hash alone.
fn update(c: &mut Criterion) {
    let keys = keys();
    let hot = HOT_KEYS;
    let mut group = c.benchmark_group("merkle/update");
    group.throughput(Throughput::Elements(1));

    let mut tree = tree(&keys);
    let mut versions = vec![0u32; keys.len()];
    let mut i = 0usize;
    group.bench_function("update_existing_key", |b| {
        b.iter(|| {
            i = next(i, hot);
            let old = digest(i as u32, versions[i]);
            versions[i] += 1;
            let new = digest(i as u32, versions[i]);
            tree.update(black_box(&keys[i]), Some(old), Some(new));
        });
    });
    black_box(tree.root());

    let mut tree = MerkleTree::default();
    let mut i = 0usize;
    group.bench_function("insert_then_remove", |b| {
        b.iter(|| {
            i = next(i, hot);
            let d = digest(i as u32, 0);
            tree.insert(black_box(&keys[i]), d);
            tree.remove(black_box(&keys[i]), d);
        });
    });

    group.bench_function("pair_hash_16_byte_key", |b| {
        let mut i = 0usize;
        b.iter(|| {
            i = next(i, hot);
            black_box(MerkleTree::pair_hash(black_box(&keys[i]), 42))
        });
    });
    group.finish();
}

/// Rebuild of a 1M-key tree from a scan (start-up after an unclean stop, verification).
fn rebuild(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("merkle/from_pairs");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(KEYS)));
    group.bench_function("1M_keys", |b| b.iter(|| black_box(tree(&keys)).root()));
    group.finish();
}

/// A tree's answer to a node question (segment questions are answered with empty
/// lists: the benchmark measures finding the differing segments, not comparing keys).
fn answer(tree: &MerkleTree, question: &Question) -> Answer {
    match question {
        Question::Nodes { level, indices } => Answer::Nodes(
            indices
                .iter()
                .flat_map(|&i| {
                    tree.node_hashes(usize::from(*level), i..i + 1)
                        .expect("a valid question")
                })
                .collect(),
        ),
        Question::Segments(segments) => {
            Answer::Segments(segments.iter().map(|&s| (s, Vec::new())).collect())
        }
    }
}

/// A whole descent between two 1M-key trees that differ in `n` keys, both trees in memory
/// (no network), driving the exchange state machine the engine runs: the CPU cost of
/// finding the differing segments.
fn descent(c: &mut Criterion) {
    let keys = keys();
    let ours = tree(&keys);
    let shape = ours.shape();
    let leaf = shape.level_count() - 1;
    let all = 0..shape.segments();
    let mut group = c.benchmark_group("merkle/descent");
    for differences in [0u32, 10, 1000] {
        let mut theirs = ours.clone();
        // Spread the changed keys over the whole key range.
        let stride = KEYS / differences.max(1);
        for j in 0..differences {
            let i = j * stride;
            theirs.update(&keys[i as usize], Some(digest(i, 0)), Some(digest(i, 1)));
        }
        let (a, b) = (
            ours.node_hashes(leaf, all.clone()).expect("leaf level"),
            theirs.node_hashes(leaf, all.clone()).expect("leaf level"),
        );
        let expected = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{differences}_differences")),
            &theirs,
            |bench, theirs| {
                bench.iter(|| {
                    let (mut exchange, mut step) = Exchange::start(shape);
                    let mut segments = 0;
                    loop {
                        match step {
                            Step::Ask(question) => {
                                if let Question::Segments(s) = &question {
                                    segments += s.len();
                                }
                                exchange
                                    .answer(Side::Ours, answer(&ours, &question))
                                    .expect("a fitting answer");
                                step = exchange
                                    .answer(Side::Theirs, answer(theirs, &question))
                                    .expect("a fitting answer");
                            }
                            Step::Done => {
                                assert_eq!(segments, expected);
                                break black_box(segments);
                            }
                            Step::Wait | Step::Repair => unreachable!("empty key lists agree"),
                        }
                    }
                });
            },
        );
    }
    group.finish();
}

/// Comparing one segment's key lists: about 1,000 keys each (1M keys over 1,024 segments),
/// 10 of them different.
fn segment_diff(c: &mut Criterion) {
    let ours: Vec<(Vec<u8>, u64)> = (0..1000).map(|i| (key(i), digest(i, 0))).collect();
    let theirs: Vec<(Vec<u8>, u64)> = (0..1000)
        .map(|i| (key(i), digest(i, u32::from(i % 100 == 0))))
        .collect();
    let mut group = c.benchmark_group("merkle/diff_segment");
    group.throughput(Throughput::Elements(ours.len() as u64));
    group.bench_function("1000_keys_10_different", |b| {
        b.iter(|| black_box(diff_segment(black_box(&ours), black_box(&theirs))))
    });
    group.finish();
}

criterion_group!(benches, update, rebuild, descent, segment_diff);
criterion_main!(benches);
