//! memdi's test machinery: the cluster simulator, the multi-process tests and the checkers
//! that judge the histories they record.
//!
//! This crate is never published and never runs in production, so it uses `std` freely; the
//! code under test lives in the other workspace crates.

pub mod linearizability;
