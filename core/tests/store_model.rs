//! The store against a `BTreeMap` model, over random operation sequences.
//!
//! The model states the store's documented semantics directly: versions from one counter,
//! lazy expiry with reclaim-on-full, exact byte accounting by `record_bytes`, and which
//! limit a refused write hits. Small limits make the full-store path, expiry and arena
//! compaction happen in most sequences.

use std::collections::{BTreeMap, BTreeSet};

use memdi_core::store::{
    record_bytes, CasOutcome, FullReason, IncrError, IncrOutcome, SetCondition, SetExpiry,
    SetOptions, SetOutcome, Store, StoreLimits, WriteError,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelEntry {
    value: Vec<u8>,
    version: u64,
    expires_at_ms: Option<u64>,
}

/// What the store should do, written as plainly as possible.
#[derive(Debug)]
struct Model {
    limits: StoreLimits,
    entries: BTreeMap<Vec<u8>, ModelEntry>,
    last_version: u64,
}

fn size_of(key: &[u8], entry: &ModelEntry) -> u64 {
    record_bytes(key.len(), entry.value.len(), entry.expires_at_ms.is_some()).unwrap()
}

fn expired(entry: &ModelEntry, now_ms: u64) -> bool {
    entry.expires_at_ms.is_some_and(|at| at <= now_ms)
}

impl Model {
    fn used_bytes(&self) -> u64 {
        self.entries.iter().map(|(k, e)| size_of(k, e)).sum()
    }

    fn live(&self, key: &[u8], now_ms: u64) -> Option<&ModelEntry> {
        self.entries.get(key).filter(|e| !expired(e, now_ms))
    }

    fn purge(&mut self, now_ms: u64) -> u32 {
        let before = self.entries.len();
        self.entries.retain(|_, e| !expired(e, now_ms));
        (before - self.entries.len()) as u32
    }

    fn room_for(&self, key: &[u8], new_len: u64) -> Result<(), FullReason> {
        let releasing = match self.entries.get(key) {
            Some(old) => size_of(key, old),
            None => {
                if self.entries.len() as u32 >= self.limits.max_keys {
                    return Err(FullReason::Keys);
                }
                0
            }
        };
        if self.used_bytes() - releasing + new_len <= self.limits.max_total_bytes & !3 {
            Ok(())
        } else {
            Err(FullReason::Bytes)
        }
    }

    fn check_sizes(&self, key: &[u8], value: &[u8]) -> Result<(), WriteError> {
        if key.len() > self.limits.max_key_bytes as usize {
            return Err(WriteError::KeyTooLarge {
                len: key.len(),
                max: self.limits.max_key_bytes,
            });
        }
        if value.len() > self.limits.max_value_bytes as usize {
            return Err(WriteError::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes,
            });
        }
        Ok(())
    }

    fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: SetOptions,
        now_ms: u64,
    ) -> Result<SetOutcome, WriteError> {
        self.check_sizes(key, value)?;
        let attempt = |model: &mut Model| -> Result<SetOutcome, WriteError> {
            let current = model.live(key, now_ms).cloned();
            let allowed = match options.condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => current.is_none(),
                SetCondition::IfPresent => current.is_some(),
            };
            if !allowed {
                return Ok(SetOutcome::NotStored);
            }
            let expires_at_ms = match options.expiry {
                SetExpiry::Clear => None,
                SetExpiry::Keep => current.and_then(|e| e.expires_at_ms),
                SetExpiry::At(at) => Some(at),
            };
            let entry = ModelEntry {
                value: value.to_vec(),
                version: model.last_version + 1,
                expires_at_ms,
            };
            model
                .room_for(key, size_of(key, &entry))
                .map_err(WriteError::Full)?;
            model.last_version += 1;
            let version = entry.version;
            model.entries.insert(key.to_vec(), entry);
            Ok(SetOutcome::Stored { version })
        };
        match attempt(self) {
            Err(WriteError::Full(_)) => {
                // The store reclaims every expired key before refusing a write.
                self.purge(now_ms);
                attempt(self)
            }
            result => result,
        }
    }

    fn cas(
        &mut self,
        key: &[u8],
        expected_version: u64,
        value: &[u8],
        expiry: SetExpiry,
        now_ms: u64,
    ) -> Result<CasOutcome, WriteError> {
        self.check_sizes(key, value)?;
        let current_version = self.live(key, now_ms).map_or(0, |e| e.version);
        if current_version != expected_version {
            return Ok(CasOutcome::VersionMismatch { current_version });
        }
        let options = SetOptions {
            condition: SetCondition::Always,
            expiry,
        };
        match self.set(key, value, options, now_ms)? {
            SetOutcome::Stored { version } => Ok(CasOutcome::Stored { version }),
            SetOutcome::NotStored => unreachable!(),
        }
    }

    fn incr(&mut self, key: &[u8], delta: i64, now_ms: u64) -> Result<IncrOutcome, IncrError> {
        let current = match self.live(key, now_ms) {
            None => 0,
            Some(entry) => {
                let text =
                    std::str::from_utf8(&entry.value).map_err(|_| IncrError::NotAnInteger)?;
                let parsed: i64 = text.parse().map_err(|_| IncrError::NotAnInteger)?;
                // Only the canonical form counts (no '+', no leading zeros).
                if parsed.to_string() != text {
                    return Err(IncrError::NotAnInteger);
                }
                parsed
            }
        };
        let value = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let options = SetOptions {
            condition: SetCondition::Always,
            expiry: SetExpiry::Keep,
        };
        match self
            .set(key, value.to_string().as_bytes(), options, now_ms)
            .map_err(IncrError::Write)?
        {
            SetOutcome::Stored { version } => Ok(IncrOutcome { value, version }),
            SetOutcome::NotStored => unreachable!(),
        }
    }

    fn delete(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.entries
            .remove(key)
            .is_some_and(|e| !expired(&e, now_ms))
    }
}

