//! The node task's side of the disk writer: turns what the core asks to persist into
//! records and checkpoints, and holds back every output the core gave after them until the
//! disk writer reports them durable.
//!
//! This is the ordering rule of docs/protocol.md 4.8 ("persist before sending anything
//! given after"), done without waiting: the node task keeps handling input while the
//! writer works, and outputs queue here in the order the core gave them. A frame the core
//! returns from a `handle_*` call itself (a reply, a forward) is treated as given after that
//! call's persist items, because it may promise them (an append acknowledgement promises the
//! entries, a vote the vote); the node task drains `poll_persist` before dispatching it.
//!
//! Records are gathered and handed to the writer as one job when the node task calls
//! [`DiskLink::flush`] (once per batch of inputs). An output given while records are
//! gathered but not yet handed over waits for the job they will go to, the next one.
//!
//! With `--fsync everysec` or `no`, `flush` appends the records to the log itself when the
//! writer has no job in hand ([`DirectLog`]): the job is then durable to its policy at
//! once, and the node task releases what waited for it as it would on the writer's report.

use std::collections::VecDeque;
use std::sync::mpsc::Sender;

use memdi_core::cluster::{Checkpoint, Persist};
use memdi_core::wire::NodeId;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::disk_writer::{
    CheckpointJob, DirectLog, DirectWriteError, DiskJob, DiskReport, FrozenStore,
};
use super::CoreNode;
use crate::log_file::encode_record;
use crate::log_record::LogRecord;

/// Where an output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// A client connection.
    Client(u64),
    /// A peer.
    Peer(NodeId),
}

/// An output waiting for the disk.
#[derive(Debug)]
pub struct Gated {
    /// The job it waits for.
    seq: u64,
    /// Where it goes.
    pub to: Dest,
    /// The whole frame; `None` for "close the client connection".
    pub frame: Option<Vec<u8>>,
}

/// Why a checkpoint was not handed to the writer.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The node keeps nothing on disk (`--persistence none`).
    #[error("this node keeps nothing on disk (--persistence none)")]
    Off,
    /// The store does not match the log (a snapshot from the leader is loading, or the
    /// store is stale): a snapshot of it would not describe this node.
    #[error("the store does not match the log yet (waiting for a snapshot from the leader)")]
    NotNow,
    /// The store could not be copied for the writer.
    #[error("cannot copy the store for its snapshot: {0:?}")]
    Copy(memdi_core::store::StoreInitError),
    /// The records gathered before it could not be handed over.
    #[error(transparent)]
    Flush(#[from] FlushError),
}

/// Why the gathered records could not be handed to the disk: either way the node must stop,
/// as what it gave after them may never be durable.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The disk writer has stopped.
    #[error("the disk writer has stopped")]
    WriterStopped,
    /// Appending them to the log directly failed.
    #[error(transparent)]
    Direct(#[from] DirectWriteError),
}

/// What [`DiskLink::flush`] did with the gathered records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// There were none.
    Nothing,
    /// Handed to the writer as a job, which its report will say is durable.
    Handed,
    /// Written to the log directly as job `seq`, durable to the policy now: the caller acts
    /// as on `DiskReport::Durable { seq }`.
    Written {
        /// The job.
        seq: u64,
    },
}

/// The node task's link to the disk writer.
#[derive(Debug)]
pub struct DiskLink {
    jobs: Option<Sender<DiskJob>>,
    /// Reports from the writer.
    pub reports: UnboundedReceiver<DiskReport>,
    /// The last job handed to the writer.
    issued_seq: u64,
    /// The last job the writer reported durable.
    durable_seq: u64,
    /// The log index through which each job not yet durable makes the log durable (capped
    /// when a later truncation replaces entries it wrote).
    pending: VecDeque<(u64, u64)>,
    /// Outputs waiting for their job, in the order the core gave them.
    gated: VecDeque<Gated>,
    /// Records gathered for the next append job.
    framed: Vec<u8>,
    payload: Vec<u8>,
    /// The last log index handed to the writer.
    reported_last_index: u64,
    /// Bytes handed to the writer for the current log file (which a checkpoint replaces).
    log_bytes: u64,
    /// The writer failed or stopped: what the core gives now may never reach the disk, so
    /// no output leaves any more (the node is stopping).
    failed: bool,
    /// The current log, for appending to it directly (`--fsync everysec` and `no`).
    direct: Option<DirectLog>,
    /// `--persistence none`: no writer, and the sender of `reports`, kept so that waiting
    /// for a report waits for ever until [`Self::close`] drops it.
    in_memory: Option<UnboundedSender<DiskReport>>,
}

