//! An append-only file of records, each framed by its length and a CRC-32, written by a
//! background task with `--fsync always|everysec|no` semantics.
//!
//! Why it exists before anything feeds it: the core will tell the shell what to persist
//! (`poll_persist`, being added on another branch); this module is the disk side of that,
//! built and tested on its own so that wiring it in is a small change. Nothing in the node
//! writes to it yet.
//!
//! Record layout, little-endian: `len u32 | crc32 u32 (IEEE, over the payload) | payload`.
//!
//! Reading back at start ([`recover`]): a crash can cut the last write anywhere, so a tail
//! that is not a whole record (a short header, a short payload, or a last record whose CRC
//! fails) is truncated away with a warning: the records before it are whole. A CRC failure
//! with more bytes after it is not a torn write but damage, and recovery stops with an error
//! that names the file and the byte offset, because silently dropping the records after it
//! would lose acknowledged writes.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::config::FsyncPolicy;

/// Bytes before each payload.
pub const RECORD_HEADER_BYTES: usize = 8;
/// Largest payload accepted; a larger length in a file is damage.
pub const MAX_RECORD_BYTES: u32 = 64 << 20;

/// Why the log could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// An I/O error.
    #[error("cannot read log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A record in the middle of the file is damaged.
    #[error("log {path} is damaged at byte {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// What [`recover`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The whole records, in order.
    pub records: Vec<Vec<u8>>,
    /// If a torn tail was cut off: the file's length before and after.
    pub truncated: Option<(u64, u64)>,
}

/// Frames one record.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("record larger than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads every whole record of the log at `path` (a missing file is an empty log) and cuts
/// off a torn tail, logging a warning.
pub fn recover(path: &Path) -> Result<Recovered, RecoverError> {
    let io_error = |source| RecoverError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(io_error)?,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(error) => return Err(io_error(error)),
    };
    let (records, whole_bytes) = parse(path, &bytes)?;
    let mut recovered = Recovered {
        records,
        truncated: None,
    };
    if whole_bytes < bytes.len() {
        let (before, after) = (bytes.len() as u64, whole_bytes as u64);
        tracing::warn!(
            "log {}: torn tail of {} bytes after the last whole record (byte {after}) cut off",
            path.display(),
            before - after
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error)?;
        file.set_len(after).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        recovered.truncated = Some((before, after));
    }
    Ok(recovered)
}

/// The whole records at the front of `bytes` and where they end.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), RecoverError> {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= RECORD_HEADER_BYTES {
        let header = &bytes[at..at + RECORD_HEADER_BYTES];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let corrupt = |reason| RecoverError::Corrupt {
            path: path.to_owned(),
            offset: at as u64,
            reason,
        };
        if len > MAX_RECORD_BYTES {
            return Err(corrupt("record length above the maximum"));
        }
        let end = at + RECORD_HEADER_BYTES + len as usize;
        if end > bytes.len() {
            break; // torn: the payload did not all reach the disk
        }
        let payload = &bytes[at + RECORD_HEADER_BYTES..end];
        if crc32fast::hash(payload) != crc {
            if end == bytes.len() {
                break; // the last record, half written: torn
            }
            return Err(corrupt("checksum mismatch"));
        }
        records.push(payload.to_vec());
        at = end;
    }
    Ok((records, at))
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The writer task stopped after an I/O error (logged), or was closed.
    #[error("the log writer has stopped")]
    Stopped,
}

enum Command {
    Append(Vec<u8>, Option<oneshot::Sender<()>>),
    Close(oneshot::Sender<()>),
}

/// Handle to the background writer of one log file.
#[derive(Debug, Clone)]
pub struct LogWriter {
    commands: mpsc::Sender<Command>,
    policy: FsyncPolicy,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append(payload, _) => write!(f, "Append({} bytes)", payload.len()),
            Self::Close(_) => f.write_str("Close"),
        }
    }
}

