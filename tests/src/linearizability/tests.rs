//! Tests of the checker: hand-made histories whose verdict is known, histories generated from
//! a truly linearizable store (which must pass) and the same with one read corrupted (which
//! must fail), the search budget, and the speed on long histories.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------------------------
// Helpers: most tests use one key, "k".

fn put(value: &str) -> Op {
    Op::Put {
        value: value.as_bytes().to_vec(),
    }
}

fn cas(expected_version: u64, value: &str) -> Op {
    Op::CompareAndSet {
        expected_version,
        value: value.as_bytes().to_vec(),
    }
}

fn incr(delta: i64) -> Op {
    Op::IncrBy { delta }
}

fn stored(version: u64) -> Output {
    Output::Ok {
        version: Some(version),
    }
}

fn stored_unreported() -> Output {
    Output::Ok { version: None }
}

fn value(value: &str, version: u64) -> Output {
    Output::Value(Some((value.as_bytes().to_vec(), version)))
}

fn absent() -> Output {
    Output::Value(None)
}

fn cas_ok(version: u64) -> Output {
    Output::Cas(CasOutput::Ok {
        version: Some(version),
    })
}

fn cas_mismatch(current_version: u64) -> Output {
    Output::Cas(CasOutput::Mismatch { current_version })
}

/// A history under construction, on key "k" unless a method says otherwise.
#[derive(Default)]
struct Builder {
    history: History,
}

impl Builder {
    fn ok(&mut self, client: u64, op: Op, call: u64, ret: u64, output: Output) -> &mut Self {
        self.ok_on(b"k", client, op, call, ret, output)
    }

    fn ok_on(
        &mut self,
        key: &[u8],
        client: u64,
        op: Op,
        call: u64,
        ret: u64,
        output: Output,
    ) -> &mut Self {
        self.history.push(Operation {
            client,
            key: key.to_vec(),
            op,
            call_time: call,
            outcome: Outcome::Ok {
                output,
                return_time: ret,
            },
        });
        self
    }

    fn unknown(&mut self, client: u64, op: Op, call: u64) -> &mut Self {
        self.history.push(Operation {
            client,
            key: b"k".to_vec(),
            op,
            call_time: call,
            outcome: Outcome::Unknown,
        });
        self
    }

    fn failed(&mut self, client: u64, op: Op, call: u64) -> &mut Self {
        self.history.push(Operation {
            client,
            key: b"k".to_vec(),
            op,
            call_time: call,
            outcome: Outcome::Failed,
        });
        self
    }

    fn check(&self) -> CheckResult {
        check(&self.history, Limits::default())
    }

    #[track_caller]
    fn assert_linearizable(&self) {
        let result = self.check();
        assert!(result.is_linearizable(), "{result}");
    }

