//! A linearizability checker for histories of memdi client operations.
//!
//! The simulator and the multi-process tests record what every client asked, when, and what it
//! was told; [`check`] then decides whether some single order of those operations, consistent
//! with real time, explains every answer. That is the guarantee memdi promises for its
//! linearizable reads and acknowledged writes, and the only one a client can observe.
//!
//! # Algorithm
//!
//! Wing & Gong's search with Lowe's memoization, as in Knossos and Porcupine:
//!
//! - **Per key.** Linearizability is compositional (a history is linearizable if and only if
//!   each object's sub-history is), and every memdi operation touches one key, so each key's
//!   operations are checked on their own. This is what makes long histories tractable: the
//!   search is exponential in the concurrency of one key, not of the whole history.
//! - **Real-time order.** Intervals are *closed*: an operation that returns at `t` and one
//!   called at `t` count as concurrent and may be ordered either way (as if, at equal times,
//!   calls sorted before returns). That is the conservative choice: two clocks reading the same
//!   tick cannot prove an order, and a checker must never flag a correct system.
//! - **Depth-first search.** From a configuration, the candidates to place next are the
//!   unplaced operations called no later than the earliest return of an unplaced completed
//!   operation (anything called after that return must come after that operation). Place a
//!   candidate whose model step fits, recurse, and backtrack when none is left. Porcupine
//!   finds candidates by walking a linked list of call and return events; here they are read
//!   off the bit sets of placed operations (completed ones are placed roughly in call order,
//!   so the walk starts at the first unplaced one), which makes a configuration a plain value
//!   that a search can be resumed from (see below).
//! - **Memoization.** A configuration is the set of operations placed so far plus the model
//!   state. Two paths that reach the same configuration have the same futures, so each is
//!   searched once. Operations are tried earliest-called first, and outcome-unknown operations
//!   only after every completed one, so a correct history is usually linearized greedily.
//! - **Before searching**, a read of a value that no operation on the key writes fails the key
//!   at once: no order can explain it, and proving that by search means enumerating every
//!   configuration before the read.
//!
//! # Outcome-unknown operations
//!
//! A timed-out or crashed write ([`Outcome::Unknown`]) may have taken effect at any moment after
//! its call, or never: it has no return (its return is at infinity, as in Knossos), and the
//! search succeeds once every *completed* operation is placed, whether or not the unknown ones
//! were. Its output is unconstrained. An unknown read constrains nothing and is dropped, and so
//! is every [`Outcome::Failed`] operation, which by definition did nothing.
//!
//! Unknown writes accumulate (they stay pending forever), and left alone they make the search
//! exponential in their number. Sound reductions keep it in check. Each rests on
//! *dominance*: configuration A dominates B when every way to finish from B also finishes from
//! A, so once A is searched, B need not be.
//!
//! - **Subset dominance in the cache.** A dominates B when both have the same model state and
//!   A's placed set is B's minus some unknown operations (an unknown operation never has to be
//!   placed). The cache keeps, for each (completed operations placed, state), the minimal sets
//!   of unknown operations placed, and prunes any superset.
//! - **No blind write right after an unknown operation.** A `Put` (or an unknown `Delete`)
//!   overwrites whatever the operation before it did, so placing it directly after an unknown
//!   operation U reaches a configuration dominated by placing it *instead of* U (U left
//!   pending), which the search also tries. Without this rule, k unknown puts give 2^k orders
//!   that all end in the same state.
//! - **Identical unknown operations are interchangeable.** Of two unknown operations asking
//!   exactly the same thing, the earlier-called one fits everywhere the later one does; so
//!   when both are candidates only the later one is placed, keeping the more useful one
//!   pending.
//! - **Fewest unknown operations first.** Depth-first order may reach a configuration with an
//!   unknown operation placed before it reaches the same one without, and must then search
//!   everything after it again: with many unknown operations, proving a failure takes many
//!   times the work needed. A second, *layered* search avoids that by searching every
//!   configuration reachable with k unknown operations placed before any with k + 1; but it
//!   is slow to find a linearization that needs many of them, which the depth-first search
//!   finds greedily. So for a key with unknown operations both run, taking turns with a budget
//!   that doubles each round, each resuming where it stopped; the first to conclude answers,
//!   for at most about twice the work of the better one alone.
//!
//! # The model, and what is checked about versions
//!
//! Each key is a register: absent, or a value with a version. Values are compared exactly
//! (values that are canonical decimal `i64`s, as INCRBY writes them, are stored as integers so
//! that `IncrBy` can add to them and a `Get` of `b"42"` matches an increment to 42).
//!
//! The store gives every write the next number of a store-wide counter, so the checker cannot
//! predict a write's version: writes to other keys consume numbers in between. It checks only
//! what a client's observations pin down:
//!
//! - A write whose version the client saw (`Put` → `Ok { version: Some(v) }`, a successful CAS
//!   with its version) gives the key that known version. Every later observation of the key
//!   before the next write (`Get`'s version, CAS's expected or mismatching version) must equal
//!   it exactly.
//! - A write whose version nobody saw (`Put` → `Ok { version: None }`, `IncrBy`, any
//!   outcome-unknown write) gives the key an *unknown* version. The first observation of the
//!   version after that write (a `Get`, a CAS mismatch, or a successful CAS, whose expected
//!   version it matched) fixes it along that search path; later observations must agree.
//! - Versions of one key strictly increase in linearization order, because the counter only
//!   grows: the checker keeps a *floor*, the highest version the key is known to have reached
//!   along the path, and every known or newly learned version must exceed it. Versions are
//!   never assumed to step by one. An unknown version raises no floor (only its existence
//!   is known), so the floor is a lower bound, never an exact count.
//! - A CAS succeeds exactly when the key's version equals `expected_version`, 0 standing for
//!   "absent"; a mismatch must report the key's actual version (0 if absent), and a present
//!   key never has version 0.
//!
//! Not checked: versions across keys (the counter is shared, but each key is checked alone);
//! expiry (the model has no TTLs, so histories must not use them); and anything about
//! operations other than those in [`Op`]. Every key starts absent with no versions used.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasherDefault, Hash, Hasher};

#[cfg(test)]
mod tests;

/// An operation a client asks of one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write `value` unconditionally. Answered by [`Output::Ok`].
    Put {
        /// The value written.
        value: Vec<u8>,
    },
    /// Read the key. Answered by [`Output::Value`].
    Get,
    /// Remove the key. Answered by [`Output::Deleted`].
    Delete,
    /// Write `value` only if the key's version is `expected_version` (0: only if the key is
    /// absent). Answered by [`Output::Cas`].
    CompareAndSet {
        /// The version the key must have; 0 means the key must be absent.
        expected_version: u64,
        /// The value written if the version matches.
        value: Vec<u8>,
    },
    /// Add `delta` to the decimal integer stored under the key (absent counts as 0). Answered
    /// by [`Output::Integer`], [`Output::NotAnInteger`] or [`Output::Overflow`].
    IncrBy {
        /// The amount added.
        delta: i64,
    },
}