impl DiskLink {
    /// A link over the writer's channels; the current log file holds `log_bytes` already.
    /// With `direct` ([`super::disk_writer::DiskWriter::direct_log`]), records go to the
    /// log directly whenever the writer has no job in hand.
    pub fn new(
        jobs: Sender<DiskJob>,
        reports: UnboundedReceiver<DiskReport>,
        log_bytes: u64,
        direct: Option<DirectLog>,
    ) -> Self {
        Self {
            jobs: Some(jobs),
            reports,
            issued_seq: 0,
            durable_seq: 0,
            pending: VecDeque::new(),
            gated: VecDeque::new(),
            framed: Vec::new(),
            payload: Vec::new(),
            reported_last_index: 0,
            log_bytes,
            failed: false,
            direct,
            in_memory: None,
        }
    }

    /// The link of a node that keeps nothing on disk: its core asks for no records (it is
    /// not `persistent`), so nothing ever waits here, and every checkpoint is refused
    /// ([`CheckpointError::Off`]).
    pub fn in_memory() -> Self {
        let (reports_sender, reports) = tokio::sync::mpsc::unbounded_channel();
        let (jobs, _) = std::sync::mpsc::channel();
        Self {
            in_memory: Some(reports_sender),
            ..Self::new(jobs, reports, 0, None)
        }
    }

    /// Everything in the restored log is on disk already.
    pub fn start_at(&mut self, last_index: u64) {
        self.reported_last_index = last_index;
    }

    /// Records one persist item (not `StoreReplaced`, which needs a checkpoint: returns
    /// `true` for it and records nothing).
    pub fn record(&mut self, node: &CoreNode, persist: Persist) -> bool {
        match persist {
            Persist::HardState(state) => self.push(LogRecord::HardState(state)),
            Persist::Log { from, to } => {
                if from > to {
                    self.push(LogRecord::Truncate(from));
                }
                for index in from..=to {
                    let Some((term, bytes)) = node.log().entry(index) else {
                        // A persistent node keeps unreported entries (persist.rs).
                        unreachable!("the core discarded unreported entry {index}");
                    };
                    self.payload.clear();
                    LogRecord::Entry { index, term, bytes }.encode(&mut self.payload);
                    encode_record(&self.payload, &mut self.framed);
                }
                // Jobs not yet durable wrote entries from `from` on that are now replaced.
                for (_, index) in self.pending.iter_mut() {
                    *index = (*index).min(from - 1);
                }
                self.reported_last_index = to;
            }
            Persist::Committed {
                index,
                cluster_time_ms,
            } => self.push(LogRecord::Committed {
                index,
                cluster_time_ms,
            }),
            Persist::StoreReplaced => {
                // The jobs not yet durable wrote the log the snapshot replaced: they make
                // nothing of the new log durable (the core forgot what was persisted).
                for (_, index) in self.pending.iter_mut() {
                    *index = 0;
                }
                return true;
            }
        }
        false
    }

    fn push(&mut self, record: LogRecord<'_>) {
        self.payload.clear();
        record.encode(&mut self.payload);
        encode_record(&self.payload, &mut self.framed);
    }

