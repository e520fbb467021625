//! Behaviour of the ring's public API on hand-picked inputs, and every `RingError`.

mod common;

use common::{id, plain};
use shoal_ring::{
    key_hash, Member, NodeId, PartitionId, Ring, RingError, DEFAULT_PARTITIONS, MAX_PARTITIONS,
    MIN_PARTITIONS,
};

fn ring(q: u32, n: usize) -> Ring {
    Ring::new(q, plain(&(0..n).collect::<Vec<_>>())).unwrap()
}

// ---- errors -------------------------------------------------------------------------------

#[test]
fn partition_count_that_is_not_a_power_of_two_in_range_is_rejected() {
    for q in [0, 1, 2, 4, 7, 12, 100, 255, 65_535, 131_072, u32::MAX] {
        assert_eq!(
            Ring::new(q, plain(&[1])),
            Err(RingError::InvalidPartitionCount { partitions: q }),
            "q = {q}"
        );
    }
    for q in [MIN_PARTITIONS, 16, DEFAULT_PARTITIONS, 4096, MAX_PARTITIONS] {
        assert!(Ring::new(q, plain(&[1])).is_ok(), "q = {q}");
    }
}

#[test]
fn empty_member_list_is_rejected() {
    assert_eq!(Ring::new(64, vec![]), Err(RingError::NoMembers));
    assert_eq!(
        ring(64, 3).rebalance(vec![]).unwrap_err(),
        RingError::NoMembers
    );
}

#[test]
fn duplicate_member_is_rejected() {
    let members = vec![
        Member::new(id(1)),
        Member::new(id(2)),
        Member::new(id(1)).with_weight(3),
    ];
    assert_eq!(
        Ring::new(64, members.clone()),
        Err(RingError::DuplicateMember { id: id(1) })
    );
    assert_eq!(
        ring(64, 2).rebalance(members).unwrap_err(),
        RingError::DuplicateMember { id: id(1) }
    );
}

