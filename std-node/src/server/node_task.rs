//! The node task: the one owner of the core's `Node`.
//!
//! Connection tasks only cut byte streams into frames; every frame comes here over one
//! bounded channel, and this task alone calls the core, so the protocol logic runs on one
//! thread with no locks. A client connection sends every complete frame one read of its
//! socket gave as one message ([`Input::ClientFrames`]); this task hands them to
//! `handle_client_frame` one by one, in order, then drains the core's outputs
//! (`poll_peer_transmit`, `poll_ticket_event`, `poll_event`) once for the batch, and
//! re-arms its timer from `poll_timeout`, as the core's call order asks (the core's queues
//! for these outputs do not fill from client frames: waiting requests end through the
//! ticket table, which holds one ending per ticket, and appends are built when polled).
//!
//! Replies for one client produced in one turn of this task (one batch of inputs, one disk
//! report, one timer) are gathered and given to the connection's writer as one message
//! ([`Outbound::Frames`]), which it writes and flushes once.
//!
//! Waiting requests: the core keeps no variable-size data for them, so this task holds the
//! bytes under each ticket ([`Held`]) and acts on the core's ticket events.
//!
//! Persistence: before any output, this task drains `poll_persist` into records for the disk
//! writer, and every output given after them waits until the writer reports them durable
//! ([`DiskLink`]); when it does, the core hears `handle_persisted`. The records of a whole
//! turn go to the writer as one job at its end (outputs given after records not yet handed
//! over wait for that job): one wake-up of the writer per turn, not one per request. With
//! `--fsync everysec` or `no` and the writer idle, this task appends the turn's records to
//! the log itself instead and releases what waited for them at once. Checkpoints (a snapshot
//! and a new log) are taken when the core asks (`StoreReplaced`), every
//! `--snapshot-every` seconds, and at a clean shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use memdi_core::cluster::{ClientAction, NodeEvent, PeerAction, Role, Ticket, TicketEvent};
use memdi_core::wire::{
    decode, encode, ClientMessage, EncodeError, ErrorCode, NodeId, Request, SaveReport, Sender,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use super::disk_link::DiskLink;
use super::disk_link::{CheckpointError, Dest, Flushed};
use super::disk_writer::DiskReport;
use super::frames::{error_frame, info_frame, saved_frame};
use super::{CoreNode, IdMap, ServerError};
use crate::clock::Clock;
use crate::resp::NodeStatus;

/// Times one turn of the node task, and warns about a turn long enough to delay
/// heartbeats (a follower that hears nothing for an election timeout deposes its leader).
#[derive(Default)]
struct TurnTimer {
    started: std::cell::Cell<Option<(std::time::Instant, &'static str)>>,
}

impl TurnTimer {
    /// A turn handling `what` starts.
    fn start(&self, what: &'static str) {
        self.started.set(Some((std::time::Instant::now(), what)));
    }

    fn finish(&self) {
        const SLOW_TURN: Duration = Duration::from_millis(100);
        if let Some((started, what)) = self.started.get() {
            let took = started.elapsed();
            if took >= SLOW_TURN {
                tracing::warn!("the node task took {} ms over {what}", took.as_millis());
            }
        }
    }
}

/// Identifies one client connection.
pub type ConnId = u64;

/// What a connection's writer task is given.
#[derive(Debug)]
pub enum Outbound {
    /// Write these bytes: one or more whole frames, headers included, in order.
    Frames(Vec<u8>),
    /// Flush, then close the connection.
    Close,
}

/// A client connection the node task may answer.
#[derive(Debug, Clone)]
pub struct ClientLink {
    /// Its writer.
    pub replies: mpsc::Sender<Outbound>,
    /// Cancelled to make the connection's tasks stop.
    pub close: CancellationToken,
    /// Bytes of the answers the core gave for this connection that it has not yet written
    /// (a RESP connection: not yet taken into its own output buffer), wherever they wait:
    /// for the disk, for the end of the turn, in the queue, in the writer. Raised when the
    /// core gives an answer; the connection lowers it with [`frames_taken`].
    pub unwritten_bytes: Arc<AtomicUsize>,
}

impl ClientLink {
    /// A link to a connection's writer; `close` stops the connection's tasks.
    pub fn new(replies: mpsc::Sender<Outbound>, close: CancellationToken) -> Self {
        Self {
            replies,
            close,
            unwritten_bytes: Arc::default(),
        }
    }
}

/// The connection has written (or taken) `len` bytes of frames. Saturating: the few small
/// frames sent outside the end of a turn (handshake answers, errors) are not counted.
pub fn frames_taken(unwritten_bytes: &AtomicUsize, len: usize) {
    let _ = unwritten_bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |unwritten| {
        Some(unwritten.saturating_sub(len))
    });
}

/// Everything connection tasks send the node task.
#[derive(Debug)]
pub enum Input {
    /// The first frame of a client connection.
    ClientHello {
        /// The connection.
        conn: ConnId,
        /// The frame's payload.
        payload: Vec<u8>,
        /// How to answer it.
        link: ClientLink,
    },
    /// Later frames of a client connection: every complete one a read gave, in order.
    ClientFrames {
        /// The connection.
        conn: ConnId,
        /// The frames' payloads.
        frames: FrameBatch,
    },
    /// A frame the connection answered itself (the password gate, `memdi_core::auth`),
    /// passed through here so it reaches the client in order with the node's answers.
    ClientReply {
        /// The connection.
        conn: ConnId,
        /// The whole frame, header included.
        frame: Vec<u8>,
        /// Close the connection once the frame is written (a frame error: the stream
        /// cannot be followed any further).
        close: bool,
    },
    /// A client connection ended.
    ClientClosed {
        /// The connection.
        conn: ConnId,
    },
    /// The first frame of an incoming peer connection.
    PeerHello {
        /// The frame's payload.
        payload: Vec<u8>,
        /// The answer frame, and the peer if it was accepted.
        answer: oneshot::Sender<(Vec<u8>, Option<NodeId>)>,
    },
    /// This node's connection to a peer is up; the peer takes frames up to this size.
    PeerLinkUp {
        /// The peer.
        peer: NodeId,
        /// From its handshake answer.
        max_frame_bytes: u32,
    },
    /// The connection to a peer broke.
    PeerLost {
        /// The peer.
        peer: NodeId,
    },
    /// The membership a join was answered with: dial its members (see `join`).
    Members(Box<memdi_core::cluster::Membership>),
    /// A frame from a peer.
    PeerFrame {
        /// The peer.
        from: NodeId,
        /// The frame's payload.
        payload: Vec<u8>,
    },
    /// The node's state, for a RESP client's INFO or ROLE.
    Status {
        /// Where the answer goes.
        answer: oneshot::Sender<NodeStatus>,
    },
    /// Write a snapshot now (a RESP client's SAVE or BGSAVE).
    Save {
        /// Answer as soon as the snapshot is taken, before it is on disk (BGSAVE).
        background: bool,
        /// The outcome, as an error text for the client.
        answer: oneshot::Sender<Result<(), String>>,
    },
}

impl Input {
    /// What it counts for toward `INPUT_BATCH`: a client frame 1, any other input (a peer
    /// frame, which may cost a drain of its own) 16.
    fn weight(&self) -> usize {
        match self {
            Input::ClientFrames { frames, .. } => frames.len().max(1),
            _ => 16,
        }
    }
}

/// What a connection's answers of one turn start with room for.
const CLIENT_OUT_START_BYTES: usize = 512;

/// Frame payloads of one client connection, in order, in one buffer.
#[derive(Debug, Default)]
pub struct FrameBatch {
    /// The payloads, then room already zeroed for the next (so that encoding one does not
    /// zero a fresh buffer of the largest size it might need every time).
    bytes: Vec<u8>,
    /// Where each payload ends in `bytes`.
    ends: Vec<usize>,
}

impl FrameBatch {
    /// An empty batch with room for about `bytes` of payloads.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(16),
        }
    }

    /// Where the payloads end.
    fn used(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Appends a payload.
    pub fn push(&mut self, payload: &[u8]) {
        self.bytes.truncate(self.used());
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
    }

    /// Appends `message` encoded as a payload, trying buffers up to about twice `max_bytes`.
    pub fn push_message(
        &mut self,
        message: &ClientMessage<'_>,
        max_bytes: usize,
    ) -> Result<(), EncodeError> {
        let start = self.used();
        let mut size = 256;
        loop {
            if self.bytes.len() < start + size {
                self.bytes.resize(start + size, 0);
            }
            match encode(message, &mut self.bytes[start..start + size]) {
                Ok(written) => {
                    let end = start + written.len();
                    self.ends.push(end);
                    return Ok(());
                }
                Err(EncodeError::BufferFull) if size < max_bytes * 2 => size *= 4,
                Err(error) => return Err(error),
            }
        }
    }

    /// How many payloads it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The payloads, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end])
    }
}

