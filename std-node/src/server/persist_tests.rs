//! The disk writer, the node task's link to it and start-up restore, together on a real
//! core node (a single voter, driven by hand): what one run writes, the next run restores,
//! including after a crash in the middle of a checkpoint and after a checkpoint that failed.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use memdi_core::cluster::{ClientAction, Log, LogLimits, NodeConfig, Role, TicketEvent};
use memdi_core::store::{Store, StoreLimits};
use memdi_core::wire::{
    decode, encode, ClientMessage, ClusterId, Durability, Expiry, NodeId, Request, Response,
    ServerMessage, SetCondition, WriteOptions, FRAME_HEADER_BYTES,
};

use super::disk_link::{DiskLink, Flushed};
use super::disk_writer::{DiskReport, DiskWriter};
use super::restore::restore;
use super::CoreNode;
use crate::config::FsyncPolicy;
use crate::{log_file, snapshot_file};

const STORE: StoreLimits = StoreLimits {
    max_keys: 64,
    max_key_bytes: 16,
    max_value_bytes: 16,
    max_total_bytes: 8192,
};

/// A node restored from `dir`, its link to a running disk writer, and the writer.
struct Harness {
    node: Box<CoreNode>,
    disk: DiskLink,
    writer: JoinHandle<()>,
    now_ms: u64,
}

