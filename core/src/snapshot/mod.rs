//! The snapshot codec: a whole store as one stream of bytes, and back.
//!
//! The same bytes go to disk, over the wire to a joining or lagging follower, and later to
//! flash, so the codec streams in both directions through caller-sized chunks and never
//! needs the whole snapshot, or even a whole entry, in memory:
//!
//! - [`SnapshotEncoder::fill`] writes the next bytes into a caller buffer of any size;
//! - [`SnapshotDecoder::feed`] takes chunks cut anywhere and writes each key and value
//!   straight into the target store's arena; [`SnapshotDecoder::finish`] is the only way
//!   to learn that a snapshot loaded.
//!
//! A decoder writes entries into the store before it has seen the checksum at the end, so
//! on any error (a cut, a flipped bit, a snapshot too large for the store) it clears the
//! store: a damaged snapshot is never loaded silently, in part or in whole. Load into a
//! fresh store and swap it in on success when the old contents must survive a failure.
//!
//! The byte format is described in [`format`](self::format).

mod decode;
mod encode;
pub mod format;

pub use decode::{SnapshotDecodeError, SnapshotDecoder};
pub use encode::{SnapshotEncodeError, SnapshotEncoder};
pub use format::{SnapshotMeta, FORMAT_VERSION, SNAPSHOT_MAGIC, TRAILER_MAGIC};
