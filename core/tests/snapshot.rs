//! The snapshot codec: round trips, and rejection of every damaged snapshot.

use std::collections::BTreeMap;

use memdi_core::snapshot::{
    SnapshotDecodeError, SnapshotDecoder, SnapshotEncodeError, SnapshotEncoder, SnapshotMeta,
};
use memdi_core::store::{
    FullReason, InsertError, SetExpiry, SetOptions, Store, StoreLimits, WriteError,
};
use proptest::prelude::*;

type Contents = BTreeMap<Vec<u8>, (Vec<u8>, u64, Option<u64>)>;

const LIMITS: StoreLimits = StoreLimits {
    max_keys: 200,
    max_key_bytes: 64,
    max_value_bytes: 300,
    max_total_bytes: 200 * 400,
};

fn new_store(limits: StoreLimits, seed: u64) -> Store<Vec<u8>> {
    Store::new(vec![0; limits.memory_bytes().unwrap()], limits, seed).unwrap()
}

fn contents(store: &Store<Vec<u8>>) -> Contents {
    store
        .iter()
        .map(|e| {
            (
                e.key.to_vec(),
                (e.value.to_vec(), e.version, e.expires_at_ms),
            )
        })
        .collect()
}

/// Encodes the whole store, cutting output into chunks of the given sizes (cycled).
fn encode(store: &Store<Vec<u8>>, term: u64, log_index: u64, chunk_sizes: &[usize]) -> Vec<u8> {
    let mut encoder = SnapshotEncoder::new(store, term, log_index);
    let mut out = Vec::new();
    for i in 0.. {
        let mut chunk = vec![0; chunk_sizes[i % chunk_sizes.len()]];
        let n = encoder.fill(store, &mut chunk).unwrap();
        out.extend_from_slice(&chunk[..n]);
        if encoder.is_done() {
            assert_eq!(encoder.fill(store, &mut chunk).unwrap(), 0);
            return out;
        }
        assert!(i < 10_000_000, "encoder did not finish");
    }
    unreachable!()
}

/// Decodes `bytes` fed in chunks of the given sizes (cycled) into `store`.
fn decode(
    store: &mut Store<Vec<u8>>,
    bytes: &[u8],
    chunk_sizes: &[usize],
) -> Result<SnapshotMeta, SnapshotDecodeError> {
    let mut decoder = SnapshotDecoder::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunk_sizes[i % chunk_sizes.len()].min(rest.len());
        i += 1;
        if let Err(error) = decoder.feed(store, &rest[..n]) {
            assert!(store.is_empty(), "store not cleared after {error:?}");
            // A failed decoder keeps failing.
            assert_eq!(decoder.feed(store, b"x"), Err(error));
            return decoder.finish(store);
        }
        rest = &rest[n..];
    }
    let result = decoder.finish(store);
    if result.is_err() {
        assert!(store.is_empty(), "store not cleared after {result:?}");
    }
    result
}

fn entry_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Option<u64>)> {
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::option::of(any::<u64>()),
    )
}

