//! The disk writer: one thread that owns the current log file and writes checkpoints, fed
//! by the node task over a channel so that no write or fsync runs on the request path.
//!
//! Jobs are numbered by the node task (`seq`) and done in order. After each batch of jobs
//! (whatever queued up while the last batch was written: group commit) the thread reports
//! the highest `seq` that is durable *to the fsync policy*: with `always` once it is
//! fsynced; with `everysec` and `no` once it is written to the file (in the OS's page cache,
//! which survives a crash of the process but not of the machine, as Redis's `appendfsync`),
//! and with `everysec` the file is also fsynced about once a second. The node task holds
//! every output the core gave after a job until that job is reported (the ordering rule of
//! docs/protocol.md 4.8).
//!
//! A checkpoint is written crash-safely in this order: the snapshot (temporary file, fsync,
//! rename, directory fsync), then the next log under a temporary name (fsync, rename,
//! directory fsync), then the older logs are deleted. A crash before the new log's rename
//! leaves the new snapshot with the old log, which replays correctly over it (its entries
//! up to the snapshot are skipped or match). If the snapshot or the new log cannot be
//! written, the checkpoint's records are appended to the current log instead, so nothing the
//! core handed over is lost, and the checkpoint is reported failed.
//!
//! A failed write or fsync of the log stops the thread with [`DiskReport::Failed`]: a log
//! with a hole in it must not keep growing, and the node stops rather than acknowledge what
//! it may not have kept.
//!
//! With `everysec` and `no`, the node task may also append to the current log itself
//! ([`DirectLog`]) while the writer has no job in hand: those policies promise only a
//! write to the OS before an answer, and a `write` of one turn's records costs the node
//! task less than waking this thread and waiting for its report (a quarter more quorum
//! writes per second at pipeline 1 on three nodes sharing two cores). The current log is
//! therefore shared, behind a mutex the node task only ever tries.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::config::FsyncPolicy;
use crate::log_file;
use crate::snapshot_file;

/// Work for the disk writer.
#[derive(Debug)]
pub enum DiskJob {
    /// Append framed records to the current log.
    Append {
        /// The job's number.
        seq: u64,
        /// Whole framed records.
        framed: Vec<u8>,
    },
    /// Write a checkpoint and switch to a new log.
    Checkpoint(Box<CheckpointJob>),
}

/// A checkpoint to write. The new log is `head`, `reset`, `tail`; if the checkpoint cannot
/// be written, `head` and `tail` go to the current log instead (a reset there would claim a
/// base the snapshot on disk does not reach). Kept in parts so that the log entries, up to
/// the whole in-memory log, are not held twice.
#[derive(Debug)]
pub struct CheckpointJob {
    /// The job's number.
    pub seq: u64,
    /// The store to write as the snapshot: a copy taken by the node task, encoded here so
    /// that the node task (and its heartbeats) does not wait for it.
    pub snapshot: FrozenStore,
    /// The committed entry the new log starts after (names the file).
    pub base_index: u64,
    /// The hard-state record, framed.
    pub head: Vec<u8>,
    /// The reset record, framed.
    pub reset: Vec<u8>,
    /// The entry records and the commit record, framed.
    pub tail: Vec<u8>,
    /// Every record of it (but a commit index) was handed over before it, so the current
    /// log holds them once the jobs before it are written (`Node::has_unreported_state`
    /// was false). Not so after a snapshot from the leader replaced the store: the current
    /// log describes the old one.
    pub covered_by_log: bool,
}

/// A copy of the store as of a checkpoint, and the entry it reflects.
#[derive(Debug)]
pub struct FrozenStore {
    /// The copy ([`memdi_core::store::Store::copy_into`]).
    pub store: memdi_core::store::Store<Vec<u8>>,
    /// The term of the last entry it reflects.
    pub term: u64,
    /// The last entry it reflects.
    pub log_index: u64,
}

