//! What a fault run prints: operations by outcome, faults by kind, `leader`-acknowledged
//! writes lost, and how long the cluster took to take `quorum` writes again after each heal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use memdi_tests::linearizability::{History, Op, Outcome, Output};

use super::nemesis::Event;

/// Counts of operations by kind and outcome.
pub fn operations_by_outcome(history: &History) -> String {
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for operation in history.operations() {
        let kind = match operation.op {
            Op::Get => "read",
            Op::Put { .. } => "write",
            Op::CompareAndSet { .. } => "cas",
            _ => "other",
        };
        let outcome = match &operation.outcome {
            Outcome::Ok {
                output: Output::Cas(memdi_tests::linearizability::CasOutput::Mismatch { .. }),
                ..
            } => "ok (version mismatch)",
            Outcome::Ok { .. } => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        *counts.entry((kind, outcome)).or_default() += 1;
    }
    let mut out = String::new();
    for ((kind, outcome), count) in counts {
        let _ = writeln!(out, "  {kind:<6} {outcome:<22} {count:>8}");
    }
    out
}

/// Faults by kind (a combination counts once under its own name).
pub fn faults_by_kind(events: &[Event]) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        let name = event
            .kinds
            .iter()
            .map(|kind| format!("{kind:?}"))
            .collect::<Vec<_>>()
            .join("+");
        *counts.entry(name).or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The availability figures of one fault, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// From the heal to the first `quorum` write (or CAS) that succeeded after it.
    pub after_heal_ms: f64,
    /// The longest time without a successful write, from the fault's start to that write.
    pub longest_gap_ms: f64,
}

/// For each fault, how long writes stopped; `None` for a fault no successful write followed.
pub fn recovery(events: &[Event], history: &History) -> Vec<Option<Recovery>> {
    let writes = successful_write_returns(history);
    events
        .iter()
        .map(|event| {
            let after = writes.partition_point(|time| *time < event.heal_us);
            let next = *writes.get(after)?;
            let first = writes.partition_point(|time| *time < event.start_us);
            let mut longest = 0;
            let mut previous = event.start_us;
            for time in &writes[first..=after] {
                longest = longest.max(time - previous);
                previous = *time;
            }
            Some(Recovery {
                after_heal_ms: (next - event.heal_us) as f64 / 1000.0,
                longest_gap_ms: longest as f64 / 1000.0,
            })
        })
        .collect()
}

/// When each successful `quorum` write or CAS returned, in order.
fn successful_write_returns(history: &History) -> Vec<u64> {
    let mut writes: Vec<u64> = history
        .operations()
        .iter()
        .filter(|operation| !matches!(operation.op, Op::Get))
        .filter_map(|operation| match &operation.outcome {
            Outcome::Ok {
                return_time,
                output: Output::Ok { .. } | Output::Cas(_),
            } => Some(*return_time),
            _ => None,
        })
        .collect();
    writes.sort_unstable();
    writes
}

/// p50, p99 and max of `values`, formatted.
pub fn percentiles(values: &[f64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (over {})",
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1],
        sorted.len()
    )
}

/// The history, one operation a line, for a failing run's files.
pub fn history_text(history: &History) -> String {
    let mut out = String::new();
    for (index, operation) in history.operations().iter().enumerate() {
        let _ = writeln!(
            out,
            "{index} client {} key {} call {} us {:?} -> {:?}",
            operation.client,
            String::from_utf8_lossy(&operation.key),
            operation.call_time,
            operation.op,
            operation.outcome
        );
    }
    out
}

/// Each fault: when it began and was healed, what it did, and the recovery after it.
pub fn faults_text(events: &[Event], recovery: &[Option<Recovery>]) -> String {
    let mut out = String::new();
    for (event, recovery) in events.iter().zip(recovery) {
        let _ = writeln!(
            out,
            "{:>9.3} s to {:>9.3} s  {:?}: {}; {}",
            event.start_us as f64 / 1e6,
            event.heal_us as f64 / 1e6,
            event.kinds,
            event.detail,
            recovery.map_or(
                "no quorum write succeeded after it".into(),
                |recovery| format!(
                "next quorum write {:.0} ms after the heal, longest gap between writes {:.0} ms",
                recovery.after_heal_ms, recovery.longest_gap_ms
            )
            )
        );
    }
    out
}
