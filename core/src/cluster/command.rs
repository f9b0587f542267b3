//! What a log entry says to do to the store.
//!
//! Entries are *state-based*: the leader executes a client request against its own store
//! (so a conditional write, a compare-and-set or an increment is decided once, by the
//! leader) and logs only the resulting change: put this value with this expiry, or delete
//! this key. Applying such an entry needs nothing but the entry, so it gives the same result
//! on every replica, including one whose store was loaded from a snapshot taken while writes
//! went on (see `snapshot_send`): replaying an entry twice changes nothing.
//!
//! An entry's bytes are postcard of [`Command`]; the leader's no-op, which a new leader
//! commits to learn its commit index, is [`Command::Noop`].

use serde::{Deserialize, Serialize};

use crate::store::{SetCondition, SetExpiry, SetOptions, Store, WriteError};
use crate::wire::{Packed, PackedIter};

/// A change to the store, as the log carries it.
///
/// VARIANT ORDER IS FROZEN: the log and snapshots on disk, and peers of other versions,
/// hold these bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command<'a> {
    /// Changes nothing: a new leader's first entry.
    Noop,
    /// Sets `key` to `value`, expiring at `expires_at_ms` on the cluster clock (or never).
    Put {
        /// The key.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
        /// The new value.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        value: &'a [u8],
        /// The expiry on the cluster clock.
        expires_at_ms: Option<u64>,
    },
    /// Removes `key`, if present.
    Delete {
        /// The key.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        key: &'a [u8],
    },
    /// Removes every key.
    Clear,
    /// Replaces the cluster's membership (an encoded
    /// [`Membership`](super::membership::Membership)). Changes nothing in the store: a
    /// node takes the membership when the entry enters its log (see `membership`).
    Members {
        /// The whole new membership, encoded.
        #[serde(borrow)]
        #[serde(serialize_with = "crate::wire::bytes::serialize")]
        members: &'a [u8],
    },
    /// Sets several keys at once (MSET), none of them expiring: one entry, so that a
    /// replica never shows half of the batch. The leader checked that the whole batch fits
    /// before applying it ([`Command::check`]).
    PutMany {
        /// Alternating key, value, key, value...: an even number of items, all `Some`.
        #[serde(borrow)]
        pairs: Packed<'a>,
    },
}

/// The `(key, value)` pairs of a [`Command::PutMany`], which it validated when made.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    items: PackedIter<'a>,
}

impl<'a> Pairs<'a> {
    /// The pairs of `packed`, if it holds an even number of items and none is `None`.
    pub fn new(packed: Packed<'a>) -> Option<Self> {
        let well_formed = packed.len() % 2 == 0 && packed.iter().all(|item| item.is_some());
        well_formed.then(|| Self {
            items: packed.iter(),
        })
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Both items exist and are `Some`: `new` checked.
        let key = self.items.next()??;
        let value = self.items.next()??;
        Some((key, value))
    }
}

/// Why a committed entry could not be applied. On a follower this means its store is
/// smaller than the leader's: the entry's change did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// The entry's bytes are not a [`Command`].
    Malformed,
    /// The store refused the change.
    Store(WriteError),
}

/// The first byte of a canonical `Command::Noop` and `Command::Members`: postcard writes the
/// variant's index as a varint, one byte for these. Asked of every entry a node appends,
/// so the other kinds are told apart by this byte instead of being decoded.
const NOOP_TAG: u8 = 0;
const MEMBERS_TAG: u8 = 4;