fn filled_store(seed: u64, entries: &[(Vec<u8>, Vec<u8>, Option<u64>)]) -> Store<Vec<u8>> {
    let mut store = new_store(LIMITS, seed);
    for (key, value, expiry) in entries {
        let options = SetOptions {
            expiry: expiry.map_or(SetExpiry::Clear, SetExpiry::At),
            ..SetOptions::default()
        };
        // now_ms 0: nothing is expired, so every entry goes into the snapshot as it is.
        store.set(key, value, options, 0).unwrap();
    }
    store
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..8, 8usize..100, 100usize..5000], 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any store survives a round trip, whatever the chunking on either side, into a store
    /// with another hash seed (so another slot order).
    #[test]
    fn round_trips_any_store(
        seed: u64,
        entries in proptest::collection::vec(entry_strategy(), 0..120),
        term: u64,
        log_index: u64,
        out_chunks in chunk_sizes(),
        in_chunks in chunk_sizes(),
    ) {
        let store = filled_store(seed, &entries);
        let bytes = encode(&store, term, log_index, &out_chunks);
        let mut loaded = new_store(LIMITS, seed.wrapping_add(1));
        let meta = decode(&mut loaded, &bytes, &in_chunks).unwrap();
        prop_assert_eq!(meta, SnapshotMeta {
            term,
            log_index,
            last_version: store.last_version(),
            entry_count: u64::from(store.len()),
            fuzzy: false,
        });
        prop_assert_eq!(contents(&loaded), contents(&store));
        prop_assert_eq!(loaded.last_version(), store.last_version());
        prop_assert_eq!(loaded.used_bytes(), store.used_bytes());
        // Chunking never changes the bytes.
        prop_assert_eq!(encode(&store, term, log_index, &[7]), bytes);
    }

    /// Random bytes are rejected, never loaded and never a panic.
    #[test]
    fn random_bytes_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..2000), chunks in chunk_sizes()) {
        let mut store = new_store(LIMITS, 1);
        prop_assert!(decode(&mut store, &bytes, &chunks).is_err());
        prop_assert!(store.is_empty());
    }

    /// Random bytes after a valid header get past the magic and version checks.
    #[test]
    fn random_entries_after_a_valid_header_are_rejected(tail in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let store = filled_store(3, &[(b"k".to_vec(), b"v".to_vec(), None)]);
        let mut bytes = encode(&store, 1, 1, &[4096])[..48].to_vec();
        bytes[40] = 5; // claim five entries
        bytes.extend_from_slice(&tail);
        let mut target = new_store(LIMITS, 1);
        prop_assert!(decode(&mut target, &bytes, &[13]).is_err());
    }
}

fn sample_store() -> Store<Vec<u8>> {
    let entries: Vec<_> = (0..12u8)
        .map(|i| {
            (
                vec![b'k', i],
                vec![i; usize::from(i) * 3],
                (i % 3 == 0).then_some(1_000 + u64::from(i)),
            )
        })
        .collect();
    filled_store(9, &entries)
}