/// What this task holds for a waiting request.
#[derive(Debug)]
pub(super) enum Held {
    /// An answer (a whole frame) to send when released.
    Answer { to: Dest, frame: Vec<u8> },
    /// A request forwarded to the leader; its answer comes as a `ClientReply`.
    Forwarded { conn: ConnId },
    /// A request payload to submit again when a leader is known.
    Request { conn: ConnId, payload: Vec<u8> },
}

/// The node task's state.
#[derive(Debug)]
pub struct NodeTask {
    pub(super) node: Box<CoreNode>,
    pub(super) clock: Clock,
    pub(super) inputs: mpsc::Receiver<Input>,
    pub(super) peers: super::peer_set::PeerSet,
    pub(super) disk: DiskLink,
    pub(super) snapshot_every_secs: u64,
    pub(super) shutdown: CancellationToken,
    /// Scratch for the core's outputs.
    pub(super) out: Vec<u8>,
    pub(super) clients: IdMap<ConnId, ClientLink>,
    /// Replies for each client gathered in this turn, sent as one message at its end.
    pub(super) client_out: IdMap<ConnId, Vec<u8>>,
    pub(super) held: IdMap<Ticket, Held>,
    /// What `Info` and `/metrics` report besides the node's state.
    pub(super) facts: Arc<super::metrics::MetricsFacts>,
    /// While the recovery marker is in the data directory: when it may go.
    pub(super) recovery: Option<MarkerRemoval>,
    /// The checkpoint being written, if any (one at a time).
    pub(super) checkpoint_in_flight: Option<u64>,
    /// Set when the disk writer failed: the node stops.
    pub(super) disk_failed: Option<String>,
    /// The checkpoint that records a store replaced by the leader's snapshot: if it
    /// fails, the log no longer describes the node, which must stop.
    pub(super) store_replaced_checkpoint: Option<u64>,
    /// `Save` requests waiting for their checkpoint.
    pub(super) saves: Vec<PendingSave>,
    /// RESP `SAVE`s waiting for their checkpoint: its number, and where the answer goes.
    pub(super) resp_saves: Vec<(u64, oneshot::Sender<Result<(), String>>)>,
    /// Whether this node leads, for RESP connections (HELLO's role).
    pub(super) leader_now: Arc<AtomicBool>,
    /// Voters needed for a quorum now, for RESP's WAIT.
    pub(super) quorum_now: Arc<std::sync::atomic::AtomicUsize>,
    /// Unix seconds of the last snapshot written (LASTSAVE), the start time before any.
    pub(super) last_save_unix_secs: Arc<AtomicU64>,
    /// The store's mutation count when the last snapshot was taken.
    pub(super) mutations_at_save: u64,
    /// Bytes of answers one client connection may have unwritten (`ClientLink::unwritten_bytes`)
    /// before this task drops it (`--client-output-limit-bytes`; the RESP port's own output
    /// buffer has the same limit). Without it a client that pipelines requests and never
    /// reads the answers made the node hold every answer: 2000 GETs of a 512 KiB value held
    /// 1 GB (found by `tests/tests/hostile.rs`); the cap of 16384 queued messages alone did
    /// not bound the bytes.
    pub(super) client_output_limit_bytes: usize,
    /// What this task has done since start, for `/metrics`.
    pub(super) counters: super::metrics::Counters,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The recovery marker (`super::recovery_marker`) goes once the node has recovered and a
/// snapshot taken after that is on disk.
#[derive(Debug)]
pub struct MarkerRemoval {
    data_dir: std::path::PathBuf,
    stage: RemovalStage,
    /// A checkpoint refused for now is not asked for again before this.
    next_try: std::time::Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemovalStage {
    /// The node is still recovering.
    Recovering,
    /// It has recovered; a checkpoint is to be taken (retried while the store does not
    /// match the log yet, or another checkpoint is in flight).
    CheckpointWanted,
    /// Checkpoint job `seq` is being written.
    Saving(u64),
}

impl MarkerRemoval {
    /// For a node that starts recovering with its data in `data_dir`.
    pub fn waiting(data_dir: &std::path::Path) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            stage: RemovalStage::Recovering,
            next_try: std::time::Instant::now(),
        }
    }
}

