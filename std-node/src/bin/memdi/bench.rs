//! `memdi bench`: `clients` connections, each with `pipeline` requests in flight, until
//! `requests` have been answered; prints throughput and latency percentiles.
//!
//! Each connection is driven by one task that writes request frames and reads answer frames
//! itself, as redis-benchmark drives its sockets: no task, channel or allocation per
//! request, so that on a machine the server shares, the figure is the server's rather than
//! the client library's. The runtime has one worker per core unless `--threads` says.
//! A request's id is its slot in the connection's window plus one: a slot holds one request
//! at a time, so ids in flight are distinct, and answers may come in any order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memdi_core::wire::{
    decode, encode_frame, AckLevel, ClientMessage, ErrorCode, Expiry, FrameDecoder,
    ReadConsistency, Request, Response, ServerMessage, SetCondition, WriteOptions,
    FRAME_HEADER_BYTES,
};
use memdi_node::client::{
    connect_raw, ClientError, ClientOptions, Password, BUSY_MAX_BACKOFF, BUSY_MIN_BACKOFF,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// SET of a 16-byte-or-so key to a fixed value.
    Set,
    /// Linearizable GET.
    Get,
}

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The node's client address.
    pub addr: String,
    /// The node's password, if it asks for one.
    pub password: Option<Password>,
    /// Connections.
    pub clients: usize,
    /// Requests answered in all.
    pub requests: u64,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Bytes per key.
    pub key_size: usize,
    /// Distinct keys used.
    pub keyspace: u64,
    /// Acknowledgement of writes.
    pub ack: AckLevel,
    /// The operation.
    pub op: Op,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Each answered request's latency, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Answers that were errors (counted in `latencies_us` too).
    pub errors: u64,
    /// Requests sent again after `NoLeader` or `Busy`.
    pub retries: u64,
    /// The first error's text.
    pub first_error: Option<String>,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

impl Outcome {
    /// The latency below which a fraction `p` of the requests were answered.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies_us.is_empty() {
            return Duration::ZERO;
        }
        let len = self.latencies_us.len();
        let at = ((len as f64 * p).ceil() as usize).clamp(1, len);
        Duration::from_micros(u64::from(self.latencies_us[at - 1]))
    }

    /// Answers per second.
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs `plan`: connects every client first, then starts the clock.
pub async fn run(plan: Plan) -> Result<Outcome, ClientError> {
    let options = ClientOptions {
        password: plan.password.clone(),
        ..ClientOptions::default()
    };
    let mut streams = Vec::with_capacity(plan.clients.max(1));
    for _ in 0..plan.clients.max(1) {
        streams.push(connect_raw(&plan.addr, &options).await?.0);
    }
    let plan = Arc::new(plan);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut drivers = tokio::task::JoinSet::new();
    for stream in streams {
        drivers.spawn(drive(stream, plan.clone(), issued.clone()));
    }
    let mut outcome = Outcome {
        latencies_us: Vec::with_capacity(usize::try_from(plan.requests).unwrap_or(0)),
        errors: 0,
        retries: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(done) = drivers.join_next().await {
        let tally = done.expect("bench driver panicked")?;
        outcome.latencies_us.extend(tally.latencies_us);
        outcome.errors += tally.errors;
        outcome.retries += tally.retries;
        outcome.first_error = outcome.first_error.or(tally.first_error);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies_us.sort_unstable();
    Ok(outcome)
}

/// One connection's share of a run.
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    retries: u64,
    first_error: Option<String>,
}

/// A request in a connection's window.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Which request of the run (its key).
    n: u64,
    /// When it was first sent: its latency includes its retries.
    first_sent: Instant,
    /// Times it was sent.
    attempts: u32,
    /// Set while it waits to be sent again after `NoLeader` or `Busy`.
    retry_at: Option<Instant>,
}

/// Tries per request while the answer is `NoLeader` or `Busy` (not executed), with the
/// client library's back-off (1 to 16 ms for `Busy`, 20 to 500 ms for `NoLeader`): the
/// bench measures a cluster through elections and full logs as an application would see
/// it, and counts the retries.
const MAX_ATTEMPTS: u32 = 40;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Encodes request `n` of `plan` for `slot` into `out`.
fn encode_request(
    plan: &Plan,
    value: &[u8],
    key: &mut Vec<u8>,
    frame: &mut [u8],
    slot: usize,
    n: u64,
    out: &mut Vec<u8>,
) {
    write_key(key, n % plan.keyspace.max(1), plan.key_size);
    let request = match plan.op {
        Op::Set => Request::Set {
            key,
            value,
            condition: SetCondition::Always,
            expiry: Expiry::None,
            write: WriteOptions {
                ack: Some(plan.ack),
                durability: None,
            },
        },
        Op::Get => Request::Get {
            key,
            read: ReadConsistency::Linearizable,
        },
    };
    let message = ClientMessage {
        request_id: u32::try_from(slot + 1).expect("a window of at most u32::MAX"),
        request,
    };
    let len = encode_frame(&message, frame).expect("the frame buffer fits a request");
    out.extend_from_slice(&frame[..len]);
}

