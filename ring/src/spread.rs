//! The spread score the claim minimises.
//!
//! A preference list walks clockwise and skips an owner it has already taken (or, with zones,
//! one whose zone it has already covered). Skips make lists reach further round the ring and
//! make some nodes replicas more often than others, so the claim keeps equal owners (and equal
//! zones) apart. The score of a layout is the sum, over pairs of partitions `d` apart, of a
//! penalty: a repeated node `d` apart (when `d < node_window`) or a repeated zone `d` apart
//! (when `d < zone_window`). Penalties are ordered by distance first, then node before zone:
//! node at 1 > zone at 1 > node at 2 > zone at 2 > ..., each level 4 times the next, so the
//! repeats around a partition at all farther levels together cost less than one closer repeat.
//! A layout scoring 0 has every `node_window` consecutive partitions owned by distinct nodes,
//! and every `zone_window` consecutive partitions owned in distinct zones.

/// The widest window the claim keeps distinct: covers replication factors up to 5.
pub(crate) const SPREAD_WINDOW: usize = 5;

/// Marks a partition that has no owner yet while a layout is being built.
pub(crate) const UNASSIGNED: u32 = u32::MAX;

/// How far (in partitions) the local search looks for a swap partner.
const SWAP_RADIUS: usize = 32;
/// How many sweeps over the ring the local search makes at most.
const MAX_SWEEPS: usize = 4;
/// How many swaps the local search tries at most, per partition of the ring.
const SWAP_TRIES_PER_PARTITION: usize = 16;

/// The penalty of the same node `d` apart (`1 <= d < SPREAD_WINDOW`).
fn node_penalty(d: usize) -> u64 {
    1 << (2 * (2 * (SPREAD_WINDOW - 1 - d) + 1))
}

/// The penalty of two nodes of one zone `d` apart (`1 <= d < SPREAD_WINDOW`).
fn zone_penalty(d: usize) -> u64 {
    1 << (2 * (2 * (SPREAD_WINDOW - 1 - d)))
}

/// The penalty function for one ring's members.
pub(crate) struct SpreadModel<'a> {
    zone_of: &'a [u32],
    node_window: usize,
    zone_window: usize,
}

impl<'a> SpreadModel<'a> {
    /// The model for members with zone numbers `zone_of` (indexed by member) and `zone_count`
    /// zones. Windows never exceed the number of nodes (or zones): with 3 nodes, at most 3 in a
    /// row can be distinct.
    pub(crate) fn new(zone_of: &'a [u32], zone_count: usize) -> Self {
        SpreadModel {
            zone_of,
            node_window: zone_of.len().min(SPREAD_WINDOW),
            zone_window: zone_count.min(SPREAD_WINDOW),
        }
    }

    /// The widest window either rule looks at.
    fn window(&self) -> usize {
        self.node_window.max(self.zone_window)
    }

    /// Penalty of owners `a` and `b` at partitions `d` apart.
    fn pair(&self, a: u32, b: u32, d: usize) -> u64 {
        if a == UNASSIGNED || b == UNASSIGNED {
            0
        } else if a == b {
            if d < self.node_window {
                node_penalty(d)
            } else {
                0
            }
        } else if d < self.zone_window && self.zone_of[a as usize] == self.zone_of[b as usize] {
            zone_penalty(d)
        } else {
            0
        }
    }

    /// The penalty `owner` would have at partition `p` against its neighbours (whatever
    /// `owners[p]` holds now is ignored).
    pub(crate) fn cost_at(&self, owners: &[u32], p: usize, owner: u32) -> u64 {
        let q = owners.len();
        let mut cost = 0;
        for d in 1..self.window() {
            cost += self.pair(owner, owners[(p + d) % q], d);
            cost += self.pair(owner, owners[(p + q - d) % q], d);
        }
        cost
    }

    /// The penalty of every pair that involves partition `i` or `j`, each pair counted once.
    fn cost_touching(&self, owners: &[u32], i: usize, j: usize) -> u64 {
        let q = owners.len();
        let mut cost = self.cost_at(owners, i, owners[i]) + self.cost_at(owners, j, owners[j]);
        // Pairs between i and j themselves were counted from both ends.
        for d in 1..self.window() {
            if (i + d) % q == j {
                cost -= self.pair(owners[i], owners[j], d);
            }
            if (j + d) % q == i {
                cost -= self.pair(owners[j], owners[i], d);
            }
        }
        cost
    }

