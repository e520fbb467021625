//! Opening a data directory safely: create a new store, or recognise an existing one and
//! check its format version, and refuse anything else before touching it.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::batch::Space;
use crate::error::StorageError;
use crate::FORMAT_VERSION;

/// Key, in RocksDB's default column family, of the store's format version (be32). Kept
/// out of the meta space so that space holds only what callers put there.
pub(crate) const FORMAT_MARKER_KEY: &[u8] = b"shoal.format_version";

/// What a data directory holds before opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DirState {
    /// Missing or empty: a new store is created there.
    Fresh,
    /// Holds a RocksDB database (a `CURRENT` file).
    Existing,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn not_a_store(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::NotAStore {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Classifies `path` without modifying it.
pub(crate) fn inspect_dir(path: &Path) -> Result<DirState, StorageError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(DirState::Fresh),
        Err(error) => return Err(io_error(path)(error)),
    };
    if !metadata.is_dir() {
        return Err(not_a_store(path, "it is not a directory"));
    }
    if path.join("CURRENT").is_file() {
        return Ok(DirState::Existing);
    }
    let mut entries = fs::read_dir(path).map_err(io_error(path))?;
    match entries.next() {
        None => Ok(DirState::Fresh),
        Some(entry) => {
            let entry = entry.map_err(io_error(path))?;
            Err(not_a_store(
                path,
                format!(
                    "the directory is not empty (it holds {:?}) and contains no database",
                    entry.file_name()
                ),
            ))
        }
    }
}

/// Refuses an existing database that lacks one of Shoal's column families, before
/// opening it read-write (so a foreign database is never modified).
pub(crate) fn check_column_families(
    path: &Path,
    db_opts: &Options,
) -> Result<Vec<String>, StorageError> {
    let families = DB::list_cf(db_opts, path)?;
    let missing: Vec<&str> = Space::ALL
        .iter()
        .map(|space| space.name())
        .filter(|name| !families.iter().any(|family| family == name))
        .collect();
    if !missing.is_empty() {
        return Err(not_a_store(
            path,
            format!(
                "it holds a RocksDB database without Shoal's column families {missing:?} \
                 (found {families:?})"
            ),
        ));
    }
    Ok(families)
}

/// Opens the database with Shoal's column families plus any others already there
/// (RocksDB requires opening them all).
pub(crate) fn open_db(
    path: &Path,
    db_opts: &Options,
    existing_families: &[String],
    family_options: impl Fn(Option<Space>) -> Options,
) -> Result<DB, StorageError> {
    let mut descriptors: Vec<ColumnFamilyDescriptor> = Space::ALL
        .iter()
        .map(|space| ColumnFamilyDescriptor::new(space.name(), family_options(Some(*space))))
        .collect();
    for family in existing_families {
        if !Space::ALL.iter().any(|space| space.name() == family) {
            descriptors.push(ColumnFamilyDescriptor::new(family, family_options(None)));
        }
    }
    Ok(DB::open_cf_descriptors(db_opts, path, descriptors)?)
}

/// Checks (or, for a new store, writes) the format marker.
pub(crate) fn check_format(path: &Path, db: &DB, state: DirState) -> Result<(), StorageError> {
    match db.get(FORMAT_MARKER_KEY)? {
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_slice().try_into().map_err(|_| {
                StorageError::Corrupt(format!(
                    "format marker of {} holds {} bytes, expected 4",
                    path.display(),
                    raw.len()
                ))
            })?;
            let found = u32::from_be_bytes(bytes);
            if found != FORMAT_VERSION {
                return Err(StorageError::FormatVersion {
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            // A fresh store, or one whose creation was interrupted before the marker was
            // written (its spaces are then still empty). Anything else is not ours.
            if state == DirState::Existing && !spaces_are_empty(db)? {
                return Err(not_a_store(
                    path,
                    "it holds data but no Shoal format marker",
                ));
            }
            let mut sync = rocksdb::WriteOptions::default();
            sync.set_sync(true);
            db.put_opt(FORMAT_MARKER_KEY, FORMAT_VERSION.to_be_bytes(), &sync)?;
            Ok(())
        }
    }
}

fn spaces_are_empty(db: &DB) -> Result<bool, StorageError> {
    for space in Space::ALL {
        let Some(family) = db.cf_handle(space.name()) else {
            return Ok(false);
        };
        let mut iter = db.raw_iterator_cf(family);
        iter.seek_to_first();
        let empty = !iter.valid();
        iter.status()?;
        if !empty {
            return Ok(false);
        }
    }
    Ok(true)
}