impl Harness {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, FsyncPolicy::Always)
    }

    /// With `everysec` or `no`, the link appends to the log directly when it can.
    fn start_with(dir: &Path, policy: FsyncPolicy) -> Self {
        let store = Store::new(vec![0; STORE.memory_bytes().unwrap()], STORE, 1).unwrap();
        let limits = LogLimits {
            max_entries: 256,
            max_bytes: 64 * 1024,
        };
        let log = Log::new(vec![0; limits.memory_bytes()], limits).unwrap();
        let mut config = NodeConfig::new(NodeId(1), ClusterId(1), &[NodeId(1)]);
        config.persistent = true;
        let restored = restore(dir, store, log, config, 1_000).unwrap();
        let writer = DiskWriter::open(dir, restored.log_base_index, policy).unwrap();
        let direct = writer.direct_log();
        let (jobs, receiver) = mpsc::channel();
        let (reports_sender, reports) = tokio::sync::mpsc::unbounded_channel();
        let writer = std::thread::spawn(move || writer.run(receiver, reports_sender));
        let mut disk = DiskLink::new(jobs, reports, restored.log_bytes, direct);
        disk.start_at(restored.node.log().last_index());
        Self {
            node: restored.node,
            disk,
            writer,
            now_ms: 1_000,
        }
    }

    /// Started with `policy` from what `dir` holds, leading, every report taken.
    fn restarted(dir: &Path, policy: FsyncPolicy) -> Self {
        let mut run = Self::start_with(dir, policy);
        run.lead();
        run.settle();
        run
    }

    /// Started with `policy`, leading, with `k0` written and every report taken.
    fn leading_with_k0(dir: &Path, policy: FsyncPolicy) -> Self {
        let mut run = Self::start_with(dir, policy);
        run.lead();
        run.set("k0", "v");
        run.settle();
        run
    }

    /// Records the core's persist items without handing them to the disk yet.
    fn gather(&mut self) {
        while let Some(persist) = self.node.poll_persist() {
            assert!(!self.disk.record(&self.node, persist), "no snapshot comes");
        }
    }

    /// Gives the core's persist items to the writer, as the node task does.
    fn persist(&mut self) {
        self.gather();
        self.flush();
    }

    /// Flushes the gathered records; if they were written directly, acts on it as the node
    /// task does on the writer's report.
    fn flush(&mut self) -> Flushed {
        let flushed = self.disk.flush().unwrap();
        if let Flushed::Written { seq } = flushed {
            if let (_, Some(index)) = self.disk.durable(seq) {
                self.node.handle_persisted(index);
            }
        }
        flushed
    }

    /// Runs timers until this single voter leads.
    fn lead(&mut self) {
        for _ in 0..100 {
            if self.node.role() == Role::Leader {
                return;
            }
            self.now_ms = self.node.poll_timeout().max(self.now_ms);
            self.node.handle_timeout(self.now_ms);
            self.persist();
        }
        panic!("a single voter did not become leader");
    }

    fn set(&mut self, key: &str, value: &str) {
        self.set_unpersisted(key, value);
        self.persist();
    }

    /// Sends a SET asking for `durability` and returns what the core does with it.
    fn set_with(&mut self, key: &str, durability: Durability) -> ClientAction {
        let message = ClientMessage {
            request_id: 1,
            request: Request::Set {
                key: key.as_bytes(),
                value: b"v",
                condition: SetCondition::Always,
                expiry: Expiry::None,
                write: WriteOptions {
                    ack: None,
                    durability: Some(durability),
                },
            },
        };
        let mut payload = [0u8; 128];
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0; 64 * 1024];
        let action = self
            .node
            .handle_client_frame(self.now_ms, &payload[..len], &mut out);
        self.persist();
        action
    }

    /// A write whose persist items are not drained: a checkpoint taken now must carry them.
    fn set_unpersisted(&mut self, key: &str, value: &str) {
        let message = ClientMessage {
            request_id: 1,
            request: Request::Set {
                key: key.as_bytes(),
                value: value.as_bytes(),
                condition: SetCondition::Always,
                expiry: Expiry::None,
                write: WriteOptions::default(),
            },
        };
        let mut payload = [0u8; 128];
        let len = encode(&message, &mut payload).unwrap().len();
        let mut out = vec![0; 64 * 1024];
        let action = self
            .node
            .handle_client_frame(self.now_ms, &payload[..len], &mut out);
        let ClientAction::Reply { len, .. } = action else {
            panic!("{action:?}");
        };
        let reply: ServerMessage<'_> = decode(&out[FRAME_HEADER_BYTES..len]).unwrap();
        assert!(
            matches!(reply.response, Response::Stored { .. }),
            "{reply:?}"
        );
    }

    /// Waits until the writer has made every job durable; returns the other reports.
    fn settle(&mut self) -> Vec<DiskReport> {
        let mut others = Vec::new();
        while self.disk.waiting_outputs() > 0 || self.disk.pending_jobs() > 0 {
            match self.disk.reports.blocking_recv().expect("the writer runs") {
                DiskReport::Durable { seq } => {
                    if let (_, Some(index)) = self.disk.durable(seq) {
                        self.node.handle_persisted(index);
                    }
                }
                other => others.push(other),
            }
        }
        others
    }

    /// Ends the run like a crash after everything reached the disk.
    fn stop(mut self) -> Vec<DiskReport> {
        let mut others = self.settle();
        self.disk.close();
        self.writer.join().unwrap();
        // A checkpoint reported durable early reports its end after: the writer has
        // ended, so every report it sent is here.
        while let Ok(report) = self.disk.reports.try_recv() {
            if !matches!(report, DiskReport::Durable { .. }) {
                others.push(report);
            }
        }
        others
    }
}

/// Runs `test` on a thread with the main thread's stack size: a node (4,096 tickets) is
/// built on the stack before it is boxed, as in `Prepared::new`.
fn on_a_large_stack(test: fn()) {
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// A test whose body runs on a large stack ([`on_a_large_stack`]).
macro_rules! large_stack_test {
    ($(#[$attr:meta])* fn $name:ident() $body:block) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            fn body() $body
            on_a_large_stack(body);
        }
    };
}

fn value(node: &CoreNode, key: &str) -> Option<Vec<u8>> {
    node.store()
        .get(key.as_bytes(), 0)
        .map(|value| value.value.to_vec())
}

large_stack_test! {
    fn a_restart_restores_term_and_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::start(dir.path());
        run.lead();
        for i in 0..20 {
            run.set(&format!("k{i}"), &format!("v{i}"));
        }
        let term = run.node.term();
        let last_index = run.node.log().last_index();
        assert!(run.stop().is_empty());

        let run = Harness::start(dir.path());
        assert_eq!(run.node.term(), term);
        assert_eq!(run.node.log().last_index(), last_index);
        for i in 0..20 {
            assert_eq!(
                value(&run.node, &format!("k{i}")),
                Some(format!("v{i}").into_bytes())
            );
        }
        run.stop();
    }
}

