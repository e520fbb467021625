//! A full disk as the executor reports it: a refused write becomes the typed
//! [`StorageFailure::DiskFull`] (which the engine turns into `RequestError::DiskFull`),
//! lands nothing, and reads are still served; writes work again once the disk has room.

use shoal_executor::Executor;
use shoal_proto::{
    CausalContext, SiblingValue, StorageFailure, StorageOp, StorageReply, StorageResult, Time,
};
use shoal_ring::PartitionId;
use shoal_storage::MemStorage;

fn put(exec: &Executor<MemStorage>, key: &[u8], value: &[u8]) -> StorageResult {
    exec.execute(StorageOp::Coordinate {
        partition: PartitionId(1),
        key: key.to_vec(),
        context: CausalContext::default(),
        value: SiblingValue::Data(value.to_vec()),
        now: Time::ZERO,
        max_object_bytes: 1 << 20,
        max_siblings: usize::MAX,
    })
}

fn read(exec: &Executor<MemStorage>, key: &[u8]) -> Vec<Vec<u8>> {
    match exec.execute(StorageOp::Read {
        partition: PartitionId(1),
        key: key.to_vec(),
    }) {
        Ok(StorageReply::Object(Some(object))) => {
            object.values().map(|value| value.to_vec()).collect()
        }
        Ok(StorageReply::Object(None)) => Vec::new(),
        other => panic!("unexpected read result {other:?}"),
    }
}

#[test]
fn a_write_on_a_full_disk_fails_typed_lands_nothing_and_reads_are_served() {
    let storage = MemStorage::new();
    let exec = Executor::open(storage.clone(), || 7).expect("opening the executor");
    put(&exec, b"before", b"v1").expect("a write before the disk fills");

    storage.set_disk_full(true);
    assert_eq!(put(&exec, b"during", b"v2"), Err(StorageFailure::DiskFull));
    assert_eq!(put(&exec, b"before", b"v3"), Err(StorageFailure::DiskFull));
    assert_eq!(read(&exec, b"before"), vec![b"v1".to_vec()]);
    assert!(read(&exec, b"during").is_empty(), "a refused write landed");

    storage.set_disk_full(false);
    put(&exec, b"during", b"v2").expect("a write once the disk has room");
    assert_eq!(read(&exec, b"during"), vec![b"v2".to_vec()]);
}
