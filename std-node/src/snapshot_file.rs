//! Snapshots on disk: one file, `<data-dir>/snapshot.memdi`, replaced atomically.
//!
//! The bytes are the core's snapshot format (header with term and log index, entries, CRC
//! trailer); this module only moves them between a store and a file. Writing goes to a
//! temporary file that is fsynced, renamed over the old one, and then the directory is
//! fsynced, so a crash at any moment leaves either the old or the new snapshot whole, never
//! a mix. Loading streams the file through the core's decoder in chunks, so a damaged file
//! is refused (with its name and the reason) and never half-loaded.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use memdi_core::snapshot::{
    SnapshotDecodeError, SnapshotDecoder, SnapshotEncodeError, SnapshotEncoder, SnapshotMeta,
};
use memdi_core::store::Store;

/// The snapshot's file name inside the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.memdi";
const TEMP_FILE: &str = "snapshot.memdi.tmp";
/// Chunk size for encoding and loading.
const CHUNK_BYTES: usize = 1 << 20;
/// Loading logs progress every this many bytes.
const PROGRESS_EVERY_BYTES: u64 = 256 << 20;

/// The snapshot path in `data_dir`.
pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SNAPSHOT_FILE)
}

/// Encodes the whole store, as it is now, into memory. Synchronous: the store cannot change
/// meanwhile, which is what makes the snapshot a consistent point in time. `term` and
/// `log_index` name the last log entry the store reflects.
pub fn encode<M: AsRef<[u8]> + AsMut<[u8]>>(
    store: &Store<M>,
    term: u64,
    log_index: u64,
) -> Result<Vec<u8>, SnapshotEncodeError> {
    // Fuzzy: a store loaded from a leader's fuzzy snapshot holds keys ahead of its
    // version counter until it has applied the entries after `log_index`; a strict
    // snapshot of it would not load (see memdi_core::cluster::Checkpoint).
    let mut encoder = SnapshotEncoder::new_fuzzy(store, term, log_index);
    let estimate = usize::try_from(store.used_bytes()).unwrap_or(0) + 64;
    let mut bytes = Vec::with_capacity(estimate);
    let mut chunk = vec![0; CHUNK_BYTES];
    loop {
        let written = encoder.fill(store, &mut chunk)?;
        if written == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&chunk[..written]);
    }
}

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write snapshot {path}: {source}")]
pub struct SaveError {
    /// The file being written.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// Writes `bytes` as the snapshot in `data_dir`, atomically (see the module docs). Blocking:
/// call it from a blocking task.
pub fn save(data_dir: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let temp = data_dir.join(TEMP_FILE);
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| SaveError { path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(error(data_dir))?;
    let mut file = std::fs::File::create(&temp).map_err(error(&temp))?;
    file.write_all(bytes).map_err(error(&temp))?;
    file.sync_all().map_err(error(&temp))?;
    drop(file);
    let target = snapshot_path(data_dir);
    std::fs::rename(&temp, &target).map_err(error(&target))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(error(data_dir))?;
    Ok(())
}

/// Why a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a valid snapshot for this store.
    #[error("snapshot {path} is unusable: {reason:?} (move it away to start empty)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        reason: SnapshotDecodeError,
    },
}

/// Loads the snapshot in `data_dir` into the empty `store`, if there is one. Blocking.
pub fn load<M: AsRef<[u8]> + AsMut<[u8]>>(
    data_dir: &Path,
    store: &mut Store<M>,
) -> Result<Option<SnapshotMeta>, LoadError> {
    let path = snapshot_path(data_dir);
    let io_error = |source| LoadError::Io {
        path: path.clone(),
        source,
    };
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error(error)),
    };
    let total = file.metadata().map_err(io_error)?.len();
    let started = Instant::now();
    let mut decoder = SnapshotDecoder::new();
    let mut chunk = vec![0; CHUNK_BYTES];
    let mut loaded: u64 = 0;
    let mut next_report = PROGRESS_EVERY_BYTES;
    let invalid = |reason| LoadError::Invalid {
        path: path.clone(),
        reason,
    };
    loop {
        let read = file.read(&mut chunk).map_err(io_error)?;
        if read == 0 {
            break;
        }
        decoder.feed(store, &chunk[..read]).map_err(invalid)?;
        loaded += read as u64;
        if loaded >= next_report {
            tracing::info!(
                "loading snapshot {}: {} of {} MiB",
                path.display(),
                loaded >> 20,
                total >> 20
            );
            next_report += PROGRESS_EVERY_BYTES;
        }
    }
    let meta = decoder.finish(store).map_err(invalid)?;
    tracing::info!(
        "loaded snapshot {}: {} keys, {} bytes, log index {} of term {}, in {} ms",
        path.display(),
        store.len(),
        loaded,
        meta.log_index,
        meta.term,
        started.elapsed().as_millis()
    );
    Ok(Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use memdi_core::store::{SetOptions, StoreLimits};

    const LIMITS: StoreLimits = StoreLimits {
        max_keys: 100,
        max_key_bytes: 16,
        max_value_bytes: 64,
        max_total_bytes: 16 * 1024,
    };

    fn store() -> Store<Vec<u8>> {
        Store::new(vec![0; LIMITS.memory_bytes().unwrap()], LIMITS, 1).unwrap()
    }

    #[test]
    fn a_saved_snapshot_loads_back_and_a_damaged_one_is_refused_by_name() {
        let mut source = store();
        for i in 0..50u32 {
            let key = format!("key{i}");
            source
                .set(key.as_bytes(), &i.to_le_bytes(), SetOptions::default(), 0)
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &encode(&source, 3, 9).unwrap()).unwrap();
        let mut target = store();
        let meta = load(dir.path(), &mut target).unwrap().unwrap();
        assert_eq!((meta.term, meta.log_index), (3, 9));
        assert_eq!(target.len(), 50);
        assert_eq!(target.get(b"key7", 0).unwrap().value, 7u32.to_le_bytes());

        let path = snapshot_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[60] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let error = load(dir.path(), &mut store()).unwrap_err();
        assert!(error.to_string().contains(SNAPSHOT_FILE), "{error}");
    }

    #[test]
    fn no_snapshot_is_an_empty_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), &mut store()).unwrap().is_none());
    }
}