large_stack_test! {
    /// A crash after the checkpoint's snapshot was renamed, before its new log was: the new
    /// snapshot and the old log (and a half-written new log under its temporary name).
    fn a_crash_between_the_snapshot_and_the_new_log_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::start(dir.path());
        run.lead();
        for i in 0..10 {
            run.set(&format!("k{i}"), "before");
        }
        let applied = run.node.applied_index();
        let term = run.node.term();
        let snapshot = snapshot_file::encode(run.node.store(), term, applied).unwrap();
        snapshot_file::save(dir.path(), &snapshot).unwrap();
        let temp = log_file::log_path(dir.path(), applied).with_extension("memdi.tmp");
        std::fs::write(&temp, b"half a log").unwrap();
        for i in 5..15 {
            run.set(&format!("k{i}"), "after");
        }
        run.stop();

        let run = Harness::start(dir.path());
        assert_eq!(run.node.term(), term);
        for i in 0..15 {
            let expected = if i < 5 { "before" } else { "after" };
            assert_eq!(
                value(&run.node, &format!("k{i}")),
                Some(expected.as_bytes().to_vec()),
                "k{i}"
            );
        }
        run.stop();
    }
}

large_stack_test! {
    /// A checkpoint whose snapshot cannot be written reports the failure and appends its
    /// records to the current log, so the next start still has everything.
    fn a_failed_checkpoint_keeps_its_records_in_the_current_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::start(dir.path());
        run.lead();
        for i in 0..10 {
            run.set(&format!("k{i}"), "v");
        }
        run.set_unpersisted("unreported", "v");
        // The snapshot's temporary file cannot be created: a directory has its name.
        std::fs::create_dir(dir.path().join("snapshot.memdi.tmp")).unwrap();
        let (seq, _) = run.disk.checkpoint(&mut run.node).unwrap();
        let reports = run.stop();
        assert_ends_checkpoint(&reports, seq, false);
        assert!(!snapshot_file::snapshot_path(dir.path()).exists());

        std::fs::remove_dir(dir.path().join("snapshot.memdi.tmp")).unwrap();
        let mut run = Harness::start(dir.path());
        for i in 0..10 {
            assert_eq!(value(&run.node, &format!("k{i}")), Some(b"v".to_vec()));
        }
        // Its entry is in the log; it commits (and applies) once this node leads again.
        run.lead();
        run.settle();
        assert_eq!(value(&run.node, "unreported"), Some(b"v".to_vec()));
        // And a checkpoint now succeeds, starting a log of its own.
        let grown = run.disk.log_bytes();
        assert_eq!(
            grown,
            std::fs::metadata(&log_file::find_logs(dir.path()).unwrap()[0].1)
                .unwrap()
                .len(),
            "the restored log's size is counted"
        );
        let (seq, _) = run.disk.checkpoint(&mut run.node).unwrap();
        assert!(
            run.disk.log_bytes() > 0 && run.disk.log_bytes() <= grown,
            "the new log holds only the checkpoint's records"
        );
        let reports = run.stop();
        assert_ends_checkpoint(&reports, seq, true);
        assert_eq!(log_file::find_logs(dir.path()).unwrap().len(), 1);
        let run = Harness::start(dir.path());
        assert_eq!(value(&run.node, "k9"), Some(b"v".to_vec()));
        run.stop();
    }
}