    /// Asserts a failure and returns the explanation.
    #[track_caller]
    fn assert_not_linearizable(&self) -> String {
        match self.check() {
            CheckResult::NotLinearizable { explanation, .. } => explanation,
            other => panic!("expected NotLinearizable, got {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reads and writes.

#[test]
fn empty_history_is_linearizable() {
    Builder::default().assert_linearizable();
}

#[test]
fn sequential_history_passes() {
    Builder::default()
        .ok(1, Op::Get, 0, 1, absent())
        .ok(1, put("a"), 2, 3, stored(4))
        .ok(2, Op::Get, 4, 5, value("a", 4))
        .ok(1, put("b"), 6, 7, stored(9))
        .ok(2, Op::Get, 8, 9, value("b", 9))
        .ok(2, Op::Delete, 10, 11, Output::Deleted(true))
        .ok(1, Op::Get, 12, 13, absent())
        .assert_linearizable();
}

#[test]
fn stale_read_after_completed_write_fails() {
    let explanation = Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(1, put("b"), 2, 3, stored(2))
        .ok(2, Op::Get, 4, 5, value("a", 1))
        .assert_not_linearizable();
    assert!(
        explanation.contains(r#"Get -> "a" version 1"#),
        "{explanation}"
    );
}

#[test]
fn read_concurrent_with_write_may_see_either_value() {
    for seen in [value("a", 1), value("b", 2)] {
        Builder::default()
            .ok(1, put("a"), 0, 1, stored(1))
            .ok(1, put("b"), 2, 10, stored(2))
            .ok(2, Op::Get, 5, 6, seen)
            .assert_linearizable();
    }
}

#[test]
fn read_of_a_value_never_written_fails() {
    Builder::default()
        .ok(1, put("a"), 0, 10, stored(1))
        .ok(2, Op::Get, 5, 6, value("z", 1))
        .assert_not_linearizable();
    // Nor from the initial state.
    Builder::default()
        .ok(2, Op::Get, 5, 6, value("z", 1))
        .assert_not_linearizable();
}

#[test]
fn new_then_old_value_fails_but_concurrent_reads_may_disagree() {
    // The write of "b" is still running, but once a read has returned "b", a read that starts
    // afterwards cannot see "a" again.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(1, put("b"), 2, 20, stored(2))
        .ok(2, Op::Get, 3, 4, value("b", 2))
        .ok(3, Op::Get, 5, 6, value("a", 1))
        .assert_not_linearizable();
    // Overlapping reads: the second may linearize first.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(1, put("b"), 2, 20, stored(2))
        .ok(2, Op::Get, 3, 6, value("b", 2))
        .ok(3, Op::Get, 5, 8, value("a", 1))
        .assert_linearizable();
}

#[test]
fn intervals_are_closed() {
    // A read called at the very tick a write returns is concurrent with it.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(1, put("b"), 2, 10, stored(2))
        .ok(2, Op::Get, 10, 12, value("a", 1))
        .assert_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(1, put("b"), 2, 10, stored(2))
        .ok(2, Op::Get, 11, 12, value("a", 1))
        .assert_not_linearizable();
}

#[test]
fn keys_are_independent() {
    let mut history = Builder::default();
    history
        .ok_on(b"x", 1, put("a"), 0, 1, stored(1))
        .ok_on(b"y", 1, put("b"), 2, 3, stored(2))
        .ok_on(b"x", 2, Op::Get, 4, 5, value("a", 1))
        .ok_on(b"y", 2, Op::Get, 4, 5, value("b", 2));
    history.assert_linearizable();
    // Reading x's value under y.
    history.ok_on(b"y", 3, Op::Get, 6, 7, value("a", 1));
    match history.check() {
        CheckResult::NotLinearizable { key, .. } => assert_eq!(key, b"y"),
        other => panic!("{other}"),
    }
}

#[test]
fn failed_operations_are_dropped() {
    Builder::default()
        .failed(1, put("x"), 0)
        .ok(2, Op::Get, 5, 6, absent())
        .assert_linearizable();
    Builder::default()
        .failed(1, put("x"), 0)
        .ok(2, Op::Get, 5, 6, value("x", 1))
        .assert_not_linearizable();
}

#[test]
fn mismatched_output_can_never_be_placed() {
    Builder::default()
        .ok(1, Op::Get, 0, 1, Output::Deleted(false))
        .assert_not_linearizable();
}

// ---------------------------------------------------------------------------------------------
// Versions.

#[test]
fn read_must_see_the_version_its_write_reported() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(2, Op::Get, 2, 3, value("a", 6))
        .assert_not_linearizable();
}

#[test]
fn versions_need_not_be_consecutive_but_must_increase() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, put("b"), 2, 3, stored(90))
        .ok(2, Op::Get, 4, 5, value("b", 90))
        .assert_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, put("b"), 2, 3, stored(3))
        .assert_not_linearizable();
    // Even across a delete: the counter is store-wide and never goes back.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, Op::Delete, 2, 3, Output::Deleted(true))
        .ok(1, put("b"), 4, 5, stored(5))
        .assert_not_linearizable();
    // Concurrent writes may report their versions in either order.
    Builder::default()
        .ok(1, put("a"), 0, 10, stored(7))
        .ok(2, put("b"), 0, 10, stored(6))
        .ok(3, Op::Get, 11, 12, value("a", 7))
        .assert_linearizable();
}

#[test]
fn an_unreported_version_is_learned_from_the_first_read() {
    // Any version above the last known one fits...
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, put("b"), 2, 3, stored_unreported())
        .ok(2, Op::Get, 4, 5, value("b", 8))
        .ok(3, Op::Get, 6, 7, value("b", 8))
        .assert_linearizable();
    // ...but then every read must agree,
    Builder::default()
        .ok(1, put("b"), 2, 3, stored_unreported())
        .ok(2, Op::Get, 4, 5, value("b", 8))
        .ok(3, Op::Get, 6, 7, value("b", 9))
        .assert_not_linearizable();
    // and it must be above the versions before it.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, put("b"), 2, 3, stored_unreported())
        .ok(2, Op::Get, 4, 5, value("b", 5))
        .assert_not_linearizable();
    // A present key never has version 0.
    Builder::default()
        .ok(1, put("b"), 2, 3, stored_unreported())
        .ok(2, Op::Get, 4, 5, value("b", 0))
        .assert_not_linearizable();
}

#[test]
fn increments_have_unknown_versions() {
    Builder::default()
        .ok(1, incr(1), 0, 1, Output::Integer(1))
        .ok(2, Op::Get, 2, 3, value("1", 17))
        .ok(1, put("x"), 4, 5, stored(18))
        .assert_linearizable();
    Builder::default()
        .ok(1, incr(1), 0, 1, Output::Integer(1))
        .ok(2, Op::Get, 2, 3, value("1", 17))
        .ok(1, put("x"), 4, 5, stored(17))
        .assert_not_linearizable();
}

