//! Shoal's deterministic simulator and its invariant checkers.
//!
//! - [`sim`]: runs K nodes of the real replication engine and storage executor in one
//!   thread on a virtual clock, over a faulty simulated network, driven by one seed;
//!   `cargo run -p shoal-tests --bin sim -- --seed S` replays a seed.
//! - [`checkers`]: the invariants of `DESIGN.md` (no lost writes, no phantoms, read your
//!   writes, convergence), each a function of a [`history::History`] and the final
//!   state of the replicas.
//! - [`history`]: what a run records for the checkers.
//!
//! The multi-process integration tests live in `tests/tests/`.
#![warn(missing_docs)]

pub mod checkers;
pub mod history;
pub mod sim;