large_stack_test! {
    /// A write at `durability: disk` is answered only once the writer reports its entry
    /// durable; one at `memory` at once.
    fn a_disk_write_waits_for_the_writers_report() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::start(dir.path());
        run.lead();
        run.settle();
        assert!(matches!(
            run.set_with("fast", Durability::Memory),
            ClientAction::Reply { .. }
        ));
        let ClientAction::Wait { ticket, .. } = run.set_with("durable", Durability::Disk) else {
            panic!("a disk write was answered before its entry was written");
        };
        let mut out = vec![0; 64 * 1024];
        assert_eq!(run.node.poll_ticket_event(&mut out), None, "released early");
        run.settle();
        assert_eq!(
            run.node.poll_ticket_event(&mut out),
            Some(TicketEvent::Release { ticket })
        );
        run.stop();
    }
}

large_stack_test! {
    /// Outputs given after a job wait for it, in order, and are released by its report.
    fn outputs_wait_for_the_records_given_before_them() {
        use super::disk_link::Dest;
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::start(dir.path());
        assert!(
            run.disk
                .gate(Dest::Peer(NodeId(2)), Some(vec![0]))
                .is_some(),
            "nothing to wait for"
        );
        run.lead(); // records a vote and a no-op entry
        assert!(run
            .disk
            .gate(Dest::Peer(NodeId(2)), Some(vec![1]))
            .is_none());
        assert!(run.disk.gate(Dest::Client(7), None).is_none());
        assert_eq!(run.disk.waiting_outputs(), 2);
        // Reports of earlier jobs release nothing; the last job's releases both, in order.
        let mut released = Vec::new();
        let mut index = None;
        while released.is_empty() {
            let DiskReport::Durable { seq } = run.disk.reports.blocking_recv().unwrap() else {
                panic!("expected a durable report");
            };
            let (now_released, now_index) = run.disk.durable(seq);
            released = now_released;
            index = now_index.or(index);
        }
        assert_eq!(run.disk.pending_jobs(), 0);
        assert_eq!(released.len(), 2);
        assert_eq!(released[0].frame, Some(vec![1]));
        assert_eq!(released[1].frame, None);
        assert_eq!(index, Some(run.node.log().last_index()));
        run.stop();
    }
}

large_stack_test! {
    /// Records gathered for the next job hold the outputs given after them, until that job is
    /// handed over and reported durable (the node task hands over a batch's records once).
    fn outputs_wait_for_records_not_yet_handed_over() {
        use super::disk_link::Dest;
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::start(dir.path());
        run.lead();
        run.settle();
        assert!(!run.disk.holds_outputs());
        assert!(run.disk.gate(Dest::Client(7), Some(vec![0])).is_some());
        // Two writes' records gathered, not handed over: one job later.
        run.set_unpersisted("a", "1");
        run.set_unpersisted("b", "2");
        run.gather();
        assert_eq!(run.disk.pending_jobs(), 0);
        assert!(run.disk.holds_outputs());
        assert!(
            run.disk.gate(Dest::Client(7), Some(vec![1])).is_none(),
            "waits for the gathered records"
        );
        assert!(run.disk.gate(Dest::Client(7), Some(vec![2])).is_none());
        assert_eq!(run.disk.flush().unwrap(), Flushed::Handed);
        assert_eq!(run.disk.pending_jobs(), 1, "one job for both writes");
        let DiskReport::Durable { seq } = run.disk.reports.blocking_recv().unwrap() else {
            panic!("expected a durable report");
        };
        let (released, index) = run.disk.durable(seq);
        let frames: Vec<_> = released.into_iter().map(|gated| gated.frame).collect();
        assert_eq!(frames, vec![Some(vec![1]), Some(vec![2])]);
        assert_eq!(index, Some(run.node.log().last_index()));
        run.node.handle_persisted(run.node.log().last_index());
        assert!(!run.disk.holds_outputs());
        run.stop();
    }
}