/// What a client was told about a completed operation.
///
/// Each [`Op`] has its own outputs (documented on the `Op`); a mismatched pair, such as a
/// `Get` answered by `Deleted`, can never be linearized, so the key is reported as failing
/// and the explanation shows the pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A `Put` stored its value with this version, if the client saw the version (a client
    /// speaking a protocol without versions records `None`, and the version goes unchecked).
    Ok {
        /// The key's new version, if reported.
        version: Option<u64>,
    },
    /// A `Get` found this value and version, or `None` for an absent key.
    Value(Option<(Vec<u8>, u64)>),
    /// A `Delete` removed a live key (`true`) or found none (`false`).
    Deleted(bool),
    /// What a `CompareAndSet` did.
    Cas(CasOutput),
    /// An `IncrBy` stored this new value.
    Integer(i64),
    /// An `IncrBy` found a value that is not a canonical decimal `i64`; nothing changed.
    ///
    /// This is an error reply on the wire, but it says something about the key's state, so it
    /// is an output, not [`Outcome::Failed`].
    NotAnInteger,
    /// An `IncrBy` would have overflowed an `i64`; nothing changed. An output for the same
    /// reason as [`Output::NotAnInteger`].
    Overflow,
}

/// What a `CompareAndSet` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CasOutput {
    /// The version matched and the value was stored with this version (if reported).
    Ok {
        /// The key's new version, if reported.
        version: Option<u64>,
    },
    /// The key's version was `current_version` (0: absent), not the expected one; nothing
    /// changed.
    Mismatch {
        /// The version the key had.
        current_version: u64,
    },
}

/// How an operation ended, as far as its client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client got `output` at `return_time`.
    Ok {
        /// What the client was told.
        output: Output,
        /// When the answer arrived, on the same clock as `call_time`.
        return_time: u64,
    },
    /// The operation certainly did not take effect (the node refused it before doing anything:
    /// no leader, store full, bad request). Dropped from the history before checking.
    Failed,
    /// The operation may or may not have taken effect, at any time after its call (timeout,
    /// node or connection lost). A write is placed anywhere after its call or never, with an
    /// unconstrained output; a read is dropped, as it constrains nothing.
    Unknown,
}

/// One operation of a history: who asked what of which key, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it; only shown in explanations (a client may pipeline, so its
    /// operations are not required to be sequential).
    pub client: u64,
    /// The key it touched.
    pub key: Vec<u8>,
    /// What was asked.
    pub op: Op,
    /// When it was sent, on a clock shared by the whole history.
    pub call_time: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Identifies an operation of a [`History`]: its position in the order it was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

impl OpId {
    /// The operation's position in [`History::operations`].
    pub fn index(self) -> usize {
        self.0
    }
}

/// A recorded history: every operation every client issued.
///
/// Built either from whole records ([`History::push`]) or as the operations happen
/// ([`History::invoke`], then [`History::complete`] or [`History::fail`]). An invoked operation
/// that is never completed keeps the outcome [`Outcome::Unknown`], which is what a client that
/// crashed or gave up would have recorded.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a finished record.
    pub fn push(&mut self, operation: Operation) -> OpId {
        self.operations.push(operation);
        OpId(self.operations.len() - 1)
    }

    /// Records that `client` sent `op` on `key` at `call_time`; the outcome stays unknown until
    /// [`History::complete`] or [`History::fail`].
    pub fn invoke(&mut self, client: u64, key: impl Into<Vec<u8>>, op: Op, call_time: u64) -> OpId {
        self.push(Operation {
            client,
            key: key.into(),
            op,
            call_time,
            outcome: Outcome::Unknown,
        })
    }

    /// Records that operation `id` was answered with `output` at `return_time`.
    ///
    /// # Panics
    ///
    /// If `id` is not in this history, already has a known outcome, or `return_time` is before
    /// its call: all bugs of the recording harness, which would make the check meaningless.
    pub fn complete(&mut self, id: OpId, output: Output, return_time: u64) {
        let operation = &mut self.operations[id.0];
        assert!(
            operation.outcome == Outcome::Unknown,
            "operation {} completed twice",
            id.0
        );
        assert!(
            return_time >= operation.call_time,
            "operation {} returns at {return_time}, before its call at {}",
            id.0,
            operation.call_time
        );
        operation.outcome = Outcome::Ok {
            output,
            return_time,
        };
    }

    /// Records that operation `id` certainly did not take effect.
    ///
    /// # Panics
    ///
    /// If `id` is not in this history or already has a known outcome.
    pub fn fail(&mut self, id: OpId) {
        let operation = &mut self.operations[id.0];
        assert!(
            operation.outcome == Outcome::Unknown,
            "operation {} completed twice",
            id.0
        );
        operation.outcome = Outcome::Failed;
    }

    /// The operations, in the order they were added ([`OpId::index`] order).
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether there are no operations.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// How much work [`check`] may do before giving up with [`CheckResult::Unknown`].
///
/// Deciding linearizability is NP-complete, and a buggy system (or a very concurrent history)
/// can make the search explode; a budget turns a hang into an answer the caller can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most search configurations (distinct placed-set and state pairs) visited for one
    /// key, over all the searches run on it. Each costs roughly 100–150 bytes of cache for the
    /// duration of that key's search, and on the order of a microsecond.
    pub max_states_per_key: u64,
}

impl Default for Limits {
    /// One million configurations per key: about 150 MB and a second or two at worst. A
    /// correct history of 5,000 operations on one key from 10 concurrent clients needs about
    /// 300,000; at the concurrency of a few clients per key, a few per operation.
    fn default() -> Self {
        Self {
            max_states_per_key: 1_000_000,
        }
    }
}

/// The verdict of [`check`].
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's sub-history has a linearization.
    Linearizable,
    /// Some key's sub-history has none: the system broke linearizability (or the harness
    /// recorded something wrong). When several keys fail, the one with the fewest operations
    /// is reported, as the easiest to debug.
    NotLinearizable {
        /// The key.
        key: Vec<u8>,
        /// Its operations, the longest linearizable prefix the search found, and the
        /// operations none of which could come next: for a developer replaying the seed.
        explanation: String,
    },
    /// No key failed, but the search budget ran out on this one (the first, by size, that
    /// did); the caller decides whether that is a failure.
    Unknown {
        /// The key whose search was abandoned.
        key: Vec<u8>,
    },
}

impl CheckResult {
    /// Whether the history was proved linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, CheckResult::Linearizable)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Linearizable => f.write_str("linearizable"),
            CheckResult::NotLinearizable { explanation, .. } => {
                write!(f, "NOT linearizable: {explanation}")
            }
            CheckResult::Unknown { key } => write!(
                f,
                "unknown: the search budget ran out on key {}",
                DisplayBytes(key)
            ),
        }
    }
}

