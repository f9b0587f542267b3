//! `--recover` on disk: a marker file that keeps a node recovering across restarts.
//!
//! A node that lost its data directory must not vote until it has caught up
//! (`Node::restarted_without_state`, docs/protocol.md 4.10). The operator says so once, with
//! `--recover`; the marker makes the rule outlive that start: a node killed while recovering
//! starts recovering again, whatever its flags, with what it wrote meanwhile discarded (an
//! incomplete state, and no vote of its own in it). The node task removes the marker once the
//! node has recovered and a snapshot taken after that is on disk, so that from then on the
//! directory holds everything recovery promised.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::{log_file, snapshot_file};

/// The marker's name in the data directory.
pub const MARKER_FILE: &str = "RECOVERING";

/// Why `--recover` could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// `--recover` on a directory that holds a node's state: recovery would throw it away,
    /// and a node with its state needs none.
    #[error("--recover is for a node that lost its data, but {path} holds {what}: start without --recover, or empty the directory first")]
    HoldsData {
        /// The data directory.
        path: PathBuf,
        /// What it holds.
        what: &'static str,
    },
    /// The marker is there (the node is recovering), but `--cluster` names fewer than three
    /// voters: recovery could never end.
    #[error("{path} says this node is recovering, which needs --cluster naming at least three voters (see --recover)")]
    TooFewVoters {
        /// The marker.
        path: PathBuf,
    },
    /// The marker could not be written, or an old file removed.
    #[error("--recover: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The marker's path in `data_dir`.
pub fn marker_path(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER_FILE)
}

/// Prepares `data_dir` (which exists) and says whether the node starts recovering: with
/// `recover` (the flag) on a directory without state, the marker is written (and fsynced);
/// with the marker already there, the snapshot and logs a recovering life wrote are removed.
pub fn prepare(data_dir: &Path, recover: bool) -> Result<bool, RecoverError> {
    let marker = marker_path(data_dir);
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| RecoverError::Io { path, source }
    };
    let snapshot = snapshot_file::snapshot_path(data_dir);
    let logs = log_file::find_logs(data_dir).map_err(io_error(data_dir))?;
    if marker.exists() {
        if snapshot.exists() {
            std::fs::remove_file(&snapshot).map_err(io_error(&snapshot))?;
        }
        for (_, log) in &logs {
            std::fs::remove_file(log).map_err(io_error(log))?;
        }
        log_file::sync_dir(data_dir).map_err(io_error(data_dir))?;
        return Ok(true);
    }
    if !recover {
        return Ok(false);
    }
    let held = if snapshot.exists() {
        Some("a snapshot")
    } else if logs
        .iter()
        .any(|(_, log)| std::fs::metadata(log).is_ok_and(|meta| meta.len() > 0))
    {
        Some("a log")
    } else {
        None
    };
    if let Some(what) = held {
        return Err(RecoverError::HoldsData {
            path: data_dir.to_owned(),
            what,
        });
    }
    // Empty logs (a start that wrote nothing) would outrank the log the node starts.
    for (_, log) in &logs {
        std::fs::remove_file(log).map_err(io_error(log))?;
    }
    File::create(&marker)
        .and_then(|file| file.sync_all())
        .map_err(io_error(&marker))?;
    log_file::sync_dir(data_dir).map_err(io_error(data_dir))?;
    Ok(true)
}

/// Removes the marker (the node has recovered and saved a snapshot since), durably.
pub fn remove(data_dir: &Path) -> io::Result<()> {
    std::fs::remove_file(marker_path(data_dir))?;
    log_file::sync_dir(data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary directory")
    }

    #[test]
    fn the_flag_on_an_empty_directory_writes_the_marker() {
        let dir = dir();
        assert!(prepare(dir.path(), true).unwrap());
        assert!(marker_path(dir.path()).exists());
        // Without the flag, the marker keeps the node recovering.
        assert!(prepare(dir.path(), false).unwrap());
        remove(dir.path()).unwrap();
        assert!(!prepare(dir.path(), false).unwrap());
    }

    #[test]
    fn the_flag_on_a_directory_with_state_is_refused() {
        let dir = dir();
        std::fs::write(log_file::log_path(dir.path(), 0), b"records").unwrap();
        assert!(matches!(
            prepare(dir.path(), true),
            Err(RecoverError::HoldsData { what: "a log", .. })
        ));
        std::fs::write(snapshot_file::snapshot_path(dir.path()), b"snap").unwrap();
        assert!(matches!(
            prepare(dir.path(), true),
            Err(RecoverError::HoldsData {
                what: "a snapshot",
                ..
            })
        ));
        assert!(!marker_path(dir.path()).exists());
    }

    #[test]
    fn a_restart_while_recovering_discards_what_the_last_life_wrote() {
        let dir = dir();
        assert!(prepare(dir.path(), true).unwrap());
        let log = log_file::log_path(dir.path(), 7);
        std::fs::write(&log, b"records").unwrap();
        std::fs::write(snapshot_file::snapshot_path(dir.path()), b"snap").unwrap();
        assert!(prepare(dir.path(), false).unwrap());
        assert!(!log.exists());
        assert!(!snapshot_file::snapshot_path(dir.path()).exists());
        assert!(marker_path(dir.path()).exists());
    }
}