/// What the disk writer tells the node task.
#[derive(Debug)]
pub enum DiskReport {
    /// Every job through `seq` is durable to the fsync policy.
    Durable {
        /// The last such job.
        seq: u64,
    },
    /// Checkpoint `seq` is on disk: its snapshot renamed and fsynced, the new log in use.
    CheckpointSaved {
        /// The checkpoint's job.
        seq: u64,
        /// The snapshot's size.
        snapshot_bytes: usize,
    },
    /// Checkpoint `seq` could not be written; its records went to the current log.
    CheckpointFailed {
        /// The checkpoint's job.
        seq: u64,
        /// Why.
        error: String,
    },
    /// The log could not be written: the thread has stopped and nothing more is durable.
    Failed {
        /// Why.
        error: String,
    },
}

/// The log file records are appended to now (a checkpoint replaces it).
#[derive(Debug)]
struct CurrentLog {
    file: File,
    path: PathBuf,
    /// Written since the last fsync.
    dirty: bool,
}

impl CurrentLog {
    fn append(&mut self, framed: &[u8]) -> io::Result<()> {
        if !framed.is_empty() {
            self.file.write_all(framed)?;
            self.dirty = true;
        }
        Ok(())
    }
}

/// The node task's handle on the current log, for appending to it directly (see the
/// module docs). Only for the `everysec` and `no` policies.
#[derive(Debug, Clone)]
pub struct DirectLog {
    current: Arc<Mutex<CurrentLog>>,
}