/// A `Save` request waiting for its checkpoint to be on disk.
#[derive(Debug)]
pub(super) struct PendingSave {
    seq: u64,
    conn: ConnId,
    request_id: u32,
    applied_index: u64,
}

/// A log file grown past this is replaced by a checkpoint (as Redis rewrites its AOF), so
/// that it stays bounded even with `--snapshot-every 0`: a checkpoint's log holds only the
/// core's in-memory log (at most `LOG_BYTES` of entries).
const LOG_REWRITE_BYTES: u64 = 256 << 20;
/// How long a clean shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most input taken at once before the timer and the shutdown signal are looked at again,
/// by [`Input::weight`]: 256 inputs, or 4,096 client frames.
const INPUT_BATCH: usize = 4096;
/// Rounds of direct log appends at the end of a turn (each one's release may commit more
/// and give more records); then the writer takes the rest.
const DIRECT_FLUSH_ROUNDS: usize = 4;

impl NodeTask {
    /// Runs until shutdown, then writes a final checkpoint.
    pub async fn run(mut self) -> Result<(), ServerError> {
        let last_index = self.node.log().last_index();
        self.disk.start_at(last_index);
        // Everything restored came from the disk.
        self.node.handle_persisted(last_index);
        self.drain();
        self.end_turn();
        let mut snapshot_tick =
            tokio::time::interval(Duration::from_secs(self.snapshot_every_secs.max(1)));
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshot_tick.tick().await; // the first tick is immediate
        let shutdown = self.shutdown.clone();
        loop {
            let deadline =
                tokio::time::Instant::from_std(self.clock.instant_of(self.node.poll_timeout()));
            let turn = TurnTimer::default();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                report = self.disk.reports.recv() => {
                    turn.start("a disk report");
                    self.disk_report(report);
                }
                input = self.inputs.recv() => {
                    let Some(input) = input else { break };
                    turn.start("a batch of inputs");
                    let mut taken = input.weight();
                    self.handle_input(input);
                    while taken < INPUT_BATCH {
                        match self.inputs.try_recv() {
                            Ok(input) => {
                                taken += input.weight();
                                self.handle_input(input);
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    turn.start("timers");
                    let now = self.clock.now_ms();
                    self.node.handle_timeout(now);
                    self.drain();
                }
                _ = snapshot_tick.tick(), if self.snapshot_every_secs > 0 => {
                    turn.start("a periodic snapshot");
                    if self.checkpoint_in_flight.is_some() {
                        tracing::warn!("previous snapshot still being written; skipping this one");
                    } else {
                        let _ = self.checkpoint("periodic");
                    }
                }
            }
            self.run_due_timers();
            self.take_recovery_checkpoint();
            self.end_turn();
            turn.finish();
        }
        if let Some(error) = self.disk_failed.take() {
            return Err(ServerError::Disk(error));
        }
        self.finish_in_flight().await;
        if let Some(error) = self.disk_failed.take() {
            return Err(ServerError::Disk(error));
        }
        let final_checkpoint = match self.disk.checkpoint(&mut self.node) {
            Ok((seq, _)) => Some(seq),
            Err(CheckpointError::NotNow) => {
                tracing::warn!("no final snapshot: the store does not match the log yet (the log keeps everything)");
                None
            }
            Err(CheckpointError::Off) => None,
            Err(error) => return Err(ServerError::FinalSnapshot(error.to_string())),
        };
        self.disk.close();
        // The writer ends once it has written everything; wait for its last reports.
        let mut result = Ok(());
        while let Some(report) = self.disk.reports.recv().await {
            match report {
                DiskReport::CheckpointSaved {
                    seq,
                    snapshot_bytes,
                } if Some(seq) == final_checkpoint => {
                    tracing::info!("final snapshot saved ({snapshot_bytes} bytes)");
                }
                DiskReport::CheckpointFailed { seq, error } if Some(seq) == final_checkpoint => {
                    tracing::error!(
                        "final snapshot not written ({error}); its records went to the log"
                    );
                    result = Err(ServerError::FinalSnapshot(error));
                }
                DiskReport::Failed { error } => return Err(ServerError::Disk(error)),
                other => self.disk_report(Some(other)),
            }
            self.end_turn();
        }
        self.end_turn();
        for link in self.clients.values() {
            let _ = link.replies.try_send(Outbound::Close);
        }
        if let Some(error) = self.disk_failed.take() {
            return Err(ServerError::Disk(error));
        }
        result
    }

    /// Acts on a report of the disk writer.
    fn disk_report(&mut self, report: Option<DiskReport>) {
        match report {
            Some(DiskReport::Durable { seq }) => {
                let (released, index) = self.disk.durable(seq);
                for gated in released {
                    self.deliver(gated.to, gated.frame);
                }
                if let Some(index) = index {
                    self.node.handle_persisted(index);
                    self.drain();
                }
            }
            Some(DiskReport::CheckpointSaved {
                seq,
                snapshot_bytes,
            }) => {
                if self.checkpoint_in_flight == Some(seq) {
                    self.checkpoint_in_flight = None;
                }
                tracing::info!("snapshot saved ({snapshot_bytes} bytes); a new log started");
                self.counters.snapshots_saved += 1;
                self.recovery_snapshot_saved(seq);
                self.last_save_unix_secs
                    .store(unix_secs(), Ordering::Relaxed);
                self.answer_saves(seq, Ok(snapshot_bytes as u64));
            }
            Some(DiskReport::CheckpointFailed { seq, error }) => {
                if self.checkpoint_in_flight == Some(seq) {
                    self.checkpoint_in_flight = None;
                }
                if self.store_replaced_checkpoint == Some(seq) {
                    self.fail_disk(format!(
                        "the snapshot from the leader could not be saved ({error})"
                    ));
                    return;
                }
                tracing::error!(
                    "snapshot not written ({error}); its records went to the current log"
                );
                if let Some(removal) = &mut self.recovery {
                    if removal.stage == RemovalStage::Saving(seq) {
                        removal.stage = RemovalStage::CheckpointWanted;
                    }
                }
                self.answer_saves(seq, Err(&error));
            }
            Some(DiskReport::Failed { error }) => self.fail_disk(error),
            None => self.fail_disk("the disk writer stopped".into()),
        }
    }

    /// Once the node has recovered: takes the checkpoint whose save lets the recovery
    /// marker go (when no other checkpoint is in flight and the store matches the log).
    fn take_recovery_checkpoint(&mut self) {
        let now = std::time::Instant::now();
        let wanted = self.recovery.as_ref().is_some_and(|removal| {
            removal.stage == RemovalStage::CheckpointWanted && removal.next_try <= now
        });
        if !wanted || self.checkpoint_in_flight.is_some() {
            return;
        }
        let taken = self.checkpoint("after recovery");
        if let Some(removal) = &mut self.recovery {
            match taken {
                Ok((seq, _)) => removal.stage = RemovalStage::Saving(seq),
                Err(_) => removal.next_try = now + Duration::from_secs(1),
            }
        }
    }

    /// Checkpoint `seq` is on disk: if it is the one taken after recovery, the marker goes.
    fn recovery_snapshot_saved(&mut self, seq: u64) {
        let Some(removal) = &self.recovery else {
            return;
        };
        if removal.stage != RemovalStage::Saving(seq) {
            return;
        }
        match super::recovery_marker::remove(&removal.data_dir) {
            Ok(()) => {
                tracing::info!(
                    "recovery complete and saved: {} removed",
                    super::recovery_marker::MARKER_FILE
                );
                self.recovery = None;
            }
            Err(error) => self.fail_disk(format!(
                "cannot remove {} after recovery: {error}",
                super::recovery_marker::MARKER_FILE
            )),
        }
    }

    /// Hands a checkpoint to the disk writer. Returns its job number and the last entry its
    /// snapshot reflects.
    fn checkpoint(&mut self, why: &str) -> Result<(u64, u64), CheckpointError> {
        let started = std::time::Instant::now();
        match self.disk.checkpoint(&mut self.node) {
            Ok((seq, applied_index)) => {
                tracing::debug!(
                    "{why} checkpoint: {} keys copied for the writer in {} ms",
                    self.node.store().len(),
                    started.elapsed().as_millis()
                );
                self.checkpoint_in_flight = Some(seq);
                self.mutations_at_save = self.node.store().mutations();
                Ok((seq, applied_index))
            }
            Err(error) => {
                match error {
                    CheckpointError::NotNow => tracing::info!("no {why} snapshot: {error}"),
                    CheckpointError::Off => tracing::debug!("no {why} snapshot: {error}"),
                    _ => tracing::error!("{why} snapshot not taken: {error}"),
                }
                Err(error)
            }
        }
    }

    /// `Save`: a checkpoint now, answered when the writer reports it.
    fn save(&mut self, conn: ConnId, request_id: u32) {
        match self.checkpoint("SAVE") {
            Ok((seq, applied_index)) => self.saves.push(PendingSave {
                seq,
                conn,
                request_id,
                applied_index,
            }),
            Err(error) => {
                let code = match error {
                    CheckpointError::NotNow => ErrorCode::Busy,
                    _ => ErrorCode::Internal,
                };
                let frame = error_frame(request_id, code, &format!("snapshot not taken: {error}"));
                self.send_client(conn, frame);
            }
        }
    }

    /// Answers the `Save` requests waiting for checkpoint `seq`.
    fn answer_saves(&mut self, seq: u64, outcome: Result<u64, &str>) {
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.saves)
            .into_iter()
            .partition(|save| save.seq == seq);
        self.saves = waiting;
        let (resp_done, resp_waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.resp_saves)
            .into_iter()
            .partition(|(waiting_for, _)| *waiting_for == seq);
        self.resp_saves = resp_waiting;
        for (_, answer) in resp_done {
            let _ = answer.send(
                outcome
                    .map(|_| ())
                    .map_err(|error| format!("ERR snapshot not written: {error}")),
            );
        }
        for save in done {
            let frame = match outcome {
                Ok(snapshot_bytes) => saved_frame(
                    save.request_id,
                    SaveReport {
                        applied_index: save.applied_index,
                        snapshot_bytes,
                    },
                ),
                Err(error) => error_frame(
                    save.request_id,
                    ErrorCode::Internal,
                    &format!("snapshot not written: {error}"),
                ),
            };
            self.send_client(save.conn, frame);
        }
    }

    /// Clean shutdown: the listeners and readers have stopped; keep serving peers until the
    /// requests already taken are answered, or the grace period ends.
    async fn finish_in_flight(&mut self) {
        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while self.node.waiting_requests() > 0 || self.disk.waiting_outputs() > 0 {
            if self.disk_failed.is_some() {
                return;
            }
            let deadline =
                tokio::time::Instant::from_std(self.clock.instant_of(self.node.poll_timeout()))
                    .min(until);
            tokio::select! {
                report = self.disk.reports.recv() => self.disk_report(report),
                input = self.inputs.recv() => match input {
                    Some(input) => self.handle_input(input),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if tokio::time::Instant::now() >= until {
                        tracing::warn!(
                            "shutting down with {} requests still waiting",
                            self.node.waiting_requests()
                        );
                        break;
                    }
                    let now = self.clock.now_ms();
                    self.node.handle_timeout(now);
                    self.drain();
                }
            }
            self.end_turn();
        }
        self.end_turn();
    }

    fn handle_input(&mut self, input: Input) {
        let now = self.clock.now_ms();
        match input {
            Input::ClientHello {
                conn,
                payload,
                link,
            } => self.client_hello(conn, &payload, link),
            Input::ClientFrames { conn, frames } => {
                for payload in frames.iter() {
                    // A reply that closes the connection drops the frames after it.
                    if !self.clients.contains_key(&conn) {
                        break;
                    }
                    self.client_request(now, conn, payload);
                }
                // Drained once at the end of the turn ([`Self::end_turn`]), so that the
                // entries of every batch the turn takes go to each follower in one `Append`.
            }
            Input::ClientReply { conn, frame, close } => {
                self.send_client(conn, frame);
                if close {
                    self.close_client(conn);
                }
            }
            Input::ClientClosed { conn } => {
                self.clients.remove(&conn);
            }
            Input::PeerHello { payload, answer } => {
                let _ = answer.send(self.peer_hello(&payload));
            }
            Input::PeerLinkUp {
                peer,
                max_frame_bytes,
            } => self.node.handle_peer_link_up(peer, max_frame_bytes),
            Input::PeerLost { peer } => {
                self.node.handle_peer_lost(peer);
                self.drain();
            }
            Input::Members(membership) => {
                let node = &self.node;
                self.peers
                    .follow(&membership, |id| node.members().any(|m| m.id == id));
            }
            Input::PeerFrame { from, payload } => {
                self.peer_frame(now, from, &payload);
                self.drain();
            }
            Input::Status { answer } => {
                let _ = answer.send(self.status());
            }
            Input::Save { background, answer } => self.save_now(background, answer),
        }
    }

    fn status(&self) -> NodeStatus {
        let store = self.node.store();
        let followers = if self.node.role() == Role::Leader {
            self.node
                .members()
                .filter(|member| member.id != self.node.id())
                .map(|member| (member.id, member.match_index))
                .collect()
        } else {
            Vec::new()
        };
        NodeStatus {
            role: self.node.role(),
            term: self.node.term(),
            leader: self.node.leader_id(),
            commit_index: self.node.commit_index(),
            keys: store.len(),
            keys_with_expiry: u64::from(store.len_with_expiry()),
            used_bytes: store.used_bytes(),
            last_save_unix_secs: self.last_save_unix_secs.load(Ordering::Relaxed),
            changes_since_save: store.mutations().saturating_sub(self.mutations_at_save),
            log_first_index: self.node.log().first_index(),
            log_last_index: self.node.log().last_index(),
            applied_index: self.node.applied_index(),
            counters: self.counters,
            followers,
            addresses: self
                .node
                .membership()
                .iter()
                .filter_map(|member| {
                    let address = std::str::from_utf8(member.address).ok()?;
                    Some((member.id, address.parse().ok()?))
                })
                .collect(),
        }
    }

    /// RESP's SAVE and BGSAVE: a checkpoint now, as the native `Save`. SAVE is answered
    /// when the writer reports it; BGSAVE at once.
    fn save_now(&mut self, background: bool, answer: oneshot::Sender<Result<(), String>>) {
        match self.checkpoint("SAVE") {
            Ok((seq, _)) if !background => self.resp_saves.push((seq, answer)),
            Ok(_) => {
                let _ = answer.send(Ok(()));
            }
            Err(error) => {
                let _ = answer.send(Err(format!("ERR snapshot not taken: {error}")));
            }
        }
    }

    fn client_hello(&mut self, conn: ConnId, payload: &[u8], link: ClientLink) {
        if let Ok(ClientMessage {
            request_id,
            request: Request::Hello(hello),
        }) = decode::<ClientMessage<'_>>(payload)
        {
            if matches!(hello.sender, Sender::Peer(_)) {
                let frame = error_frame(
                    request_id,
                    ErrorCode::Unauthorized,
                    "peers connect to the peer address, not the client address",
                );
                let _ = link.replies.try_send(Outbound::Frames(frame));
                let _ = link.replies.try_send(Outbound::Close);
                return;
            }
        }
        let (len, accepted) = self.node.handle_client_hello(payload, &mut self.out);
        let _ = link
            .replies
            .try_send(Outbound::Frames(self.out[..len].to_vec()));
        if accepted {
            self.clients.insert(conn, link);
        } else {
            let _ = link.replies.try_send(Outbound::Close);
        }
    }

    fn peer_hello(&mut self, payload: &[u8]) -> (Vec<u8>, Option<NodeId>) {
        let sender = match decode::<ClientMessage<'_>>(payload) {
            Ok(ClientMessage {
                request: Request::Hello(hello),
                ..
            }) => hello.sender,
            _ => Sender::Client,
        };
        let Sender::Peer(id) = sender else {
            let frame = error_frame(
                0,
                ErrorCode::Unauthorized,
                "the peer address takes only peer handshakes; clients use the client address",
            );
            return (frame, None);
        };
        // Any node of this cluster (the core checks the cluster id below) may connect: a
        // node being added is not a member yet, and the core ignores what non-members send
        // (docs/protocol.md 4.9).
        if id == self.node.id() {
            let frame = error_frame(0, ErrorCode::Unauthorized, "a node cannot be its own peer");
            tracing::warn!(
                "refused a peer connection that claims this node's id {}",
                id.0
            );
            return (frame, None);
        }
        let (len, accepted) = self.node.handle_client_hello(payload, &mut self.out);
        let answer = self.out[..len].to_vec();
        if accepted {
            // Perhaps a restarted process, numbering its forwarded requests from 1 again.
            self.node.handle_peer_connected(id);
            self.drain();
        }
        (answer, accepted.then_some(id))
    }

