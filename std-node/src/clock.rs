//! The node's clock: milliseconds for the core, from a monotonic source.
//!
//! The core takes time as a plain `u64` of milliseconds and compares expiry times (readings
//! of the cluster clock, which starts from this one) against it. Readings start at the wall
//! clock's Unix milliseconds when the process starts and then advance with the monotonic
//! clock: within a run they never jump, and across a restart they continue roughly where
//! the last run stopped, so a key's TTL saved in a snapshot still means the same instant.
//! (Counting from process start would make every TTL in a loaded snapshot restart from
//! zero. The core has no persisted cluster-clock reading yet; see the shell workarounds in
//! the crate documentation.)

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds for the core.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_ms: u64,
}

impl Clock {
    /// A clock reading the wall clock's Unix milliseconds now.
    pub fn start() -> Self {
        let origin_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        Self {
            origin: Instant::now(),
            origin_ms,
        }
    }

    /// The reading now.
    pub fn now_ms(&self) -> u64 {
        self.at(Instant::now())
    }

    /// The reading at `instant`.
    pub fn at(&self, instant: Instant) -> u64 {
        let elapsed = instant.saturating_duration_since(self.origin).as_millis();
        self.origin_ms + u64::try_from(elapsed).unwrap_or(u64::MAX / 2)
    }

    /// The instant of reading `ms` (now, if it has passed).
    pub fn instant_of(&self, ms: u64) -> Instant {
        let ahead = ms.saturating_sub(self.origin_ms);
        self.origin
            .checked_add(std::time::Duration::from_millis(ahead))
            .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(86_400))
    }
}
