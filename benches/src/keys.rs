//! Key choice: YCSB's uniform, scrambled-zipfian and latest distributions, and the
//! sequence of inserted keys that reads may pick from.
//!
//! Keys are numbered `0..limit`; the first `--keys` are those a `--load` phase writes and
//! inserts append after them. A distribution draws a number below the current limit.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::Rng;

/// YCSB's zipfian constant: the skew of the `zipfian` and `latest` distributions.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Terms of the zeta sum added one by one; beyond this the tail is approximated
/// (Euler–Maclaurin), so a billion keys cost as little as a million.
const ZETA_EXACT_TERMS: u64 = 1 << 20;

/// How keys are picked among those that exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled zipfian (theta 0.99): a few keys are hot, spread over the key space.
    Zipfian,
    /// Zipfian over recency: the most recently inserted keys are the hottest.
    Latest,
}

impl Distribution {
    /// The name used on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// `sum_{i=1..n} 1 / i^theta`: exact for the first [`ZETA_EXACT_TERMS`] terms, the rest by
/// the Euler–Maclaurin formula (relative error far below 1e-9 there).
pub fn zeta(n: u64, theta: f64) -> f64 {
    let exact = n.min(ZETA_EXACT_TERMS);
    let mut sum = zeta_terms(0, exact, theta);
    if n > exact {
        sum += zeta_tail(exact, n, theta);
    }
    sum
}

/// `sum_{i=from+1..=to} 1 / i^theta`, term by term.
fn zeta_terms(from: u64, to: u64, theta: f64) -> f64 {
    (from + 1..=to).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// `sum_{i=a+1..=b} f(i)` for `f(x) = x^-theta`, by Euler–Maclaurin with `a` large.
fn zeta_tail(a: u64, b: u64, theta: f64) -> f64 {
    let (a, b) = (a as f64, b as f64);
    let f = |x: f64| x.powf(-theta);
    let df = |x: f64| -theta * x.powf(-theta - 1.0);
    let integral = (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
    integral + (f(b) - f(a)) / 2.0 + (df(b) - df(a)) / 12.0
}

/// The zipfian generator of Gray et al. ("Quickly generating billion-record synthetic
/// databases", SIGMOD 1994), as YCSB implements it: rank 0 is the most popular, and the
/// item count may grow (the zeta sum is then extended, not recomputed).
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta2: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A generator over ranks `0..items` (at least one item).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let items = items.max(1);
        let zeta2 = zeta(2, theta);
        let zetan = zeta(items, theta);
        let mut z = Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2,
            zetan,
            eta: 0.0,
        };
        z.eta = z.eta_for(items);
        z
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// The item count the generator currently covers.
    #[cfg(test)]
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Extends the generator to `items` (never shrinks it).
    pub fn grow_to(&mut self, items: u64) {
        if items <= self.items {
            return;
        }
        self.zetan = if self.items >= ZETA_EXACT_TERMS {
            // Already in the approximated regime: small steps exactly, large ones by the
            // tail formula, which is what a fresh `zeta(items)` would use.
            if items - self.items <= 1024 {
                self.zetan + zeta_terms(self.items, items, self.theta)
            } else {
                self.zetan + zeta_tail(self.items, items, self.theta)
            }
        } else if items <= ZETA_EXACT_TERMS {
            self.zetan + zeta_terms(self.items, items, self.theta)
        } else {
            zeta(items, self.theta)
        };
        self.items = items;
        self.eta = self.eta_for(items);
    }

    /// A rank in `0..items()`, 0 the most likely.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let rank = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items - 1)
    }
}

/// FNV-1a over the eight little-endian bytes of `v`: YCSB's scrambling hash.
pub fn fnv1a64(v: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    v.to_le_bytes()
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// Draws key numbers below a (possibly growing) limit from one [`Distribution`].
///
/// Each worker owns one (they are cheap to clone once the zeta sum is computed).
#[derive(Clone, Debug)]
pub struct KeyChooser {
    distribution: Distribution,
    zipf: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser over `initial` keys (more may be inserted later).
    pub fn new(distribution: Distribution, initial: u64) -> KeyChooser {
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipfian | Distribution::Latest => {
                Some(Zipfian::new(initial, ZIPFIAN_THETA))
            }
        };
        KeyChooser { distribution, zipf }
    }

    /// A key number in `0..limit` (`limit` at least 1).
    ///
    /// - uniform: every number equally likely;
    /// - zipfian: a zipfian rank, scrambled by FNV so the hot keys are spread;
    /// - latest: `limit - 1 - rank`, so the newest keys are the hottest.
    pub fn next<R: Rng + ?Sized>(&mut self, rng: &mut R, limit: u64) -> u64 {
        let limit = limit.max(1);
        match (self.distribution, self.zipf.as_mut()) {
            (Distribution::Zipfian, Some(z)) => {
                z.grow_to(limit);
                fnv1a64(z.sample(rng)) % limit
            }
            (Distribution::Latest, Some(z)) => {
                z.grow_to(limit);
                limit - 1 - z.sample(rng).min(limit - 1)
            }
            _ => rng.random_range(0..limit),
        }
    }
}

