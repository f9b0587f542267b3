//! The fault test's clients: they write unique values, compare-and-set and read, through
//! whichever node they pick, and record every operation's call, return and outcome.
//!
//! - **Quorum workers** use `ack quorum` writes, compare-and-sets and linearizable reads on
//!   shared keys; their history goes to the linearizability checker. Keys are renewed every
//!   [`GENERATION_MS`] (as Jepsen's independent keys are), so that no key's history grows
//!   without bound in a long soak.
//! - **Leader workers** each own a few keys and write increasing counters with the default
//!   `ack leader`: such a write may be lost in a failover, and the final reads count how many
//!   were ([`LeaderLedger`]).
//!
//! An operation's outcome is *failed* when the node said it did nothing (no leader, busy, a
//! refused connection) and *unknown* when it may have happened (a timeout, a connection that
//! broke with the request out, no answer within [`OP_TIMEOUT`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use memdi_core::wire::{
    AckLevel, ErrorCode, Expiry, ReadConsistency, Request, SetCondition, WriteOptions,
};
use memdi_node::client::{Client, ClientError, ClientOptions, Reply};
use memdi_tests::linearizability::{CasOutput, History, Op, Output};

use super::nodes;
use crate::rng::SimRng;

/// Longest wait for one answer; beyond it the outcome is unknown. The nodes' own request
/// timeout is 2 s, so this is reached only when the node asked is itself paused (SIGSTOP).
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a quorum worker's keys live before the workers move to new ones.
pub const GENERATION_MS: u64 = 10_000;
/// Keys per generation shared by the quorum workers.
const SHARED_KEYS: u64 = 8;
/// Keys each leader worker owns.
const OWNED_KEYS: u64 = 4;

const QUORUM: WriteOptions = WriteOptions {
    ack: Some(AckLevel::Quorum),
    durability: None,
};

/// What the workers share: the clock, the history and the stop flag.
#[derive(Debug)]
pub struct Shared {
    pub start: Instant,
    pub history: Mutex<History>,
    /// Every quorum key used, for the final reads.
    pub quorum_keys: Mutex<BTreeSet<Vec<u8>>>,
    pub leader_ledger: Mutex<LeaderLedger>,
    pub stop: AtomicBool,
    pub slots: usize,
    /// Answers that did not fit their request: each is a bug, reported at the end.
    pub anomalies: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(start: Instant, slots: usize) -> Arc<Self> {
        Arc::new(Shared {
            start,
            history: Mutex::new(History::new()),
            quorum_keys: Mutex::default(),
            leader_ledger: Mutex::default(),
            stop: AtomicBool::new(false),
            slots,
            anomalies: Mutex::default(),
        })
    }

    /// Microseconds since the run started: the history's clock.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// Per leader-acknowledged key: the counters acknowledged, and the highest attempted.
#[derive(Debug, Default)]
pub struct LeaderLedger {
    pub keys: BTreeMap<Vec<u8>, LeaderKey>,
}

#[derive(Debug, Default)]
pub struct LeaderKey {
    pub acknowledged: Vec<u64>,
    pub highest_attempted: u64,
}

/// How an operation ended.
#[derive(Debug)]
pub enum Answer {
    Reply(Reply),
    /// The node did nothing.
    Failed,
    /// It may have happened.
    Unknown,
}

/// Sends `request` and classifies the result.
pub async fn perform(client: &Client, request: &Request<'_>) -> Answer {
    match tokio::time::timeout(OP_TIMEOUT, client.request(request)).await {
        Err(_) => Answer::Unknown,
        Ok(Ok(reply)) => Answer::Reply(reply),
        Ok(Err(error)) => classify(error),
    }
}

fn classify(error: ClientError) -> Answer {
    match error {
        ClientError::Connection { .. } => Answer::Failed,
        ClientError::Server { code, .. } => match code {
            ErrorCode::NoLeader
            | ErrorCode::Busy
            | ErrorCode::StoreFull
            | ErrorCode::Malformed
            | ErrorCode::Unauthorized
            | ErrorCode::Unsupported
            | ErrorCode::AuthRequired => Answer::Failed,
            _ => Answer::Unknown,
        },
        ClientError::Closed { .. } | ClientError::Protocol(_) => Answer::Unknown,
    }
}

/// One client per node slot, connected on first use (a node may be down at the start).
#[derive(Debug)]
pub struct Clients {
    clients: Vec<Option<Client>>,
}

impl Clients {
    pub fn new(slots: usize) -> Self {
        Clients {
            clients: vec![None; slots],
        }
    }