    /// Sends `frame` now, or once the disk has what the core asked to persist before it.
    fn send(&mut self, to: Dest, frame: Vec<u8>) {
        if let Some((to, frame)) = self.disk.gate(to, Some(frame)) {
            self.deliver(to, frame);
        }
    }

    fn send_client(&mut self, conn: ConnId, frame: Vec<u8>) {
        self.send(Dest::Client(conn), frame);
    }

    /// Sends the client frame the core wrote into `out[..len]`, without copying it twice
    /// when it need not wait.
    fn send_client_out(&mut self, conn: ConnId, len: usize) {
        if !self.count_answer(conn, len) {
            return;
        }
        // `count_answer` found the connection.
        if self.disk.gate_client_bytes(conn, &self.out[..len]) {
            // Waits for the disk (or is dropped: the disk failed).
        } else {
            self.client_out
                .entry(conn)
                // Room for a pipeline's worth of short answers at once, not a doubling
                // per answer.
                .or_insert_with(|| Vec::with_capacity(CLIENT_OUT_START_BYTES.max(len)))
                .extend_from_slice(&self.out[..len]);
        }
    }

    fn send_peer(&mut self, to: NodeId, frame: Vec<u8>) {
        self.send(Dest::Peer(to), frame);
    }

    /// Closes a client connection after what was sent to it before.
    fn close_client(&mut self, conn: ConnId) {
        if let Some((to, frame)) = self.disk.gate(Dest::Client(conn), None) {
            self.deliver(to, frame);
        }
    }

