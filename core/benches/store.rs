//! Store and snapshot speed at one million keys (16-byte keys, 64-byte values).
//!
//! Run: `cargo bench -p memdi-core --bench store`. Each benchmark times a whole pass over
//! many keys and divan reports the median pass; divide by the item count (divan prints the
//! rate) for the time per operation. Timing single calls would mostly measure the timer.
//! The set-up prints the store's memory per key, and `reference_dram_dependent_load`
//! measures this machine's memory latency in the same run, the floor for a lookup that
//! misses the caches. Figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::sync::{LazyLock, Mutex};

use divan::Bencher;
use memdi_core::snapshot::{SnapshotDecoder, SnapshotEncoder};
use memdi_core::store::{SetOptions, Store, StoreLimits};

const KEYS: u32 = 1_000_000;
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 64;
const CHUNK_BYTES: usize = 64 * 1024;

fn limits() -> StoreLimits {
    StoreLimits {
        max_keys: KEYS,
        max_key_bytes: KEY_BYTES as u32,
        max_value_bytes: VALUE_BYTES as u32,
        // 100 bytes a record (20 of header), with 5% to spare.
        max_total_bytes: u64::from(KEYS) * 105,
    }
}

fn key(i: u32) -> [u8; KEY_BYTES] {
    let mut key = [0; KEY_BYTES];
    key.copy_from_slice(format!("key:{i:012}").as_bytes());
    key
}

/// A full store and its keys in a random order, so that lookups miss the caches as they
/// would under real traffic.
struct Fixture {
    store: Store<memmap2::MmapMut>,
    keys: Vec<[u8; KEY_BYTES]>,
}

/// Store memory as a server shell allocates it: anonymous pages, with transparent huge
/// pages asked for, since a random lookup otherwise pays a TLB miss on top of each cache
/// miss (dearly so in a virtual machine).
fn store_memory(limits: &StoreLimits) -> memmap2::MmapMut {
    let memory = memmap2::MmapMut::map_anon(limits.memory_bytes().unwrap()).unwrap();
    if std::env::var_os("MEMDI_BENCH_NO_HUGEPAGES").is_none() {
        memory.advise(memmap2::Advice::HugePage).unwrap();
    }
    memory
}

static FIXTURE: LazyLock<Mutex<Fixture>> = LazyLock::new(|| {
    let limits = limits();
    let mut store = Store::new(store_memory(&limits), limits, 42).unwrap();
    let value = [b'v'; VALUE_BYTES];
    for i in 0..KEYS {
        store
            .set(&key(i), &value, SetOptions::default(), 0)
            .unwrap();
    }
    let mut keys: Vec<_> = (0..KEYS).map(key).collect();
    // Fisher-Yates with a fixed xorshift, for a repeatable order.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..keys.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        keys.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let used = store.limits().index_bytes() as u64 + store.used_bytes();
    let per_key = used as f64 / f64::from(KEYS);
    let overhead = per_key - (KEY_BYTES + VALUE_BYTES) as f64;
    eprintln!(
        "memory: {KEYS} keys, index {} B + records {} B = {per_key:.1} B/key, \
         {overhead:.1} B/key beyond key and value",
        store.limits().index_bytes(),
        store.used_bytes(),
    );
    if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps_rollup") {
        for line in smaps.lines().filter(|l| l.starts_with("AnonHugePages")) {
            eprintln!("{line}");
        }
    }
    Mutex::new(Fixture { store, keys })
});

fn main() {
    divan::main();
}

/// Keys in the fixture's random order, timed as one pass per sample.
fn bench_gets(
    bencher: Bencher<'_, '_>,
    fixture: &Fixture,
    keys: &[[u8; KEY_BYTES]],
    passes: usize,
) {
    bencher
        .counter(divan::counter::ItemsCount::new(keys.len() * passes))
        .bench_local(|| {
            let mut found = 0;
            for _ in 0..passes {
                for key in keys {
                    found += usize::from(fixture.store.get(black_box(key), 0).is_some());
                }
            }
            black_box(found)
        });
}

/// Every key once, in random order: each lookup misses the CPU caches (110 MB of store).
#[divan::bench(sample_count = 7, sample_size = 1)]
fn get_hit_random_1m(bencher: Bencher<'_, '_>) {
    let fixture = FIXTURE.lock().unwrap();
    bench_gets(bencher, &fixture, &fixture.keys, 1);
}

/// 10,000 of the keys, over and over: a hot set that stays in the CPU caches.
#[divan::bench(sample_count = 7, sample_size = 1)]
fn get_hit_hot_10k(bencher: Bencher<'_, '_>) {
    let fixture = FIXTURE.lock().unwrap();
    bench_gets(bencher, &fixture, &fixture.keys[..10_000], 100);
}