    /// The client of `slot`, or why it cannot connect (nothing was sent).
    pub async fn get(&mut self, slot: usize) -> Result<&Client, String> {
        if self.clients[slot].is_none() {
            let options = ClientOptions {
                pool_size: 1,
                // A refused request is tried a few times; then the worker moves on.
                max_attempts: 3,
                min_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                connect_timeout: Duration::from_secs(1),
                read: ReadConsistency::Linearizable,
                password: None,
            };
            let addr = nodes::client_addr(slot);
            let connect = Client::connect_with(&addr, options);
            match tokio::time::timeout(OP_TIMEOUT, connect).await {
                Ok(Ok(client)) => self.clients[slot] = Some(client),
                Ok(Err(error)) => return Err(error.to_string()),
                Err(_) => return Err("connect timed out".into()),
            }
        }
        Ok(self.clients[slot].as_ref().expect("connected above"))
    }
}

/// A quorum worker: until `stop`, reads, writes and compare-and-sets random shared keys of
/// the current generation through random nodes, recording each operation.
pub async fn quorum_worker(shared: Arc<Shared>, worker: u64, seed: u64) {
    let mut rng = SimRng::new(seed);
    let mut clients = Clients::new(shared.slots);
    let mut versions: HashMap<Vec<u8>, u64> = HashMap::new();
    let mut count = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let generation = shared.start.elapsed().as_millis() as u64 / GENERATION_MS;
        let key = format!("q{generation}-{}", rng.range(0, SHARED_KEYS)).into_bytes();
        shared
            .quorum_keys
            .lock()
            .expect("keys lock")
            .insert(key.clone());
        count += 1;
        let value = format!("{worker}-{count}").into_bytes();
        let dice = rng.range(0, 10);
        let (op, request) = if dice < 4 {
            (
                Op::Get,
                Request::Get {
                    key: &key,
                    read: ReadConsistency::Linearizable,
                },
            )
        } else if dice < 8 {
            (
                Op::Put {
                    value: value.clone(),
                },
                Request::Set {
                    key: &key,
                    value: &value,
                    condition: SetCondition::Always,
                    expiry: Expiry::None,
                    write: QUORUM,
                },
            )
        } else {
            let expected_version = versions.get(&key).copied().unwrap_or(0);
            (
                Op::CompareAndSet {
                    expected_version,
                    value: value.clone(),
                },
                Request::CompareAndSet {
                    key: &key,
                    expected_version,
                    value: &value,
                    expiry: Expiry::None,
                    write: QUORUM,
                },
            )
        };
        let slot = rng.range(0, shared.slots as u64) as usize;
        let id = shared.history.lock().expect("history lock").invoke(
            worker,
            key.clone(),
            op.clone(),
            shared.now_us(),
        );
        let answer = match clients.get(slot).await {
            Ok(client) => perform(client, &request).await,
            Err(_) => Answer::Failed,
        };
        let returned = shared.now_us();
        let output = match answer {
            Answer::Reply(reply) => match output_of(&op, reply) {
                Ok(output) => Some(output),
                Err(anomaly) => {
                    shared
                        .anomalies
                        .lock()
                        .expect("anomalies lock")
                        .push(anomaly);
                    None
                }
            },
            Answer::Failed => {
                shared.history.lock().expect("history lock").fail(id);
                None
            }
            Answer::Unknown => None,
        };
        if let Some(output) = output {
            match &output {
                Output::Value(Some((_, version)))
                | Output::Ok {
                    version: Some(version),
                }
                | Output::Cas(CasOutput::Ok {
                    version: Some(version),
                })
                | Output::Cas(CasOutput::Mismatch {
                    current_version: version,
                }) => {
                    versions.insert(key.clone(), *version);
                }
                Output::Value(None) => {
                    versions.insert(key.clone(), 0);
                }
                _ => {}
            }
            shared
                .history
                .lock()
                .expect("history lock")
                .complete(id, output, returned);
        }
        tokio::time::sleep(Duration::from_millis(rng.range(2, 20))).await;
    }
}

/// What the checker's model expects for `op` answered by `reply`, or a description of an
/// answer that does not fit the request (a bug the test reports).
pub fn output_of(op: &Op, reply: Reply) -> Result<Output, String> {
    Ok(match (op, reply) {
        (Op::Get, Reply::Value(value)) => {
            Output::Value(value.map(|value| (value.value, value.version)))
        }
        (Op::Put { .. }, Reply::Stored(version)) => Output::Ok {
            version: Some(version),
        },
        (Op::CompareAndSet { .. }, Reply::Stored(version)) => Output::Cas(CasOutput::Ok {
            version: Some(version),
        }),
        (Op::CompareAndSet { .. }, Reply::VersionMismatch(current_version)) => {
            Output::Cas(CasOutput::Mismatch { current_version })
        }
        (op, reply) => return Err(format!("{op:?} answered by {reply:?}")),
    })
}

/// A leader worker: until `stop`, writes the next counter to one of its own keys with the
/// default `ack leader`, through a random node.
pub async fn leader_worker(shared: Arc<Shared>, worker: u64, seed: u64) {
    let mut rng = SimRng::new(seed);
    let mut clients = Clients::new(shared.slots);
    let mut counter = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let key = format!("l{worker}-{}", rng.range(0, OWNED_KEYS)).into_bytes();
        counter += 1;
        let value = counter.to_string().into_bytes();
        shared
            .leader_ledger
            .lock()
            .expect("ledger lock")
            .keys
            .entry(key.clone())
            .or_default()
            .highest_attempted = counter;
        let request = Request::Set {
            key: &key,
            value: &value,
            condition: SetCondition::Always,
            expiry: Expiry::None,
            write: WriteOptions::default(),
        };
        let slot = rng.range(0, shared.slots as u64) as usize;
        let answer = match clients.get(slot).await {
            Ok(client) => perform(client, &request).await,
            Err(_) => Answer::Failed,
        };
        if let Answer::Reply(Reply::Stored(_)) = answer {
            shared
                .leader_ledger
                .lock()
                .expect("ledger lock")
                .keys
                .entry(key)
                .or_default()
                .acknowledged
                .push(counter);
        }
        tokio::time::sleep(Duration::from_millis(rng.range(2, 20))).await;
    }
}