    /// Hands a frame (or, for `None`, a close) to a connection's writer: a client's frames
    /// are gathered until the end of the turn ([`Self::end_turn`]).
    fn deliver(&mut self, to: Dest, frame: Option<Vec<u8>>) {
        match (to, frame) {
            (Dest::Client(conn), Some(frame)) => {
                if !self.clients.contains_key(&conn) {
                    return; // gone: its answer has nowhere to go
                }
                let gathered = self.client_out.entry(conn).or_default();
                if gathered.is_empty() {
                    *gathered = frame;
                } else {
                    gathered.extend_from_slice(&frame);
                }
            }
            (Dest::Client(conn), None) => {
                if let Some(link) = self.clients.remove(&conn) {
                    if let Some(frames) = self.client_out.remove(&conn) {
                        let _ = link.replies.try_send(Outbound::Frames(frames));
                    }
                    let _ = link.replies.try_send(Outbound::Close);
                }
            }
            (Dest::Peer(node), Some(frame)) => {
                if let Some(link) = self.peers.get(&node) {
                    // A full queue (the peer is down or slow) drops the frame, as a lossy
                    // network would: the protocol retries.
                    let _ = link.try_send(frame);
                }
            }
            (Dest::Peer(_), None) => {}
        }
    }

    /// Runs the core's timers if they are due. The main loop's `select!` prefers inputs to
    /// the timer, so under a steady stream of inputs its timer arm would never win: a leader
    /// then sent no heartbeats to a follower that was not taking entries, and the follower
    /// deposed it (the failover benchmark at a write every millisecond, while the leader
    /// sent a snapshot to a restarted node). Checked after every turn instead.
    fn run_due_timers(&mut self) {
        let now = self.clock.now_ms();
        if now >= self.node.poll_timeout() {
            self.node.handle_timeout(now);
            self.drain();
        }
    }

