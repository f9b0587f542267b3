//! The append-only log on disk: files of records, each framed by its length and a CRC-32.
//!
//! Record layout, little-endian: `len u32 | crc32 u32 (IEEE, over the payload) | payload`
//! (the payload is a [`crate::log_record::LogRecord`]). A data directory holds one current
//! log, `log-<base>.memdi`, named by the index of the committed entry it starts after (the
//! checkpoint's base): a checkpoint writes the snapshot, then the next log under a temporary
//! name, fsyncs and renames it, and only then deletes the older logs, so a crash at any
//! point leaves a snapshot and a log that together hold everything (see
//! `server::disk_writer`). At start the log with the highest base is the current one.
//!
//! Reading back at start ([`recover`]): a crash can cut the last write anywhere, so a tail
//! that is not a whole record (a short header, a short payload, or a last record whose CRC
//! fails) is truncated away with a warning: the records before it are whole. A CRC failure
//! with more bytes after it is not a torn write but damage, and recovery stops with an error
//! that names the file and the byte offset, because silently dropping the records after it
//! would lose acknowledged writes.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

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
    let (records, whole_bytes) = parse_records(path, &bytes)?;
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

/// The payloads of the whole records at the front of `bytes` (a log file's contents) and
/// where they end; what follows them is a torn tail. `path` only names the file in errors.
/// Public for the fuzz target (core/fuzz/fuzz_targets/log_records.rs).
pub fn parse_records(path: &Path, bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), RecoverError> {
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

/// The file name of the log that starts after entry `base_index`.
pub fn log_file_name(base_index: u64) -> String {
    format!("{LOG_PREFIX}{base_index:020}{LOG_SUFFIX}")
}

/// The path of the log that starts after entry `base_index` in `data_dir`.
pub fn log_path(data_dir: &Path, base_index: u64) -> PathBuf {
    data_dir.join(log_file_name(base_index))
}

const LOG_PREFIX: &str = "log-";
const LOG_SUFFIX: &str = ".memdi";

/// Every log file in `data_dir` with its base index, lowest base first. Names that are not
/// `log-<digits>.memdi` (temporary files, other files) are not logs.
pub fn find_logs(data_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut logs = Vec::new();
    for dirent in std::fs::read_dir(data_dir)? {
        let dirent = dirent?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else { continue };
        let base = name
            .strip_prefix(LOG_PREFIX)
            .and_then(|rest| rest.strip_suffix(LOG_SUFFIX))
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(base) = base {
            logs.push((base, dirent.path()));
        }
    }
    logs.sort();
    Ok(logs)
}

/// Opens the log at `path` for appending, creating it if needed. Call [`recover`] first:
/// appending after a torn tail would bury it mid-file.
pub fn open_for_append(path: &Path) -> io::Result<File> {
    File::options().create(true).append(true).open(path)
}

/// Fsyncs `dir`, which makes renames and deletions in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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

    #[test]
    fn appended_records_read_back_and_logs_are_found_by_base() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path(), 42);
        let bytes = file_of(&sample_records());
        open_for_append(&path).unwrap().write_all(&bytes).unwrap();
        // Reopening appends after what is there.
        open_for_append(&path)
            .unwrap()
            .write_all(&file_of(&[b"more".to_vec()]))
            .unwrap();
        let mut expected = sample_records();
        expected.push(b"more".to_vec());
        assert_eq!(recover(&path).unwrap().records, expected);

        std::fs::write(log_path(dir.path(), 7), b"").unwrap();
        std::fs::write(dir.path().join("log-7.memdi.tmp"), b"").unwrap();
        std::fs::write(dir.path().join("log-x.memdi"), b"").unwrap();
        std::fs::write(dir.path().join("snapshot.memdi"), b"").unwrap();
        let found: Vec<u64> = find_logs(dir.path())
            .unwrap()
            .into_iter()
            .map(|(base, _)| base)
            .collect();
        assert_eq!(found, [7, 42]);
    }
}
