//! The claim of a fresh ring: an even interleaving of the members, then local improvement.
//!
//! Member `m`'s k-th partition is *due* at the fraction `(k + phase_m) / quota_m` of the way
//! round the ring, with phases staggered over the members, so with equal weights the due order
//! is plain round robin. The sequence is built one partition at a time, taking the earliest
//! due member that is not in the previous partition's zone; failing that, one that is not the
//! previous partition's node. A zone or a member is placed at once when waiting would leave it
//! more partitions than it can still fit without neighbours of its own (so nobody is forced
//! next to itself at the end of the ring unless its share makes that unavoidable). The last
//! partition also avoids the first one's node and zone, since the ring wraps round.
//!
//! A bounded local search (see [`improve_by_swaps`]) then swaps owners of nearby partitions
//! while that lowers the spread score. Swaps keep every member's count, so balance holds.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};

use crate::spread::{improve_by_swaps, SpreadModel};

/// When copy `k` of member `m` (of `n` members, `count` copies of `m`) is due: the fraction
/// `(k + (2m + 1) / 2n) / count` of the ring, kept exact as a numerator and denominator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Due {
    numerator: u64,
    denominator: u64,
}

impl Due {
    fn new(n: usize, m: usize, k: u32, count: u32) -> Due {
        let n = n as u64;
        Due {
            numerator: 2 * n * u64::from(k) + 2 * m as u64 + 1,
            denominator: 2 * n * u64::from(count),
        }
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> Ordering {
        let left = u128::from(self.numerator) * u128::from(other.denominator);
        let right = u128::from(other.numerator) * u128::from(self.denominator);
        left.cmp(&right)
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Lays out a fresh ring: `quotas[m]` partitions for member `m` (members in zones `zone_of`,
/// `zone_count` zones). Returns the owner (member index) of each partition.
pub(crate) fn fresh_layout(quotas: &[u32], zone_of: &[u32], zone_count: usize) -> Vec<u32> {
    let mut owners = interleave(quotas, zone_of, zone_count);
    improve_by_swaps(&mut owners, &SpreadModel::new(zone_of, zone_count), None);
    owners
}

/// The most of `after` remaining positions that an owner skipped now could still take
/// without two of them adjacent; one fewer if it owns the first partition (the ring wraps).
fn room(after: usize, owns_first: bool) -> usize {
    if owns_first {
        after / 2
    } else {
        after.div_ceil(2)
    }
}

/// The even interleaving described in the module documentation.
fn interleave(quotas: &[u32], zone_of: &[u32], zone_count: usize) -> Vec<u32> {
    let members = quotas.len();
    let total: usize = quotas.iter().map(|&c| c as usize).sum();
    let mut placed = vec![0u32; members];
    let mut zone_left = vec![0u32; zone_count];
    for (m, &quota) in quotas.iter().enumerate() {
        zone_left[zone_of[m] as usize] += quota;
    }
    // Due entries (due, member, copy); an entry whose copy was already placed is stale.
    let mut by_due: BinaryHeap<Reverse<(Due, usize, u32)>> = (0..members)
        .filter(|&m| quotas[m] > 0)
        .map(|m| Reverse((Due::new(members, m, 0, quotas[m]), m, 0)))
        .collect();
    let mut members_by_left: BTreeSet<(Reverse<u32>, usize)> =
        (0..members).map(|m| (Reverse(quotas[m]), m)).collect();
    let mut zones_by_left: BTreeSet<(Reverse<u32>, usize)> = (0..zone_count)
        .map(|z| (Reverse(zone_left[z]), z))
        .collect();
    let mut sequence: Vec<u32> = Vec::with_capacity(total);

    for t in 0..total {
        let previous = sequence.last().map(|&m| m as usize);
        let previous_zone = previous.map(|m| zone_of[m] as usize);
        let first = sequence.first().map(|&m| m as usize);
        let first_zone = first.map(|m| zone_of[m] as usize);
        let after = total - t - 1;
        let is_last = after == 0;

        let forced_member = members_by_left
            .iter()
            .take(3)
            .find_map(|&(Reverse(left), m)| {
                (Some(m) != previous && left as usize > room(after, Some(m) == first)).then_some(m)
            });
        let forced_zone = zones_by_left
            .iter()
            .take(3)
            .find_map(|&(Reverse(left), z)| {
                (Some(z) != previous_zone && left as usize > room(after, Some(z) == first_zone))
                    .then_some(z)
            });
        // 0: a new zone; 1: a new node; 2: a repeat (only when nothing else is left).
        let level = |m: usize| {
            let zone = zone_of[m] as usize;
            if Some(zone) != previous_zone && !(is_last && Some(zone) == first_zone) {
                0
            } else if Some(m) != previous && !(is_last && Some(m) == first) {
                1
            } else {
                2
            }
        };

        let chosen = match forced_member {
            Some(m) => Some(m),
            None => {
                let mut held: Vec<(Due, usize, u32)> = Vec::new();
                let mut best: Option<(u8, usize)> = None;
                while let Some(Reverse(entry)) = by_due.pop() {
                    let (_, m, copy) = entry;
                    if copy != placed[m] {
                        continue; // stale
                    }
                    held.push(entry);
                    if forced_zone.is_some_and(|z| zone_of[m] as usize != z) {
                        continue;
                    }
                    let level = level(m);
                    if best.is_none_or(|(b, _)| level < b) {
                        best = Some((level, m));
                    }
                    if level == 0 {
                        break;
                    }
                }
                by_due.extend(held.into_iter().map(Reverse));
                best.map(|(_, m)| m)
            }
        };
        let Some(m) = chosen else {
            // Unreachable: the quotas sum to `total`.
            debug_assert!(false, "no member left to place");
            break;
        };

        let left = quotas[m] - placed[m];
        members_by_left.remove(&(Reverse(left), m));
        members_by_left.insert((Reverse(left - 1), m));
        let zone = zone_of[m] as usize;
        zones_by_left.remove(&(Reverse(zone_left[zone]), zone));
        zone_left[zone] -= 1;
        zones_by_left.insert((Reverse(zone_left[zone]), zone));
        placed[m] += 1;
        if placed[m] < quotas[m] {
            by_due.push(Reverse((
                Due::new(members, m, placed[m], quotas[m]),
                m,
                placed[m],
            )));
        }
        // At most Q (65 536) members.
        sequence.push(m as u32);
    }
    sequence
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_quotas_without_zones_are_round_robin() {
        let zones = [0, 1, 2, 3];
        let owners = fresh_layout(&[4, 4, 4, 4], &zones, 4);
        assert_eq!(owners, vec![0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn a_zone_with_half_the_partitions_alternates_with_the_others() {
        // Members 0 and 1 in zone 0 (half the ring), 2 and 3 alone.
        let zones = [0, 0, 1, 2];
        let owners = fresh_layout(&[16, 16, 16, 16], &zones, 3);
        for p in 0..owners.len() {
            let next = (p + 1) % owners.len();
            assert_ne!(
                zones[owners[p] as usize], zones[owners[next] as usize],
                "{owners:?}"
            );
        }
    }

    #[test]
    fn counts_match_the_quotas() {
        let zones = [0, 1, 0, 2, 1];
        let quotas = [10, 3, 7, 9, 3];
        let owners = fresh_layout(&quotas, &zones, 3);
        for (m, &quota) in quotas.iter().enumerate() {
            assert_eq!(
                owners.iter().filter(|&&o| o as usize == m).count(),
                quota as usize
            );
        }
    }
}