    /// Counts an answer of `len` bytes for client `conn` as unwritten, and drops the client
    /// if its unwritten answers pass `--client-output-limit-bytes` (it asks for more than it
    /// reads); false if the client is gone. Counted when the core gives the answer, not when
    /// it is handed over: one read can hold thousands of requests for a large value, and
    /// answers can wait for the disk over many turns (the hostile-clients test saw 445 MB
    /// released at once by one disk report while a good client kept writing). The log line
    /// says "reply bytes unread; disconnecting" as the RESP port's own limit does.
    fn count_answer(&mut self, conn: ConnId, len: usize) -> bool {
        let Some(link) = self.clients.get(&conn) else {
            return false;
        };
        let unwritten = link.unwritten_bytes.fetch_add(len, Ordering::Relaxed) + len;
        let limit = self.client_output_limit_bytes;
        if unwritten <= limit {
            return true;
        }
        tracing::warn!(
            "client connection {conn}: more than {limit} reply bytes unread; disconnecting"
        );
        // Its writer stops even in the middle of a write, and drops what is queued; answers
        // waiting for the disk are dropped when released (the client is gone).
        link.close.cancel();
        self.clients.remove(&conn);
        self.client_out.remove(&conn);
        false
    }

    /// Ends a turn (every pass of the main loop ends with it): hands the records gathered to
    /// the disk writer as one job, and each client's gathered replies to its writer as one
    /// message.
    fn end_turn(&mut self) {
        self.drain();
        self.flush_persist();
        for (conn, frames) in self.client_out.drain() {
            let Some(link) = self.clients.get(&conn) else {
                continue;
            };
            if let Err(mpsc::error::TrySendError::Full(_)) =
                link.replies.try_send(Outbound::Frames(frames))
            {
                tracing::warn!("client connection {conn} does not read its replies; closing it");
                link.close.cancel();
                self.clients.remove(&conn);
            }
        }
    }