/// Checks `history` for linearizability, key by key, within `limits`.
///
/// Keys are checked smallest first, so the first failure found is the smallest failing key
/// and the search stops there; a key whose budget runs out is remembered and reported only if
/// no key fails.
///
/// ```
/// use memdi_tests::linearizability::{check, History, Limits, Op, Output};
///
/// let mut history = History::new();
/// let write = history.invoke(1, "k", Op::Put { value: b"a".to_vec() }, 0);
/// history.complete(write, Output::Ok { version: Some(1) }, 10);
/// // A read that starts after the write finished must see it...
/// let read = history.invoke(2, "k", Op::Get, 20);
/// history.complete(read, Output::Value(None), 30);
/// assert!(!check(&history, Limits::default()).is_linearizable());
///
/// // ...while one concurrent with the write may see either state.
/// let mut history = History::new();
/// let write = history.invoke(1, "k", Op::Put { value: b"a".to_vec() }, 0);
/// let read = history.invoke(2, "k", Op::Get, 5);
/// history.complete(read, Output::Value(None), 8);
/// history.complete(write, Output::Ok { version: Some(1) }, 10);
/// assert!(check(&history, Limits::default()).is_linearizable());
/// ```
///
/// # Panics
///
/// If an operation returns before its call (a harness bug that no verdict could make sense of).
pub fn check(history: &History, limits: Limits) -> CheckResult {
    let mut by_key: BTreeMap<&[u8], Vec<OpId>> = BTreeMap::new();
    for (index, operation) in history.operations.iter().enumerate() {
        if let Outcome::Ok { return_time, .. } = operation.outcome {
            assert!(
                return_time >= operation.call_time,
                "operation {index} returns at {return_time}, before its call at {}",
                operation.call_time
            );
        }
        by_key.entry(&operation.key).or_default().push(OpId(index));
    }
    let mut keys: Vec<(&[u8], Vec<OpId>)> = by_key.into_iter().collect();
    // Stable: equal sizes stay in key order, so the verdict is deterministic.
    keys.sort_by_key(|(_, ids)| ids.len());

    let mut out_of_budget = None;
    for (key, ids) in keys {
        let prepared = KeyHistory::new(history, &ids);
        match prepared.search(limits) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::OutOfBudget => {
                out_of_budget.get_or_insert_with(|| key.to_vec());
            }
            KeyVerdict::NotLinearizable { longest_prefix } => {
                return CheckResult::NotLinearizable {
                    key: key.to_vec(),
                    explanation: prepared.explain(history, key, &longest_prefix),
                };
            }
        }
    }
    match out_of_budget {
        Some(key) => CheckResult::Unknown { key },
        None => CheckResult::Linearizable,
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

/// A value as the model holds it: interned, so that states are small `Copy` values that hash
/// fast, and integers kept as integers so that `IncrBy` needs no parsing during the search.
///
/// The two forms never describe the same bytes ([`Interner::intern`] turns every canonical
/// decimal `i64` into `Int`), so derived equality is byte equality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Value {
    /// A canonical decimal `i64`.
    Int(i64),
    /// Any other bytes: an index into [`Interner::names`].
    Bytes(u32),
}

/// The version of a present key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Version {
    /// Reported by the write or learned from a later observation.
    Known(u64),
    /// Produced by a write whose version nobody has observed yet: some number above the floor.
    Unknown,
}

/// The model state of one key along one search path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    /// `None` when absent.
    entry: Option<(Value, Version)>,
    /// A lower bound on the key's latest version so far: every version it has had that is
    /// known is at most this, so every version written or learned from now on exceeds it.
    ///
    /// While the key holds an unknown version, no known write has happened since the write
    /// that produced it, so that version exceeds `floor` too: [`State::learn`] relies on it.
    floor: u64,
}

impl State {
    const INITIAL: State = State {
        entry: None,
        floor: 0,
    };

    /// The key after a write of `value` with `version` (`None`: not reported), or `None` if a
    /// reported version does not exceed every earlier one.
    fn write(self, value: Value, version: Option<u64>) -> Option<State> {
        match version {
            Some(version) => (version > self.floor).then_some(State {
                entry: Some((value, Version::Known(version))),
                floor: version,
            }),
            None => Some(State {
                entry: Some((value, Version::Unknown)),
                floor: self.floor,
            }),
        }
    }

    /// The key after an observation that its version is `version` (0: absent), or `None` if it
    /// cannot be. Observing an unknown version fixes it for the rest of the path.
    fn observe_version(self, version: u64) -> Option<State> {
        match self.entry {
            None => (version == 0).then_some(self),
            Some((_, Version::Known(known))) => (version == known).then_some(self),
            Some((value, Version::Unknown)) => self.learn(value, version),
        }
    }

    fn learn(self, value: Value, version: u64) -> Option<State> {
        (version > self.floor).then_some(State {
            entry: Some((value, Version::Known(version))),
            floor: version,
        })
    }

    fn deleted(self) -> State {
        State {
            entry: None,
            floor: self.floor,
        }
    }
}

/// An [`Op`] with its values interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ModelOp {
    Put(Value),
    Get,
    Delete,
    Cas { expected: u64, value: Value },
    Incr(i64),
}

/// An [`Output`] with its values interned.
#[derive(Clone, Copy, Debug)]
enum ModelOutput {
    Stored(Option<u64>),
    Value(Option<(Value, u64)>),
    Deleted(bool),
    CasStored(Option<u64>),
    CasMismatch(u64),
    Integer(i64),
    NotAnInteger,
    Overflow,
}