#[derive(Debug, Clone)]
enum Expiry {
    Clear,
    Keep,
    AfterMs(u64),
}

#[derive(Debug, Clone)]
enum Expect {
    Current,
    Zero,
    Other(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Get(Vec<u8>),
    Exists(Vec<u8>),
    Set(Vec<u8>, Vec<u8>, SetCondition, Expiry),
    Delete(Vec<u8>),
    Incr(Vec<u8>, i64),
    Cas(Vec<u8>, Expect, Vec<u8>, Expiry),
    Scan(Vec<u8>, usize, usize),
    Advance(u64),
    Sweep(usize),
    Purge,
    Clear,
}

fn key_strategy(max_key_bytes: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A small key space, so that keys are overwritten, deleted and found again.
        8 => (0u8..12).prop_map(|i| vec![b'k', i]),
        2 => proptest::collection::vec(any::<u8>(), 0..=max_key_bytes + 2),
    ]
}

fn value_strategy(max_value_bytes: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(any::<u8>(), 0..=max_value_bytes + 2),
        3 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        1 => Just(b"007".to_vec()),
    ]
}

fn expiry_strategy() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        3 => Just(Expiry::Clear),
        1 => Just(Expiry::Keep),
        2 => (0u64..40).prop_map(Expiry::AfterMs),
    ]
}

fn condition_strategy() -> impl Strategy<Value = SetCondition> {
    prop_oneof![
        3 => Just(SetCondition::Always),
        1 => Just(SetCondition::IfAbsent),
        1 => Just(SetCondition::IfPresent),
    ]
}

fn op_strategy(max_key_bytes: usize, max_value_bytes: usize) -> impl Strategy<Value = Op> {
    let key = move || key_strategy(max_key_bytes);
    prop_oneof![
        4 => key().prop_map(Op::Get),
        1 => key().prop_map(Op::Exists),
        8 => (key(), value_strategy(max_value_bytes), condition_strategy(), expiry_strategy())
            .prop_map(|(k, v, c, e)| Op::Set(k, v, c, e)),
        2 => key().prop_map(Op::Delete),
        2 => (key(), prop_oneof![-5i64..5, any::<i64>()]).prop_map(|(k, d)| Op::Incr(k, d)),
        2 => (
            key(),
            prop_oneof![Just(Expect::Current), Just(Expect::Zero), (1u64..50).prop_map(Expect::Other)],
            value_strategy(max_value_bytes),
            expiry_strategy()
        )
            .prop_map(|(k, x, v, e)| Op::Cas(k, x, v, e)),
        1 => (prop_oneof![Just(vec![]), Just(vec![b'k']), key()], 1usize..6, 1usize..4)
            .prop_map(|(p, c, b)| Op::Scan(p, c, b)),
        2 => (0u64..15).prop_map(Op::Advance),
        1 => (1usize..8).prop_map(Op::Sweep),
        1 => Just(Op::Purge),
        1 => prop_oneof![49 => Just(Op::Advance(0)), 1 => Just(Op::Clear)],
    ]
}