impl LogWriter {
    /// Opens (creating if needed) the log at `path` for appending and starts its writer task.
    /// Call [`recover`] first: appending after a torn tail would bury it mid-file.
    pub async fn open(path: &Path, policy: FsyncPolicy) -> io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let (commands, receiver) = mpsc::channel(1024);
        tokio::spawn(write_loop(file, receiver, policy, path.to_owned()));
        Ok(Self { commands, policy })
    }

    /// Appends one record. With `fsync always` this returns once the record is on disk;
    /// otherwise once the writer task has it (waiting only if it is 1024 records behind).
    pub async fn append(&self, payload: Vec<u8>) -> Result<(), AppendError> {
        if self.policy == FsyncPolicy::Always {
            let (done, synced) = oneshot::channel();
            self.commands
                .send(Command::Append(payload, Some(done)))
                .await
                .map_err(|_| AppendError::Stopped)?;
            synced.await.map_err(|_| AppendError::Stopped)
        } else {
            self.commands
                .send(Command::Append(payload, None))
                .await
                .map_err(|_| AppendError::Stopped)
        }
    }

    /// Writes and fsyncs everything appended so far, then stops the writer.
    pub async fn close(self) -> Result<(), AppendError> {
        let (done, closed) = oneshot::channel();
        self.commands
            .send(Command::Close(done))
            .await
            .map_err(|_| AppendError::Stopped)?;
        closed.await.map_err(|_| AppendError::Stopped)
    }
}

