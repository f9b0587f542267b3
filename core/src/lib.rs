//! memdi-core: the part of memdi that every node runs, on a Linux server or on a board.
//!
//! The core is `no_std`, sans-IO and allocation-free: it never reads a clock, never draws
//! randomness from the OS, never touches a socket or a file, and never allocates. Time comes
//! in as a value (milliseconds, parameters named `now_ms`), memory comes in as caller-owned
//! buffers, and every capacity is a number fixed at construction, so that a full store or a
//! full queue is an explicit error rather than a panic or a silent loss.
//!
//! - [`auth`]: the password gate of client connections (`--requirepass`).
//! - [`store`]: the fixed-capacity hash store that holds the keys.
//! - [`snapshot`]: the streaming snapshot codec (disk, wire and flash share its bytes).
//! - [`wire`]: postcard messages and the length-prefixed framing of byte streams.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod auth;
pub mod cluster;
pub mod peer_auth;
pub mod snapshot;
pub mod store;
pub mod wire;