impl<'a> Command<'a> {
    /// The membership an entry's bytes carry, if it is a `Members` entry.
    pub fn members_in(bytes: &'a [u8]) -> Option<&'a [u8]> {
        // Any other first byte is another kind, or an overlong tag `decode` refuses.
        if bytes.first() != Some(&MEMBERS_TAG) {
            return None;
        }
        match Self::decode(bytes) {
            Ok(Command::Members { members }) => Some(members),
            _ => None,
        }
    }

    /// Whether an entry's bytes change nothing in the store (a leader's no-op, a
    /// membership change): undoing such an entry needs nothing.
    pub(crate) fn leaves_store_alone(bytes: &[u8]) -> bool {
        if bytes.first() != Some(&NOOP_TAG) && bytes.first() != Some(&MEMBERS_TAG) {
            return false;
        }
        matches!(
            Command::decode(bytes),
            Ok(Command::Noop | Command::Members { .. })
        )
    }

    /// Decodes an entry's bytes. Only the canonical encoding is accepted (postcard also
    /// reads overlong varints), so that a change has one byte form in every log and snapshot.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ApplyError> {
        match postcard::take_from_bytes::<Command<'a>>(bytes) {
            Ok((command, [])) if command.encoded_len() == bytes.len() => Ok(command),
            _ => Err(ApplyError::Malformed),
        }
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }

    /// Encodes into `out`, which must be [`Command::encoded_len`] bytes.
    pub fn encode(&self, out: &mut [u8]) {
        // The length was measured with the same serializer, so this cannot fail.
        let written = postcard::to_slice(self, out).map(|bytes| bytes.len());
        debug_assert_eq!(
            written,
            Ok(out.len()),
            "encode given a buffer of the wrong size"
        );
    }

    /// Checks, changing nothing, that applying the change would succeed, for a change that
    /// could otherwise fail halfway ([`Command::PutMany`]); a single put or delete either
    /// happens whole or not at all, so it passes.
    pub fn check<M: AsRef<[u8]> + AsMut<[u8]>>(&self, store: &Store<M>) -> Result<(), ApplyError> {
        match *self {
            Command::PutMany { pairs } => {
                let pairs = Pairs::new(pairs).ok_or(ApplyError::Malformed)?;
                store.check_puts(pairs).map_err(ApplyError::Store)
            }
            _ => Ok(()),
        }
    }

    /// Applies the change. Expiry is never evaluated here (`now_ms` 0): whether a key has
    /// expired is the leader's decision, logged as a `Delete`.
    pub fn apply<M: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        store: &mut Store<M>,
    ) -> Result<(), ApplyError> {
        match *self {
            Command::Noop => Ok(()),
            Command::Put {
                key,
                value,
                expires_at_ms,
            } => {
                let options = SetOptions {
                    condition: SetCondition::Always,
                    expiry: expires_at_ms.map_or(SetExpiry::Clear, SetExpiry::At),
                };
                store
                    .set(key, value, options, 0)
                    .map(|_| ())
                    .map_err(ApplyError::Store)
            }
            Command::Delete { key } => {
                store.delete(key, 0);
                Ok(())
            }
            Command::Clear => {
                store.clear();
                Ok(())
            }
            Command::Members { .. } => Ok(()),
            Command::PutMany { pairs } => {
                let options = SetOptions {
                    condition: SetCondition::Always,
                    expiry: SetExpiry::Clear,
                };
                for (key, value) in Pairs::new(pairs).ok_or(ApplyError::Malformed)? {
                    store
                        .set(key, value, options, 0)
                        .map_err(ApplyError::Store)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `members_in` and `leaves_store_alone` answered before they looked at the
    /// first byte: a full decode.
    fn by_decoding(bytes: &[u8]) -> (Option<&[u8]>, bool) {
        let decoded = Command::decode(bytes);
        let members = match decoded {
            Ok(Command::Members { members }) => Some(members),
            _ => None,
        };
        let alone = matches!(decoded, Ok(Command::Noop | Command::Members { .. }));
        (members, alone)
    }

    #[test]
    fn the_first_byte_shortcuts_answer_as_a_full_decode_does() {
        let commands = [
            Command::Noop,
            Command::Put {
                key: b"k",
                value: b"v",
                expires_at_ms: Some(300),
            },
            Command::Delete { key: b"k" },
            Command::Clear,
            Command::Members { members: b"abc" },
        ];
        let mut cases: [[u8; 16]; 8] = [[0; 16]; 8];
        let mut lens = [0usize; 8];
        for (i, command) in commands.iter().enumerate() {
            lens[i] = command.encoded_len();
            command.encode(&mut cases[i][..lens[i]]);
        }
        assert_eq!(cases[0][0], NOOP_TAG);
        assert_eq!(cases[4][0], MEMBERS_TAG);
        // Overlong tags (refused by `decode`), a truncated `Members`, nothing at all.
        cases[5][..3].copy_from_slice(&[0x84, 0x00, 0x00]);
        lens[5] = 3;
        cases[6][..2].copy_from_slice(&[0x80, 0x00]);
        lens[6] = 2;
        cases[7][0] = MEMBERS_TAG;
        lens[7] = 1;
        let mut all: [&[u8]; 9] = [&[]; 9];
        for i in 0..8 {
            all[i] = &cases[i][..lens[i]];
        }
        for bytes in all {
            let (members, alone) = by_decoding(bytes);
            assert_eq!(Command::members_in(bytes), members, "{bytes:?}");
            assert_eq!(Command::leaves_store_alone(bytes), alone, "{bytes:?}");
        }
        // Every two-byte string.
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                let bytes = [first, second];
                let (members, alone) = by_decoding(&bytes);
                assert_eq!(Command::members_in(&bytes), members, "{bytes:?}");
                assert_eq!(Command::leaves_store_alone(&bytes), alone, "{bytes:?}");
            }
        }
    }
}
