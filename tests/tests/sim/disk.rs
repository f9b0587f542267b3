//! A simulated node's disk: a snapshot file and an append-only file of records, written the
//! way a shell writes them (with `--fsync always`: everything `poll_persist` gives is durable
//! before the node's next output leaves), and read back on restart through `Restore`.

use memdi_core::cluster::{Checkpoint, HardState, Log, Persist, Restore, RestoreError};
use memdi_core::snapshot::{SnapshotDecoder, SnapshotEncoder};
use memdi_core::store::Store;
use memdi_core::wire::{LogIndex, LogPosition, Term};

use super::cluster::{CoreNode, LOG_LIMITS, STORE_LIMITS};

/// One record of the append-only file.
#[derive(Debug, Clone)]
enum Record {
    HardState(HardState),
    Reset(LogPosition, Vec<u8>),
    Entry {
        index: u64,
        term: u64,
        bytes: Vec<u8>,
    },
    Truncate(u64),
    Committed {
        index: u64,
        cluster_time_ms: u64,
    },
}

#[derive(Debug, Default)]
pub struct Disk {
    snapshot: Option<Vec<u8>>,
    records: Vec<Record>,
    /// Checkpoints and records written, for the report.
    pub checkpoints: u64,
}

impl Disk {
    /// Writes what the node asks for. Returns whether it asked for a checkpoint.
    pub fn write(&mut self, node: &mut CoreNode, persist: Persist) -> bool {
        match persist {
            Persist::HardState(state) => self.records.push(Record::HardState(state)),
            Persist::Log { from, to } => {
                if from > to {
                    self.records.push(Record::Truncate(from));
                }
                for index in from..=to {
                    let (term, bytes) = node.log().entry(index).expect("unreported entry kept");
                    self.records.push(Record::Entry {
                        index,
                        term,
                        bytes: bytes.to_vec(),
                    });
                }
            }
            Persist::Committed {
                index,
                cluster_time_ms,
            } => self.records.push(Record::Committed {
                index,
                cluster_time_ms,
            }),
            Persist::StoreReplaced => return true,
        }
        node.handle_persisted(node.log().last_index());
        false
    }

    /// Writes a checkpoint of the node, if it can take one now: the snapshot, then a new
    /// record file that replaces the old.
    pub fn checkpoint(&mut self, node: &mut CoreNode) {
        let Some(checkpoint) = node.checkpoint() else {
            return;
        };
        let Checkpoint {
            applied,
            base,
            last_index,
            commit_index,
            hard_state,
            cluster_time_ms,
            members,
        } = checkpoint;
        // Fuzzy: a store loaded from a leader's fuzzy snapshot is exact only once it has
        // applied the entries after `applied` (see `Checkpoint`).
        let mut encoder = SnapshotEncoder::new_fuzzy(node.store(), applied.term.0, applied.index.0);
        let mut snapshot = Vec::new();
        let mut chunk = vec![0; 4096];
        while !encoder.is_done() {
            let len = encoder
                .fill(node.store(), &mut chunk)
                .expect("snapshot of an unchanging store");
            snapshot.extend_from_slice(&chunk[..len]);
        }
        let mut records = vec![
            Record::HardState(hard_state),
            Record::Reset(base, members.as_bytes().to_vec()),
        ];
        for index in base.index.0 + 1..=last_index {
            let (term, bytes) = node.log().entry(index).expect("checkpoint entry kept");
            records.push(Record::Entry {
                index,
                term,
                bytes: bytes.to_vec(),
            });
        }
        records.push(Record::Committed {
            index: commit_index,
            cluster_time_ms,
        });
        self.snapshot = Some(snapshot);
        self.records = records;
        self.checkpoints += 1;
        node.handle_persisted(last_index);
    }

    /// Rebuilds the node from what is on disk, as a shell does at start.
    pub fn restore(
        &self,
        config: memdi_core::cluster::NodeConfig,
        hash_seed: u64,
        now_ms: u64,
    ) -> Result<CoreNode, RestoreError> {
        let mut store = Store::new(
            vec![0; STORE_LIMITS.memory_bytes().unwrap()],
            STORE_LIMITS,
            hash_seed,
        )
        .unwrap();
        let mut applied = LogPosition {
            term: Term(0),
            index: LogIndex(0),
        };
        if let Some(snapshot) = &self.snapshot {
            let mut decoder = SnapshotDecoder::new();
            decoder.feed(&mut store, snapshot).expect("snapshot loads");
            let meta = decoder.finish(&mut store).expect("snapshot loads");
            applied = LogPosition {
                term: Term(meta.term),
                index: LogIndex(meta.log_index),
            };
        }
        let log = Log::new(vec![0; LOG_LIMITS.memory_bytes()], LOG_LIMITS).unwrap();
        let mut restore = Restore::new(store, log, applied);
        for record in &self.records {
            match record {
                Record::HardState(state) => restore.hard_state(*state),
                Record::Reset(base, members) => restore.reset(*base, members)?,
                Record::Entry { index, term, bytes } => restore.entry(*index, *term, bytes)?,
                Record::Truncate(from) => restore.truncate(*from),
                Record::Committed {
                    index,
                    cluster_time_ms,
                } => restore.committed(*index, *cluster_time_ms),
            }
        }
        Ok(restore.finish(config, now_ms))
    }
}