/// The current log could not be appended to directly.
#[derive(Debug, thiserror::Error)]
#[error("log {path}: {source}")]
pub struct DirectWriteError {
    /// The log file.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

impl DirectLog {
    /// Appends whole framed records to the current log, unless the writer holds it this
    /// instant (it fsyncs or switches logs): then `None`, and nothing was written. The
    /// caller must know that the writer has no job in hand, or the records could land
    /// before that job's or in a log the job's checkpoint replaces.
    pub fn try_append(&self, framed: &[u8]) -> Option<Result<(), DirectWriteError>> {
        let mut current = match self.current.try_lock() {
            Ok(current) => current,
            // Busy, or the writer panicked holding it: the job path reports that.
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return None,
        };
        Some(current.append(framed).map_err(|source| DirectWriteError {
            path: current.path.clone(),
            source,
        }))
    }
}

/// The disk writer's state.
#[derive(Debug)]
pub struct DiskWriter {
    data_dir: PathBuf,
    policy: FsyncPolicy,
    /// The current log, shared with the node task's [`DirectLog`].
    current: Arc<Mutex<CurrentLog>>,
    base_index: u64,
    last_sync: Instant,
    /// A checkpoint switched logs and the older ones are still to go.
    older_logs_due: bool,
}

/// Most jobs taken into one batch before it is written.
const BATCH_JOBS: usize = 4096;

impl DiskWriter {
    /// Opens the current log (created if missing) of `data_dir`, which starts after
    /// `base_index`. Call `log_file::recover` on it first.
    pub fn open(data_dir: &Path, base_index: u64, policy: FsyncPolicy) -> io::Result<Self> {
        let path = log_file::log_path(data_dir, base_index);
        let file = log_file::open_for_append(&path)?;
        log_file::sync_dir(data_dir)?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            policy,
            current: Arc::new(Mutex::new(CurrentLog {
                file,
                path,
                dirty: false,
            })),
            base_index,
            last_sync: Instant::now(),
            older_logs_due: false,
        })
    }

    /// A handle for the node task to append to the current log itself, for the policies
    /// that promise only a write to the OS (`everysec`, `no`); `None` for `always`, whose
    /// fsync must stay off the node task.
    pub fn direct_log(&self) -> Option<DirectLog> {
        (self.policy != FsyncPolicy::Always).then(|| DirectLog {
            current: self.current.clone(),
        })
    }

    /// The current log. The node task only ever tries the lock, so a panic there cannot
    /// have left the file half-updated by this thread.
    fn current(&self) -> MutexGuard<'_, CurrentLog> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs until every sender of `jobs` is dropped (then fsyncs and returns) or the log
    /// fails. Blocking: run it on its own thread.
    pub fn run(mut self, jobs: Receiver<DiskJob>, reports: UnboundedSender<DiskReport>) {
        if let Err(error) = self.serve(&jobs, &reports) {
            let error = format!("log {}: {error}", self.current().path.display());
            tracing::error!("{error}; this node stops");
            let _ = reports.send(DiskReport::Failed { error });
        }
    }

    fn serve(
        &mut self,
        jobs: &Receiver<DiskJob>,
        reports: &UnboundedSender<DiskReport>,
    ) -> io::Result<()> {
        let mut buffer = Vec::new();
        loop {
            let first = match self.policy {
                FsyncPolicy::Everysec => {
                    let wait = Duration::from_secs(1).saturating_sub(self.last_sync.elapsed());
                    match jobs.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_if_due()?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                FsyncPolicy::Always | FsyncPolicy::No => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            let mut last_seq = 0;
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(job) = next.take() {
                match job {
                    DiskJob::Append { seq, framed } => {
                        buffer.extend_from_slice(&framed);
                        last_seq = seq;
                    }
                    DiskJob::Checkpoint(checkpoint) => {
                        self.write(&mut buffer)?;
                        last_seq = checkpoint.seq;
                        let report = self.checkpoint(*checkpoint, reports)?;
                        let _ = reports.send(report);
                    }
                }
                taken += 1;
                if taken < BATCH_JOBS {
                    next = jobs.try_recv().ok();
                }
            }
            self.write(&mut buffer)?;
            if self.policy == FsyncPolicy::Always {
                self.sync()?;
            } else {
                self.sync_if_due()?;
            }
            let _ = reports.send(DiskReport::Durable { seq: last_seq });
            if self.older_logs_due {
                self.remove_older_logs();
            }
        }
        // Every sender is gone: the node is stopping.
        self.sync()
    }

    /// Appends `buffer` (whole records) to the current log and empties it.
    fn write(&mut self, buffer: &mut Vec<u8>) -> io::Result<()> {
        self.current().append(buffer)?;
        buffer.clear();
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let unlocked = {
            let mut current = self.current();
            if !current.dirty {
                None
            } else if self.policy == FsyncPolicy::Always {
                // Nothing else writes the log: the next job waits for this fsync anyway.
                current.file.sync_data()?;
                current.dirty = false;
                None
            } else {
                current.dirty = false;
                Some(current.file.try_clone()?)
            }
        };
        if let Some(file) = unlocked {
            // Outside the lock, on a second handle of the same file: the node task's direct
            // appends go on while the disk syncs (a slow fsync held them, and every answer
            // after them, for its whole length once a second: the p99 of a loaded node).
            // What they write meanwhile is synced the next time.
            file.sync_data()?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn sync_if_due(&mut self) -> io::Result<()> {
        if self.policy == FsyncPolicy::Everysec
            && self.last_sync.elapsed() >= Duration::from_secs(1)
        {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes a checkpoint (see the module docs). An error of the current log is returned;
    /// a failure to write the snapshot or the new log is reported, after its records were
    /// appended to the current log (unless it holds them already: below).
    ///
    /// With `everysec` and `no`, if the checkpoint is `covered_by_log`, the current log
    /// already holds everything its records say (they were handed over before it, and the
    /// jobs before it are written now), which is all those policies promise: the job is reported durable at once, the node task goes on
    /// appending to the current log directly while the snapshot is written, and what it
    /// appended meanwhile is carried into the new log when that takes over. A crash in
    /// between leaves the old log whole with every record, beside the old snapshot or the
    /// new one, over which it replays correctly. Before, every answer waited for the
    /// snapshot and the new log to be fsynced (65 to 72 ms here), once a minute.
    fn checkpoint(
        &mut self,
        job: CheckpointJob,
        reports: &UnboundedSender<DiskReport>,
    ) -> io::Result<DiskReport> {
        let carry_from = if self.policy != FsyncPolicy::Always && job.covered_by_log {
            let written = self.current().file.metadata()?.len();
            let _ = reports.send(DiskReport::Durable { seq: job.seq });
            Some(written)
        } else {
            None
        };
        let FrozenStore {
            store,
            term,
            log_index,
        } = &job.snapshot;
        let written = snapshot_file::encode(store, *term, *log_index)
            .map_err(CheckpointError::Encode)
            .and_then(|snapshot| {
                self.switch_log(&job, &snapshot, carry_from)?;
                Ok(snapshot.len())
            });
        match written {
            Ok(snapshot_bytes) => Ok(DiskReport::CheckpointSaved {
                seq: job.seq,
                snapshot_bytes,
            }),
            Err(error) => {
                // Reported early, the current log holds them already.
                if carry_from.is_none() {
                    let mut current = self.current();
                    current.append(&job.head)?;
                    current.append(&job.tail)?;
                }
                Ok(DiskReport::CheckpointFailed {
                    seq: job.seq,
                    error: error.to_string(),
                })
            }
        }
    }

    /// Saves the snapshot, then makes the new log current; with `carry_from`, what was
    /// appended to the current log after that offset goes into the new log first.
    fn switch_log(
        &mut self,
        job: &CheckpointJob,
        snapshot: &[u8],
        carry_from: Option<u64>,
    ) -> Result<(), CheckpointError> {
        snapshot_file::save(&self.data_dir, snapshot).map_err(CheckpointError::Snapshot)?;
        let path = log_file::log_path(&self.data_dir, job.base_index);
        let temp = path.with_extension("memdi.tmp");
        let log_error = |source| CheckpointError::Log {
            path: temp.clone(),
            source,
        };
        // Opened for appending: the node task appends through this handle once it is current.
        let mut file = log_file::open_for_append(&temp).map_err(log_error)?;
        file.set_len(0).map_err(log_error)?;
        for part in [&job.head, &job.reset, &job.tail] {
            file.write_all(part).map_err(log_error)?;
        }
        file.sync_data().map_err(log_error)?;
        // From here until the new log is current nothing else appends (the node task only
        // tries this lock, and hands its records to this thread meanwhile).
        let mut current = self.current();
        let carried = match carry_from {
            Some(from) => carry_records(&current.path, from, &mut file).map_err(log_error)?,
            None => 0,
        };
        std::fs::rename(&temp, &path).map_err(log_error)?;
        if self.policy == FsyncPolicy::Always {
            // What is appended from now on is fsynced before it is answered: its log's name
            // must be durable first. (Nothing else appends: no direct appends here.)
            log_file::sync_dir(&self.data_dir).map_err(log_error)?;
        }
        // The new log is whole and named, the old one is whole too: appends go on in the
        // new one while the rename is made durable (a directory fsync can take as long as
        // the journal's commit of every dirty page of the old log).
        *current = CurrentLog {
            file,
            path: path.clone(),
            dirty: carried > 0,
        };
        drop(current);
        self.base_index = job.base_index;
        if self.policy == FsyncPolicy::Always {
            // Its name is durable already (above).
            self.delete_older_logs();
        } else {
            // After the jobs queued behind this one are written and reported.
            self.older_logs_due = true;
        }
        Ok(())
    }

    /// Makes the new log's name durable, then deletes the logs before it (they replay if
    /// the name is lost in a crash, so they go only after).
    fn remove_older_logs(&mut self) {
        self.older_logs_due = false;
        if let Err(error) = log_file::sync_dir(&self.data_dir) {
            tracing::warn!(
                "cannot sync {} after a new log: {error}; older logs kept",
                self.data_dir.display()
            );
            return;
        }
        self.delete_older_logs();
    }

    /// Deletes the logs before the current one, whose name is durable.
    fn delete_older_logs(&self) {
        if let Ok(logs) = log_file::find_logs(&self.data_dir) {
            for (base, stale) in logs {
                if base < self.base_index {
                    if let Err(error) = std::fs::remove_file(&stale) {
                        tracing::warn!("cannot delete old log {}: {error}", stale.display());
                    }
                }
            }
        }
        let _ = log_file::sync_dir(&self.data_dir);
    }
}

/// Appends the bytes of the log at `path` from offset `from` on (whole records the node task
/// appended during a checkpoint) to `to`; returns how many.
fn carry_records(path: &Path, from: u64, to: &mut File) -> io::Result<u64> {
    let mut old = File::open(path)?;
    old.seek(SeekFrom::Start(from))?;
    let mut records = Vec::new();
    old.read_to_end(&mut records)?;
    to.write_all(&records)?;
    Ok(records.len() as u64)
}

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
enum CheckpointError {
    /// The store could not be encoded.
    #[error("snapshot encoding failed: {0:?}")]
    Encode(memdi_core::snapshot::SnapshotEncodeError),
    /// The snapshot.
    #[error(transparent)]
    Snapshot(snapshot_file::SaveError),
    /// The new log.
    #[error("cannot write log {path}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}