/// Applies `op` to `state`; `output` is `None` when the outcome is unknown. Returns the next
/// state, or `None` when the operation cannot be placed here.
///
/// For an unknown operation that would change nothing here (a CAS that would mismatch, a
/// delete of an absent key, an increment that would fail) this also returns `None`: placing a
/// no-op is the same as not placing it yet, and the search can always do the latter.
fn step(state: State, op: ModelOp, output: Option<ModelOutput>) -> Option<State> {
    use ModelOutput as Out;
    match (op, output) {
        (ModelOp::Put(value), None) => state.write(value, None),
        (ModelOp::Put(value), Some(Out::Stored(version))) => state.write(value, version),
        (ModelOp::Get, Some(Out::Value(None))) => state.entry.is_none().then_some(state),
        (ModelOp::Get, Some(Out::Value(Some((seen, version))))) => match state.entry {
            Some((value, _)) if value == seen => state.observe_version(version),
            _ => None,
        },
        (ModelOp::Delete, Some(Out::Deleted(removed))) => {
            (removed == state.entry.is_some()).then_some(state.deleted())
        }
        (ModelOp::Delete, None) => state.entry.is_some().then_some(state.deleted()),
        (ModelOp::Cas { expected, value }, Some(Out::CasStored(version))) => {
            state.observe_version(expected)?.write(value, version)
        }
        (ModelOp::Cas { expected, .. }, Some(Out::CasMismatch(current))) => {
            if current == expected {
                None
            } else {
                state.observe_version(current)
            }
        }
        (ModelOp::Cas { expected, value }, None) => {
            state.observe_version(expected)?.write(value, None)
        }
        (ModelOp::Incr(delta), output) => {
            let current = match state.entry {
                None => Some(0),
                Some((Value::Int(current), _)) => Some(current),
                Some((Value::Bytes(_), _)) => None,
            };
            match (current, output) {
                (Some(current), Some(Out::Integer(result))) => {
                    if current.checked_add(delta) == Some(result) {
                        state.write(Value::Int(result), None)
                    } else {
                        None
                    }
                }
                (Some(current), Some(Out::Overflow)) => {
                    current.checked_add(delta).is_none().then_some(state)
                }
                (Some(current), None) => state.write(Value::Int(current.checked_add(delta)?), None),
                (None, Some(Out::NotAnInteger)) => Some(state),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The canonical decimal `i64` these bytes spell (no sign but `-`, no leading zeros, no
/// `-0`), the only form INCRBY accepts, or `None`.
fn canonical_i64(bytes: &[u8]) -> Option<i64> {
    let number: i64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    (number.to_string().as_bytes() == bytes).then_some(number)
}

/// Turns byte strings into [`Value`]s, and back for explanations.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Vec<u8>, u32>,
    names: Vec<Vec<u8>>,
}

impl Interner {
    fn intern(&mut self, bytes: &[u8]) -> Value {
        if let Some(number) = canonical_i64(bytes) {
            return Value::Int(number);
        }
        if let Some(&id) = self.ids.get(bytes) {
            return Value::Bytes(id);
        }
        let id = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct values");
        self.ids.insert(bytes.to_vec(), id);
        self.names.push(bytes.to_vec());
        Value::Bytes(id)
    }

    fn bytes(&self, value: Value) -> Vec<u8> {
        match value {
            Value::Int(number) => number.to_string().into_bytes(),
            Value::Bytes(id) => self.names[id as usize].clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The search.

/// One operation of a key's sub-history, ready for the search.
#[derive(Debug)]
struct Prepared {
    id: OpId,
    op: ModelOp,
    /// `None` for an outcome-unknown write.
    output: Option<ModelOutput>,
    call: u64,
    /// `u64::MAX` for an unknown operation: it has no deadline.
    ret: u64,
    /// Its bit in the search's set of placed completed operations, or of placed unknown
    /// operations when `output` is `None`. Both numberings follow call order.
    bit: usize,
    /// Whether the state after it does not depend on the state before it (beyond the version
    /// floor): see the module docs on unknown operations.
    blind: bool,
    /// For an unknown operation, the next unknown one (by call time) asking exactly the same
    /// thing: see the module docs on identical unknown operations.
    next_identical: Option<usize>,
}

impl Prepared {
    fn is_unknown(&self) -> bool {
        self.output.is_none()
    }
}

/// A key's sub-history, ready for the search.
#[derive(Debug)]
struct KeyHistory {
    /// Sorted by call time (then [`OpId`]).
    ops: Vec<Prepared>,
    /// The completed operations' indices into `ops`, by bit (so in call order).
    completed_ops: Vec<usize>,
    /// The unknown operations' indices into `ops`, by bit (so in call order).
    unknown_ops: Vec<usize>,
    interner: Interner,
    /// A completed read of a value that no operation on the key writes, if any: found before
    /// searching, because it fails every linearization, and the search would otherwise
    /// enumerate every configuration before it to prove so.
    unwritten_read: Option<usize>,
}

impl KeyHistory {
    fn new(history: &History, ids: &[OpId]) -> Self {
        let mut interner = Interner::default();
        let mut records: Vec<(OpId, &Operation)> = ids
            .iter()
            .map(|&id| (id, &history.operations[id.0]))
            .filter(|(_, operation)| match &operation.outcome {
                Outcome::Ok { .. } => true,
                Outcome::Failed => false,
                // An unknown read constrains nothing.
                Outcome::Unknown => operation.op != Op::Get,
            })
            .collect();
        // An unknown write called after every completed operation returned can never be
        // needed: the search succeeds as soon as the completed operations are placed.
        let last_return = records
            .iter()
            .filter_map(|(_, operation)| match operation.outcome {
                Outcome::Ok { return_time, .. } => Some(return_time),
                _ => None,
            })
            .max();
        records.retain(|(_, operation)| {
            operation.outcome != Outcome::Unknown
                || last_return.is_some_and(|last| operation.call_time <= last)
        });
        records.sort_by_key(|(id, operation)| (operation.call_time, *id));

        let mut ops = Vec::with_capacity(records.len());
        let mut completed_ops = Vec::new();
        let mut unknown_ops = Vec::new();
        for (index, (id, operation)) in records.iter().enumerate() {
            let op = match &operation.op {
                Op::Put { value } => ModelOp::Put(interner.intern(value)),
                Op::Get => ModelOp::Get,
                Op::Delete => ModelOp::Delete,
                Op::CompareAndSet {
                    expected_version,
                    value,
                } => ModelOp::Cas {
                    expected: *expected_version,
                    value: interner.intern(value),
                },
                Op::IncrBy { delta } => ModelOp::Incr(*delta),
            };
            let (output, ret) = match &operation.outcome {
                Outcome::Ok {
                    output,
                    return_time,
                } => {
                    let output = match output {
                        Output::Ok { version } => ModelOutput::Stored(*version),
                        Output::Value(found) => ModelOutput::Value(
                            found
                                .as_ref()
                                .map(|(value, version)| (interner.intern(value), *version)),
                        ),
                        Output::Deleted(removed) => ModelOutput::Deleted(*removed),
                        Output::Cas(CasOutput::Ok { version }) => ModelOutput::CasStored(*version),
                        Output::Cas(CasOutput::Mismatch { current_version }) => {
                            ModelOutput::CasMismatch(*current_version)
                        }
                        Output::Integer(number) => ModelOutput::Integer(*number),
                        Output::NotAnInteger => ModelOutput::NotAnInteger,
                        Output::Overflow => ModelOutput::Overflow,
                    };
                    (Some(output), *return_time)
                }
                _ => (None, u64::MAX),
            };
            let bit = if output.is_some() {
                completed_ops.push(index);
                completed_ops.len() - 1
            } else {
                unknown_ops.push(index);
                unknown_ops.len() - 1
            };
            let blind = match op {
                ModelOp::Put(_) => true,
                ModelOp::Delete => output.is_none(),
                _ => false,
            };
            ops.push(Prepared {
                id: *id,
                op,
                output,
                call: operation.call_time,
                ret,
                bit,
                blind,
                next_identical: None,
            });
        }
        let mut last_identical: HashMap<ModelOp, usize> = HashMap::new();
        for &index in unknown_ops.iter().rev() {
            ops[index].next_identical = last_identical.insert(ops[index].op, index);
        }
        let unwritten_read = unwritten_read(&ops);
        KeyHistory {
            ops,
            completed_ops,
            unknown_ops,
            interner,
            unwritten_read,
        }
    }

    /// Searches for a linearization.
    ///
    /// Two searches suit different histories. Depth-first ([`Mode::DepthFirst`]) finds the
    /// linearization of a correct history almost greedily, but with unknown operations it can
    /// take many times longer than needed to prove a failure; layer by layer
    /// ([`Mode::Layered`]) proves failures without that waste but is slow to find a
    /// linearization that needs many unknown operations. Without unknown operations the two
    /// are the same, and depth-first gets the whole budget. With them, both run, taking turns
    /// with a budget that doubles each round and each resuming where it stopped: the answer
    /// comes from whichever suits the history, for at most twice its work alone.
    fn search(&self, limits: Limits) -> KeyVerdict {
        if self.unwritten_read.is_some() {
            return KeyVerdict::NotLinearizable {
                longest_prefix: Vec::new(),
            };
        }
        if self.completed_ops.is_empty() {
            return KeyVerdict::Linearizable;
        }
        let total = limits.max_states_per_key;
        let mut searches = vec![Search::new(self, Mode::DepthFirst)];
        let mut round_budget = total;
        if !self.unknown_ops.is_empty() {
            searches.push(Search::new(self, Mode::Layered));
            round_budget = FIRST_ROUND_BUDGET;
        }
        loop {
            for turn in 0..searches.len() {
                let spent: u64 = searches.iter().map(|search| search.visited).sum();
                let search = &mut searches[turn];
                search.budget = round_budget.min(search.visited + (total - spent));
                match search.run() {
                    Explored::Linearizable => return KeyVerdict::Linearizable,
                    Explored::Exhausted => {
                        // The depth-first search is always first, and has run.
                        return KeyVerdict::NotLinearizable {
                            longest_prefix: searches[0].longest_prefix(),
                        };
                    }
                    Explored::OutOfBudget => {}
                }
            }
            if searches.iter().map(|search| search.visited).sum::<u64>() >= total {
                return KeyVerdict::OutOfBudget;
            }
            round_budget = round_budget.saturating_mul(2);
        }
    }
}

/// The budget of each search in the first round of [`KeyHistory::search`]: enough for most
/// correct histories of a few hundred operations per key, so that they finish in one round.
const FIRST_ROUND_BUDGET: u64 = 10_000;

/// The first completed `Get` (in call order) that read a value no operation of `ops` writes:
/// no put or CAS of those bytes, and, for a decimal integer, no increment at all.
fn unwritten_read(ops: &[Prepared]) -> Option<usize> {
    let mut written = std::collections::HashSet::new();
    let mut increments = false;
    for prepared in ops {
        match prepared.op {
            ModelOp::Put(value) | ModelOp::Cas { value, .. } => {
                written.insert(value);
            }
            ModelOp::Incr(_) => increments = true,
            ModelOp::Get | ModelOp::Delete => {}
        }
    }
    ops.iter().position(|prepared| match prepared.output {
        Some(ModelOutput::Value(Some((value, _)))) => {
            let incremented = increments && matches!(value, Value::Int(_));
            !written.contains(&value) && !incremented
        }
        _ => false,
    })
}

/// What the search concluded for one key.
#[derive(Debug)]
enum KeyVerdict {
    Linearizable,
    NotLinearizable {
        /// Indices into [`KeyHistory::ops`], in linearization order.
        longest_prefix: Vec<usize>,
    },
    OutOfBudget,
}

/// A set of small integers.
#[derive(Clone, Debug)]
struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    fn contains(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn remove(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }

    /// The number of leading all-ones words.
    fn full_words(&self) -> usize {
        self.words
            .iter()
            .position(|&word| word != u64::MAX)
            .unwrap_or(self.words.len())
    }

    /// The smallest bit not in the set (possibly one past the end).
    fn first_absent(&self) -> usize {
        let word = self.full_words();
        word * 64
            + self
                .words
                .get(word)
                .map_or(0, |bits| bits.trailing_ones() as usize)
    }

    /// The set in a compact form: the number of leading all-ones words, and the words from
    /// there to the last non-zero one. Completed operations are placed roughly in call order,
    /// so their set is a long run of ones plus a short window: the tail is a word or two even
    /// for histories of thousands of operations.
    fn prefix_and_tail(&self) -> (usize, &[u64]) {
        let base = self.full_words();
        let end = self.trimmed().len();
        (base, &self.words[base..end.max(base)])
    }

    /// The words up to the last non-zero one.
    fn trimmed(&self) -> &[u64] {
        let end = self
            .words
            .iter()
            .rposition(|&word| word != 0)
            .map_or(0, |i| i + 1);
        &self.words[..end]
    }

    /// Overwrites the set with the compact form `prefix_and_tail` produced.
    fn load(&mut self, base: usize, tail: &[u64]) {
        self.words.fill(0);
        self.words[..base].fill(u64::MAX);
        self.words[base..base + tail.len()].copy_from_slice(tail);
    }
}

/// Whether the set `small` (trimmed words) is a subset of `large` (trimmed words).
fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small
        .iter()
        .enumerate()
        .all(|(i, word)| word & !large.get(i).copied().unwrap_or(0) == 0)
}

/// A slice of [`Cache::words`].
#[derive(Clone, Copy, Debug)]
struct Span {
    at: usize,
    len: usize,
}

/// The end of a chain in [`Cache`].
const END: usize = usize::MAX;

/// A visited (completed set, state), with the minimal sets of unknown operations placed
/// together with them (see the module docs on dominance).
#[derive(Debug)]
struct CacheEntry {
    state: State,
    /// The completed set, as [`BitSet::prefix_and_tail`] gives it.
    base: usize,
    tail: Span,
    /// The first of its unknown sets in [`Cache::sets`], or [`END`].
    first_set: usize,
    /// The next entry with the same hash, or [`END`].
    next: usize,
}

/// One unknown set of a [`CacheEntry`] (trimmed words), in a chain.
#[derive(Debug)]
struct SetNode {
    words: Span,
    next: usize,
}

/// Visited configurations.
///
/// Everything lives in a few large vectors, chained by index: a cache holds up to millions
/// of entries, and one allocation each would cost more than the search itself (in
/// allocating, and again in freeing them all at the end). Superseded unknown sets are only
/// unlinked; their words stay, which costs little since supersession is rare outside
/// [`Mode::DepthFirst`] searches with many unknown operations.
#[derive(Debug, Default)]
struct Cache {
    /// Hash of (completed set, state) to the first entry with that hash.
    heads: HashMap<u64, usize, BuildHasherDefault<FxHasher>>,
    entries: Vec<CacheEntry>,
    sets: Vec<SetNode>,
    words: Vec<u64>,
}

impl Cache {
    fn hash_of(state: State, base: usize, tail: &[u64]) -> u64 {
        let mut hasher = FxHasher::default();
        state.hash(&mut hasher);
        base.hash(&mut hasher);
        tail.hash(&mut hasher);
        hasher.finish()
    }

    fn slice(&self, span: Span) -> &[u64] {
        &self.words[span.at..span.at + span.len]
    }

    fn store(&mut self, words: &[u64]) -> Span {
        let span = Span {
            at: self.words.len(),
            len: words.len(),
        };
        self.words.extend_from_slice(words);
        span
    }

    fn find(&self, hash: u64, state: State, base: usize, tail: &[u64]) -> Option<usize> {
        let mut index = *self.heads.get(&hash)?;
        while index != END {
            let entry = &self.entries[index];
            if entry.state == state && entry.base == base && self.slice(entry.tail) == tail {
                return Some(index);
            }
            index = entry.next;
        }
        None
    }

    /// Records the configuration unless one that dominates it was visited; returns whether it
    /// is new (and so must be searched).
    fn visit(&mut self, completed: &BitSet, unknown: &BitSet, state: State) -> bool {
        let (base, tail) = completed.prefix_and_tail();
        let unknown = unknown.trimmed();
        let hash = Self::hash_of(state, base, tail);
        let Some(index) = self.find(hash, state, base, tail) else {
            let tail = self.store(tail);
            let set = self.store(unknown);
            self.sets.push(SetNode {
                words: set,
                next: END,
            });
            let head = self.heads.entry(hash).or_insert(END);
            self.entries.push(CacheEntry {
                state,
                base,
                tail,
                first_set: self.sets.len() - 1,
                next: *head,
            });
            *head = self.entries.len() - 1;
            return true;
        };
        let mut node = self.entries[index].first_set;
        while node != END {
            if is_subset(self.slice(self.sets[node].words), unknown) {
                return false;
            }
            node = self.sets[node].next;
        }
        // Supersets of the new set are dominated by it from now on: unlink them.
        let (mut previous, mut node) = (END, self.entries[index].first_set);
        while node != END {
            let next = self.sets[node].next;
            if is_subset(unknown, self.slice(self.sets[node].words)) {
                match previous {
                    END => self.entries[index].first_set = next,
                    _ => self.sets[previous].next = next,
                }
            } else {
                previous = node;
            }
            node = next;
        }
        let set = self.store(unknown);
        self.sets.push(SetNode {
            words: set,
            next: self.entries[index].first_set,
        });
        self.entries[index].first_set = self.sets.len() - 1;
        true
    }

    /// Whether `seed` is still recorded as it was visited, that is, no configuration with
    /// fewer unknown operations placed has superseded it since. The root is never recorded
    /// and always holds.
    fn holds(&self, seed: &Seed) -> bool {
        if seed.is_root {
            return true;
        }
        let hash = Self::hash_of(seed.state, seed.base, &seed.tail);
        let Some(index) = self.find(hash, seed.state, seed.base, &seed.tail) else {
            return false;
        };
        let mut node = self.entries[index].first_set;
        while node != END {
            if *self.slice(self.sets[node].words) == *seed.unknown {
                return true;
            }
            node = self.sets[node].next;
        }
        false
    }
}

/// A configuration to search from: the root, or one reached by placing an unknown operation
/// that [`Mode::Layered`] set aside for the next layer.
#[derive(Debug)]
struct Seed {
    is_root: bool,
    /// The completed set, as [`BitSet::prefix_and_tail`] gives it.
    base: usize,
    tail: Box<[u64]>,
    /// The unknown set, trimmed.
    unknown: Box<[u64]>,
    state: State,
    /// Whether the last operation placed was an unknown one (for the blind-write rule).
    after_unknown: bool,
    /// How many completed operations are not placed.
    remaining: usize,
}

impl Seed {
    fn root(history: &KeyHistory) -> Self {
        Seed {
            is_root: true,
            base: 0,
            tail: Box::new([]),
            unknown: Box::new([]),
            state: State::INITIAL,
            after_unknown: false,
            remaining: history.completed_ops.len(),
        }
    }
}

/// How a [`Search`] treats unknown operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Placed like completed ones (after them, at each configuration): the classic search.
    DepthFirst,
    /// Set aside as seeds of the next layer, so that every configuration reachable with k
    /// unknown operations placed is searched before any with k + 1. The depth-first order can
    /// reach a configuration with an unknown operation placed first and the same one without
    /// it later, and must then search everything after it again; with many unknown
    /// operations that multiplies the work of proving a failure many times over.
    Layered,
}

/// Where a [`Search`] stopped.
#[derive(Debug)]
enum Explored {
    Linearizable,
    /// Every configuration reachable from the seed (in this mode) failed.
    Exhausted,
    /// The budget ran out; [`Search::run`] resumes from here.
    OutOfBudget,
}

/// A placed operation, with what is needed to take it back and go on with the candidates of
/// the configuration before it.
#[derive(Debug)]
struct Frame {
    op: usize,
    state_before: State,
    deadline_before: u64,
    cursor_before: Cursor,
}

/// Where the candidate walk of a configuration is: completed operations first, as they are
/// the ones that must be placed, then unknown ones; each in call order, by bit.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    unknown: bool,
    bit: usize,
}

/// A resumable search over one key's configurations. A configuration is the set of placed
/// operations (two bit sets) and the model state; the candidates to place next are the
/// unplaced operations called no later than the earliest return of an unplaced completed
/// operation (its *deadline*): anything called later must come after that operation.
#[derive(Debug)]
struct Search<'a> {
    history: &'a KeyHistory,
    mode: Mode,
    cache: Cache,
    /// Configurations recorded in the cache so far, and how many [`Search::run`] may reach.
    visited: u64,
    budget: u64,

    // The depth-first walk in progress, from `seed_after_unknown`'s seed.
    completed: BitSet,
    unknown: BitSet,
    remaining: usize,
    state: State,
    deadline: u64,
    cursor: Cursor,
    stack: Vec<Frame>,
    seed_after_unknown: bool,

    // The layers of [`Mode::Layered`]: seeds left in this one, and those of the next.
    layer: Vec<Seed>,
    next_layer: Vec<Seed>,

    /// The depth-first path that placed the most completed operations, how many it placed,
    /// and how much of it the current path shares, so that extending it (what the search of
    /// a correct history does at nearly every step) is O(1).
    longest: Vec<usize>,
    longest_progress: usize,
    shared: usize,
}

impl<'a> Search<'a> {
    fn new(history: &'a KeyHistory, mode: Mode) -> Self {
        let mut search = Search {
            history,
            mode,
            cache: Cache::default(),
            visited: 0,
            budget: 0,
            completed: BitSet::new(history.completed_ops.len()),
            unknown: BitSet::new(history.unknown_ops.len()),
            remaining: history.completed_ops.len(),
            state: State::INITIAL,
            deadline: 0,
            cursor: Cursor {
                unknown: false,
                bit: 0,
            },
            stack: Vec::new(),
            seed_after_unknown: false,
            layer: Vec::new(),
            next_layer: Vec::new(),
            longest: Vec::new(),
            longest_progress: 0,
            shared: 0,
        };
        search.begin(&Seed::root(history));
        search
    }

    /// Continues the search until it ends or has visited `budget` configurations.
    fn run(&mut self) -> Explored {
        loop {
            match self.walk() {
                Explored::Exhausted if self.mode == Mode::Layered => {}
                done => return done,
            }
            // This seed is done: on to the next one still recorded as it was (not superseded
            // by a configuration with fewer unknown operations placed), layer after layer.
            loop {
                if self.layer.is_empty() {
                    if self.next_layer.is_empty() {
                        return Explored::Exhausted;
                    }
                    std::mem::swap(&mut self.layer, &mut self.next_layer);
                }
                let seed = self.layer.pop().expect("not empty");
                if self.cache.holds(&seed) {
                    self.begin(&seed);
                    break;
                }
            }
        }
    }

    /// Starts a depth-first walk from `seed`.
    fn begin(&mut self, seed: &Seed) {
        self.completed.load(seed.base, &seed.tail);
        self.unknown.words.fill(0);
        self.unknown.words[..seed.unknown.len()].copy_from_slice(&seed.unknown);
        self.remaining = seed.remaining;
        self.state = seed.state;
        self.seed_after_unknown = seed.after_unknown;
        self.stack.clear();
        self.deadline = self.deadline();
        self.cursor = self.start_cursor();
    }

    /// The longest prefix, without trailing unknown operations: they explain nothing and make
    /// the state shown after the prefix less useful.
    fn longest_prefix(&self) -> Vec<usize> {
        let mut prefix = self.longest.clone();
        while prefix
            .last()
            .is_some_and(|&op| self.history.ops[op].is_unknown())
        {
            prefix.pop();
        }
        prefix
    }

    /// The earliest return among unplaced completed operations. Walks them in call order
    /// from the first unplaced one, stopping at the first called after the minimum so far:
    /// it and all later ones return later still.
    fn deadline(&self) -> u64 {
        let history = self.history;
        let mut deadline = u64::MAX;
        for bit in self.completed.first_absent()..history.completed_ops.len() {
            let prepared = &history.ops[history.completed_ops[bit]];
            if prepared.call > deadline {
                break;
            }
            if !self.completed.contains(bit) {
                deadline = deadline.min(prepared.ret);
            }
        }
        deadline
    }

    fn start_cursor(&self) -> Cursor {
        Cursor {
            unknown: false,
            bit: self.completed.first_absent(),
        }
    }

    /// The next candidate from the cursor on, advancing the cursor past it.
    fn next_candidate(&mut self) -> Option<usize> {
        let history = self.history;
        loop {
            let (order, placed) = if self.cursor.unknown {
                (&history.unknown_ops, &self.unknown)
            } else {
                (&history.completed_ops, &self.completed)
            };
            let op = order
                .get(self.cursor.bit)
                .copied()
                .filter(|&op| history.ops[op].call <= self.deadline);
            let Some(op) = op else {
                if self.cursor.unknown {
                    return None;
                }
                self.cursor = Cursor {
                    unknown: true,
                    bit: self.unknown.first_absent(),
                };
                continue;
            };
            self.cursor.bit += 1;
            if !placed.contains(self.cursor.bit - 1) {
                return Some(op);
            }
        }
    }

    /// Whether unknown operation `op` has an identical unknown operation called later that is
    /// unplaced and also a candidate. Placing that one instead leaves the earlier-called one,
    /// which fits everywhere the later one does, pending: a configuration that dominates (see
    /// the module docs), so `op` need not be tried.
    fn later_identical_candidate(&self, op: usize) -> bool {
        let ops = &self.history.ops;
        let mut later = ops[op].next_identical;
        while let Some(candidate) = later {
            if !self.unknown.contains(ops[candidate].bit) {
                return ops[candidate].call <= self.deadline;
            }
            later = ops[candidate].next_identical;
        }
        false
    }

    fn set_placed(&mut self, op: usize, placed: bool) {
        let prepared = &self.history.ops[op];
        let set = if prepared.is_unknown() {
            &mut self.unknown
        } else {
            if placed {
                self.remaining -= 1;
            } else {
                self.remaining += 1;
            }
            &mut self.completed
        };
        if placed {
            set.insert(prepared.bit);
        } else {
            set.remove(prepared.bit);
        }
    }

    /// Records the current path (the stack plus `op`) as the longest if it placed the most
    /// completed operations so far.
    fn track_longest(&mut self, op: usize) {
        let depth = self.stack.len();
        let progress = self.history.completed_ops.len() - self.remaining;
        if self.shared == depth && self.longest.len() == depth {
            // Extending the longest path itself: the common case.
            self.longest.push(op);
            self.shared += 1;
            self.longest_progress = progress;
        } else if self.shared == depth && self.longest.get(depth) == Some(&op) {
            self.shared += 1;
        } else if progress > self.longest_progress {
            self.longest.clear();
            self.longest.extend(self.stack.iter().map(|frame| frame.op));
            self.longest.push(op);
            self.shared = depth + 1;
            self.longest_progress = progress;
        }
    }

    /// Continues the depth-first walk from the current seed: at each configuration, tries
    /// every candidate whose model step fits and whose resulting configuration the cache has
    /// not seen (nor one dominating it). In [`Mode::Layered`], configurations reached by
    /// placing an unknown operation go to the next layer instead.
    fn walk(&mut self) -> Explored {
        let ops = &self.history.ops;
        loop {
            // At most one configuration is visited per iteration, so this keeps the budget,
            // and stopping here leaves everything needed to resume in `self`.
            if self.visited >= self.budget {
                return Explored::OutOfBudget;
            }
            let Some(op) = self.next_candidate() else {
                // Every candidate failed here: take back the last placed operation and go on
                // with the candidates after it.
                let Some(frame) = self.stack.pop() else {
                    return Explored::Exhausted;
                };
                self.shared = self.shared.min(self.stack.len());
                self.set_placed(frame.op, false);
                self.state = frame.state_before;
                self.deadline = frame.deadline_before;
                self.cursor = frame.cursor_before;
                continue;
            };
            let prepared = &ops[op];
            let after_unknown = self
                .stack
                .last()
                .map_or(self.seed_after_unknown, |frame| ops[frame.op].is_unknown());
            if prepared.blind && after_unknown {
                continue;
            }
            if prepared.is_unknown() && self.later_identical_candidate(op) {
                continue;
            }
            let Some(next_state) = step(self.state, prepared.op, prepared.output) else {
                continue;
            };
            self.set_placed(op, true);
            if !self.cache.visit(&self.completed, &self.unknown, next_state) {
                self.set_placed(op, false);
                continue;
            }
            self.visited += 1;
            if self.remaining == 0 {
                return Explored::Linearizable;
            }
            if self.mode == Mode::Layered && prepared.is_unknown() {
                let (base, tail) = self.completed.prefix_and_tail();
                self.next_layer.push(Seed {
                    is_root: false,
                    base,
                    tail: tail.into(),
                    unknown: self.unknown.trimmed().into(),
                    state: next_state,
                    after_unknown: true,
                    remaining: self.remaining,
                });
                self.set_placed(op, false);
                continue;
            }
            if self.mode == Mode::DepthFirst {
                self.track_longest(op);
            }
            self.stack.push(Frame {
                op,
                state_before: self.state,
                deadline_before: self.deadline,
                cursor_before: self.cursor,
            });
            self.state = next_state;
            self.deadline = self.deadline();
            self.cursor = self.start_cursor();
        }
    }
}

/// FxHash (rustc's hasher) with a final mix: the cache hashes small integer keys millions of
/// times, where SipHash's DoS resistance buys nothing and costs most of the search time.
#[derive(Debug, Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // Fx leaves the low bits weak; hashbrown picks buckets from the low bits.
        let hash = self.hash ^ (self.hash >> 29);
        hash.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (hash >> 32)
    }
}

// ---------------------------------------------------------------------------------------------
// Explanations.

/// Bytes shown as a quoted string with non-printable bytes escaped.
struct DisplayBytes<'a>(&'a [u8]);

