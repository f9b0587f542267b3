//! What one record of the append-only log says: the payload inside [`crate::log_file`]'s
//! length and CRC framing.
//!
//! The records mirror the core's `Persist` items (and the reset that starts a log after a
//! checkpoint), so that replaying them through `memdi_core::cluster::Restore` rebuilds the
//! node exactly as the simulator's disk model does. Layout: one tag byte, then fixed
//! little-endian `u64`s, then (for an entry) the command bytes up to the end of the record.
//! Fixed-width integers keep the decoder trivially bounded; the CRC around the record, not
//! this layout, is what detects damage.

use memdi_core::cluster::HardState;
use memdi_core::wire::{LogIndex, LogPosition, NodeId, Term};

const HARD_STATE: u8 = 1;
const RESET: u8 = 2;
const ENTRY: u8 = 3;
const TRUNCATE: u8 = 4;
const COMMITTED: u8 = 5;

/// One record of the log, borrowing an entry's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRecord<'a> {
    /// The term and vote.
    HardState(HardState),
    /// The log is kept from after the committed entry `base` (first record after a
    /// checkpoint), and the cluster's membership at `base` is `members` (an encoded
    /// `Membership`: the entries that set it may be gone from the log).
    Reset {
        /// The log's base.
        base: LogPosition,
        /// The membership as of the base.
        members: &'a [u8],
    },
    /// A log entry; replaces any recorded entry at or after `index`.
    Entry {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
        /// The encoded command.
        bytes: &'a [u8],
    },
    /// Entries from `from` on are gone.
    Truncate(u64),
    /// Entries through `index` are committed; the cluster clock read `cluster_time_ms`.
    Committed {
        /// The commit index.
        index: u64,
        /// The cluster clock.
        cluster_time_ms: u64,
    },
}

/// Why a record's payload could not be read (its CRC was right, so the writer and reader
/// disagree: a file from another program or version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordDecodeError {
    /// The tag byte names no record kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The payload is shorter than its kind needs.
    #[error("record too short")]
    TooShort,
}

impl<'a> LogRecord<'a> {
    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Self::HardState(state) => {
                out.push(HARD_STATE);
                push_u64(out, state.term);
                // Node ids start at 1, so 0 can stand for "no vote".
                push_u64(out, state.voted_for.map_or(0, |id| id.0));
            }
            Self::Reset { base, members } => {
                out.push(RESET);
                push_u64(out, base.index.0);
                push_u64(out, base.term.0);
                out.extend_from_slice(members);
            }
            Self::Entry { index, term, bytes } => {
                out.push(ENTRY);
                push_u64(out, index);
                push_u64(out, term);
                out.extend_from_slice(bytes);
            }
            Self::Truncate(from) => {
                out.push(TRUNCATE);
                push_u64(out, from);
            }
            Self::Committed {
                index,
                cluster_time_ms,
            } => {
                out.push(COMMITTED);
                push_u64(out, index);
                push_u64(out, cluster_time_ms);
            }
        }
    }

    /// Reads a payload written by [`LogRecord::encode`].
    pub fn decode(payload: &'a [u8]) -> Result<Self, RecordDecodeError> {
        let (&kind, rest) = payload.split_first().ok_or(RecordDecodeError::TooShort)?;
        let word = |at: usize| -> Result<u64, RecordDecodeError> {
            rest.get(at * 8..at * 8 + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(RecordDecodeError::TooShort)
        };
        Ok(match kind {
            HARD_STATE => Self::HardState(HardState {
                term: word(0)?,
                voted_for: Some(word(1)?).filter(|&id| id != 0).map(NodeId),
            }),
            RESET => Self::Reset {
                base: LogPosition {
                    index: LogIndex(word(0)?),
                    term: Term(word(1)?),
                },
                members: rest.get(16..).ok_or(RecordDecodeError::TooShort)?,
            },
            ENTRY => Self::Entry {
                index: word(0)?,
                term: word(1)?,
                bytes: &rest[16..],
            },
            TRUNCATE => Self::Truncate(word(0)?),
            COMMITTED => Self::Committed {
                index: word(0)?,
                cluster_time_ms: word(1)?,
            },
            other => return Err(RecordDecodeError::UnknownKind(other)),
        })
    }
}

fn push_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_and_short_or_unknown_payloads_are_refused() {
        let records = [
            LogRecord::HardState(HardState {
                term: 7,
                voted_for: Some(NodeId(3)),
            }),
            LogRecord::HardState(HardState {
                term: 8,
                voted_for: None,
            }),
            LogRecord::Reset {
                base: LogPosition {
                    index: LogIndex(40),
                    term: Term(6),
                },
                members: &[1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            },
            LogRecord::Entry {
                index: 41,
                term: 7,
                bytes: b"command",
            },
            LogRecord::Entry {
                index: 42,
                term: 7,
                bytes: b"",
            },
            LogRecord::Truncate(42),
            LogRecord::Committed {
                index: 41,
                cluster_time_ms: 1_700_000_000_000,
            },
        ];
        for record in records {
            let mut payload = Vec::new();
            record.encode(&mut payload);
            assert_eq!(LogRecord::decode(&payload), Ok(record));
            for cut in 0..payload.len() {
                let short = LogRecord::decode(&payload[..cut]);
                // Bytes run to the end of an entry's or a reset's record (its CRC, not this
                // layout, catches a cut there).
                let entry_body =
                    matches!(record, LogRecord::Entry { .. } | LogRecord::Reset { .. })
                        && cut >= 17;
                if !entry_body {
                    assert_eq!(
                        short,
                        Err(RecordDecodeError::TooShort),
                        "{record:?} cut {cut}"
                    );
                }
            }
        }
        assert_eq!(
            LogRecord::decode(&[99, 0, 0]),
            Err(RecordDecodeError::UnknownKind(99))
        );
    }
}