fn resolve(expiry: &Expiry, now_ms: u64) -> SetExpiry {
    match expiry {
        Expiry::Clear => SetExpiry::Clear,
        Expiry::Keep => SetExpiry::Keep,
        Expiry::AfterMs(ms) => SetExpiry::At(now_ms + ms),
    }
}

/// Scans the whole store with a visitor that takes at most `batch` keys per call.
fn full_scan(
    store: &Store<Vec<u8>>,
    prefix: &[u8],
    count: usize,
    batch: usize,
    now_ms: u64,
) -> BTreeSet<Vec<u8>> {
    let mut seen = BTreeSet::new();
    let mut cursor = 0;
    for _ in 0..10_000 {
        let mut taken = 0;
        cursor = store.scan(cursor, prefix, count, now_ms, |entry| {
            if taken == batch {
                return false;
            }
            taken += 1;
            seen.insert(entry.key.to_vec());
            true
        });
        if cursor == 0 {
            return seen;
        }
    }
    panic!("scan did not finish in 10,000 calls");
}

fn run(limits: StoreLimits, seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let memory = vec![0u8; limits.memory_bytes().unwrap()];
    let mut store = Store::new(memory, limits, seed).unwrap();
    let mut model = Model {
        limits,
        entries: BTreeMap::new(),
        last_version: 0,
    };
    let mut now_ms = 1_000;
    let mut sweep_cursor = 0;
    for op in ops {
        match op {
            Op::Get(key) => {
                let got = store.get(&key, now_ms).map(|e| ModelEntry {
                    value: e.value.to_vec(),
                    version: e.version,
                    expires_at_ms: e.expires_at_ms,
                });
                prop_assert_eq!(got.as_ref(), model.live(&key, now_ms));
            }
            Op::Exists(key) => {
                prop_assert_eq!(
                    store.exists(&key, now_ms),
                    model.live(&key, now_ms).is_some()
                );
            }
            Op::Set(key, value, condition, expiry) => {
                let options = SetOptions {
                    condition,
                    expiry: resolve(&expiry, now_ms),
                };
                prop_assert_eq!(
                    store.set(&key, &value, options, now_ms),
                    model.set(&key, &value, options, now_ms)
                );
            }
            Op::Delete(key) => {
                prop_assert_eq!(store.delete(&key, now_ms), model.delete(&key, now_ms));
            }
            Op::Incr(key, delta) => {
                prop_assert_eq!(
                    store.incr_by(&key, delta, now_ms),
                    model.incr(&key, delta, now_ms)
                );
            }
            Op::Cas(key, expect, value, expiry) => {
                let expected_version = match expect {
                    Expect::Current => model.live(&key, now_ms).map_or(0, |e| e.version),
                    Expect::Zero => 0,
                    Expect::Other(v) => v,
                };
                let expiry = resolve(&expiry, now_ms);
                prop_assert_eq!(
                    store.compare_and_set(&key, expected_version, &value, expiry, now_ms),
                    model.cas(&key, expected_version, &value, expiry, now_ms)
                );
            }
            Op::Scan(prefix, count, batch) => {
                let want: BTreeSet<Vec<u8>> = model
                    .entries
                    .iter()
                    .filter(|(k, e)| k.starts_with(&prefix) && !expired(e, now_ms))
                    .map(|(k, _)| k.clone())
                    .collect();
                prop_assert_eq!(full_scan(&store, &prefix, count, batch, now_ms), want);
            }
            Op::Advance(ms) => now_ms += ms,
            Op::Sweep(max_slots) => {
                let before = store.len();
                let (next, removed) = store.sweep_expired(now_ms, sweep_cursor, max_slots);
                sweep_cursor = next;
                prop_assert_eq!(before - removed, store.len());
                // Whatever it removed was expired; the model drops the same keys by
                // comparing key sets below.
                let kept: BTreeSet<Vec<u8>> = store.iter().map(|e| e.key.to_vec()).collect();
                let model_keys: Vec<Vec<u8>> = model.entries.keys().cloned().collect();
                for key in model_keys {
                    if !kept.contains(&key) {
                        let entry = model.entries.remove(&key).unwrap();
                        prop_assert!(expired(&entry, now_ms), "sweep removed a live key");
                    }
                }
            }
            Op::Purge => {
                prop_assert_eq!(store.purge_expired(now_ms), model.purge(now_ms));
            }
            Op::Clear => {
                store.clear();
                model.entries.clear();
            }
        }
        prop_assert_eq!(store.len() as usize, model.entries.len());
        prop_assert_eq!(
            store.len_with_expiry() as usize,
            model
                .entries
                .values()
                .filter(|entry| entry.expires_at_ms.is_some())
                .count()
        );
        prop_assert_eq!(store.used_bytes(), model.used_bytes());
        prop_assert_eq!(store.last_version(), model.last_version);
    }
    // Finally every stored entry matches, expired or not.
    let stored: BTreeMap<Vec<u8>, ModelEntry> = store
        .iter()
        .map(|e| {
            (
                e.key.to_vec(),
                ModelEntry {
                    value: e.value.to_vec(),
                    version: e.version,
                    expires_at_ms: e.expires_at_ms,
                },
            )
        })
        .collect();
    prop_assert_eq!(stored, model.entries);
    Ok(())
}