impl fmt::Display for DisplayBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Put { value } => format!("Put {}", DisplayBytes(value)),
        Op::Get => "Get".to_owned(),
        Op::Delete => "Delete".to_owned(),
        Op::CompareAndSet {
            expected_version,
            value,
        } => format!(
            "CompareAndSet(expected version {expected_version}) {}",
            DisplayBytes(value)
        ),
        Op::IncrBy { delta } => format!("IncrBy {delta}"),
    }
}

fn describe_version(version: Option<u64>) -> String {
    version.map_or_else(
        || "version not reported".to_owned(),
        |v| format!("version {v}"),
    )
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok { output, .. } => match output {
            Output::Ok { version } => format!("Ok ({})", describe_version(*version)),
            Output::Value(None) => "absent".to_owned(),
            Output::Value(Some((value, version))) => {
                format!("{} version {version}", DisplayBytes(value))
            }
            Output::Deleted(removed) => format!("Deleted({removed})"),
            Output::Cas(CasOutput::Ok { version }) => {
                format!("Cas stored ({})", describe_version(*version))
            }
            Output::Cas(CasOutput::Mismatch { current_version }) => {
                format!("Cas mismatch (current version {current_version})")
            }
            Output::Integer(number) => format!("Integer({number})"),
            Output::NotAnInteger => "NotAnInteger".to_owned(),
            Output::Overflow => "Overflow".to_owned(),
        },
        Outcome::Failed => "failed".to_owned(),
        Outcome::Unknown => "outcome unknown".to_owned(),
    }
}