    /// Makes the gathered records one job: written to the log directly if this link may
    /// and the writer has no job in hand (so the file is the one they belong to and they
    /// land after every earlier job's), else handed to the writer.
    pub fn flush(&mut self) -> Result<Flushed, FlushError> {
        if self.framed.is_empty() {
            return Ok(Flushed::Nothing);
        }
        if self.pending.is_empty() && !self.failed {
            if let Some(direct) = &self.direct {
                if let Some(written) = direct.try_append(&self.framed) {
                    if let Err(error) = written {
                        self.failed = true;
                        return Err(error.into());
                    }
                    self.log_bytes += self.framed.len() as u64;
                    self.framed.clear();
                    self.issued_seq += 1;
                    self.pending
                        .push_back((self.issued_seq, self.reported_last_index));
                    return Ok(Flushed::Written {
                        seq: self.issued_seq,
                    });
                }
            }
        }
        self.flush_to_writer()
    }

    /// Hands the gathered records to the writer as one job.
    pub fn flush_to_writer(&mut self) -> Result<Flushed, FlushError> {
        if self.framed.is_empty() {
            return Ok(Flushed::Nothing);
        }
        let seq = self.issued_seq + 1;
        let framed = std::mem::take(&mut self.framed);
        self.log_bytes += framed.len() as u64;
        self.submit(DiskJob::Append { seq, framed })?;
        Ok(Flushed::Handed)
    }

    fn submit(&mut self, job: DiskJob) -> Result<(), FlushError> {
        let sent = match &self.jobs {
            Some(sender) => sender.send(job).is_ok(),
            None => false,
        };
        if !sent {
            self.failed = true;
            return Err(FlushError::WriterStopped);
        }
        self.issued_seq += 1;
        self.pending
            .push_back((self.issued_seq, self.reported_last_index));
        Ok(())
    }

    /// Takes a checkpoint of `node` and hands it to the writer (after the records gathered
    /// so far). Returns its job number, which a `CheckpointSaved` or `CheckpointFailed`
    /// report names, and the last entry its snapshot reflects.
    pub fn checkpoint(&mut self, node: &mut CoreNode) -> Result<(u64, u64), CheckpointError> {
        if self.in_memory.is_some() {
            return Err(CheckpointError::Off);
        }
        // Through the writer, in order with the checkpoint (what waits for these records
        // is released with it either way).
        self.flush_to_writer()?;
        // Asked before `checkpoint`, which takes whatever is unreported into its records.
        let covered_by_log = !node.has_unreported_state();
        let checkpoint = node.checkpoint().ok_or(CheckpointError::NotNow)?;
        let Checkpoint {
            applied,
            base,
            last_index,
            commit_index,
            hard_state,
            cluster_time_ms,
            members,
        } = checkpoint;
        // A copy for the writer to encode: a `memcpy` of the bytes in use here, where
        // encoding them here took 300 ms at a million keys and a follower that heard nothing
        // for that long stood for election (every periodic snapshot of a large store).
        let store = node.store();
        let memory = vec![
            0;
            store
                .limits()
                .memory_bytes()
                .map_err(CheckpointError::Copy)?
        ];
        let snapshot = FrozenStore {
            store: store.copy_into(memory).map_err(CheckpointError::Copy)?,
            term: applied.term.0,
            log_index: applied.index.0,
        };
        let mut head = Vec::new();
        self.payload.clear();
        LogRecord::HardState(hard_state).encode(&mut self.payload);
        encode_record(&self.payload, &mut head);
        let mut reset = Vec::new();
        self.payload.clear();
        LogRecord::Reset {
            base,
            members: members.as_bytes(),
        }
        .encode(&mut self.payload);
        encode_record(&self.payload, &mut reset);
        let mut tail = Vec::new();
        for index in base.index.0 + 1..=last_index {
            let Some((term, bytes)) = node.log().entry(index) else {
                unreachable!("a checkpoint's entry {index} is not in the log");
            };
            self.payload.clear();
            LogRecord::Entry { index, term, bytes }.encode(&mut self.payload);
            encode_record(&self.payload, &mut tail);
        }
        self.payload.clear();
        LogRecord::Committed {
            index: commit_index,
            cluster_time_ms,
        }
        .encode(&mut self.payload);
        encode_record(&self.payload, &mut tail);
        self.reported_last_index = last_index;
        // If the checkpoint fails, its records go to the current log: counted either way.
        self.log_bytes = (head.len() + reset.len() + tail.len()) as u64;
        let seq = self.issued_seq + 1;
        self.submit(DiskJob::Checkpoint(Box::new(CheckpointJob {
            seq,
            snapshot,
            base_index: base.index.0,
            head,
            reset,
            tail,
            covered_by_log,
        })))?;
        Ok((seq, applied.index.0))
    }