// ---------------------------------------------------------------------------------------------
// Compare-and-set.

#[test]
fn cas_succeeds_only_on_the_current_version() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, cas(5, "b"), 2, 3, cas_ok(8))
        .ok(2, Op::Get, 4, 5, value("b", 8))
        .assert_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, cas(4, "b"), 2, 3, cas_ok(8))
        .assert_not_linearizable();
    // 0 means "absent".
    Builder::default()
        .ok(1, cas(0, "a"), 0, 1, cas_ok(1))
        .ok(1, cas(0, "b"), 2, 3, cas_mismatch(1))
        .ok(2, Op::Get, 4, 5, value("a", 1))
        .assert_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, cas(0, "b"), 2, 3, cas_ok(8))
        .assert_not_linearizable();
}

#[test]
fn cas_mismatch_reports_the_current_version() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, cas(4, "b"), 2, 3, cas_mismatch(5))
        .ok(2, Op::Get, 4, 5, value("a", 5))
        .assert_linearizable();
    for wrong in [4, 6] {
        Builder::default()
            .ok(1, put("a"), 0, 1, stored(5))
            .ok(1, cas(4, "b"), 2, 3, cas_mismatch(wrong))
            .assert_not_linearizable();
    }
    // An absent key mismatches with version 0, and only when 0 was not expected.
    Builder::default()
        .ok(1, cas(3, "b"), 2, 3, cas_mismatch(0))
        .assert_linearizable();
    Builder::default()
        .ok(1, cas(0, "b"), 2, 3, cas_mismatch(0))
        .assert_not_linearizable();
    // A mismatch changes nothing.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(1, cas(4, "b"), 2, 3, cas_mismatch(5))
        .ok(2, Op::Get, 4, 5, value("b", 5))
        .assert_not_linearizable();
}

#[test]
fn concurrent_cas_on_the_same_version_cannot_both_win() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(2, cas(5, "b"), 2, 10, cas_ok(6))
        .ok(3, cas(5, "c"), 2, 10, cas_ok(7))
        .assert_not_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .ok(2, cas(5, "b"), 2, 10, cas_ok(7))
        .ok(3, cas(5, "c"), 2, 10, cas_mismatch(7))
        .ok(4, Op::Get, 11, 12, value("b", 7))
        .assert_linearizable();
}

#[test]
fn cas_learns_an_unreported_version() {
    // The put's version was not reported; the CAS's success says it was 7.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored_unreported())
        .ok(1, cas(7, "b"), 2, 3, cas_ok(9))
        .ok(2, Op::Get, 4, 5, value("b", 9))
        .assert_linearizable();
    // A read had already seen version 6.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored_unreported())
        .ok(2, Op::Get, 2, 3, value("a", 6))
        .ok(1, cas(7, "b"), 4, 5, cas_ok(9))
        .assert_not_linearizable();
    // A mismatch pins it too.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored_unreported())
        .ok(1, cas(3, "b"), 2, 3, cas_mismatch(6))
        .ok(2, Op::Get, 4, 5, value("a", 7))
        .assert_not_linearizable();
    // The new version must exceed the matched one.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored_unreported())
        .ok(1, cas(7, "b"), 2, 3, cas_ok(7))
        .assert_not_linearizable();
}

// ---------------------------------------------------------------------------------------------
// IncrBy.

#[test]
fn increments_accumulate() {
    Builder::default()
        .ok(1, incr(1), 0, 1, Output::Integer(1))
        .ok(2, incr(2), 2, 3, Output::Integer(3))
        .ok(1, incr(-10), 4, 5, Output::Integer(-7))
        .ok(2, Op::Get, 6, 7, value("-7", 30))
        .assert_linearizable();
    Builder::default()
        .ok(1, incr(1), 0, 1, Output::Integer(1))
        .ok(2, incr(2), 2, 3, Output::Integer(2))
        .assert_not_linearizable();
    // Concurrent increments may come back in either order, but not as a lost update.
    Builder::default()
        .ok(1, incr(1), 0, 10, Output::Integer(2))
        .ok(2, incr(1), 0, 10, Output::Integer(1))
        .assert_linearizable();
    Builder::default()
        .ok(1, incr(1), 0, 10, Output::Integer(1))
        .ok(2, incr(1), 0, 10, Output::Integer(1))
        .assert_not_linearizable();
}

#[test]
fn increments_start_from_the_stored_decimal() {
    Builder::default()
        .ok(1, put("10"), 0, 1, stored(1))
        .ok(1, incr(5), 2, 3, Output::Integer(15))
        .assert_linearizable();
    // Not canonical decimals: INCRBY refuses them.
    for text in ["abc", "010", "+1", "-0", " 1", ""] {
        Builder::default()
            .ok(1, put(text), 0, 1, stored(1))
            .ok(1, incr(5), 2, 3, Output::NotAnInteger)
            .ok(2, Op::Get, 4, 5, value(text, 1))
            .assert_linearizable();
        Builder::default()
            .ok(1, put(text), 0, 1, stored(1))
            .ok(1, incr(5), 2, 3, Output::Integer(5))
            .assert_not_linearizable();
    }
    Builder::default()
        .ok(1, incr(5), 2, 3, Output::NotAnInteger)
        .assert_not_linearizable();
}

