//! How many partitions each member should own.
//!
//! A member's ideal share is `Q * weight / total_weight`. Its quota is that share rounded down
//! or up (so always within one partition of ideal, and `floor(Q/S)` or `ceil(Q/S)` with equal
//! weights); the quotas sum to Q. Which members round up is the only freedom, and it is spent
//! on moving as little as possible: members that already own more than their rounded-down
//! share keep the extra partition first.

use std::cmp::Reverse;

/// The quota computation's failure: the member (by index) whose share rounds to zero.
pub(crate) struct ZeroQuota(pub usize);

/// Computes the quotas of members with weights `weights` that currently own `current`
/// partitions (all zeros for a fresh ring). Deterministic: ties go to the lower index.
pub(crate) fn quotas(q: u32, weights: &[u32], current: &[u32]) -> Result<Vec<u32>, ZeroQuota> {
    debug_assert_eq!(weights.len(), current.len());
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let q64 = u64::from(q);
    // floor and remainder of q * w / total; q * w < 2^48, so no overflow.
    let mut quota: Vec<u32> = Vec::with_capacity(weights.len());
    let mut remainder: Vec<u64> = Vec::with_capacity(weights.len());
    for &w in weights {
        let scaled = q64 * u64::from(w);
        // scaled / total <= q, so the cast is lossless.
        quota.push((scaled / total) as u32);
        remainder.push(scaled % total);
    }
    let assigned: u64 = quota.iter().map(|&f| u64::from(f)).sum();
    // Fewer round-ups than members with a fractional share (the fractions sum to it).
    let round_ups = (q64 - assigned) as usize;

    // Candidates for rounding up: members whose ideal share is fractional.
    let mut candidates: Vec<usize> = (0..weights.len()).filter(|&i| remainder[i] > 0).collect();
    // Order: members that would own nothing; members that already own more than the floor
    // (rounding them up saves a move); then the rest, by largest remainder, most missing first.
    candidates.sort_by_key(|&i| {
        let floor = quota[i];
        let group = if floor == 0 {
            0u8
        } else if current[i] > floor {
            1
        } else {
            2
        };
        let missing = floor.saturating_sub(current[i]);
        (group, Reverse(remainder[i]), Reverse(missing), i)
    });
    for &i in candidates.iter().take(round_ups) {
        quota[i] += 1;
    }
    match quota.iter().position(|&c| c == 0) {
        Some(i) => Err(ZeroQuota(i)),
        None => Ok(quota),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: u32, weights: &[u32], current: &[u32]) -> Vec<u32> {
        match quotas(q, weights, current) {
            Ok(quota) => quota,
            Err(ZeroQuota(i)) => panic!("member {i} got nothing"),
        }
    }

    #[test]
    fn equal_weights_get_floor_or_ceil_with_largest_remainder_to_lowest_index() {
        assert_eq!(ok(8, &[1, 1, 1], &[0, 0, 0]), vec![3, 3, 2]);
        assert_eq!(ok(256, &[1; 4], &[0; 4]), vec![64; 4]);
    }

    #[test]
    fn weights_give_proportional_shares() {
        assert_eq!(ok(256, &[1, 3], &[0, 0]), vec![64, 192]);
        assert_eq!(ok(16, &[1, 2, 2], &[0, 0, 0]), vec![3, 7, 6]);
    }

    #[test]
    fn members_owning_more_than_the_floor_keep_the_round_up() {
        // 8 partitions over 3 members: the round-ups go to whoever already owns 3.
        assert_eq!(ok(8, &[1, 1, 1], &[2, 3, 3]), vec![2, 3, 3]);
    }

    #[test]
    fn a_joining_member_gets_the_round_up_before_a_member_that_would_grow() {
        // 8 partitions, 5 members own 2,2,2,1,1; a 6th joins: floor 1, two round-ups.
        assert_eq!(ok(8, &[1; 6], &[2, 2, 2, 1, 1, 0]), vec![2, 2, 1, 1, 1, 1]);
    }

    #[test]
    fn a_tiny_share_is_rounded_up_to_one_partition_first() {
        assert_eq!(ok(8, &[1, 1000], &[0, 0]), vec![1, 7]);
    }

    #[test]
    fn a_share_that_rounds_to_zero_is_reported() {
        assert!(matches!(quotas(8, &[1; 9], &[0; 9]), Err(ZeroQuota(8))));
        assert!(matches!(
            quotas(8, &[1, 1, 10_000], &[0, 0, 0]),
            Err(ZeroQuota(1))
        ));
    }
}
