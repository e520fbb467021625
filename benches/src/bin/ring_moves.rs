//! How many partitions a membership change moves, next to the minimum (issue 9's
//! benchmark): primaries whose owner changes (the ring's rebalance plan) and replica
//! copies that must be created (a node newly in a partition's preference list of N),
//! for 3 → 4, 4 → 5, 5 → 4 and replacing a member of four, with the dev cluster's
//! Q = 256 and N = 3 (or `ring_moves Q N`).
//!
//! The minimum for primaries is the sum of what each member gains (equal weights fix
//! each member's share); for replica copies it is the sum of what each node's replica
//! count grows by, a lower bound no placement can beat.

use std::collections::BTreeMap;

use shoal_ring::{Member, NodeId, Ring};

fn members(ids: &[&str]) -> Vec<Member> {
    ids.iter()
        .map(|id| Member::new(NodeId::new(*id).expect("valid id")))
        .collect()
}

/// Replica count per node: partitions whose preference list of `n` holds it.
fn replica_counts(ring: &Ring, n: usize) -> BTreeMap<NodeId, usize> {
    let mut out = BTreeMap::new();
    for p in ring.partitions() {
        for id in ring.preference_list(p, n).nodes {
            *out.entry(id).or_default() += 1;
        }
    }
    out
}

/// Primaries moved, their minimum, replica copies created, their lower bound.
fn moves(before: &Ring, after: &Ring, moved: usize, n: usize) -> [usize; 4] {
    let gain = |old: &BTreeMap<NodeId, usize>, new: &BTreeMap<NodeId, usize>| -> usize {
        new.iter()
            .map(|(id, c)| c.saturating_sub(*old.get(id).unwrap_or(&0)))
            .sum()
    };
    let owned = |r: &Ring| -> BTreeMap<NodeId, usize> {
        r.members()
            .iter()
            .map(|m| (m.id.clone(), r.owned_count(&m.id)))
            .collect()
    };
    let copies: usize = before
        .partitions()
        .map(|p| {
            let old = before.preference_list(p, n);
            after
                .preference_list(p, n)
                .nodes
                .iter()
                .filter(|id| !old.contains(id))
                .count()
        })
        .sum();
    [
        moved,
        gain(&owned(before), &owned(after)),
        copies,
        gain(&replica_counts(before, n), &replica_counts(after, n)),
    ]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let q: u32 = args.get(1).map_or(Ok(256), |s| s.parse())?;
    let n: usize = args.get(2).map_or(Ok(3), |s| s.parse())?;
    let three = Ring::new(q, members(&["n1", "n2", "n3"]))?;
    let (four, p34) = three.rebalance(members(&["n1", "n2", "n3", "n4"]))?;
    let (five, p45) = four.rebalance(members(&["n1", "n2", "n3", "n4", "n5"]))?;
    let (back, p54) = five.rebalance(members(&["n1", "n2", "n3", "n5"]))?;
    let (replaced, prep) = four.replace(&NodeId::new("n2")?, Member::new(NodeId::new("n6")?))?;
    println!("Q = {q}, N = {n}");
    println!("| change | primaries moved | minimum | replica copies created | lower bound | share of the Q x N copies |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, before, after, plan) in [
        ("3 -> 4", &three, &four, &p34),
        ("4 -> 5", &four, &five, &p45),
        ("5 -> 4 (n4 leaves)", &five, &back, &p54),
        ("replace n2 by n6 (of 4)", &four, &replaced, &prep),
    ] {
        let [moved, min, copies, bound] = moves(before, after, plan.moved_count(), n);
        let share = copies as f64 / (f64::from(q) * n as f64) * 100.0;
        println!("| {name} | {moved} | {min} | {copies} | {bound} | {share:.1}% |");
    }
    Ok(())
}