#[test]
fn increment_overflow_changes_nothing() {
    Builder::default()
        .ok(1, incr(i64::MAX), 0, 1, Output::Integer(i64::MAX))
        .ok(1, incr(1), 2, 3, Output::Overflow)
        .ok(1, incr(-1), 4, 5, Output::Integer(i64::MAX - 1))
        .assert_linearizable();
    Builder::default()
        .ok(1, incr(1), 2, 3, Output::Overflow)
        .assert_not_linearizable();
}

// ---------------------------------------------------------------------------------------------
// Delete.

#[test]
fn delete_reports_whether_a_live_key_was_removed() {
    Builder::default()
        .ok(1, Op::Delete, 0, 1, Output::Deleted(false))
        .ok(1, put("a"), 2, 3, stored(1))
        .ok(1, Op::Delete, 4, 5, Output::Deleted(true))
        .ok(2, Op::Get, 6, 7, absent())
        .ok(2, Op::Delete, 8, 9, Output::Deleted(false))
        .assert_linearizable();
    Builder::default()
        .ok(1, Op::Delete, 0, 1, Output::Deleted(true))
        .assert_not_linearizable();
    Builder::default()
        .ok(1, put("a"), 2, 3, stored(1))
        .ok(1, Op::Delete, 4, 5, Output::Deleted(false))
        .assert_not_linearizable();
    Builder::default()
        .ok(1, put("a"), 2, 3, stored(1))
        .ok(1, Op::Delete, 4, 5, Output::Deleted(true))
        .ok(2, Op::Get, 6, 7, value("a", 1))
        .assert_not_linearizable();
    // Two concurrent deletes of one live key: only one removes it.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(1, Op::Delete, 2, 9, Output::Deleted(true))
        .ok(2, Op::Delete, 2, 9, Output::Deleted(true))
        .assert_not_linearizable();
}

// ---------------------------------------------------------------------------------------------
// Outcome-unknown operations.

#[test]
fn unknown_write_may_take_effect_later() {
    // Observed long after the client gave up on it.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .unknown(1, put("b"), 2)
        .ok(2, Op::Get, 10, 11, value("a", 1))
        .ok(2, Op::Get, 50, 51, value("b", 9))
        .ok(2, Op::Get, 60, 61, value("b", 9))
        .assert_linearizable();
}

#[test]
fn unknown_write_may_never_take_effect() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .unknown(1, put("b"), 2)
        .unknown(1, Op::Delete, 3)
        .unknown(1, cas(1, "c"), 4)
        .unknown(1, incr(1), 5)
        .ok(2, Op::Get, 10, 11, value("a", 1))
        .ok(2, Op::Get, 50, 51, value("a", 1))
        .assert_linearizable();
}

#[test]
fn unknown_write_cannot_be_seen_before_its_call() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(2, Op::Get, 2, 3, value("b", 2))
        .unknown(1, put("b"), 5)
        .assert_not_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(2, Op::Get, 2, 3, value("b", 2))
        .unknown(1, put("b"), 3)
        .assert_linearizable();
}

#[test]
fn unknown_write_cannot_be_undone() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .unknown(1, put("b"), 2)
        .ok(2, Op::Get, 10, 11, value("b", 5))
        .ok(2, Op::Get, 12, 13, value("a", 1))
        .assert_not_linearizable();
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    Builder::default()
        .unknown(1, incr(1), 0)
        .ok(2, Op::Get, 10, 11, value("1", 3))
        .ok(2, Op::Get, 12, 13, value("2", 4))
        .assert_not_linearizable();
}

#[test]
fn unknown_cas_and_incr_follow_the_model() {
    // A CAS expecting the wrong version cannot have happened...
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .unknown(1, cas(4, "b"), 2)
        .ok(2, Op::Get, 10, 11, value("b", 9))
        .assert_not_linearizable();
    // ...one expecting the right one may have.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .unknown(1, cas(5, "b"), 2)
        .ok(2, Op::Get, 10, 11, value("b", 9))
        .assert_linearizable();
    Builder::default()
        .ok(1, put("10"), 0, 1, stored(5))
        .unknown(1, incr(5), 2)
        .ok(2, Op::Get, 10, 11, value("15", 9))
        .assert_linearizable();
    Builder::default()
        .ok(1, put("10"), 0, 1, stored(5))
        .unknown(1, incr(5), 2)
        .ok(2, Op::Get, 10, 11, value("16", 9))
        .assert_not_linearizable();
    // An unknown delete can explain an absent read, but not a value coming back.
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .unknown(1, Op::Delete, 2)
        .ok(2, Op::Get, 10, 11, absent())
        .assert_linearizable();
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(5))
        .unknown(1, Op::Delete, 2)
        .ok(2, Op::Get, 10, 11, absent())
        .ok(2, Op::Get, 12, 13, value("a", 5))
        .assert_not_linearizable();
}