fn small_limits() -> impl Strategy<Value = StoreLimits> {
    (1u32..12, 2u32..10, 0u32..40, 24u64..600).prop_map(|(keys, key_bytes, value_bytes, total)| {
        StoreLimits {
            max_keys: keys,
            max_key_bytes: key_bytes,
            max_value_bytes: value_bytes,
            max_total_bytes: total,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Tight limits: most sequences fill the store, expire keys and compact the arena.
    #[test]
    fn store_matches_model_under_tight_limits(
        limits in small_limits(),
        seed: u64,
        ops in proptest::collection::vec(op_strategy(10, 42), 1..200),
    ) {
        run(limits, seed, ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Values above the exact-size free lists' range, to exercise the first-fit list.
    #[test]
    fn store_matches_model_with_large_values(
        seed: u64,
        ops in proptest::collection::vec(op_strategy(10, 3000), 1..150),
    ) {
        let limits = StoreLimits {
            max_keys: 10,
            max_key_bytes: 10,
            max_value_bytes: 3000,
            max_total_bytes: 12_000,
        };
        run(limits, seed, ops)?;
    }
}

/// A key present for a whole scan is returned, however the store changes in between.
#[test]
fn scan_returns_keys_present_throughout_despite_concurrent_writes() {
    let limits = StoreLimits {
        max_keys: 400,
        max_key_bytes: 16,
        max_value_bytes: 8,
        max_total_bytes: 400 * 48,
    };
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let plan = proptest::collection::vec((any::<u16>(), any::<bool>()), 2000);
    // Keys are displaced from their home slots only in a dense table, so fill it to the
    // limit (load factor 0.8): 300 stable keys and up to 100 of 200 churned ones.
    for round in 0..200u64 {
        let churn = plan.new_tree(&mut runner).unwrap().current();
        let mut store =
            Store::new(vec![0u8; limits.memory_bytes().unwrap()], limits, round).unwrap();
        let stable: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("stable{i}").into_bytes())
            .collect();
        for key in &stable {
            store.set(key, b"v", SetOptions::default(), 0).unwrap();
        }
        let mut churned = churn.iter();
        let mut seen = BTreeSet::new();
        let mut cursor = 0;
        for _ in 0..10_000 {
            // A visitor with room for only a few keys, as a reply buffer would be.
            let room = 1 + (round as usize % 4);
            let mut taken = 0;
            cursor = store.scan(cursor, b"", 3, 0, |entry| {
                if taken == room {
                    return false;
                }
                taken += 1;
                seen.insert(entry.key.to_vec());
                true
            });
            if cursor == 0 {
                break;
            }
            // Between calls, insert and delete other keys, shifting runs around.
            for (n, insert) in churned.by_ref().take(20) {
                let key = format!("churn{}", n % 200).into_bytes();
                if *insert {
                    let _ = store.set(&key, b"v", SetOptions::default(), 0);
                } else {
                    store.delete(&key, 0);
                }
            }
        }
        assert_eq!(cursor, 0, "scan did not finish");
        for key in &stable {
            assert!(
                seen.contains(key),
                "round {round}: scan missed {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
}