/// The size of the only log file in `dir`.
fn log_file_bytes(dir: &Path) -> u64 {
    let logs = log_file::find_logs(dir).unwrap();
    assert_eq!(logs.len(), 1);
    std::fs::metadata(&logs[0].1).unwrap().len()
}

large_stack_test! {
    /// With `--fsync no` (and `everysec`) and the writer idle, a turn's records go to the log at
    /// once, durable to the policy, and the outputs after them are released without a report.
    fn records_go_to_the_log_directly_while_the_writer_is_idle() {
        use super::disk_link::Dest;
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::restarted(dir.path(), FsyncPolicy::No);
        let before = log_file_bytes(dir.path());
        run.set_unpersisted("a", "1");
        run.gather();
        assert!(run.disk.gate(Dest::Client(7), Some(vec![1])).is_none());
        let Flushed::Written { seq } = run.disk.flush().unwrap() else {
            panic!("the writer is idle: the records go to the log directly");
        };
        assert_eq!(log_file_bytes(dir.path()), run.disk.log_bytes());
        assert!(
            log_file_bytes(dir.path()) > before,
            "written before the answer"
        );
        let (released, index) = run.disk.durable(seq);
        let frames: Vec<_> = released.into_iter().map(|gated| gated.frame).collect();
        assert_eq!(frames, vec![Some(vec![1])]);
        let last_index = run.node.log().last_index();
        assert_eq!(index, Some(last_index));
        assert!(run.stop().is_empty(), "no job reached the writer");

        let run = Harness::start_with(dir.path(), FsyncPolicy::No);
        assert_eq!(
            run.node.log().last_index(),
            last_index,
            "the write's entry is restored from the log"
        );
        run.stop();
    }
}

large_stack_test! {
    /// While the writer has a job in hand that it has not reported (here a checkpoint, before
    /// its report reaches the link), records go to it as a job too: written directly they
    /// could land before the records of the jobs ahead of them.
    fn records_wait_for_a_job_in_the_writers_hands() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::leading_with_k0(dir.path(), FsyncPolicy::Everysec);
        let (seq, _) = run.disk.checkpoint(&mut run.node).unwrap();
        run.set_unpersisted("k1", "v");
        run.gather();
        assert_eq!(run.disk.flush().unwrap(), Flushed::Handed);
        assert_eq!(
            run.disk.pending_jobs(),
            2,
            "the checkpoint, then these records"
        );
        let reports = run.stop();
        assert_ends_checkpoint(&reports, seq, true);

        let run = Harness::restarted(dir.path(), FsyncPolicy::Everysec);
        assert_eq!(value(&run.node, "k0"), Some(b"v".to_vec()));
        assert_eq!(
            value(&run.node, "k1"),
            Some(b"v".to_vec()),
            "in the new log"
        );
        run.stop();
    }
}

/// Takes a checkpoint and waits for the writer's first report of it: with `everysec` and
/// `no` that comes at once, before the snapshot is written. Returns the checkpoint's job.
fn checkpoint_reported_early(run: &mut Harness) -> u64 {
    let (seq, _) = run.disk.checkpoint(&mut run.node).unwrap();
    let DiskReport::Durable { seq: reported } = run.disk.reports.blocking_recv().unwrap() else {
        panic!("the checkpoint's job is reported durable before anything else");
    };
    assert_eq!(reported, seq);
    if let (_, Some(index)) = run.disk.durable(reported) {
        run.node.handle_persisted(index);
    }
    assert_eq!(run.disk.pending_jobs(), 0);
    seq
}