#[test]
fn many_unknown_writes_stay_cheap() {
    // 200 timed-out puts that never took effect, among completed reads: without the
    // dominance cache and the blind-write rule this is 2^200 orders.
    let mut history = Builder::default();
    history.ok(0, put("a"), 0, 1, stored(1));
    for i in 0..200 {
        let time = 10 + 10 * i;
        history.unknown(1 + i % 5, put(&format!("lost{i}")), time);
        history.ok(9, Op::Get, time + 1, time + 2, value("a", 1));
    }
    history.ok(9, Op::Get, 5000, 5001, value("lost7", 300));
    let start = Instant::now();
    history.assert_linearizable();
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    // And one that cannot be explained: a lost write seen, then an older value.
    history.ok(9, Op::Get, 5002, 5003, value("a", 1));
    let start = Instant::now();
    history.assert_not_linearizable();
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
}

#[test]
fn unknown_reads_are_dropped() {
    Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .unknown(2, Op::Get, 2)
        .assert_linearizable();
}

// ---------------------------------------------------------------------------------------------
// The API: builder, explanations, budget.

#[test]
fn invoke_complete_and_fail_record_outcomes() {
    let mut history = History::new();
    let write = history.invoke(1, "k", put("a"), 0);
    let lost = history.invoke(2, "k", put("b"), 1);
    let refused = history.invoke(3, "k", put("c"), 2);
    let read = history.invoke(3, "k", Op::Get, 3);
    history.complete(write, stored(1), 4);
    history.fail(refused);
    history.complete(read, value("b", 2), 5);
    assert_eq!(history.len(), 4);
    assert_eq!(history.operations()[lost.index()].outcome, Outcome::Unknown);
    assert_eq!(
        history.operations()[refused.index()].outcome,
        Outcome::Failed
    );
    assert!(check(&history, Limits::default()).is_linearizable());

    let read_c = history.invoke(4, "k", Op::Get, 6);
    history.complete(read_c, value("c", 3), 7);
    assert!(!check(&history, Limits::default()).is_linearizable());
}

#[test]
#[should_panic(expected = "before its call")]
fn completing_before_the_call_panics() {
    let mut history = History::new();
    let id = history.invoke(1, "k", Op::Get, 10);
    history.complete(id, absent(), 9);
}

#[test]
fn explanation_shows_the_history_and_the_longest_prefix() {
    let explanation = Builder::default()
        .ok(1, put("a"), 0, 1, stored(1))
        .ok(2, put("b"), 2, 3, stored(2))
        .unknown(3, put("c"), 2)
        .ok(1, Op::Get, 4, 5, value("b", 2))
        .ok(2, Op::Get, 6, 7, value("a", 1))
        .assert_not_linearizable();
    for expected in [
        r#"key "k""#,
        "#0 ",
        "#2 ",
        "#4 ",
        r#"Put "c" -> outcome unknown"#,
        "Longest linearizable prefix found (3 operations",
        r#"=> "b" version 2"#,
        r#"From state "b" version 2"#,
        "inconsistent with this state",
    ] {
        assert!(
            explanation.contains(expected),
            "missing {expected:?} in:\n{explanation}"
        );
    }
}

#[test]
fn the_smallest_failing_key_is_reported() {
    let mut history = Builder::default();
    for i in 0..5 {
        history.ok_on(b"big", 1, put("a"), 10 * i, 10 * i + 1, stored(i + 1));
    }
    history.ok_on(b"big", 2, Op::Get, 100, 101, absent());
    history.ok_on(b"small", 1, put("a"), 0, 1, stored(1));
    history.ok_on(b"small", 2, Op::Get, 2, 3, absent());
    match history.check() {
        CheckResult::NotLinearizable { key, .. } => assert_eq!(key, b"small"),
        other => panic!("{other}"),
    }
}

/// Forty concurrent puts and a read of one of their values with version 0, which no present
/// key has: every subset of the puts, with each possible last one, is a distinct
/// configuration, and all must fail before the search can give up, so only the budget ends
/// it. (A read of a value no put wrote would be caught before searching.)
fn pathological() -> Builder {
    let mut history = Builder::default();
    for client in 0..40 {
        history.ok(
            client,
            put(&format!("v{client}")),
            0,
            100,
            stored_unreported(),
        );
    }
    history.ok(99, Op::Get, 200, 201, value("v0", 0));
    history
}

