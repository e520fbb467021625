//! Rebalancing: the new owners after a membership change, moving as little as possible.

use std::cmp::{Ordering, Reverse};

use crate::spread::{improve_by_swaps, SpreadModel, UNASSIGNED};

/// The smallest distance a rebalance searches around a target for a partition to take.
const MIN_TARGET_RADIUS: usize = 8;

/// Orders `(k, count)` pairs by the fraction `(2k + 1) / (2 count)`: the centre of the k-th
/// of `count` equal slices.
fn by_fraction(a: (u32, u32), b: (u32, u32)) -> Ordering {
    let left = u64::from(2 * a.0 + 1) * u64::from(b.1);
    let right = u64::from(2 * b.0 + 1) * u64::from(a.1);
    left.cmp(&right)
}

/// Lays out a rebalanced ring with as few moves as possible.
///
/// `previous` is the old layout mapped to the new member indices, with [`UNASSIGNED`] for
/// partitions whose owner left. Every member ends with exactly `quotas[m]` partitions, and a
/// partition changes owner only if its owner left or owns more than its quota, so the number
/// of moves is the minimum for these quotas. Which partitions move, and to whom, is chosen to
/// keep the spread score low:
///
/// 1. partitions of departed members go, in ring order, to the member below quota that scores
///    best there (ties: the one missing the most partitions);
/// 2. members still below quota take partitions from members above quota: each missing
///    partition has an evenly spaced target position, and the best-scoring surplus partition
///    near it is taken (the whole ring is searched if none is near);
/// 3. swaps that add no move (see [`improve_by_swaps`]) lower the score further.
pub(crate) fn rebalance_layout(
    previous: Vec<u32>,
    quotas: &[u32],
    zone_of: &[u32],
    zone_count: usize,
) -> Vec<u32> {
    let q = previous.len();
    let model = SpreadModel::new(zone_of, zone_count);
    let members = quotas.len();
    let mut owners = previous.clone();
    let mut count = vec![0u32; members];
    for &owner in &owners {
        if owner != UNASSIGNED {
            count[owner as usize] += 1;
        }
    }
    let mut surplus: Vec<u32> = (0..members)
        .map(|m| count[m].saturating_sub(quotas[m]))
        .collect();
    let mut missing: Vec<u32> = (0..members)
        .map(|m| quotas[m].saturating_sub(count[m]))
        .collect();

    // 1. Orphaned partitions must move.
    for p in 0..q {
        if owners[p] != UNASSIGNED {
            continue;
        }
        let best = (0..members)
            .filter(|&m| missing[m] > 0)
            .min_by_key(|&m| (model.cost_at(&owners, p, m as u32), Reverse(missing[m]), m));
        let Some(best) = best else {
            // Unreachable: quotas sum to Q, so orphans never outnumber missing partitions.
            debug_assert!(false, "orphan partition without a receiver");
            break;
        };
        owners[p] = best as u32;
        missing[best] -= 1;
    }

    // 2. Members still below quota take surplus partitions, at evenly spaced targets; the
    // targets of several receivers are offset from each other instead of stacked.
    let wanted = missing;
    let receivers: Vec<usize> = (0..members).filter(|&m| wanted[m] > 0).collect();
    let mut slots: Vec<(usize, u32, usize)> = Vec::new(); // (receiver, k, target)
    let q64 = q as u64;
    for (ordinal, &m) in receivers.iter().enumerate() {
        let count = u64::from(wanted[m]);
        // Products stay below 2^34; the results are below Q.
        let offset = q64 * ordinal as u64 / (2 * count * receivers.len() as u64);
        slots.extend((0..wanted[m]).map(|k| {
            let centre = (2 * u64::from(k) + 1) * q64 / (2 * count);
            (m, k, ((centre + offset) % q64) as usize)
        }));
    }
    slots.sort_by(|a, b| by_fraction((a.1, wanted[a.0]), (b.1, wanted[b.0])).then(a.0.cmp(&b.0)));
    for (receiver, _, target) in slots {
        let radius =
            (q / (2 * wanted[receiver] as usize)).clamp(MIN_TARGET_RADIUS.min(q / 2), q / 2);
        let receiver = receiver as u32;
        let pick = best_surplus_near(&owners, &surplus, &model, receiver, target, radius)
            .or_else(|| best_surplus_near(&owners, &surplus, &model, receiver, target, q / 2));
        let Some(p) = pick else {
            // Unreachable: total surplus equals total missing.
            debug_assert!(false, "no surplus partition left");
            break;
        };
        surplus[owners[p] as usize] -= 1;
        owners[p] = receiver;
    }
    improve_by_swaps(&mut owners, &model, Some(&previous));
    owners
}

/// The partition within `radius` of `target` whose owner has surplus and whose hand-over to
/// `receiver` lowers the score most (ties: nearest to target, then lowest position).
fn best_surplus_near(
    owners: &[u32],
    surplus: &[u32],
    model: &SpreadModel<'_>,
    receiver: u32,
    target: usize,
    radius: usize,
) -> Option<usize> {
    let q = owners.len();
    let mut best: Option<(i64, usize, usize)> = None;
    for distance in 0..=radius {
        let candidates = if distance == 0 {
            [target, target]
        } else {
            [(target + distance) % q, (target + q - distance) % q]
        };
        for p in candidates {
            let donor = owners[p];
            if donor == receiver || donor == UNASSIGNED || surplus[donor as usize] == 0 {
                continue;
            }
            let gain =
                model.cost_at(owners, p, receiver) as i64 - model.cost_at(owners, p, donor) as i64;
            let key = (gain, distance, p);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
    }
    best.map(|(_, _, p)| p)
}
