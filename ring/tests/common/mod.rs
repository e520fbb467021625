//! Helpers shared by the ring's integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use shoal_ring::{Member, NodeId, Ring};

/// Node id `n` zero-padded, so ids sort like their numbers.
pub fn id(n: usize) -> NodeId {
    NodeId::new(format!("node-{n:04}")).unwrap()
}

/// Members with the given numbers, equal weights, no zones.
pub fn plain(numbers: &[usize]) -> Vec<Member> {
    numbers.iter().map(|&n| Member::new(id(n))).collect()
}

/// The zone key the ring uses: a member without a zone is its own zone.
pub fn zone_key(ring: &Ring, node: &NodeId) -> String {
    let member = ring.member(node).unwrap();
    match &member.zone {
        Some(zone) => format!("zone:{zone}"),
        None => format!("node:{}", member.id),
    }
}

/// How many windows of `w` consecutive partitions (cyclically) repeat an owner.
pub fn owner_window_repeats(ring: &Ring, w: usize) -> usize {
    let owners: Vec<&NodeId> = ring.partitions().map(|p| ring.owner(p)).collect();
    let q = owners.len();
    (0..q)
        .filter(|&start| {
            let distinct: BTreeSet<&NodeId> = (0..w).map(|d| owners[(start + d) % q]).collect();
            distinct.len() < w
        })
        .count()
}

/// How many pairs of neighbouring partitions (cyclically) have owners in the same zone.
pub fn neighbour_zone_repeats(ring: &Ring) -> usize {
    let zones: Vec<String> = ring
        .partitions()
        .map(|p| zone_key(ring, ring.owner(p)))
        .collect();
    let q = zones.len();
    (0..q).filter(|&p| zones[p] == zones[(p + 1) % q]).count()
}

/// Checks the balance law: each member owns `floor` or `ceil` of `Q * weight / total`.
pub fn assert_balanced(ring: &Ring) {
    let q = u64::from(ring.partition_count());
    let total: u64 = ring.members().iter().map(|m| u64::from(m.weight)).sum();
    let mut sum = 0;
    for member in ring.members() {
        let owned = ring.owned_count(&member.id) as u64;
        let scaled = q * u64::from(member.weight);
        let floor = scaled / total;
        let ceil = scaled.div_ceil(total);
        assert!(
            owned == floor || owned == ceil,
            "{} owns {owned}, ideal share is {scaled}/{total}",
            member.id
        );
        sum += owned;
    }
    assert_eq!(sum, q);
}