/// The numbers of inserted keys: handed out in order, and readable once acknowledged.
///
/// Inserts finish out of order, so reads may only pick keys below the *limit*: every key
/// below it has been acknowledged (YCSB's acknowledged counter). An insert is acknowledged
/// whether it succeeded or not, so one failure does not freeze the limit. The pending set
/// holds at most as many numbers as there are inserts in flight.
#[derive(Debug)]
pub struct InsertSequence {
    next: AtomicU64,
    limit: AtomicU64,
    pending: Mutex<BTreeSet<u64>>,
}

impl InsertSequence {
    /// A sequence whose keys `0..loaded` already exist; the first insert is `loaded`.
    pub fn new(loaded: u64) -> InsertSequence {
        InsertSequence {
            next: AtomicU64::new(loaded),
            limit: AtomicU64::new(loaded),
            pending: Mutex::new(BTreeSet::new()),
        }
    }

    /// The number of the next key to insert.
    pub fn reserve(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Marks `key` (from [`reserve`](Self::reserve)) as done, raising the limit over every
    /// contiguous acknowledged number.
    pub fn acknowledge(&self, key: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut limit = self.limit.load(Ordering::Acquire);
        if key < limit {
            return;
        }
        pending.insert(key);
        while pending.remove(&limit) {
            limit += 1;
        }
        self.limit.store(limit, Ordering::Release);
    }

    /// Every key below this number exists (or its insert was attempted).
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn counts(chooser: &mut KeyChooser, keys: u64, draws: usize, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..draws {
            let k = chooser.next(&mut rng, keys);
            assert!(k < keys, "{k} out of range");
            counts[k as usize] += 1;
        }
        counts
    }

    /// Share of draws that went to the `fraction` most drawn keys.
    fn top_share(mut counts: Vec<u64>, fraction: f64) -> f64 {
        let total: u64 = counts.iter().sum();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top = ((counts.len() as f64 * fraction).ceil() as usize).max(1);
        counts[..top].iter().sum::<u64>() as f64 / total as f64
    }

    #[test]
    fn zeta_tail_approximation_matches_the_exact_sum() {
        let n = ZETA_EXACT_TERMS * 3;
        let exact = zeta_terms(0, n, ZIPFIAN_THETA);
        let approx = zeta(n, ZIPFIAN_THETA);
        assert!(
            ((exact - approx) / exact).abs() < 1e-9,
            "{exact} vs {approx}"
        );
    }

    #[test]
    fn zipfian_top_one_percent_of_keys_gets_a_large_share() {
        let keys = 10_000;
        let mut chooser = KeyChooser::new(Distribution::Zipfian, keys);
        let share = top_share(counts(&mut chooser, keys, 200_000, 7), 0.01);
        // For theta 0.99 and 10,000 keys the 100 hottest take about half of all draws.
        assert!(share > 0.4, "top 1% share is {share}");
        let mut uniform = KeyChooser::new(Distribution::Uniform, keys);
        let flat = top_share(counts(&mut uniform, keys, 200_000, 7), 0.01);
        assert!(flat < 0.03, "uniform top 1% share is {flat}");
    }

    #[test]
    fn zipfian_gives_the_two_hottest_ranks_their_exact_zipf_share() {
        // Gray et al.'s generator is exact for ranks 0 and 1 and approximates the rest by a
        // continuous curve (YCSB's does the same); the tail is checked by the skew test.
        let z = Zipfian::new(1000, ZIPFIAN_THETA);
        let mut rng = StdRng::seed_from_u64(3);
        let mut c = [0u64; 2];
        let draws = 400_000;
        for _ in 0..draws {
            let r = z.sample(&mut rng);
            assert!(r < 1000);
            if r < 2 {
                c[r as usize] += 1;
            }
        }
        let zetan = zeta(1000, ZIPFIAN_THETA);
        for (rank, &count) in c.iter().enumerate() {
            let expected = 1.0 / ((rank + 1) as f64).powf(ZIPFIAN_THETA) / zetan;
            let got = count as f64 / draws as f64;
            assert!(
                (got - expected).abs() < expected * 0.03,
                "rank {rank}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn zipfian_hot_keys_are_scrambled_across_the_key_space() {
        let keys = 100_000;
        let mut chooser = KeyChooser::new(Distribution::Zipfian, keys);
        let c = counts(&mut chooser, keys, 100_000, 11);
        let mut ranked: Vec<(u64, usize)> = c.iter().copied().zip(0..).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        let hottest: Vec<usize> = ranked[..10].iter().map(|&(_, k)| k).collect();
        // Not all clustered at the start of the key space, as an unscrambled zipfian is.
        assert!(hottest.iter().any(|&k| k > 1000), "{hottest:?}");
    }

    #[test]
    fn zipfian_growth_extends_the_same_distribution() {
        let mut grown = Zipfian::new(1000, ZIPFIAN_THETA);
        grown.grow_to(5000);
        let fresh = Zipfian::new(5000, ZIPFIAN_THETA);
        assert_eq!(grown.items(), 5000);
        assert!((grown.zetan - fresh.zetan).abs() < 1e-9);
        assert!((grown.eta - fresh.eta).abs() < 1e-12);
        grown.grow_to(10);
        assert_eq!(grown.items(), 5000, "never shrinks");
    }

    #[test]
    fn latest_distribution_favours_the_newest_keys() {
        let keys = 10_000;
        let mut chooser = KeyChooser::new(Distribution::Latest, keys);
        let c = counts(&mut chooser, keys, 100_000, 5);
        let newest: u64 = c[(keys as usize - 100)..].iter().sum();
        let oldest: u64 = c[..100].iter().sum();
        assert!(newest as f64 / 100_000.0 > 0.4, "newest 1% got {newest}");
        assert!(oldest < newest / 20, "oldest 1% got {oldest}");
        assert!(c[keys as usize - 1] > c[keys as usize - 2]);
    }

    #[test]
    fn latest_distribution_follows_inserts() {
        let mut chooser = KeyChooser::new(Distribution::Latest, 1000);
        let mut rng = StdRng::seed_from_u64(9);
        let mut at_new_top = 0;
        for _ in 0..10_000 {
            let k = chooser.next(&mut rng, 2000);
            assert!(k < 2000);
            if k >= 1990 {
                at_new_top += 1;
            }
        }
        assert!(
            at_new_top > 3000,
            "{at_new_top} draws among the 10 newest keys"
        );
    }

    #[test]
    fn single_key_space_always_draws_key_zero() {
        let mut rng = StdRng::seed_from_u64(1);
        for d in [
            Distribution::Uniform,
            Distribution::Zipfian,
            Distribution::Latest,
        ] {
            let mut chooser = KeyChooser::new(d, 1);
            for _ in 0..100 {
                assert_eq!(chooser.next(&mut rng, 1), 0, "{d:?}");
            }
        }
    }

    #[test]
    fn same_seed_draws_the_same_keys() {
        let draw = |seed| {
            let mut chooser = KeyChooser::new(Distribution::Zipfian, 1000);
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| chooser.next(&mut rng, 1000))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(4), draw(4));
        assert_ne!(draw(4), draw(5));
    }

    #[test]
    fn insert_limit_rises_only_over_contiguous_acknowledgements() {
        let seq = InsertSequence::new(10);
        let (a, b, c) = (seq.reserve(), seq.reserve(), seq.reserve());
        assert_eq!((a, b, c), (10, 11, 12));
        assert_eq!(seq.limit(), 10);
        seq.acknowledge(b);
        assert_eq!(seq.limit(), 10, "11 done but 10 is not");
        seq.acknowledge(a);
        assert_eq!(seq.limit(), 12);
        seq.acknowledge(c);
        assert_eq!(seq.limit(), 13);
        seq.acknowledge(c);
        assert_eq!(
            seq.limit(),
            13,
            "a repeated acknowledgement changes nothing"
        );
        assert_eq!(seq.reserve(), 13);
    }
}
