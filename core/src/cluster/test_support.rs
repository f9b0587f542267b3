//! What the cluster's unit tests share: a small node type and its parts.

use std::vec;
use std::vec::Vec;

use super::{Log, LogLimits, Node};
use crate::store::{Store, StoreLimits};

/// A node on heap buffers with room for 8 waiting requests.
pub type TestNode = Node<Vec<u8>, Vec<u8>, 8>;

/// A store of 16 keys of up to 16 bytes each way.
pub const STORE: StoreLimits = StoreLimits {
    max_keys: 16,
    max_key_bytes: 16,
    max_value_bytes: 16,
    max_total_bytes: 1024,
};

/// A log of 16 entries within `max_bytes`.
pub const fn log_limits(max_bytes: u32) -> LogLimits {
    LogLimits {
        max_entries: 16,
        max_bytes,
    }
}

/// An empty store of [`STORE`]'s limits.
pub fn store(hash_seed: u64) -> Store<Vec<u8>> {
    Store::new(vec![0; STORE.memory_bytes().unwrap()], STORE, hash_seed).unwrap()
}

/// An empty log of `limits`.
pub fn log(limits: LogLimits) -> Log<Vec<u8>> {
    Log::new(vec![0; limits.memory_bytes()], limits).unwrap()
}