    /// The job an output given now waits for: the next one if records are gathered for
    /// it, else the last one handed over.
    fn wait_for(&self) -> u64 {
        self.issued_seq + u64::from(!self.framed.is_empty())
    }

    /// Whether an output given now must wait for the disk.
    fn must_wait(&self) -> bool {
        self.wait_for() > self.durable_seq
    }

    /// Whether an output given now does not leave at once (it waits, or the writer failed).
    #[cfg(test)]
    pub fn holds_outputs(&self) -> bool {
        self.failed || self.must_wait()
    }

    /// The writer has failed: from now on no output leaves.
    pub fn mark_failed(&mut self) {
        self.failed = true;
        self.gated.clear();
    }

    /// Queues `frame` for `to` if it must wait; otherwise gives it back to send now. After
    /// the writer failed, drops it.
    pub fn gate(&mut self, to: Dest, frame: Option<Vec<u8>>) -> Option<(Dest, Option<Vec<u8>>)> {
        if self.failed {
            return None;
        }
        if self.must_wait() {
            self.gated.push_back(Gated {
                seq: self.wait_for(),
                to,
                frame,
            });
            None
        } else {
            Some((to, frame))
        }
    }

    /// Queues a client's answer (`bytes`) when outputs must wait, after that client's
    /// answer queued last if nothing came between them: one buffer per run of answers to a
    /// connection (a pipelined batch's), not one allocation each. Returns whether it was
    /// taken (queued, or dropped because the writer failed); if not, send it now.
    pub fn gate_client_bytes(&mut self, conn: u64, bytes: &[u8]) -> bool {
        if self.failed {
            return true;
        }
        if !self.must_wait() {
            return false;
        }
        let seq = self.wait_for();
        let to = Dest::Client(conn);
        match self.gated.back_mut() {
            Some(Gated {
                seq: last_seq,
                to: last_to,
                frame: Some(frame),
            }) if *last_seq == seq && *last_to == to => frame.extend_from_slice(bytes),
            _ => self.gated.push_back(Gated {
                seq,
                to,
                frame: Some(bytes.to_vec()),
            }),
        }
        true
    }

    /// The writer made every job through `seq` durable: returns the outputs that may leave
    /// now, in order, and the log index now durable (for `Node::handle_persisted`).
    pub fn durable(&mut self, seq: u64) -> (Vec<Gated>, Option<u64>) {
        self.durable_seq = self.durable_seq.max(seq);
        let mut index = None;
        while let Some(&(job, job_index)) = self.pending.front() {
            if job > self.durable_seq {
                break;
            }
            index = Some(job_index);
            self.pending.pop_front();
        }
        let mut released = Vec::new();
        while self
            .gated
            .front()
            .is_some_and(|gated| gated.seq <= self.durable_seq)
        {
            released.extend(self.gated.pop_front());
        }
        (released, index)
    }

    /// Bytes handed to the writer for the current log since the last checkpoint (about the
    /// log file's size).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Outputs still waiting for the disk.
    pub fn waiting_outputs(&self) -> usize {
        self.gated.len()
    }

    /// Jobs handed to the writer and not yet reported durable.
    #[cfg(test)]
    pub fn pending_jobs(&self) -> usize {
        self.pending.len()
    }

    /// Stops feeding the writer: it fsyncs what it has and ends.
    pub fn close(&mut self) {
        self.jobs = None;
        self.in_memory = None;
    }
}