/// Drives one connection until no request is left to issue and every answer is in.
async fn drive(
    mut stream: TcpStream,
    plan: Arc<Plan>,
    issued: Arc<AtomicU64>,
) -> Result<Tally, ClientError> {
    let closed = || ClientError::Closed {
        addr: plan.addr.clone(),
    };
    let window = plan.pipeline.max(1);
    let value = vec![b'x'; plan.value_size];
    let mut key = Vec::with_capacity(plan.key_size.max(1));
    let mut slots: Vec<Option<Slot>> = vec![None; window];
    let mut out = Vec::with_capacity(window * (FRAME_HEADER_BYTES + 64 + plan.value_size));
    let mut frame = vec![0u8; FRAME_HEADER_BYTES + 128 + plan.key_size + plan.value_size];
    let mut decoder = FrameDecoder::new(vec![0u8; 64 * 1024]).expect("above the header size");
    let mut tally = Tally {
        latencies_us: Vec::new(),
        errors: 0,
        retries: 0,
        first_error: None,
    };
    let next_request = || {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        (n < plan.requests).then_some(n)
    };
    for (at, slot) in slots.iter_mut().enumerate() {
        let Some(n) = next_request() else { break };
        encode_request(&plan, &value, &mut key, &mut frame, at, n, &mut out);
        *slot = Some(Slot {
            n,
            first_sent: Instant::now(),
            attempts: 1,
            retry_at: None,
        });
    }
    while slots.iter().any(Option::is_some) {
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|_| closed())?;
            out.clear();
        }
        let next_retry = slots
            .iter()
            .flatten()
            .filter_map(|slot| slot.retry_at)
            .min();
        let count = tokio::select! {
            read = stream.read(decoder.unfilled()) => read.map_err(|_| closed())?,
            () = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now).into()), if next_retry.is_some() => {
                let now = Instant::now();
                for (at, slot) in slots.iter_mut().enumerate() {
                    if let Some(slot) = slot.as_mut().filter(|s| s.retry_at.is_some_and(|t| t <= now)) {
                        slot.retry_at = None;
                        slot.attempts += 1;
                        encode_request(&plan, &value, &mut key, &mut frame, at, slot.n, &mut out);
                    }
                }
                continue;
            }
        };
        if count == 0 {
            return Err(closed());
        }
        decoder.commit(count);
        while let Some(payload) = decoder
            .next_frame()
            .map_err(|error| ClientError::Protocol(error.to_string()))?
        {
            let message = decode::<ServerMessage<'_>>(payload)
                .map_err(|error| ClientError::Protocol(error.to_string()))?;
            let at = (message.request_id as usize).wrapping_sub(1);
            let Some(slot) = slots
                .get_mut(at)
                .filter(|s| s.is_some_and(|s| s.retry_at.is_none()))
            else {
                // Id 0 is about the connection (it is being closed); no other is ours.
                return Err(match message.response {
                    Response::Error(error) => ClientError::Server {
                        code: error.code,
                        detail: error.detail.to_owned(),
                    },
                    _ => ClientError::Protocol("an answer to no request".into()),
                });
            };
            let current = slot.as_mut().expect("checked");
            if let Response::Error(error) = &message.response {
                let not_executed = matches!(error.code, ErrorCode::NoLeader | ErrorCode::Busy);
                if not_executed && current.attempts < MAX_ATTEMPTS {
                    let (first, longest) = if error.code == ErrorCode::Busy {
                        (BUSY_MIN_BACKOFF, BUSY_MAX_BACKOFF)
                    } else {
                        (MIN_BACKOFF, MAX_BACKOFF)
                    };
                    let backoff = first
                        .saturating_mul(1 << (current.attempts - 1).min(16))
                        .min(longest);
                    current.retry_at = Some(Instant::now() + backoff);
                    tally.retries += 1;
                    continue;
                }
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("{:?}: {}", error.code, error.detail));
                }
            }
            tally
                .latencies_us
                .push(u32::try_from(current.first_sent.elapsed().as_micros()).unwrap_or(u32::MAX));
            *slot = None;
            if let Some(n) = next_request() {
                encode_request(&plan, &value, &mut key, &mut frame, at, n, &mut out);
                *slot = Some(Slot {
                    n,
                    first_sent: Instant::now(),
                    attempts: 1,
                    retry_at: None,
                });
            }
        }
    }
    Ok(tally)
}

/// Key number `n`, zero-padded (or cut) to `size` bytes, into `key`.
fn write_key(key: &mut Vec<u8>, n: u64, size: usize) {
    use std::io::Write;
    key.clear();
    let _ = write!(key, "key:{n:0width$}", width = size.saturating_sub(4));
    key.truncate(size.max(1));
}
