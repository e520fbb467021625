//! The conformance suite against both engines: one test per behaviour per engine.

use shoal_storage::conformance::{self, CASES};
use shoal_storage::{MemStorage, RocksOptions, RocksStorage};

/// Small buffers: many stores are open at once while tests run in parallel.
fn small_rocks(dir: &tempfile::TempDir) -> RocksStorage {
    let options = RocksOptions {
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 4 << 20,
        ..RocksOptions::default()
    };
    RocksStorage::open(dir.path(), options).unwrap()
}

macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(
                #[test]
                fn $case() {
                    super::conformance::$case(&super::MemStorage::new());
                }
            )*
        }

        /// The in-memory engine with sync tracking (the simulator's power-cut model)
        /// behaves as an engine too.
        mod mem_sync_tracking {
            $(
                #[test]
                fn $case() {
                    super::conformance::$case(&super::MemStorage::with_sync_tracking());
                }
            )*
        }

        mod rocks {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let storage = super::small_rocks(&dir);
                    super::conformance::$case(&storage);
                }
            )*
        }

        #[test]
        fn every_conformance_case_runs_against_both_engines() {
            let listed: Vec<&str> = vec![$(stringify!($case)),*];
            let cases: Vec<&str> = CASES.iter().map(|(name, _)| *name).collect();
            assert_eq!(listed, cases, "update the list in tests/conformance.rs");
        }
    };
}

conformance_tests!(
    get_put_delete_in_each_space,
    a_cached_get_agrees_with_get_when_it_answers,
    a_write_that_need_not_wait_lands_like_write,
    spaces_are_independent,
    batch_applies_in_order_and_last_op_wins,
    rejected_batch_applies_nothing,
    empty_batch_is_a_no_op,
    scan_respects_bounds_and_limit,
    scan_of_empty_or_inverted_range_is_empty,
    scan_partition_pages_in_order_within_the_partition,
    scan_partition_handles_last_partition_and_ff_keys,
    delete_partition_removes_only_that_partition,
    object_helpers_use_the_partition_prefix,
    meta_entries_round_trip,
    empty_keys_and_values_are_stored,
    large_values_round_trip,
    oversized_keys_are_rejected,
    short_keys_are_rejected_in_the_objects_space,
    stats_reflect_written_data,
    operations_after_close_fail_with_closed,
);

#[test]
fn arc_dyn_storage_forwards_to_the_engine() {
    use std::sync::Arc;
    let storage: Arc<dyn shoal_storage::Storage> = Arc::new(MemStorage::new());
    conformance::get_put_delete_in_each_space(&storage);
    conformance::delete_partition_removes_only_that_partition(&storage);
}