    /// Swaps the owners of `i` and `j` if that lowers the layout's score; says whether it did.
    pub(crate) fn swap_if_better(&self, owners: &mut [u32], i: usize, j: usize) -> bool {
        if owners[i] == owners[j] {
            return false;
        }
        let before = self.cost_touching(owners, i, j);
        owners.swap(i, j);
        let after = self.cost_touching(owners, i, j);
        if after < before {
            true
        } else {
            owners.swap(i, j);
            false
        }
    }

    /// The score of a whole layout (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn total(&self, owners: &[u32]) -> u64 {
        let q = owners.len();
        (0..q)
            .flat_map(|p| (1..self.window()).map(move |d| (p, d)))
            .map(|(p, d)| self.pair(owners[p], owners[(p + d) % q], d))
            .sum()
    }
}

/// Bounded local search: for each partition with a penalty, swap it with the nearest partition
/// (within [`SWAP_RADIUS`]) whose swap lowers the score. Stops after a sweep with no swap,
/// after [`MAX_SWEEPS`] sweeps, or after [`SWAP_TRIES_PER_PARTITION`] tries per partition.
///
/// With `previous` (the owners before a rebalance, [`UNASSIGNED`] where the owner left), only
/// swaps that do not add to the partitions whose owner differs from `previous` are made:
/// exchanging the receivers of two moved partitions, or handing a moved partition back to its
/// previous owner in exchange for another of that owner's partitions nearby.
pub(crate) fn improve_by_swaps(
    owners: &mut [u32],
    model: &SpreadModel<'_>,
    previous: Option<&[u32]>,
) {
    let q = owners.len();
    let radius = SWAP_RADIUS.min(q / 2);
    let mut tries_left = SWAP_TRIES_PER_PARTITION * q;
    let keeps_moves = |owners: &[u32], i: usize, j: usize| match previous {
        None => true,
        Some(previous) => {
            let moved = |p: usize, owner: u32| usize::from(owner != previous[p]);
            moved(i, owners[j]) + moved(j, owners[i]) <= moved(i, owners[i]) + moved(j, owners[j])
        }
    };
    for _ in 0..MAX_SWEEPS {
        let mut swapped = false;
        for i in 0..q {
            if model.cost_at(owners, i, owners[i]) == 0 {
                continue;
            }
            'search: for distance in 1..=radius {
                for j in [(i + distance) % q, (i + q - distance) % q] {
                    if tries_left == 0 {
                        return;
                    }
                    if owners[i] == owners[j] || !keeps_moves(owners, i, j) {
                        continue;
                    }
                    tries_left -= 1;
                    if model.swap_if_better(owners, i, j) {
                        swapped = true;
                        break 'search;
                    }
                }
            }
        }
        if !swapped {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_scores_zero_and_repeats_score_by_closeness() {
        let zones = [0, 1, 2, 3, 4];
        let model = SpreadModel::new(&zones, 5);
        assert_eq!(model.total(&[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]), 0);
        let adjacent = model.total(&[0, 0, 1, 2, 3, 4, 1, 2, 3, 4]);
        let two_apart = model.total(&[0, 1, 0, 2, 3, 4, 1, 2, 3, 4]);
        assert!(adjacent > two_apart && two_apart > 0);
    }

    #[test]
    fn a_closer_zone_repeat_outweighs_all_farther_repeats() {
        // Members 0 and 1 share zone 0.
        let zones = [0, 0, 1, 2, 3, 4];
        let model = SpreadModel::new(&zones, 5);
        // Member 0 between two zone-mates at distance 1 vs. its own copies at distance 2.
        assert!(zone_penalty(1) > 2 * (node_penalty(2) + zone_penalty(2) + node_penalty(3)));
        assert!(node_penalty(1) > zone_penalty(1));
        let owners = [1, 0, 2, 3, 4, 5];
        assert_eq!(model.cost_at(&owners, 1, 0), zone_penalty(1));
    }

    #[test]
    fn swap_is_kept_only_when_it_lowers_the_score() {
        let zones = [0, 1, 2];
        let model = SpreadModel::new(&zones, 3);
        let mut owners = vec![0, 0, 1, 2, 1, 2, 0, 1];
        let before = model.total(&owners);
        assert!(model.swap_if_better(&mut owners, 1, 2) || model.total(&owners) == before);
        assert!(model.total(&owners) <= before);
        let mut perfect = vec![0, 1, 2, 0, 1, 2];
        assert!(!model.swap_if_better(&mut perfect, 0, 1));
        assert_eq!(perfect, vec![0, 1, 2, 0, 1, 2]);
    }
}
