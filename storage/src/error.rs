//! The error type of every storage operation.

use std::path::PathBuf;

/// Why a storage operation failed.
///
/// One enum for the whole storage surface: callers (the node driver) mostly log and count
/// these, and match only on [`StorageError::Closed`] (shutdown in progress) and the
/// open-time variants ([`StorageError::FormatVersion`], [`StorageError::NotAStore`]).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB reported an error (I/O error, corruption detected by a checksum, a lock
    /// held by another process, ...; a full disk is [`StorageError::DiskFull`]). The
    /// string is RocksDB's message.
    #[error("rocksdb: {0}")]
    Rocks(String),

    /// A filesystem operation outside RocksDB (inspecting the data directory) failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path being inspected.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The store on disk was written with a format version this build does not read.
    #[error(
        "the store has format version {found}, this build reads version {expected}; \
         use a Shoal build that matches the data directory"
    )]
    FormatVersion {
        /// The version recorded in the store.
        found: u32,
        /// The version this build reads and writes ([`crate::FORMAT_VERSION`]).
        expected: u32,
    },

    /// The directory exists but does not hold a Shoal store (another program's files or
    /// another RocksDB database); Shoal refuses to touch it.
    #[error("{path} is not a Shoal data directory: {reason}")]
    NotAStore {
        /// The directory that was opened.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// Stored bytes that Shoal itself wrote do not have the expected shape.
    #[error("corrupt store: {0}")]
    Corrupt(String),

    /// A key is longer than [`crate::MAX_KEY_BYTES`].
    #[error("key of {len} bytes exceeds the maximum of {max} bytes")]
    KeyTooLarge {
        /// Length of the offending key, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },

    /// A key written to the objects space is shorter than the partition prefix, so it
    /// is not an [`crate::object_key`].
    #[error("key of {len} bytes in the objects space lacks the {prefix}-byte partition prefix")]
    NotAnObjectKey {
        /// Length of the offending key, in bytes.
        len: usize,
        /// Length of the prefix ([`crate::PARTITION_PREFIX_BYTES`]).
        prefix: usize,
    },

    /// A value is longer than [`crate::MAX_VALUE_BYTES`].
    #[error("value of {len} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// Length of the offending value, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },

    /// A write batch carries more than [`crate::MAX_BATCH_BYTES`] of keys and values.
    #[error("write batch of {bytes} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge {
        /// Size of the batch ([`crate::WriteBatch::size_bytes`]).
        bytes: usize,
        /// The limit, in bytes.
        max: usize,
    },

    /// Engine options are inconsistent (see [`crate::RocksOptions::validate`]).
    #[error("invalid storage options: {0}")]
    InvalidOptions(String),

    /// The engine was closed with [`crate::Storage::close`]; no further operation runs.
    #[error("storage is closed")]
    Closed,

    /// The data directory's filesystem is full, or below the configured free-space
    /// reserve (`min_free_bytes`): the write was refused and nothing of it landed. Reads
    /// keep working, and writes are accepted again once space is freed. The message names
    /// no path and carries no engine text: it travels to clients as is.
    #[error("disk full: the node's data directory has too little free space; writes are refused until space is freed")]
    DiskFull,
}

#[cfg(feature = "rocksdb")]
impl From<rocksdb::Error> for StorageError {
    fn from(error: rocksdb::Error) -> Self {
        let message = error.into_string();
        if is_no_space(&message) {
            // The caller sees the typed error; the text (with the file's path) is logged
            // here, on the node, once per failing call.
            tracing::warn!(error = %message, "RocksDB ran out of disk space");
            StorageError::DiskFull
        } else {
            StorageError::Rocks(message)
        }
    }
}

/// Whether a RocksDB message reports a full filesystem: `ENOSPC` from a file write, or
/// RocksDB's own space limit. The C API gives only the status text, so this matches on it.
#[cfg(feature = "rocksdb")]
fn is_no_space(message: &str) -> bool {
    message.contains("No space left on device") || message.contains("Max allowed space was reached")
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    use super::is_no_space;

    #[test]
    fn no_space_messages_are_recognised_and_others_are_not() {
        assert!(is_no_space(
            "IO error: No space left on device: While appending to file: /d/000004.log: No space left on device"
        ));
        assert!(is_no_space("IO error: No space left on device"));
        assert!(is_no_space("IO error: Max allowed space was reached"));
        assert!(!is_no_space(
            "IO error: Input/output error: While reading /d/000004.sst"
        ));
        assert!(!is_no_space("Corruption: block checksum mismatch"));
    }
}
