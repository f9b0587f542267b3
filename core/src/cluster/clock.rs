//! The cluster clock: the time expiry is measured against, the same on every node.
//!
//! Nodes have no common wall clock (a board may have none at all), so TTLs cannot be
//! absolute wall-clock times. Instead the leader keeps a *cluster clock*: its own monotonic
//! clock plus an offset, sent with every `Append`. A follower sets its offset so that its
//! clock reads what the leader's said; a new leader continues from the time it last saw, and
//! the clock never runs backwards on any node. An expiry time is a reading of this clock,
//! and keys are removed only by deletes the leader logs when its reading passes their time,
//! so every replica removes the same keys at the same point of the log.

/// A node's view of the cluster clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ClusterClock {
    /// Added to the node's own clock.
    offset_ms: i64,
    /// The highest reading given or seen: readings never go below it.
    floor_ms: u64,
}

impl ClusterClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The reading at local time `local_ms`.
    pub fn now(&mut self, local_ms: u64) -> u64 {
        let reading = (i128::from(local_ms) + i128::from(self.offset_ms)).max(0) as u64;
        self.floor_ms = self.floor_ms.max(reading);
        self.floor_ms
    }

    /// The highest reading given or seen.
    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }

    /// A leader said the cluster clock reads `cluster_ms` at local time `local_ms`.
    pub fn observe(&mut self, local_ms: u64, cluster_ms: u64) {
        self.offset_ms = (i128::from(cluster_ms) - i128::from(local_ms))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        self.floor_ms = self.floor_ms.max(cluster_ms);
    }
}