    /// Records everything the core asks to persist, before any output given after it is
    /// dispatched (the ordering rule: outputs given now wait for the job these records go
    /// to, which [`Self::flush_persist`] hands to the writer).
    fn drain_persist(&mut self) {
        while let Some(persist) = self.node.poll_persist() {
            if self.disk.record(&self.node, persist) {
                // The store was replaced by the leader's snapshot: nothing in the current
                // log describes it, so a checkpoint must be written before anything else.
                match self.checkpoint("store replaced") {
                    Ok((seq, _)) => self.store_replaced_checkpoint = Some(seq),
                    Err(_) => {
                        self.fail_disk(
                            "cannot write the checkpoint of a snapshot from the leader".into(),
                        );
                        return;
                    }
                }
            }
        }
    }

    /// Makes the records gathered one job for the disk. If it went to the log directly,
    /// what waited for it is released at once, which may give more records (a commit) and
    /// outputs waiting for them: a few rounds go the same way, then the rest goes to the
    /// writer so that the turn ends.
    fn flush_persist(&mut self) {
        for round in 1..=DIRECT_FLUSH_ROUNDS {
            let flushed = if round < DIRECT_FLUSH_ROUNDS {
                self.disk.flush()
            } else {
                self.disk.flush_to_writer()
            };
            match flushed {
                Ok(Flushed::Written { seq }) => {
                    self.disk_report(Some(DiskReport::Durable { seq }));
                }
                Ok(Flushed::Handed | Flushed::Nothing) => break,
                Err(error) => {
                    self.fail_disk(error.to_string());
                    return;
                }
            }
        }
        if self.disk.log_bytes() > LOG_REWRITE_BYTES && self.checkpoint_in_flight.is_none() {
            let _ = self.checkpoint("log size");
        }
    }

    /// The log cannot be written: nothing more can be acknowledged, so the node stops. Every
    /// client connection is told why before it closes (an error with request id 0, which the
    /// client library gives to each request still waiting on the connection: their outcome
    /// is unknown, as the answers held for the disk are never sent). RESP connections ignore
    /// the frame and just close.
    fn fail_disk(&mut self, error: String) {
        tracing::error!("{error}; this node stops");
        let farewell = error_frame(
            0,
            ErrorCode::Internal,
            &format!(
                "this node cannot write its log and stops ({error}); the outcome of requests in flight is unknown"
            ),
        );
        for link in self.clients.values() {
            let _ = link.replies.try_send(Outbound::Frames(farewell.clone()));
            let _ = link.replies.try_send(Outbound::Close);
        }
        self.disk.mark_failed();
        if self.disk_failed.is_none() {
            self.disk_failed = Some(error);
        }
        self.shutdown.cancel();
    }

    fn client_request(&mut self, now: u64, conn: ConnId, payload: &[u8]) {
        self.counters.client_requests += 1;
        let action = self.node.handle_client_frame(now, payload, &mut self.out);
        // What this call persists goes first: its answer may promise it.
        self.drain_persist();
        match action {
            ClientAction::Reply { len, close } => {
                self.send_client_out(conn, len);
                if close {
                    self.close_client(conn);
                }
            }
            // The client library and redis clients retry after a pause; memdi bench counts it.
            ClientAction::Busy { len } => self.send_client_out(conn, len),
            ClientAction::Wait { ticket, len } => {
                let frame = self.out[..len].to_vec();
                self.held.insert(
                    ticket,
                    Held::Answer {
                        to: Dest::Client(conn),
                        frame,
                    },
                );
            }
            ClientAction::Forward { ticket, to, len } => {
                self.held.insert(ticket, Held::Forwarded { conn });
                self.send_peer(to, self.out[..len].to_vec());
            }
            ClientAction::Hold { ticket } => {
                self.held.insert(
                    ticket,
                    Held::Request {
                        conn,
                        payload: payload.to_vec(),
                    },
                );
            }
            ClientAction::Save { request_id } => self.save(conn, request_id),
            ClientAction::Info { request_id } => {
                let text = super::info::info_text(&self.facts, &self.status(), self.clients.len());
                self.send_client(conn, info_frame(request_id, &text));
            }
        }
    }

