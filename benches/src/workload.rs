//! The YCSB core workloads (and a write-only one): which operations, in which proportions,
//! on which key distribution.

use serde::Serialize;

use crate::keys::Distribution;

/// A workload: the operation mix and its usual key distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Update heavy: 50% reads, 50% updates (YCSB A, a session store).
    A,
    /// Read mostly: 95% reads, 5% updates (YCSB B, photo tagging).
    B,
    /// Read only (YCSB C, a profile cache).
    C,
    /// Read latest: 95% reads of recently inserted keys, 5% inserts (YCSB D, status
    /// updates).
    D,
    /// Read-modify-write: 50% reads, 50% get-then-put with the get's context (YCSB F).
    F,
    /// Write only: 100% updates.
    Write,
}

/// One kind of operation a workload issues; each has its own latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// A get of an existing key.
    Read,
    /// A put of an existing key, with the latest context this run has seen for it.
    Update,
    /// A put of a new key (after every key so far).
    Insert,
    /// A get, then a put with the get's context; timed as one operation.
    Rmw,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 4] = [OpKind::Read, OpKind::Update, OpKind::Insert, OpKind::Rmw];

    /// The name in the report and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Rmw => "rmw",
        }
    }

    /// Position in [`OpKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The proportions of each operation kind (they sum to 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpMix {
    /// Share of reads.
    pub read: f64,
    /// Share of updates.
    pub update: f64,
    /// Share of inserts.
    pub insert: f64,
    /// Share of read-modify-writes.
    pub rmw: f64,
}

impl OpMix {
    /// The kind for a uniform draw `u` in `[0, 1)`.
    pub fn choose(&self, u: f64) -> OpKind {
        let mut edge = self.read;
        if u < edge {
            return OpKind::Read;
        }
        edge += self.update;
        if u < edge {
            return OpKind::Update;
        }
        edge += self.insert;
        if u < edge {
            return OpKind::Insert;
        }
        if self.rmw > 0.0 {
            return OpKind::Rmw;
        }
        // Rounding at the top edge: the last kind with a non-zero share.
        [
            (self.insert, OpKind::Insert),
            (self.update, OpKind::Update),
            (self.read, OpKind::Read),
        ]
        .into_iter()
        .find(|&(share, _)| share > 0.0)
        .map_or(OpKind::Read, |(_, kind)| kind)
    }
}

impl Workload {
    /// The name on the command line and in the JSON report.
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::D => "d",
            Workload::F => "f",
            Workload::Write => "write",
        }
    }

    /// The operation proportions.
    pub fn mix(self) -> OpMix {
        let mix = |read, update, insert, rmw| OpMix {
            read,
            update,
            insert,
            rmw,
        };
        match self {
            Workload::A => mix(0.5, 0.5, 0.0, 0.0),
            Workload::B => mix(0.95, 0.05, 0.0, 0.0),
            Workload::C => mix(1.0, 0.0, 0.0, 0.0),
            Workload::D => mix(0.95, 0.0, 0.05, 0.0),
            Workload::F => mix(0.5, 0.0, 0.0, 0.5),
            Workload::Write => mix(0.0, 1.0, 0.0, 0.0),
        }
    }

    /// The key distribution YCSB uses for it: `latest` for D, `zipfian` otherwise.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    /// Whether it reads keys, and so wants them written first (`--load`).
    pub fn reads(self) -> bool {
        self.mix().read > 0.0 || self.mix().rmw > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const ALL: [Workload; 6] = [
        Workload::A,
        Workload::B,
        Workload::C,
        Workload::D,
        Workload::F,
        Workload::Write,
    ];

    #[test]
    fn every_mix_sums_to_one() {
        for w in ALL {
            let m = w.mix();
            let sum = m.read + m.update + m.insert + m.rmw;
            assert!((sum - 1.0).abs() < 1e-12, "{w:?} sums to {sum}");
        }
    }

    #[test]
    fn drawn_op_proportions_match_each_workload_within_tolerance() {
        let draws = 100_000;
        for w in ALL {
            let mix = w.mix();
            let mut rng = StdRng::seed_from_u64(42);
            let mut counts = [0usize; 4];
            for _ in 0..draws {
                counts[mix.choose(rng.random()).index()] += 1;
            }
            let expected = [mix.read, mix.update, mix.insert, mix.rmw];
            for kind in OpKind::ALL {
                let got = counts[kind.index()] as f64 / draws as f64;
                let want = expected[kind.index()];
                assert!(
                    (got - want).abs() < 0.01,
                    "{w:?} {}: {got} vs {want}",
                    kind.name()
                );
                if want == 0.0 {
                    assert_eq!(counts[kind.index()], 0, "{w:?} never issues {kind:?}");
                }
            }
        }
    }

    #[test]
    fn the_top_edge_of_the_draw_maps_to_a_kind_the_workload_issues() {
        for w in ALL {
            let kind = w.mix().choose(1.0);
            let m = w.mix();
            let share = [m.read, m.update, m.insert, m.rmw][kind.index()];
            assert!(share > 0.0, "{w:?} gave {kind:?}");
        }
    }

    #[test]
    fn workload_d_defaults_to_latest_and_others_to_zipfian() {
        assert_eq!(Workload::D.default_distribution(), Distribution::Latest);
        assert_eq!(Workload::A.default_distribution(), Distribution::Zipfian);
        assert!(!Workload::Write.reads());
        assert!(Workload::F.reads());
    }
}
