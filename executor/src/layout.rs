//! The node's layout state in the metadata space (issue 9): the layout history, the Paxos
//! acceptor state and the staged changes, one entry written whole on every change.
//!
//! Saves run on any storage worker thread, so two may finish out of order: each carries a
//! sequence number from the engine, and a save not above the stored one is skipped (the
//! newer state is already durable). The write is synced before the reply, because an
//! acceptor's promise that a crash forgets can let two layouts be chosen for a version.

use shoal_proto::{PersistedLayout, StorageFailure, StorageReply, StorageResult};
use shoal_storage::Storage;

use crate::{engine_failure, Executor};

/// Metadata entry: the layout state ([`PersistedLayout::encode`]).
pub(crate) const META_LAYOUT: &str = "layout_state";

impl<S: Storage> Executor<S> {
    pub(crate) fn save_layout(&self, state: &PersistedLayout) -> StorageResult {
        let _guard = self.layout_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stored) = self.stored_layout()? {
            if stored.seq >= state.seq {
                return Ok(StorageReply::LayoutSaved);
            }
        }
        self.storage
            .put_meta(META_LAYOUT, &state.encode())
            .and_then(|()| self.storage.flush())
            .map_err(engine_failure)?;
        Ok(StorageReply::LayoutSaved)
    }

    pub(crate) fn load_layout(&self) -> StorageResult {
        let _guard = self.layout_lock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(StorageReply::Layout(self.stored_layout()?.map(Box::new)))
    }

    fn stored_layout(&self) -> Result<Option<PersistedLayout>, StorageFailure> {
        match self.storage.get_meta(META_LAYOUT).map_err(engine_failure)? {
            None => Ok(None),
            Some(bytes) => PersistedLayout::decode(&bytes).map(Some).map_err(|detail| {
                StorageFailure::Corrupt {
                    what: "layout state",
                    detail,
                }
            }),
        }
    }
}