    fn peer_frame(&mut self, now: u64, from: NodeId, payload: &[u8]) {
        self.counters.peer_frames += 1;
        let action = self
            .node
            .handle_peer_frame(now, from, payload, &mut self.out);
        // What this call persists goes first: its answer may promise it.
        self.drain_persist();
        match action {
            PeerAction::None => {}
            PeerAction::Send { to, len } => self.send_peer(to, self.out[..len].to_vec()),
            PeerAction::Wait { ticket, to, len } => {
                let frame = self.out[..len].to_vec();
                self.held.insert(
                    ticket,
                    Held::Answer {
                        to: Dest::Peer(to),
                        frame,
                    },
                );
            }
            PeerAction::ClientReply { ticket, len } => {
                if let Some(Held::Forwarded { conn }) = self.held.remove(&ticket) {
                    self.send_client_out(conn, len);
                }
            }
        }
    }

    /// Sends everything the core has to send, acts on ended tickets and logs events.
    fn drain(&mut self) {
        let now = self.clock.now_ms();
        // Bounded: each poll consumes queued work; the core never produces endlessly.
        for _ in 0..1_000_000 {
            self.drain_persist();
            if let Some((to, len)) = self.node.poll_peer_transmit(now, &mut self.out) {
                self.send_peer(to, self.out[..len].to_vec());
                continue;
            }
            if let Some(event) = self.node.poll_ticket_event(&mut self.out) {
                self.ticket_event(now, event);
                continue;
            }
            if let Some(event) = self.node.poll_event() {
                self.log_event(event);
                continue;
            }
            return;
        }
        tracing::error!("the core kept producing output for a million polls");
    }

    fn ticket_event(&mut self, now: u64, event: TicketEvent) {
        match event {
            TicketEvent::Release { ticket } => {
                if let Some(Held::Answer { to, frame }) = self.held.remove(&ticket) {
                    self.send(to, frame);
                }
            }
            TicketEvent::Reply { ticket, len } => {
                let frame = self.out[..len].to_vec();
                match self.held.remove(&ticket) {
                    Some(Held::Answer { to, .. }) => self.send(to, frame),
                    Some(Held::Forwarded { conn }) | Some(Held::Request { conn, .. }) => {
                        self.send_client(conn, frame)
                    }
                    None => {}
                }
            }
            TicketEvent::Resubmit { ticket } => {
                if let Some(Held::Request { conn, payload }) = self.held.remove(&ticket) {
                    // Submitted again even if the client has gone: a write it sent is
                    // executed once, as it would have been had it stayed.
                    self.client_request(now, conn, &payload);
                }
            }
        }
    }

    /// Dials the members the core knows, and hangs up on nodes that are no longer peers.
    fn follow_membership(&mut self) {
        let node = &self.node;
        self.peers
            .follow(node.membership(), |id| node.members().any(|m| m.id == id));
    }

    fn log_event(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::RoleChanged { role, term } => {
                self.leader_now.store(role == Role::Leader, Ordering::Relaxed);
                tracing::info!("role: {role:?} in term {term}")
            }
            NodeEvent::LeaderChanged { leader, term } => {
                self.counters.leader_changes += 1;
                match leader {
                    Some(leader) => tracing::info!("leader: node {} in term {term}", leader.0),
                    None => tracing::info!("leader: none known in term {term}"),
                }
            }
            NodeEvent::ApplyFailed { index } => tracing::error!(
                "entry {index} could not be applied: this node's store is smaller than the leader's"
            ),
            NodeEvent::StoreStale { term } => tracing::warn!(
                "term {term}: a new leader discarded entries this node applied; its store waits for a snapshot"
            ),
            NodeEvent::RolledBack { from, entries } => tracing::warn!(
                "a new leader discarded entries {from}.. that this node applied: {entries} undone"
            ),
            NodeEvent::SnapshotInstalled { index } => {
                tracing::info!("snapshot from the leader installed through entry {index}")
            }
            NodeEvent::SnapshotStarted { to, index } => {
                tracing::info!("sending a snapshot through entry {index} to node {}", to.0)
            }
            NodeEvent::Recovered { term } => {
                tracing::info!("recovered from a restart without state: votes again from term {term}");
                if let Some(removal) = &mut self.recovery {
                    removal.stage = RemovalStage::CheckpointWanted;
                }
            }
            NodeEvent::MembershipChanged {
                index,
                voters,
                members,
            } => {
                tracing::info!(
                    "membership (entry {index}): {voters} voters, {} learners: {:?}",
                    members - voters,
                    self.node.membership()
                );
                self.follow_membership();
                self.quorum_now.store(voters / 2 + 1, Ordering::Relaxed);
            }
            NodeEvent::PeerDeparted { peer } => {
                tracing::info!("node {} is no longer a member", peer.0);
                self.follow_membership();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use memdi_core::wire::{decode, ClientMessage, Request};

    use super::FrameBatch;

    #[test]
    fn a_frame_batch_gives_back_its_payloads_in_order() {
        let mut batch = FrameBatch::default();
        assert!(batch.is_empty());
        assert_eq!(batch.iter().count(), 0);
        batch.push(b"one");
        batch.push(b"");
        let key = vec![b'k'; 5000];
        let message = ClientMessage {
            request_id: 7,
            request: Request::Get {
                key: &key,
                read: memdi_core::wire::ReadConsistency::Linearizable,
            },
        };
        batch.push_message(&message, 1 << 20).unwrap();
        // Larger than every buffer tried: refused, and the batch is as it was.
        assert_eq!(
            batch.push_message(&message, 1000),
            Err(memdi_core::wire::EncodeError::BufferFull)
        );
        batch.push(b"three");
        assert_eq!(batch.len(), 4);
        let payloads: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(payloads[0], b"one");
        assert_eq!(payloads[1], b"");
        assert_eq!(payloads[3], b"three");
        let decoded: ClientMessage<'_> = decode(payloads[2]).unwrap();
        assert_eq!(decoded.request_id, 7);
        assert!(matches!(decoded.request, Request::Get { key: k, .. } if k == &key[..]));
    }
}