/// The writer task: batches whatever has queued up into one write, then syncs as the policy
/// says. An I/O error stops it (and so fails every later append): a log with a hole in it
/// must not keep growing.
async fn write_loop(
    file: tokio::fs::File,
    mut commands: mpsc::Receiver<Command>,
    policy: FsyncPolicy,
    path: PathBuf,
) {
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    let mut buffer = Vec::new();
    loop {
        let first = tokio::select! {
            command = commands.recv() => command,
            _ = tick.tick() => {
                if dirty && policy == FsyncPolicy::Everysec {
                    if let Err(error) = file.get_ref().sync_data().await {
                        tracing::error!("log {}: fsync failed: {error}", path.display());
                        return;
                    }
                    dirty = false;
                }
                continue;
            }
        };
        let Some(mut command) = first.map(Some) else {
            // Every handle dropped without close: flush what we have.
            let _ = file.flush().await;
            return;
        };
        let mut waiting = Vec::new();
        let mut close = None;
        while let Some(current) = command.take() {
            match current {
                Command::Append(payload, done) => {
                    buffer.clear();
                    encode_record(&payload, &mut buffer);
                    if let Err(error) = file.write_all(&buffer).await {
                        tracing::error!("log {}: write failed: {error}", path.display());
                        return;
                    }
                    waiting.extend(done);
                    dirty = true;
                }
                Command::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            command = commands.try_recv().ok();
        }
        if let Err(error) = file.flush().await {
            tracing::error!("log {}: write failed: {error}", path.display());
            return;
        }
        if (policy == FsyncPolicy::Always && !waiting.is_empty()) || close.is_some() {
            if let Err(error) = file.get_ref().sync_data().await {
                tracing::error!("log {}: fsync failed: {error}", path.display());
                return;
            }
            dirty = false;
        }
        for done in waiting {
            let _ = done.send(());
        }
        if let Some(done) = close {
            let _ = done.send(());
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_records() -> Vec<Vec<u8>> {
        vec![
            b"first".to_vec(),
            Vec::new(),
            vec![7; 300],
            b"fourth record".to_vec(),
        ]
    }

    fn file_of(records: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for record in records {
            encode_record(record, &mut bytes);
        }
        bytes
    }

    #[test]
    fn a_missing_file_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            recover(&dir.path().join("none.log")).unwrap(),
            Recovered::default()
        );
    }

    /// A crash can stop the file at any byte: recovery keeps exactly the records that were
    /// whole, and cuts the file back to them so that appending continues cleanly.
    #[test]
    fn a_log_torn_at_every_byte_keeps_the_whole_records() {
        let records = sample_records();
        let bytes = file_of(&records);
        let ends: Vec<usize> = records
            .iter()
            .scan(0, |end, record| {
                *end += RECORD_HEADER_BYTES + record.len();
                Some(*end)
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.log");
        for cut in 0..=bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let recovered = recover(&path).unwrap();
            let whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(recovered.records, records[..whole], "cut at {cut}");
            let kept = if whole == 0 { 0 } else { ends[whole - 1] };
            let expected_cut = (kept < cut).then_some((cut as u64, kept as u64));
            assert_eq!(recovered.truncated, expected_cut, "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), kept as u64);
            // A second recovery finds a clean file.
            assert_eq!(recover(&path).unwrap().truncated, None);
        }
    }

    /// A half-written last record whose length arrived but whose payload is garbage (the
    /// file grew before the data reached the disk) is also a torn tail.
    #[test]
    fn a_last_record_with_a_bad_checksum_is_a_torn_tail() {
        let records = sample_records();
        let mut bytes = file_of(&records);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.log");
        std::fs::write(&path, &bytes).unwrap();
        let recovered = recover(&path).unwrap();
        assert_eq!(recovered.records, records[..3]);
        assert!(recovered.truncated.is_some());
    }

    /// Damage before the last record is not a torn write: every flipped byte of every
    /// record but the last is reported with the file and the offset of its record.
    #[test]
    fn damage_in_the_middle_is_an_error_naming_file_and_offset() {
        let records = sample_records();
        let bytes = file_of(&records);
        let last_start = bytes.len() - RECORD_HEADER_BYTES - records[3].len();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged.log");
        for at in 0..last_start {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x55;
            std::fs::write(&path, &damaged).unwrap();
            match recover(&path) {
                Err(RecoverError::Corrupt {
                    path: p, offset, ..
                }) => {
                    assert_eq!(p, path);
                    assert!(
                        offset as usize <= at,
                        "offset {offset} after damage at {at}"
                    );
                    let message = recover(&path).unwrap_err().to_string();
                    assert!(message.contains("damaged.log"), "{message}");
                    assert!(message.contains(&format!("byte {offset}")), "{message}");
                }
                // A damaged length can make the rest look like a torn tail (the record
                // now runs past the end): then records are lost only from that point,
                // which the length bytes alone cannot tell apart from a torn write.
                Ok(recovered) => {
                    let header_of = records_header_offsets(&records);
                    assert!(
                        header_of.iter().any(|&h| (h..h + 4).contains(&at)),
                        "damage at {at} (not a length) was not detected"
                    );
                    assert!(recovered.records.len() < records.len());
                }
                Err(other) => panic!("unexpected error {other}"),
            }
        }
    }

    fn records_header_offsets(records: &[Vec<u8>]) -> Vec<usize> {
        let mut at = 0;
        records
            .iter()
            .map(|record| {
                let start = at;
                at += RECORD_HEADER_BYTES + record.len();
                start
            })
            .collect()
    }

    #[tokio::test]
    async fn records_written_under_each_policy_read_back() {
        for policy in [FsyncPolicy::Always, FsyncPolicy::Everysec, FsyncPolicy::No] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("append.log");
            let writer = LogWriter::open(&path, policy).await.unwrap();
            for record in sample_records() {
                writer.append(record).await.unwrap();
            }
            writer.close().await.unwrap();
            // Reopening appends after what is there.
            let writer = LogWriter::open(&path, policy).await.unwrap();
            writer.append(b"more".to_vec()).await.unwrap();
            writer.close().await.unwrap();
            let mut expected = sample_records();
            expected.push(b"more".to_vec());
            assert_eq!(recover(&path).unwrap().records, expected, "{policy:?}");
        }
    }

    #[tokio::test]
    async fn with_fsync_always_an_append_is_readable_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("always.log");
        let writer = LogWriter::open(&path, FsyncPolicy::Always).await.unwrap();
        writer.append(b"one".to_vec()).await.unwrap();
        assert_eq!(recover(&path).unwrap().records, vec![b"one".to_vec()]);
        writer.close().await.unwrap();
    }
}