#[test]
fn every_truncation_is_rejected() {
    let store = sample_store();
    let bytes = encode(&store, 4, 77, &[4096]);
    for cut in 0..bytes.len() {
        let mut target = new_store(LIMITS, 2);
        let result = decode(&mut target, &bytes[..cut], &[cut.max(1)]);
        assert_eq!(result, Err(SnapshotDecodeError::Truncated), "cut at {cut}");
        assert!(target.is_empty());
    }
    let mut target = new_store(LIMITS, 2);
    assert!(decode(&mut target, &bytes, &[5]).is_ok());
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let store = sample_store();
    let bytes = encode(&store, 4, 77, &[4096]);
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let mut target = new_store(LIMITS, 2);
        let result = decode(&mut target, &damaged, &[3, 50]);
        assert!(result.is_err(), "flip of bit {bit} was loaded");
        assert!(target.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Several flipped bits, or a flipped byte, anywhere.
    #[test]
    fn random_damage_is_rejected(flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let store = sample_store();
        let bytes = encode(&store, 4, 77, &[4096]);
        let mut damaged = bytes.clone();
        for (at, mask) in &flips {
            damaged[at.index(bytes.len())] ^= mask;
        }
        prop_assume!(damaged != bytes);
        let mut target = new_store(LIMITS, 2);
        prop_assert!(decode(&mut target, &damaged, &[64]).is_err());
    }
}

#[test]
fn bytes_after_the_trailer_are_rejected() {
    let mut bytes = encode(&sample_store(), 0, 0, &[4096]);
    bytes.push(0);
    let mut target = new_store(LIMITS, 2);
    assert_eq!(
        decode(&mut target, &bytes, &[4096]),
        Err(SnapshotDecodeError::TrailingBytes)
    );
}

#[test]
fn a_snapshot_too_large_for_the_store_is_rejected_and_nothing_kept() {
    let bytes = encode(&sample_store(), 0, 0, &[4096]);
    let few_keys = StoreLimits {
        max_keys: 5,
        ..LIMITS
    };
    let mut target = new_store(few_keys, 2);
    assert_eq!(
        decode(&mut target, &bytes, &[100]),
        Err(SnapshotDecodeError::Entry(InsertError::Write(
            WriteError::Full(FullReason::Keys)
        )))
    );
    let short_values = StoreLimits {
        max_value_bytes: 10,
        ..LIMITS
    };
    let mut target = new_store(short_values, 2);
    assert!(matches!(
        decode(&mut target, &bytes, &[100]),
        Err(SnapshotDecodeError::Entry(InsertError::Write(
            WriteError::ValueTooLarge { .. }
        )))
    ));
}

#[test]
fn loading_into_a_non_empty_store_is_refused() {
    let bytes = encode(&sample_store(), 0, 0, &[4096]);
    let mut target = new_store(LIMITS, 2);
    target.set(b"x", b"y", SetOptions::default(), 0).unwrap();
    let mut decoder = SnapshotDecoder::new();
    assert_eq!(
        decoder.feed(&mut target, &bytes),
        Err(SnapshotDecodeError::StoreNotEmpty)
    );
}

#[test]
fn a_store_written_during_encoding_abandons_the_snapshot() {
    let mut store = sample_store();
    let mut encoder = SnapshotEncoder::new(&store, 0, 0);
    let mut chunk = [0; 64];
    encoder.fill(&store, &mut chunk).unwrap();
    store
        .set(b"new", b"value", SetOptions::default(), 0)
        .unwrap();
    assert_eq!(
        encoder.fill(&store, &mut chunk),
        Err(SnapshotEncodeError::StoreChanged)
    );
}

#[test]
fn versions_keep_rising_after_a_load() {
    let store = sample_store();
    let bytes = encode(&store, 0, 0, &[4096]);
    let mut target = new_store(LIMITS, 2);
    decode(&mut target, &bytes, &[4096]).unwrap();
    let outcome = target
        .set(b"fresh", b"v", SetOptions::default(), 0)
        .unwrap();
    assert_eq!(
        outcome,
        memdi_core::store::SetOutcome::Stored {
            version: store.last_version() + 1
        }
    );
}

/// The bytes of a one-entry snapshot are frozen: changing them needs a new
/// `FORMAT_VERSION` (and a reader for the old one).
#[test]
fn golden_bytes_of_a_one_entry_snapshot() {
    let mut store = new_store(LIMITS, 0);
    let options = SetOptions {
        expiry: SetExpiry::At(0x0102),
        ..SetOptions::default()
    };
    store.set(b"key", b"value", options, 0).unwrap();
    let bytes = encode(&store, 3, 9, &[4096]);
    let expected = concat!(
        "4d454d4449534e50", // magic "MEMDISNP"
        "0100",             // format version 1
        "0000",             // reserved
        "00000000",         // reserved
        "0300000000000000", // term 3
        "0900000000000000", // log index 9
        "0100000000000000", // last version 1
        "0100000000000000", // one entry
        "01",               // flags: has expiry
        "03000000",         // key length 3
        "05000000",         // value length 5
        "0100000000000000", // version 1
        "0201000000000000", // expires at 0x0102
        "6b6579",           // "key"
        "76616c7565",       // "value"
        "4d454d4449454e44", // trailer magic "MEMDIEND"
    );
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(&hex[..hex.len() - 8], expected);
    let crc = crc32fast::hash(&bytes[..bytes.len() - 4]);
    assert_eq!(&bytes[bytes.len() - 4..], &crc.to_le_bytes());
}

#[derive(Debug, Clone)]
enum Change {
    Put(u8, Vec<u8>),
    Delete(u8),
}

fn apply_change(store: &mut Store<Vec<u8>>, change: &Change) {
    match change {
        Change::Put(key, value) => {
            store
                .set(&[b'k', *key], value, SetOptions::default(), 0)
                .unwrap();
        }
        Change::Delete(key) => {
            store.delete(&[b'k', *key], 0);
        }
    }
}

fn change_strategy() -> impl Strategy<Value = Change> {
    prop_oneof![
        3 => (0u8..60, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(k, v)| Change::Put(k, v)),
        2 => (0u8..60).prop_map(Change::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// A fuzzy snapshot taken while the store changes, loaded and brought forward by
    /// replaying the changes made since it started, gives exactly the final store.
    #[test]
    fn fuzzy_snapshot_plus_replay_gives_the_final_store(
        seed: u64,
        initial in proptest::collection::vec(change_strategy(), 0..120),
        during in proptest::collection::vec(proptest::collection::vec(change_strategy(), 0..6), 0..60),
        chunk in 80usize..400,
    ) {
        let limits = StoreLimits { max_keys: 64, max_key_bytes: 4, max_value_bytes: 40, max_total_bytes: 64 * 80 };
        let mut store = new_store(limits, seed);
        for change in &initial {
            apply_change(&mut store, change);
        }
        let mut encoder = SnapshotEncoder::new_fuzzy(&store, 2, 40);
        let mut bytes = Vec::new();
        let mut replay = Vec::new();
        let mut batches = during.iter();
        let mut buffer = vec![0; chunk];
        for _ in 0..100_000 {
            if encoder.is_done() {
                break;
            }
            let n = encoder.fill(&store, &mut buffer).unwrap();
            bytes.extend_from_slice(&buffer[..n]);
            // The store changes between chunks.
            for change in batches.next().into_iter().flatten() {
                apply_change(&mut store, change);
                replay.push(change.clone());
            }
        }
        prop_assert!(encoder.is_done());
        // Changes after the snapshot ended are replayed too.
        for change in batches.flatten() {
            apply_change(&mut store, change);
            replay.push(change.clone());
        }
        let mut loaded = new_store(limits, seed ^ 1);
        let meta = decode(&mut loaded, &bytes, &[7, 64]).unwrap();
        prop_assert!(meta.fuzzy);
        prop_assert_eq!((meta.term, meta.log_index), (2, 40));
        for change in &replay {
            apply_change(&mut loaded, change);
        }
        prop_assert_eq!(contents(&loaded), contents(&store));
        prop_assert_eq!(loaded.last_version(), store.last_version());
    }
}

#[test]
fn fuzzy_snapshots_are_rejected_when_damaged() {
    let store = sample_store();
    let mut encoder = SnapshotEncoder::new_fuzzy(&store, 1, 1);
    let mut bytes = Vec::new();
    let mut buffer = [0; 300];
    while !encoder.is_done() {
        let n = encoder.fill(&store, &mut buffer).unwrap();
        bytes.extend_from_slice(&buffer[..n]);
    }
    let mut target = new_store(LIMITS, 2);
    assert!(decode(&mut target, &bytes, &[5]).unwrap().fuzzy);
    for cut in 0..bytes.len() {
        let mut target = new_store(LIMITS, 2);
        assert_eq!(
            decode(&mut target, &bytes[..cut], &[9]),
            Err(SnapshotDecodeError::Truncated)
        );
    }
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let mut target = new_store(LIMITS, 2);
        assert!(
            decode(&mut target, &damaged, &[64]).is_err(),
            "flip of bit {bit} was loaded"
        );
        assert!(target.is_empty());
    }
}

#[test]
fn a_fuzzy_snapshot_needs_room_for_a_whole_entry() {
    let store = sample_store();
    let mut encoder = SnapshotEncoder::new_fuzzy(&store, 1, 1);
    let mut big = [0; 48];
    assert_eq!(encoder.fill(&store, &mut big), Ok(48));
    let mut small = [0; 10];
    assert!(matches!(
        encoder.fill(&store, &mut small),
        Err(SnapshotEncodeError::BufferTooSmall { .. })
    ));
}