#[test]
fn exhausted_budget_gives_unknown() {
    let history = pathological();
    let limits = Limits {
        max_states_per_key: 20_000,
    };
    let start = Instant::now();
    let result = check(&history.history, limits);
    assert_eq!(result, CheckResult::Unknown { key: b"k".to_vec() });
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
    // A definite failure on another key still wins over the unknown one.
    let mut history = history;
    history.ok_on(b"other", 1, put("a"), 0, 1, stored(1)).ok_on(
        b"other",
        1,
        Op::Get,
        2,
        3,
        absent(),
    );
    match check(&history.history, limits) {
        CheckResult::NotLinearizable { key, .. } => assert_eq!(key, b"other"),
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Generated histories.

/// SplitMix64: a tiny deterministic generator, so that a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How a generated operation ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Completes,
    Refused,
    /// Outcome unknown; `true` if it took effect.
    Lost(bool),
}

struct Planned {
    client: u64,
    key: Vec<u8>,
    kind: u64,
    call: u64,
    ret: u64,
    /// When it takes effect (ties broken by client), if it does.
    point: u64,
    fate: Fate,
    op: Option<Op>,
    output: Option<Output>,
}

#[derive(Clone, Copy)]
struct Shape {
    clients: u64,
    keys: u64,
    ops_per_client: u64,
    /// Percent of operations whose outcome is unknown, and of refused ones.
    lost_percent: u64,
    refused_percent: u64,
}

/// A history produced by a truly linearizable store: every operation takes effect at one
/// point inside its interval (a lost one anywhere after its call, or never), in that order,
/// on a model with a store-wide version counter. Returns the history and the ids of its
/// completed reads.
fn linearizable_history(seed: u64, shape: Shape) -> (History, Vec<OpId>) {
    const VALUES: [&str; 6] = ["a", "b", "c", "7", "-2", "100"];
    let mut rng = Rng(seed);
    let mut planned = Vec::new();
    for client in 0..shape.clients {
        let mut time = rng.below(5);
        for _ in 0..shape.ops_per_client {
            let call = time + rng.below(3);
            let point = call + rng.below(8);
            let ret = point + rng.below(8);
            let roll = rng.below(100);
            let fate = if roll < shape.lost_percent {
                Fate::Lost(rng.chance(50))
            } else if roll < shape.lost_percent + shape.refused_percent {
                Fate::Refused
            } else {
                Fate::Completes
            };
            // A lost write may land long after its client gave up.
            let point = match fate {
                Fate::Lost(_) => call + rng.below(60),
                _ => point,
            };
            planned.push(Planned {
                client,
                key: format!("k{}", rng.below(shape.keys)).into_bytes(),
                kind: rng.below(100),
                call,
                ret,
                point,
                fate,
                op: None,
                output: None,
            });
            time = ret;
        }
    }
    // Apply in effect order. Decisions that a real client would make from what it read (a
    // CAS's expected version) are made here, which is fine: only the recorded op matters.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&i| (planned[i].point, planned[i].client));
    let mut store: HashMap<Vec<u8>, (Vec<u8>, u64)> = HashMap::new();
    let mut counter = 0;
    for i in order {
        let plan = &mut planned[i];
        let applies = matches!(plan.fate, Fate::Completes | Fate::Lost(true));
        let current = store.get(&plan.key).cloned();
        let current_version = current.as_ref().map_or(0, |(_, version)| *version);
        let pick = |rng: &mut Rng| VALUES[rng.below(VALUES.len() as u64) as usize].to_owned();
        let (op, output) = match plan.kind {
            0..=29 => (Op::Get, Output::Value(current.clone())),
            30..=54 => {
                let value = pick(&mut rng);
                let mut output = Output::Ok { version: None };
                if applies {
                    counter += 1;
                    store.insert(plan.key.clone(), (value.clone().into_bytes(), counter));
                    if rng.chance(70) {
                        output = Output::Ok {
                            version: Some(counter),
                        };
                    }
                }
                (put(&value), output)
            }
            55..=64 => {
                let removed = current.is_some();
                if applies {
                    store.remove(&plan.key);
                }
                (Op::Delete, Output::Deleted(removed))
            }
            65..=84 => {
                let expected_version = match rng.below(4) {
                    0 | 1 => current_version,
                    2 => 0,
                    _ => current_version + 1,
                };
                let value = pick(&mut rng);
                let output = if expected_version != current_version {
                    Output::Cas(CasOutput::Mismatch { current_version })
                } else {
                    let mut version = None;
                    if applies {
                        counter += 1;
                        store.insert(plan.key.clone(), (value.clone().into_bytes(), counter));
                        version = Some(counter);
                    }
                    Output::Cas(CasOutput::Ok { version })
                };
                (cas(expected_version, &value), output)
            }
            _ => {
                let delta = if rng.chance(5) {
                    i64::MAX / 2
                } else {
                    rng.below(7) as i64 - 3
                };
                let number = match &current {
                    None => Some(0),
                    Some((text, _)) => canonical_i64(text),
                };
                let output = match number.map(|number| number.checked_add(delta)) {
                    None => Output::NotAnInteger,
                    Some(None) => Output::Overflow,
                    Some(Some(result)) => {
                        if applies {
                            counter += 1;
                            store.insert(
                                plan.key.clone(),
                                (result.to_string().into_bytes(), counter),
                            );
                        }
                        Output::Integer(result)
                    }
                };
                (incr(delta), output)
            }
        };
        plan.op = Some(op);
        plan.output = Some(output);
    }
    let mut history = History::new();
    let mut reads = Vec::new();
    for plan in planned {
        let op = plan
            .op
            .expect("every planned operation was applied or skipped");
        let is_get = op == Op::Get;
        let outcome = match plan.fate {
            Fate::Completes => Outcome::Ok {
                output: plan.output.expect("set with op"),
                return_time: plan.ret,
            },
            Fate::Refused => Outcome::Failed,
            Fate::Lost(_) => Outcome::Unknown,
        };
        let completed = plan.fate == Fate::Completes;
        let id = history.push(Operation {
            client: plan.client,
            key: plan.key,
            op,
            call_time: plan.call,
            outcome,
        });
        if is_get && completed {
            reads.push(id);
        }
    }
    (history, reads)
}

/// Makes completed read `read` return its value with the version of a completed write of
/// another value on the same key, if there is such a write and the read saw a value.
///
/// No order explains the result: if that write W (version w) comes before the read, the
/// floor is at least w from W on, so the value read was written with a version above w; if W
/// comes after, its version must exceed the w the read saw. Unlike a value nobody wrote, the
/// check before searching cannot see this: only the search can prove it.
fn corrupt_version(history: &mut History, read: OpId) -> bool {
    let operations = history.operations();
    let key = &operations[read.index()].key;
    let Outcome::Ok {
        output: Output::Value(Some((seen, _))),
        ..
    } = &operations[read.index()].outcome
    else {
        return false;
    };
    let other_version = operations.iter().find_map(|operation| {
        let (value, output) = match (&operation.op, &operation.outcome) {
            (Op::Put { value }, Outcome::Ok { output, .. })
            | (Op::CompareAndSet { value, .. }, Outcome::Ok { output, .. }) => (value, output),
            _ => return None,
        };
        let version = match output {
            Output::Ok { version } | Output::Cas(CasOutput::Ok { version }) => (*version)?,
            _ => return None,
        };
        (operation.key == *key && value != seen).then_some(version)
    });
    let Some(version) = other_version else {
        return false;
    };
    let seen = seen.clone();
    let Outcome::Ok { output, .. } = &mut history.operations[read.index()].outcome else {
        unreachable!("matched above");
    };
    *output = Output::Value(Some((seen, version)));
    true
}

/// Each key's verdict when searched by `mode` alone, with no budget to speak of.
fn verdicts_by_mode(history: &History, mode: Mode) -> Vec<bool> {
    let mut by_key: BTreeMap<&[u8], Vec<OpId>> = BTreeMap::new();
    for (index, operation) in history.operations().iter().enumerate() {
        by_key.entry(&operation.key).or_default().push(OpId(index));
    }
    by_key
        .values()
        .map(|ids| {
            let key_history = KeyHistory::new(history, ids);
            if key_history.completed_ops.is_empty() {
                return true;
            }
            let mut search = Search::new(&key_history, mode);
            search.budget = u64::MAX;
            match search.run() {
                Explored::Linearizable => true,
                Explored::Exhausted => false,
                Explored::OutOfBudget => unreachable!("no budget"),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn generated_linearizable_histories_pass_and_corrupted_ones_fail(
        seed in any::<u64>(),
        clients in 1..8u64,
        keys in 1..4u64,
        ops_per_client in 1..30u64,
        lost_percent in 0..12u64,
        refused_percent in 0..10u64,
        victim in any::<prop::sample::Index>(),
    ) {
        let shape = Shape { clients, keys, ops_per_client, lost_percent, refused_percent };
        let (history, reads) = linearizable_history(seed, shape);
        let result = check(&history, Limits::default());
        prop_assert!(result.is_linearizable(), "seed {}: {}", seed, result);
        prop_assume!(!reads.is_empty());
        let victim = reads[victim.index(reads.len())];
        let key = history.operations()[victim.index()].key.clone();

        // A value nobody wrote: caught before searching.
        let mut corrupted = history.clone();
        let Outcome::Ok { output, .. } = &mut corrupted.operations[victim.index()].outcome else {
            unreachable!("reads holds completed operations only");
        };
        *output = Output::Value(Some((b"never written".to_vec(), 1)));
        match check(&corrupted, Limits::default()) {
            CheckResult::NotLinearizable { key: failing, .. } => prop_assert_eq!(failing, key.clone()),
            other => prop_assert!(false, "seed {}: unwritten value accepted: {}", seed, other),
        }

        // Another write's version: only the search can tell. Proving that no order exists
        // means exhausting the search, which on a few generated histories (one key, seven
        // clients, lost writes) takes more than the default budget: the checker then says
        // `Unknown`, which is not acceptance (the simulator counts it as a failure). Seen in
        // CI: seed 13823974005693711562, 7 clients, 1 key, 29 operations each.
        let mut corrupted = history;
        if corrupt_version(&mut corrupted, victim) {
            match check(&corrupted, Limits::default()) {
                CheckResult::NotLinearizable { key: failing, .. }
                | CheckResult::Unknown { key: failing } => prop_assert_eq!(failing, key),
                CheckResult::Linearizable => {
                    prop_assert!(false, "seed {}: wrong version accepted", seed)
                }
            }
        }
    }

    /// The two searches share the model and cache but order the work differently, and the
    /// reductions are argued separately for each: on every history they must agree.
    #[test]
    fn depth_first_and_layered_searches_agree(
        seed in any::<u64>(),
        clients in 1..6u64,
        keys in 1..3u64,
        ops_per_client in 1..20u64,
        lost_percent in 0..25u64,
        victim in any::<prop::sample::Index>(),
    ) {
        let shape = Shape { clients, keys, ops_per_client, lost_percent, refused_percent: 5 };
        let (mut history, reads) = linearizable_history(seed, shape);
        let depth_first = verdicts_by_mode(&history, Mode::DepthFirst);
        prop_assert!(depth_first.iter().all(|&ok| ok), "seed {}", seed);
        prop_assert_eq!(&verdicts_by_mode(&history, Mode::Layered), &depth_first, "seed {}", seed);
        if !reads.is_empty() && corrupt_version(&mut history, reads[victim.index(reads.len())]) {
            let depth_first = verdicts_by_mode(&history, Mode::DepthFirst);
            prop_assert!(depth_first.iter().any(|&ok| !ok), "seed {}", seed);
            prop_assert_eq!(&verdicts_by_mode(&history, Mode::Layered), &depth_first, "seed {}", seed);
        }
    }
}

/// A failure among many unknown writes (one key, 7 clients, 210 operations, 11% of them
/// outcome-unknown): the depth-first search alone needs over 5 million configurations to
/// prove it; with the layered search taking turns, a few hundred thousand.
#[test]
fn failures_amid_many_unknown_writes_are_proved() {
    let shape = Shape {
        clients: 7,
        keys: 1,
        ops_per_client: 30,
        lost_percent: 11,
        refused_percent: 0,
    };
    let (mut history, reads) = linearizable_history(2, shape);
    assert!(check(&history, Limits::default()).is_linearizable());
    // The latest read that saw a value: the search must get through nearly everything first.
    let mut late_reads = reads.clone();
    late_reads.sort_by_key(|read| history.operations()[read.index()].call_time);
    let victim = late_reads
        .into_iter()
        .rev()
        .find(|&read| corrupt_version(&mut history, read))
        .expect("a read that saw a value");
    let start = Instant::now();
    match check(&history, Limits::default()) {
        CheckResult::NotLinearizable { explanation, .. } => {
            assert!(
                explanation.contains(&format!("#{} ", victim.index())),
                "{explanation}"
            );
        }
        other => panic!("{other}"),
    }
    println!(
        "failure among unknown writes proved in {:?}",
        start.elapsed()
    );
}

/// The speed that matters: a long single-key history with moderate concurrency and some lost
/// writes, then many keys. Run with `--nocapture` to see the figures.
#[test]
fn long_histories_check_fast() {
    for (label, shape) in [
        (
            "1 key, 8 clients, 5000 ops, 2% lost",
            Shape {
                clients: 8,
                keys: 1,
                ops_per_client: 625,
                lost_percent: 2,
                refused_percent: 2,
            },
        ),
        (
            "1 key, 10 clients, 5000 ops, none lost",
            Shape {
                clients: 10,
                keys: 1,
                ops_per_client: 500,
                lost_percent: 0,
                refused_percent: 0,
            },
        ),
        (
            "8 keys, 10 clients, 50000 ops, 1% lost",
            Shape {
                clients: 10,
                keys: 8,
                ops_per_client: 5000,
                lost_percent: 1,
                refused_percent: 1,
            },
        ),
    ] {
        let (history, _) = linearizable_history(0x5eed, shape);
        let start = Instant::now();
        let result = check(&history, Limits::default());
        let elapsed = start.elapsed();
        println!("{label}: {result} in {elapsed:?}");
        assert!(result.is_linearizable(), "{label}: {result}");
        // Generous, so that a debug build passes too; an exponential blow-up takes minutes.
        assert!(elapsed.as_secs() < 20, "{label}: took {elapsed:?}");
    }
}