fn describe_operation(id: OpId, operation: &Operation) -> String {
    let returned = match operation.outcome {
        Outcome::Ok { return_time, .. } => return_time.to_string(),
        _ => "?".to_owned(),
    };
    format!(
        "#{:<5} client {:<3} [{}, {}] {} -> {}",
        id.0,
        operation.client,
        operation.call_time,
        returned,
        describe_op(&operation.op),
        describe_outcome(&operation.outcome)
    )
}

impl KeyHistory {
    fn describe_state(&self, state: State) -> String {
        match state.entry {
            None => "absent".to_owned(),
            Some((value, version)) => {
                let version = match version {
                    Version::Known(version) => format!("version {version}"),
                    Version::Unknown => format!("unknown version > {}", state.floor),
                };
                format!("{} {version}", DisplayBytes(&self.interner.bytes(value)))
            }
        }
    }

    /// The explanation of a failing key: its operations, the longest linearizable prefix with
    /// the state after each step, and the operations that could have come next but did not fit.
    fn explain(&self, history: &History, key: &[u8], longest_prefix: &[usize]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "key {} has no linearization of its {} completed and {} outcome-unknown operations \
             (failed operations and unknown reads dropped).",
            DisplayBytes(key),
            self.completed_ops.len(),
            self.unknown_ops.len()
        );
        let _ = writeln!(
            out,
            "\nOperations on this key, by call time ([call, return], ? = no return):"
        );
        for prepared in &self.ops {
            let _ = writeln!(
                out,
                "  {}",
                describe_operation(prepared.id, &history.operations[prepared.id.0])
            );
        }
        if let Some(read) = self.unwritten_read {
            let id = self.ops[read].id;
            let _ = writeln!(
                out,
                "\nNo operation on this key writes the value this read returned, so no order can \
                 explain it (found before searching):\n  {}",
                describe_operation(id, &history.operations[id.0])
            );
            return out;
        }