#[test]
fn invalid_node_id_is_rejected() {
    assert!(matches!(
        NodeId::new(""),
        Err(RingError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        NodeId::new("a b"),
        Err(RingError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        NodeId::new("x".repeat(65)),
        Err(RingError::InvalidNodeId { .. })
    ));
    assert!(matches!(
        "a/b".parse::<NodeId>(),
        Err(RingError::InvalidNodeId { .. })
    ));
}

#[test]
fn zero_weight_is_rejected() {
    let members = vec![Member::new(id(1)), Member::new(id(2)).with_weight(0)];
    assert_eq!(
        Ring::new(64, members.clone()),
        Err(RingError::ZeroWeight { member: id(2) })
    );
    assert_eq!(
        ring(64, 2).rebalance(members).unwrap_err(),
        RingError::ZeroWeight { member: id(2) }
    );
}

#[test]
fn invalid_zone_is_rejected() {
    for zone in ["", "eu west", "z/1", &"z".repeat(65)] {
        let members = vec![Member::new(id(1)).with_zone(zone)];
        assert!(
            matches!(Ring::new(64, members), Err(RingError::InvalidZone { ref member, .. }) if *member == id(1)),
            "zone {zone:?} accepted"
        );
    }
}

#[test]
fn more_members_than_partitions_is_rejected() {
    assert_eq!(
        Ring::new(8, plain(&(0..9).collect::<Vec<_>>())),
        Err(RingError::TooFewPartitions {
            partitions: 8,
            member: id(8)
        })
    );
    assert!(Ring::new(8, plain(&(0..8).collect::<Vec<_>>())).is_ok());
    assert!(matches!(
        ring(8, 8).rebalance(plain(&(0..9).collect::<Vec<_>>())),
        Err(RingError::TooFewPartitions { partitions: 8, .. })
    ));
}

#[test]
fn weight_so_small_its_share_rounds_to_zero_is_rejected() {
    let members = vec![
        Member::new(id(1)),
        Member::new(id(2)),
        Member::new(id(3)).with_weight(100_000),
    ];
    assert!(matches!(
        Ring::new(8, members),
        Err(RingError::TooFewPartitions { partitions: 8, .. })
    ));
    // A tiny share that still rounds up to one partition is fine.
    let members = vec![Member::new(id(1)), Member::new(id(2)).with_weight(1_000)];
    let ring = Ring::new(8, members).unwrap();
    assert_eq!(ring.owned_count(&id(1)), 1);
    assert_eq!(ring.owned_count(&id(2)), 7);
}

#[test]
fn partition_number_out_of_range_is_rejected() {
    let ring = ring(64, 3);
    assert_eq!(ring.checked_partition(63), Ok(PartitionId(63)));
    assert_eq!(
        ring.checked_partition(64),
        Err(RingError::PartitionOutOfRange {
            partition: 64,
            partitions: 64
        })
    );
}

#[test]
fn malformed_encodings_are_rejected() {
    let ring = ring(8, 2);
    let good = serde_json::to_value(&ring).unwrap();
    let decode = |value: serde_json::Value| serde_json::from_value::<Ring>(value);
    assert_eq!(decode(good.clone()).unwrap(), ring);

    let mut bad = good.clone();
    bad["version"] = 0.into();
    assert!(decode(bad).unwrap_err().to_string().contains("version 0"));

    let mut bad = good.clone();
    bad["owners"] = serde_json::json!([0, 1, 0, 1, 0, 1, 0]);
    assert!(decode(bad)
        .unwrap_err()
        .to_string()
        .contains("partition count 7"));

    let mut bad = good.clone();
    bad["owners"] = serde_json::json!([0, 1, 0, 1, 0, 1, 0, 2]);
    assert!(decode(bad)
        .unwrap_err()
        .to_string()
        .contains("not a member"));

    let mut bad = good.clone();
    bad["owners"] = serde_json::json!([0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(decode(bad)
        .unwrap_err()
        .to_string()
        .contains("owns no partition"));

    let mut bad = good.clone();
    let members = bad["members"].as_array().unwrap().clone();
    bad["members"] = serde_json::json!([members[1], members[0]]);
    assert!(decode(bad).unwrap_err().to_string().contains("not sorted"));

    let mut bad = good.clone();
    bad["members"][0]["id"] = "not valid".into();
    assert!(decode(bad)
        .unwrap_err()
        .to_string()
        .contains("invalid node id"));

    let mut bad = good;
    bad["members"][0]["weight"] = 0.into();
    assert!(decode(bad).unwrap_err().to_string().contains("weight 0"));
}

#[test]
fn version_cannot_overflow() {
    let ring = ring(8, 2);
    let mut value = serde_json::to_value(&ring).unwrap();
    value["version"] = u64::MAX.into();
    let last: Ring = serde_json::from_value(value).unwrap();
    assert_eq!(
        last.rebalance(plain(&[0, 1])).unwrap_err(),
        RingError::VersionExhausted
    );
}

#[test]
fn error_messages_name_the_problem() {
    assert_eq!(
        RingError::InvalidPartitionCount { partitions: 100 }.to_string(),
        "partition count 100 is not a power of two between 8 and 65536"
    );
    assert_eq!(
        RingError::DuplicateMember { id: id(3) }.to_string(),
        "member node-0003 appears more than once"
    );
}

// ---- hashing and partitions -----------------------------------------------------------------

#[test]
fn partition_of_a_key_is_the_top_bits_of_its_xxh3_hash() {
    for (q, bits) in [(8u32, 3u32), (256, 8), (65_536, 16)] {
        let ring = ring(q, 1);
        for key in [&b""[..], b"a", b"user:42", &[0xff; 100]] {
            let hash = key_hash(key);
            assert_eq!(
                ring.partition_of(key),
                PartitionId((hash >> (64 - bits)) as u32)
            );
            assert_eq!(ring.partition_of(key), ring.partition_of_hash(hash));
        }
        assert_eq!(ring.partition_of_hash(0), PartitionId(0));
        assert_eq!(ring.partition_of_hash(u64::MAX), PartitionId(q - 1));
    }
}

#[test]
fn hash_ranges_tile_the_hash_space_in_partition_order() {
    let ring = ring(16, 3);
    let mut next = 0u64;
    for p in ring.partitions() {
        let range = ring.hash_range(p);
        assert_eq!(*range.start(), next);
        assert_eq!(ring.partition_of_hash(*range.start()), p);
        assert_eq!(ring.partition_of_hash(*range.end()), p);
        next = range.end().wrapping_add(1);
    }
    assert_eq!(next, 0, "the last range ends at u64::MAX");
}

// ---- claim and lookups ------------------------------------------------------------------------

#[test]
fn fresh_ring_is_version_one_with_sorted_members() {
    let ring = Ring::new(64, plain(&[3, 1, 2])).unwrap();
    assert_eq!(ring.version(), 1);
    assert_eq!(ring.partition_count(), 64);
    let ids: Vec<NodeId> = ring.members().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec![id(1), id(2), id(3)]);
    assert_eq!(ring.member(&id(2)).unwrap().weight, 1);
    assert!(ring.member(&id(9)).is_none());
    assert!(ring.contains_member(&id(3)));
}

#[test]
fn equal_members_dividing_q_are_laid_out_round_robin() {
    let ring = ring(16, 4);
    let owners: Vec<&NodeId> = ring.partitions().map(|p| ring.owner(p)).collect();
    for (p, owner) in owners.iter().enumerate() {
        assert_eq!(**owner, id(p % 4));
    }
}

#[test]
fn a_node_never_neighbours_itself_even_when_its_zone_must() {
    // Zone 3 holds two thirds of the ring, so zone neighbours are unavoidable, but no node
    // owns half: found by the property test when zones were laid out before nodes.
    let members = vec![
        Member::new(id(36)).with_zone("zone-3").with_weight(4),
        Member::new(id(4459)).with_zone("zone-3").with_weight(2),
        Member::new(id(6022)).with_zone("zone-1").with_weight(3),
    ];
    let ring = Ring::new(1024, members).unwrap();
    assert_eq!(common::owner_window_repeats(&ring, 2), 0);
}

#[test]
fn owned_partitions_and_counts_agree() {
    let ring = ring(256, 5);
    for member in ring.members() {
        let owned = ring.owned_partitions(&member.id);
        assert_eq!(owned.len(), ring.owned_count(&member.id));
        assert!(owned.iter().all(|&p| *ring.owner(p) == member.id));
    }
    assert_eq!(ring.owned_count(&id(99)), 0);
    assert!(ring.owned_partitions(&id(99)).is_empty());
}

#[test]
fn preference_list_is_the_next_distinct_owners_clockwise() {
    let ring = ring(16, 4); // round robin 0 1 2 3 0 1 2 3 ...
    let list = ring.preference_list(PartitionId(2), 3);
    assert_eq!(list.partition, PartitionId(2));
    assert_eq!(list.nodes, vec![id(2), id(3), id(0)]);
    assert!(list.contains(&id(3)));
    assert!(!list.contains(&id(1)));
    assert_eq!(list.position(&id(0)), Some(2));
    assert_eq!(list.len(), 3);
    // Wraps round the end of the ring.
    assert_eq!(
        ring.preference_list(PartitionId(15), 2).nodes,
        vec![id(3), id(0)]
    );
    // Never more nodes than members; none at all when asked for none.
    assert_eq!(ring.preference_list(PartitionId(0), 10).len(), 4);
    assert!(ring.preference_list(PartitionId(0), 0).is_empty());
}

#[test]
fn preference_list_for_key_uses_the_keys_partition() {
    let ring = ring(256, 7);
    for key in [&b"alpha"[..], b"beta", b""] {
        assert_eq!(
            ring.preference_list_for_key(key, 3),
            ring.preference_list(ring.partition_of(key), 3)
        );
    }
}

#[test]
fn preference_list_covers_zones_before_repeating_one() {
    // Zones a, a, b, c laid out so that walking from some partition meets two a-nodes first.
    let members = vec![
        Member::new(id(1)).with_zone("a"),
        Member::new(id(2)).with_zone("a"),
        Member::new(id(3)).with_zone("b"),
        Member::new(id(4)).with_zone("c"),
    ];
    let ring = Ring::new(64, members).unwrap();
    for p in ring.partitions() {
        let list = ring.preference_list(p, 3);
        let zones: std::collections::BTreeSet<String> =
            list.iter().map(|n| common::zone_key(&ring, n)).collect();
        assert_eq!(zones.len(), 3, "{p}: {list:?}");
        assert_eq!(list.nodes[0], *ring.owner(p));
    }
}

#[test]
fn fill_after_zones_run_out_takes_passed_over_nodes_in_clockwise_order() {
    // Two zones, three replicas: one node from each zone, then the earliest passed-over node.
    let members = vec![
        Member::new(id(1)).with_zone("a"),
        Member::new(id(2)).with_zone("a"),
        Member::new(id(3)).with_zone("b"),
        Member::new(id(4)).with_zone("b"),
    ];
    let ring = Ring::new(64, members).unwrap();
    for p in ring.partitions() {
        let walk = ring.walk(p, 3);
        let list = ring.preference_list(p, 3);
        assert_eq!(walk[..3], list.nodes[..]);
        let zone = |n: &NodeId| common::zone_key(&ring, n);
        assert_ne!(zone(&list.nodes[0]), zone(&list.nodes[1]));
        // The third is the first node in clockwise order not yet in the list.
        let mut clockwise: Vec<NodeId> = Vec::new();
        for step in 0..64 {
            let owner = ring.owner(PartitionId((p.0 + step) % 64)).clone();
            if !clockwise.contains(&owner) {
                clockwise.push(owner);
            }
        }
        let third = clockwise
            .iter()
            .find(|n| !list.nodes[..2].contains(n))
            .unwrap();
        assert_eq!(&list.nodes[2], third);
    }
}

#[test]
fn walk_lists_every_member_once_and_fallbacks_follow_the_preference_list() {
    let ring = ring(64, 6);
    for p in ring.partitions() {
        let walk = ring.walk(p, 3);
        assert_eq!(walk.len(), 6);
        let distinct: std::collections::BTreeSet<&NodeId> = walk.iter().collect();
        assert_eq!(distinct.len(), 6);
        assert_eq!(walk[..3], ring.preference_list(p, 3).nodes[..]);
        assert_eq!(walk[3..], ring.fallbacks(p, 3)[..]);
    }
    assert!(ring.fallbacks(PartitionId(0), 6).is_empty());
    assert!(ring.fallbacks(PartitionId(0), 60).is_empty());
}

#[test]
fn replica_partitions_are_where_the_node_is_in_the_preference_list() {
    let ring = ring(128, 5);
    let mut total = 0;
    for member in ring.members() {
        let replicas = ring.replica_partitions(&member.id, 3);
        let expected: Vec<PartitionId> = ring
            .partitions()
            .filter(|&p| ring.preference_list(p, 3).contains(&member.id))
            .collect();
        assert_eq!(replicas, expected);
        total += replicas.len();
    }
    assert_eq!(total, 128 * 3);
    assert!(ring.replica_partitions(&id(42), 3).is_empty());
}

// ---- rebalance ----------------------------------------------------------------------------------

#[test]
fn join_moves_partitions_only_to_the_new_node() {
    let before = ring(256, 4);
    let (after, plan) = before.rebalance(plain(&[0, 1, 2, 3, 4])).unwrap();
    assert_eq!(after.version(), 2);
    assert_eq!(plan.moved_count(), after.owned_count(&id(4)));
    assert!(plan.moved_count() <= 256usize.div_ceil(5));
    assert!(plan.moves.iter().all(|m| m.to == id(4)));
    assert_eq!(plan.incoming(&id(4)).count(), plan.moved_count());
    assert_eq!(plan.outgoing(&id(4)).count(), 0);
    assert_eq!(before.moves_to(&after), plan);
}

#[test]
fn leave_moves_exactly_the_leavers_partitions() {
    let before = ring(256, 5);
    let (after, plan) = before.rebalance(plain(&[0, 1, 3, 4])).unwrap();
    assert_eq!(plan.moved_count(), before.owned_count(&id(2)));
    assert!(plan.moves.iter().all(|m| m.from == id(2)));
    assert!(!after.contains_member(&id(2)));
    for m in &plan.moves {
        assert_eq!(*before.owner(m.partition), m.from);
        assert_eq!(*after.owner(m.partition), m.to);
    }
}

#[test]
fn rebalance_with_the_same_members_moves_nothing_but_bumps_the_version() {
    let before = ring(64, 3);
    let (after, plan) = before.rebalance(before.members().to_vec()).unwrap();
    assert!(plan.is_empty());
    assert_eq!(after.version(), 2);
    assert!(before
        .partitions()
        .all(|p| before.owner(p) == after.owner(p)));
}

#[test]
fn reweight_moves_partitions_towards_the_heavier_member() {
    let before = ring(256, 3);
    let members = vec![
        Member::new(id(0)),
        Member::new(id(1)),
        Member::new(id(2)).with_weight(2),
    ];
    let (after, plan) = before.rebalance(members).unwrap();
    assert_eq!(after.owned_count(&id(0)), 64);
    assert_eq!(after.owned_count(&id(2)), 128);
    assert_eq!(plan.moved_count(), 128 - before.owned_count(&id(2)));
    assert!(plan.moves.iter().all(|m| m.to == id(2)));
}

#[test]
fn zone_change_alone_moves_nothing() {
    let before = ring(64, 4);
    let members: Vec<Member> = before
        .members()
        .iter()
        .map(|m| m.clone().with_zone("rack-1"))
        .collect();
    let (after, plan) = before.rebalance(members).unwrap();
    assert!(plan.is_empty());
    assert_eq!(
        after.member(&id(0)).unwrap().zone.as_deref(),
        Some("rack-1")
    );
}

#[test]
fn moves_between_rings_of_different_sizes_are_empty() {
    assert!(ring(64, 2).moves_to(&ring(128, 2)).is_empty());
}

// ---- encoding and formatting ---------------------------------------------------------------------

#[test]
fn ring_round_trips_through_postcard_and_json() {
    let members = vec![
        Member::new(id(1)).with_zone("a").with_weight(3),
        Member::new(id(2)),
        Member::new(id(3)).with_zone("b"),
    ];
    let (ring, _) = Ring::new(1024, members.clone())
        .unwrap()
        .rebalance(members[1..].to_vec())
        .unwrap();
    let bytes = postcard::to_allocvec(&ring).unwrap();
    assert_eq!(postcard::from_bytes::<Ring>(&bytes).unwrap(), ring);
    let json = serde_json::to_string(&ring).unwrap();
    assert_eq!(serde_json::from_str::<Ring>(&json).unwrap(), ring);
}

#[test]
fn member_defaults_apply_when_decoding() {
    let member: Member = serde_json::from_str(r#"{"id":"node-1"}"#).unwrap();
    assert_eq!(member, Member::new(NodeId::new("node-1").unwrap()));
    assert_eq!(member.weight, 1);
    assert!(member.zone.is_none());
}

#[test]
fn debug_output_of_a_large_ring_is_bounded() {
    let ring = ring(65_536, 3);
    let text = format!("{ring:?}");
    assert!(text.len() < 2_000, "{} bytes", text.len());
    assert!(text.contains("version: 1"));
}

#[test]
fn a_replacement_takes_exactly_the_old_members_partitions() {
    let members: Vec<Member> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|n| Member::new(NodeId::new(*n).unwrap()))
        .collect();
    let ring = Ring::new(64, members).unwrap();
    let (old, new) = (NodeId::new("n2").unwrap(), NodeId::new("n9").unwrap());
    let (next, plan) = ring.replace(&old, Member::new(new.clone())).unwrap();
    assert_eq!(next.version(), ring.version() + 1);
    assert!(!next.contains_member(&old) && next.contains_member(&new));
    assert_eq!(next.owned_partitions(&new), ring.owned_partitions(&old));
    for p in ring.partitions() {
        if ring.owner(p) != &old {
            assert_eq!(next.owner(p), ring.owner(p), "{p:?} moved");
        }
    }
    assert_eq!(plan.moved_count(), ring.owned_count(&old));
    assert!(plan.moves.iter().all(|m| m.from == old && m.to == new));
    // Refused: an old id that is not a member, a new id that already is, itself.
    let stranger = NodeId::new("zz").unwrap();
    assert!(matches!(
        ring.replace(&stranger, Member::new(new.clone())),
        Err(RingError::NotAMember { .. })
    ));
    for taken in ["n3", "n2"] {
        assert!(matches!(
            ring.replace(&old, Member::new(NodeId::new(taken).unwrap())),
            Err(RingError::DuplicateMember { .. })
        ));
    }
}
