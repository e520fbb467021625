//! Ring micro-benchmarks: the per-request lookup (key -> preference list) and the admin-time
//! claim and rebalance.
//!
//! Run with `cargo bench -p shoal-bench --bench ring`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_ring::{Member, NodeId, Ring};

/// Replicas per key in every lookup benchmark.
const N: usize = 3;
/// Distinct keys cycled through, so lookups touch the whole ring.
const KEYS: usize = 4096;

fn members(count: usize, zones: usize) -> Vec<Member> {
    (0..count)
        .map(|i| {
            let member = Member::new(NodeId::new(format!("node-{i:03}")).expect("valid node id"));
            if zones == 0 {
                member
            } else {
                member.with_zone(format!("zone-{}", i % zones))
            }
        })
        .collect()
}

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("user:{i:08}").into_bytes())
        .collect()
}

/// Key -> preference list of N = 3, for Q in {256, 4096} and S in {5, 64}, without zones and
/// with 3 zones.
fn preference_list_for_key(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("ring/preference_list_for_key");
    group.throughput(Throughput::Elements(1));
    for zones in [0, 3] {
        for q in [256u32, 4096] {
            for s in [5usize, 64] {
                let ring = Ring::new(q, members(s, zones)).expect("valid ring");
                let id = format!("Q={q}/S={s}/zones={zones}");
                group.bench_function(BenchmarkId::from_parameter(id), |b| {
                    let mut i = 0;
                    b.iter(|| {
                        i = (i + 1) % KEYS;
                        black_box(ring.preference_list_for_key(black_box(&keys[i]), N))
                    });
                });
            }
        }
    }
    group.finish();
}

/// The claim of a fresh ring and the rebalance for one joining node (admin operations).
fn claim_and_rebalance(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/claim");
    for (q, s) in [(256u32, 5usize), (4096, 64)] {
        let id = format!("Q={q}/S={s}");
        group.bench_function(BenchmarkId::new("new", &id), |b| {
            b.iter(|| Ring::new(black_box(q), members(s, 3)).expect("valid ring"));
        });
        let ring = Ring::new(q, members(s, 3)).expect("valid ring");
        let joined = members(s + 1, 3);
        group.bench_function(BenchmarkId::new("rebalance_join", &id), |b| {
            b.iter(|| {
                ring.rebalance(black_box(joined.clone()))
                    .expect("valid rebalance")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, preference_list_for_key, claim_and_rebalance);
criterion_main!(benches);
