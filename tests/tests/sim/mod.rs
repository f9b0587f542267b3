//! The deterministic cluster simulator: nodes, network, clients and faults of one run, all
//! drawn from the run's seed, in one thread on a virtual clock.

pub mod cluster;
pub mod disk;
pub mod faults;
pub mod net;
pub mod rng;
pub mod run;
pub mod workload;
