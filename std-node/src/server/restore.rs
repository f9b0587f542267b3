//! Start-up from the data directory: the snapshot, then the current log replayed through
//! the core's `Restore`, exactly as the simulator's disk model restores a crashed node
//! (tests/tests/sim/disk.rs), so the node comes back in its recorded term with its recorded
//! vote and every entry it acknowledged.

use std::path::{Path, PathBuf};
use std::time::Instant;

use memdi_core::cluster::{Log, NodeConfig, Restore, RestoreError};
use memdi_core::store::Store;
use memdi_core::wire::{LogIndex, LogPosition, Term};

use super::CoreNode;
use crate::log_file;
use crate::log_record::{LogRecord, RecordDecodeError};
use crate::snapshot_file;

/// Replay logs progress every this many records.
const PROGRESS_EVERY_RECORDS: usize = 1 << 20;

/// Why the node could not be rebuilt from its data directory.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFilesError {
    /// The snapshot cannot be loaded.
    #[error(transparent)]
    Snapshot(#[from] snapshot_file::LoadError),
    /// The log cannot be read, or is damaged before its last record.
    #[error("{0} (the node refuses to start rather than lose the records after it; restore the file or move it away to start from the snapshot alone)")]
    Log(#[from] log_file::RecoverError),
    /// The data directory cannot be listed.
    #[error("cannot list data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A whole record (its checksum is right) does not read as a record.
    #[error("log {path}: record {number} is unreadable: {error}")]
    Record {
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 0.
        number: usize,
        /// Why.
        error: RecordDecodeError,
    },
    /// The records do not rebuild a node.
    #[error("log {path} does not fit snapshot {snapshot}: {error}")]
    Replay {
        /// The log.
        path: PathBuf,
        /// The snapshot.
        snapshot: PathBuf,
        /// What the core found.
        error: RestoreError,
    },
}

/// The rebuilt node and where its log continues.
#[derive(Debug)]
pub struct Restored {
    /// The node, a follower in its recorded term.
    pub node: Box<CoreNode>,
    /// The base index of the log to append to (its file exists or is created).
    pub log_base_index: u64,
    /// The size of that log file (after a torn tail was cut off).
    pub log_bytes: u64,
}

/// Loads the snapshot of `data_dir` into the empty `store`, replays the current log over it
/// and builds the node. Logs older than the current one (left by a crash in the middle of a
/// checkpoint) are deleted once the node is rebuilt. Blocking.
pub fn restore(
    data_dir: &Path,
    mut store: Store<Vec<u8>>,
    log: Log<Vec<u8>>,
    config: NodeConfig,
    now_ms: u64,
) -> Result<Restored, RestoreFilesError> {
    let applied = match snapshot_file::load(data_dir, &mut store)? {
        Some(meta) => LogPosition {
            term: Term(meta.term),
            index: LogIndex(meta.log_index),
        },
        None => LogPosition {
            term: Term(0),
            index: LogIndex(0),
        },
    };
    let logs = log_file::find_logs(data_dir).map_err(|source| RestoreFilesError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let mut restore = Restore::new(store, log, applied);
    let log_base_index = match logs.last() {
        None if applied.index.0 > 0 => {
            // A data directory from before the log, or whose log was removed: the term, the
            // vote and the entries after the snapshot are unknown.
            tracing::warn!(
                "no log in {}: starting from the snapshot alone, in term 0 with no vote",
                data_dir.display()
            );
            applied.index.0
        }
        None => applied.index.0,
        Some((base, path)) => {
            replay(path, &mut restore, &snapshot_file::snapshot_path(data_dir))?;
            *base
        }
    };
    let node = Box::new(restore.finish(config, now_ms));
    for (base, stale) in &logs {
        if *base < log_base_index {
            match std::fs::remove_file(stale) {
                Ok(()) => tracing::info!(
                    "deleted log {} (older than the current one)",
                    stale.display()
                ),
                Err(error) => tracing::warn!("cannot delete old log {}: {error}", stale.display()),
            }
        }
    }
    tracing::info!(
        "restored node {}: term {}, log {}..={}, commit {}, applied {}",
        node.id().0,
        node.term(),
        node.log().first_index(),
        node.log().last_index(),
        node.commit_index(),
        node.applied_index()
    );
    let log_bytes = std::fs::metadata(log_file::log_path(data_dir, log_base_index))
        .map_or(0, |metadata| metadata.len());
    Ok(Restored {
        node,
        log_base_index,
        log_bytes,
    })
}

/// Feeds every record of the log at `path` to `restore`, cutting a torn tail.
fn replay(
    path: &Path,
    restore: &mut Restore<Vec<u8>, Vec<u8>>,
    snapshot: &Path,
) -> Result<(), RestoreFilesError> {
    let started = Instant::now();
    let recovered = log_file::recover(path)?;
    let total = recovered.records.len();
    let replay_error = |error| RestoreFilesError::Replay {
        path: path.to_owned(),
        snapshot: snapshot.to_owned(),
        error,
    };
    for (number, payload) in recovered.records.iter().enumerate() {
        let record = LogRecord::decode(payload).map_err(|error| RestoreFilesError::Record {
            path: path.to_owned(),
            number,
            error,
        })?;
        match record {
            LogRecord::HardState(state) => restore.hard_state(state),
            LogRecord::Reset { base, members } => {
                restore.reset(base, members).map_err(replay_error)?
            }
            LogRecord::Entry { index, term, bytes } => {
                restore.entry(index, term, bytes).map_err(replay_error)?
            }
            LogRecord::Truncate(from) => restore.truncate(from),
            LogRecord::Committed {
                index,
                cluster_time_ms,
            } => restore.committed(index, cluster_time_ms),
        }
        if number > 0 && number % PROGRESS_EVERY_RECORDS == 0 {
            tracing::info!(
                "replaying log {}: {number} of {total} records",
                path.display()
            );
        }
    }
    tracing::info!(
        "replayed log {}: {total} records in {} ms",
        path.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}