large_stack_test! {
    /// With `--fsync no`, records keep going to the log directly while a checkpoint is being
    /// written (its job is reported at once: the current log holds all it says), and those
    /// written before the new log took over are carried into it.
    fn appends_go_on_during_a_checkpoint_and_move_to_the_new_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::leading_with_k0(dir.path(), FsyncPolicy::No);
        let seq = checkpoint_reported_early(&mut run);
        for i in 1..=5 {
            run.set_unpersisted(&format!("k{i}"), "v");
            run.gather();
            assert!(
                matches!(run.flush(), Flushed::Written { .. }),
                "written directly while the snapshot is written"
            );
        }
        let last_index = run.node.log().last_index();
        let reports = run.stop();
        assert_ends_checkpoint(&reports, seq, true);
        assert_eq!(
            log_file::find_logs(dir.path()).unwrap().len(),
            1,
            "the new log only"
        );

        let mut run = Harness::start_with(dir.path(), FsyncPolicy::No);
        assert_eq!(
            run.node.log().last_index(),
            last_index,
            "every record carried"
        );
        run.lead();
        run.settle();
        for i in 0..=5 {
            assert_eq!(
                value(&run.node, &format!("k{i}")),
                Some(b"v".to_vec()),
                "k{i}"
            );
        }
        run.stop();
    }
}

large_stack_test! {
    /// A checkpoint reported early that then fails leaves the current log in use, holding the
    /// checkpoint's records and those appended directly since.
    fn a_checkpoint_reported_early_that_fails_keeps_the_current_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::leading_with_k0(dir.path(), FsyncPolicy::Everysec);
        // The snapshot's temporary file cannot be created: a directory has its name.
        std::fs::create_dir(dir.path().join("snapshot.memdi.tmp")).unwrap();
        let seq = checkpoint_reported_early(&mut run);
        run.set_unpersisted("k1", "v");
        run.gather();
        assert!(
            matches!(run.flush(), Flushed::Written { .. }),
            "written directly once the checkpoint is reported"
        );
        let last_index = run.node.log().last_index();
        let reports = run.stop();
        assert_ends_checkpoint(&reports, seq, false);

        std::fs::remove_dir(dir.path().join("snapshot.memdi.tmp")).unwrap();
        let mut run = Harness::start_with(dir.path(), FsyncPolicy::Everysec);
        assert_eq!(run.node.log().last_index(), last_index);
        run.lead();
        run.settle();
        assert_eq!(value(&run.node, "k0"), Some(b"v".to_vec()));
        assert_eq!(
            value(&run.node, "k1"),
            Some(b"v".to_vec()),
            "appended during the checkpoint"
        );
        run.stop();
    }
}

large_stack_test! {
    /// With `--fsync no` too, a checkpoint that carries records not handed over before it (the
    /// core gives them to the checkpoint) is not reported early: if it fails, they go to the
    /// current log, as with `always`.
    fn a_checkpoint_with_records_of_its_own_waits_for_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Harness::leading_with_k0(dir.path(), FsyncPolicy::No);
        run.set_unpersisted("unreported", "v");
        std::fs::create_dir(dir.path().join("snapshot.memdi.tmp")).unwrap();
        let (seq, _) = run.disk.checkpoint(&mut run.node).unwrap();
        assert_eq!(run.disk.pending_jobs(), 1);
        let reports = run.stop();
        assert_ends_checkpoint(&reports, seq, false);

        std::fs::remove_dir(dir.path().join("snapshot.memdi.tmp")).unwrap();
        let run = Harness::restarted(dir.path(), FsyncPolicy::No);
        assert_eq!(value(&run.node, "unreported"), Some(b"v".to_vec()));
        run.stop();
    }
}

/// `reports` (besides durability) are only the end of checkpoint `seq`: saved, or failed.
fn assert_ends_checkpoint(reports: &[DiskReport], seq: u64, saved: bool) {
    let ended = match reports {
        [DiskReport::CheckpointSaved { seq: ended, .. }] if saved => *ended,
        [DiskReport::CheckpointFailed { seq: ended, .. }] if !saved => *ended,
        _ => panic!(
            "expected checkpoint {seq} to be {}: {reports:?}",
            if saved { "saved" } else { "failed" }
        ),
    };
    assert_eq!(ended, seq, "{reports:?}");
}