/// Keys that are not there: one index probe, rarely a record read.
#[divan::bench(sample_count = 7, sample_size = 1)]
fn get_miss_random(bencher: Bencher<'_, '_>) {
    let fixture = FIXTURE.lock().unwrap();
    let missing: Vec<_> = (KEYS..2 * KEYS).map(key).collect();
    bench_gets(bencher, &fixture, &missing, 1);
}

/// Every key overwritten once, in random order, with a value of the same size.
#[divan::bench(sample_count = 7, sample_size = 1)]
fn set_overwrite_random_1m(bencher: Bencher<'_, '_>) {
    let mut fixture = FIXTURE.lock().unwrap();
    let fixture = &mut *fixture;
    let value = [b'w'; VALUE_BYTES];
    bencher
        .counter(divan::counter::ItemsCount::new(fixture.keys.len()))
        .bench_local(|| {
            for key in &fixture.keys {
                fixture
                    .store
                    .set(key, &value, SetOptions::default(), 0)
                    .unwrap();
            }
        });
}

/// 10,000 keys overwritten over and over: the write path when it stays in cache.
#[divan::bench(sample_count = 7, sample_size = 1)]
fn set_overwrite_hot_10k(bencher: Bencher<'_, '_>) {
    let mut fixture = FIXTURE.lock().unwrap();
    let fixture = &mut *fixture;
    let value = [b'x'; VALUE_BYTES];
    let hot = &fixture.keys[..10_000];
    bencher
        .counter(divan::counter::ItemsCount::new(hot.len() * 100))
        .bench_local(|| {
            for _ in 0..100 {
                for key in hot {
                    fixture
                        .store
                        .set(key, &value, SetOptions::default(), 0)
                        .unwrap();
                }
            }
        });
}

/// Fills an empty store with one million keys.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn set_insert_1m(bencher: Bencher<'_, '_>) {
    let limits = limits();
    let mut store = Store::new(store_memory(&limits), limits, 7).unwrap();
    let keys: Vec<_> = (0..KEYS).map(key).collect();
    let value = [b'v'; VALUE_BYTES];
    bencher
        .counter(divan::counter::ItemsCount::new(KEYS))
        .bench_local(|| {
            store.clear();
            for key in &keys {
                store.set(key, &value, SetOptions::default(), 0).unwrap();
            }
        });
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn snapshot_encode_1m(bencher: Bencher<'_, '_>) {
    let fixture = FIXTURE.lock().unwrap();
    let mut chunk = vec![0; CHUNK_BYTES];
    bencher.bench_local(|| {
        let mut encoder = SnapshotEncoder::new(&fixture.store, 0, 0);
        let mut total = 0;
        while !encoder.is_done() {
            total += encoder.fill(&fixture.store, &mut chunk).unwrap();
        }
        black_box(total)
    });
}

/// Loads one million keys into a store (clearing it first, which is part of a load).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn snapshot_decode_1m(bencher: Bencher<'_, '_>) {
    let fixture = FIXTURE.lock().unwrap();
    let mut encoder = SnapshotEncoder::new(&fixture.store, 0, 0);
    let mut bytes = Vec::new();
    let mut chunk = vec![0; CHUNK_BYTES];
    while !encoder.is_done() {
        let n = encoder.fill(&fixture.store, &mut chunk).unwrap();
        bytes.extend_from_slice(&chunk[..n]);
    }
    let limits = limits();
    let mut target = Store::new(store_memory(&limits), limits, 9).unwrap();
    bencher.bench_local(|| {
        target.clear();
        let mut decoder = SnapshotDecoder::new();
        for piece in bytes.chunks(CHUNK_BYTES) {
            decoder.feed(&mut target, piece).unwrap();
        }
        decoder.finish(&mut target).unwrap();
        black_box(target.len())
    });
}

/// This machine's latency for one load that depends on the previous one, over 128 MiB of
/// huge-page memory in one random cycle: what a cache-missing lookup cannot beat per miss.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn reference_dram_dependent_load(bencher: Bencher<'_, '_>) {
    const SLOTS: usize = 128 * 1024 * 1024 / 8;
    const STEPS: usize = 2_000_000;
    let mut memory = memmap2::MmapMut::map_anon(SLOTS * 8).unwrap();
    memory.advise(memmap2::Advice::HugePage).unwrap();
    let mut next: Vec<usize> = (0..SLOTS).collect();
    // Sattolo's shuffle: a single cycle through every slot.
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..SLOTS).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        next.swap(i, (state % i as u64) as usize);
    }
    for (slot, bytes) in next.iter().zip(memory.chunks_exact_mut(8)) {
        bytes.copy_from_slice(&(*slot as u64).to_le_bytes());
    }
    let read = |at: usize| {
        let mut word = [0; 8];
        word.copy_from_slice(&memory[at * 8..at * 8 + 8]);
        u64::from_le_bytes(word) as usize
    };
    bencher
        .counter(divan::counter::ItemsCount::new(STEPS))
        .bench_local(|| {
            let mut at = 0;
            for _ in 0..STEPS {
                at = read(at);
            }
            black_box(at)
        });
}
