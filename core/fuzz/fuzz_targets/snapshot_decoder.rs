//! Fuzzes `memdi_core::snapshot::SnapshotDecoder` with arbitrary bytes fed in arbitrary chunks
//! into a small store.
//!
//! Input layout: the first byte picks the chunk size, the rest is the snapshot. Checked,
//! besides "no panic": an error from `feed` is also the answer of `finish`; a rejected
//! snapshot leaves the store empty; an accepted one (rare without a seed corpus: the CRC
//! comes last, though every entry path before it is reached) holds as many keys as its
//! header says and re-encodes to the same metadata and length (entry order may differ).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memdi_core::snapshot::{SnapshotDecoder, SnapshotEncoder};
use memdi_core::store::{Store, StoreLimits};

const LIMITS: StoreLimits = StoreLimits {
    max_keys: 16,
    max_key_bytes: 32,
    max_value_bytes: 128,
    max_total_bytes: 2048,
};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, bytes)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(selector % 64) + 1;
    let mut store = Store::new(vec![0u8; LIMITS.memory_bytes().unwrap()], LIMITS, 1).unwrap();
    let mut decoder = SnapshotDecoder::new();
    let mut failed = false;
    for piece in bytes.chunks(chunk) {
        if decoder.feed(&mut store, piece).is_err() {
            failed = true;
            break;
        }
    }
    let result = decoder.finish(&mut store);
    if failed {
        assert!(
            result.is_err(),
            "finish accepted a snapshot that feed rejected"
        );
    }
    let Ok(meta) = result else {
        assert!(store.is_empty(), "a rejected snapshot left keys behind");
        return;
    };
    // Accepted: the store holds what the snapshot said, and encodes back to the same length
    // and the same metadata.
    assert_eq!(u64::from(store.len()), meta.entry_count);
    let mut encoder = SnapshotEncoder::new(&store, meta.term, meta.log_index);
    assert_eq!(encoder.meta(), &meta);
    let mut out = Vec::new();
    let mut buffer = [0u8; 97];
    while !encoder.is_done() {
        let n = encoder.fill(&store, &mut buffer).unwrap();
        out.extend_from_slice(&buffer[..n]);
    }
    assert_eq!(out.len(), bytes.len());
});