        let mut state = State::INITIAL;
        let mut placed = vec![false; self.ops.len()];
        let _ = writeln!(
            out,
            "\nLongest linearizable prefix found ({} operations; state after each):",
            longest_prefix.len()
        );
        for (position, &op) in longest_prefix.iter().enumerate() {
            let prepared = &self.ops[op];
            if let Some(next) = step(state, prepared.op, prepared.output) {
                state = next;
            }
            placed[op] = true;
            let operation = &history.operations[prepared.id.0];
            let _ = writeln!(
                out,
                "  {:>4}. #{:<5} {} -> {}    => {}",
                position + 1,
                prepared.id.0,
                describe_op(&operation.op),
                describe_outcome(&operation.outcome),
                self.describe_state(state)
            );
        }

        // The candidates after the prefix: unplaced operations called no later than the
        // earliest return among unplaced completed operations.
        let deadline = self
            .ops
            .iter()
            .zip(&placed)
            .filter(|(_, placed)| !**placed)
            .filter_map(
                |(prepared, _)| match history.operations[prepared.id.0].outcome {
                    Outcome::Ok { return_time, .. } => Some(return_time),
                    _ => None,
                },
            )
            .min();
        let _ = writeln!(
            out,
            "\nFrom state {}, none of these could be placed next with a linearizable \
             continuation:",
            self.describe_state(state)
        );
        for (prepared, _) in self.ops.iter().zip(&placed).filter(|(_, placed)| !**placed) {
            let operation = &history.operations[prepared.id.0];
            if deadline.is_some_and(|deadline| operation.call_time <= deadline) {
                let why = if step(state, prepared.op, prepared.output).is_some() {
                    "fits this state, but every continuation after it failed"
                } else if prepared.is_unknown() {
                    "would change nothing here"
                } else {
                    "inconsistent with this state"
                };
                let _ = writeln!(
                    out,
                    "  {}    ({why})",
                    describe_operation(prepared.id, operation)
                );
            }
        }
        out
    }
}
