//! Commands answered by the core: a [`Job`] sends one or more `wire::Request`s (the very
//! requests a native client sends) and turns the `Response`s into one RESP reply.
//!
//! No command is implemented here: the core decides every read and write; this module only
//! chooses the request and words the answer as Redis would.

use memdi_core::wire::{ErrorCode, ErrorReply, ReadConsistency, Request, Response, WriteOptions};

use super::encode::{reply_bytes, Reply};
use super::glob;

/// Where a job's requests go: the connection gives each an id and passes it to the node.
pub trait RequestSink {
    /// Sends `request` to the core on behalf of the job being started or continued.
    fn send(&mut self, request: &Request<'_>);
}

/// How the single answer of a one-request command becomes its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `Stored` is `+OK`, `NotStored` a null (SET NX/XX not met).
    Ok,
    /// `Stored` is `:1`, `NotStored` `:0` (SETNX).
    Flag,
    /// `Value` as a bulk string or null.
    Bulk,
    /// `Integer` as is.
    Integer,
    /// `Count` as an integer.
    Count,
    /// `Count` of 1 or 0 as `:1`/`:0`, for EXPIRE and PERSIST.
    Changed,
    /// `Value`'s length (STRLEN).
    Length,
    /// `Count` as `+string` or `+none` (TYPE).
    Type,
    /// `Integer` milliseconds as seconds, rounded as Redis rounds TTL.
    Seconds,
    /// `Values` as an array of bulk strings and nulls.
    Values,
    /// `Pong` as `+PONG`, or as the bulk message PING was given.
    Pong(Option<Vec<u8>>),
    /// Any success (`Count` of FLUSHDB) as `+OK`.
    Done,
    /// WAIT: a confirmed read (`Count`) means every earlier write is on a quorum of
    /// voters, so on at least this many replicas.
    Replicas(i64),
}

/// A command being answered by the core.
#[derive(Debug)]
pub enum Job {
    /// One request.
    One(Shape),
    /// Several single-key requests whose counts add up (DEL, UNLINK, EXISTS of many keys),
    /// at most [`SUM_WINDOW`] in flight, so that one command of many keys cannot flood the
    /// node with requests nor the connection with answers.
    Sum {
        /// What each key is asked.
        ask: SumOf,
        /// Keys not asked about yet, last first.
        waiting: Vec<Vec<u8>>,
        /// Answers still to come for keys asked about.
        in_flight: usize,
        /// Their sum so far.
        total: u64,
        /// The first error answered, replied instead of the sum.
        error: Option<Vec<u8>>,
    },
    /// KEYS: pages of SCAN until the cursor comes back to 0, filtered by the pattern.
    Keys {
        /// The glob.
        pattern: Vec<u8>,
        /// Keys found so far.
        found: Vec<Vec<u8>>,
        /// Pages left before giving up (the loop is bounded).
        pages_left: u32,
    },
    /// SCAN: one page, filtered by MATCH.
    ScanPage {
        /// The glob, if MATCH was given.
        pattern: Option<Vec<u8>>,
    },
    /// RANDOMKEY: one key from a page starting at a random cursor; from cursor 0 if that
    /// page was empty.
    RandomKey {
        /// Whether the page from cursor 0 was already asked for.
        from_start: bool,
    },
}

/// What a [`Job::Sum`] asks of each key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SumOf {
    /// `Delete` (DEL, UNLINK): keys removed.
    Deleted,
    /// `Exists` (EXISTS): keys present.
    Existing,
}

/// Requests one multi-key DEL or EXISTS keeps in flight.
pub const SUM_WINDOW: usize = 64;

impl SumOf {
    fn send(self, key: &[u8], sink: &mut dyn RequestSink) {
        match self {
            SumOf::Deleted => sink.send(&Request::Delete {
                key,
                write: WriteOptions::default(),
            }),
            SumOf::Existing => sink.send(&Request::Exists {
                key,
                read: ReadConsistency::Linearizable,
            }),
        }
    }
}

/// Starts a [`Job::Sum`] over `keys`.
pub fn sum(ask: SumOf, keys: &[&[u8]], sink: &mut dyn RequestSink) -> Job {
    let first = keys.len().min(SUM_WINDOW);
    for key in &keys[..first] {
        ask.send(key, sink);
    }
    Job::Sum {
        ask,
        waiting: keys[first..].iter().rev().map(|key| key.to_vec()).collect(),
        in_flight: first,
        total: 0,
        error: None,
    }
}

/// Most pages one KEYS reads: a scan moves forward by at least one slot per page, so this
/// bounds the loop far above any store's slot count a page of 1000 keys needs.
pub const KEYS_MAX_PAGES: u32 = 1 << 20;
/// Keys asked for per page by KEYS and RANDOMKEY's retry.
pub const KEYS_PAGE: u32 = 1000;

impl Job {
    /// Takes one answer; returns the reply once the job is complete.
    pub fn on_response(
        &mut self,
        response: &Response<'_>,
        sink: &mut dyn RequestSink,
    ) -> Option<Vec<u8>> {
        match self {
            Job::One(shape) => Some(shape_reply(shape, response)),
            Job::Sum {
                ask,
                waiting,
                in_flight,
                total,
                error,
            } => {
                match response {
                    Response::Count(count) => *total += count,
                    other => {
                        error.get_or_insert_with(|| unexpected_or_error(other));
                    }
                }
                *in_flight -= 1;
                if let Some(key) = waiting.pop() {
                    ask.send(&key, sink);
                    *in_flight += 1;
                }
                (*in_flight == 0).then(|| match error.take() {
                    Some(error) => error,
                    None => reply_bytes(|r| r.integer(*total as i64)),
                })
            }
            Job::Keys {
                pattern,
                found,
                pages_left,
            } => match response {
                Response::ScanPage { next_cursor, keys } => {
                    found.extend(
                        keys.iter()
                            .flatten()
                            .filter(|key| glob::matches(pattern, key))
                            .map(<[u8]>::to_vec),
                    );
                    *pages_left -= 1;
                    if *next_cursor == 0 || *pages_left == 0 {
                        let keys = std::mem::take(found);
                        return Some(reply_bytes(|r| r.bulks(keys.iter().map(Vec::as_slice))));
                    }
                    sink.send(&Request::Scan {
                        cursor: *next_cursor,
                        prefix: glob::literal_prefix(pattern),
                        count: KEYS_PAGE,
                        read: ReadConsistency::Linearizable,
                    });
                    None
                }
                other => Some(unexpected_or_error(other)),
            },
            Job::ScanPage { pattern } => match response {
                Response::ScanPage { next_cursor, keys } => {
                    let keys: Vec<&[u8]> = keys
                        .iter()
                        .flatten()
                        .filter(|key| pattern.as_ref().is_none_or(|p| glob::matches(p, key)))
                        .collect();
                    Some(reply_bytes(|r| {
                        r.array(2);
                        r.bulk(next_cursor.to_string().as_bytes());
                        r.bulks(keys.into_iter());
                    }))
                }
                other => Some(unexpected_or_error(other)),
            },
            Job::RandomKey { from_start } => match response {
                Response::ScanPage { keys, .. } => match keys.iter().flatten().next() {
                    Some(key) => Some(reply_bytes(|r| r.bulk(key))),
                    None if *from_start => Some(reply_bytes(|r| r.null())),
                    None => {
                        *from_start = true;
                        sink.send(&Request::Scan {
                            cursor: 0,
                            prefix: b"",
                            count: 1,
                            read: ReadConsistency::Linearizable,
                        });
                        None
                    }
                },
                other => Some(unexpected_or_error(other)),
            },
        }
    }
}

fn shape_reply(shape: &Shape, response: &Response<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    write_shape_reply(shape, response, &mut out);
    out
}

/// Appends the reply of a one-request command ([`Job::One`]) to `out`: a connection whose
/// command is next in order writes it straight into its output buffer.
pub fn write_shape_reply(shape: &Shape, response: &Response<'_>, out: &mut Vec<u8>) {
    let r = &mut Reply(out);
    match (shape, response) {
        (Shape::Ok, Response::Stored { .. }) | (Shape::Done, Response::Count(_)) => r.simple("OK"),
        (Shape::Ok, Response::NotStored) => r.null(),
        (Shape::Flag, Response::Stored { .. }) => r.integer(1),
        (Shape::Flag, Response::NotStored) => r.integer(0),
        (Shape::Bulk, Response::Value(value)) => match value {
            Some(value) => r.bulk(value.value),
            None => r.null(),
        },
        (Shape::Integer, Response::Integer(value)) => r.integer(*value),
        (Shape::Count | Shape::Changed, Response::Count(count)) => r.integer(*count as i64),
        (Shape::Length, Response::Value(value)) => {
            r.integer(value.map_or(0, |v| v.value.len() as i64))
        }
        (Shape::Type, Response::Count(count)) => {
            r.simple(if *count > 0 { "string" } else { "none" })
        }
        (Shape::Seconds, Response::Integer(ms)) => {
            r.integer(if *ms < 0 { *ms } else { (ms + 500) / 1000 })
        }
        (Shape::Values, Response::Values(values)) => {
            r.array(values.len());
            for value in values.iter() {
                match value {
                    Some(value) => r.bulk(value),
                    None => r.null(),
                }
            }
        }
        (Shape::Pong(message), Response::Pong) => match message {
            Some(message) => r.bulk(message),
            None => r.simple("PONG"),
        },
        (Shape::Replicas(replicas), Response::Count(_)) => r.integer(*replicas),
        (_, other) => r.0.extend_from_slice(&unexpected_or_error(other)),
    }
}

/// The reply to an error answer, or to an answer of the wrong kind (a bug, said so).
fn unexpected_or_error(response: &Response<'_>) -> Vec<u8> {
    reply_bytes(|r| match response {
        Response::Error(error) => r.error(&error_text(error)),
        other => r.error(&format!("ERR internal error: unexpected answer {other:?}")),
    })
}

/// A core error as Redis would word it, so clients raise the exception they would against
/// Redis (redis-py maps the first word to an exception class).
pub fn error_text(error: &ErrorReply<'_>) -> String {
    match error.code {
        ErrorCode::StoreFull => "OOM command not allowed when used memory > 'maxmemory'.".into(),
        ErrorCode::NotAnInteger => "ERR value is not an integer or out of range".into(),
        ErrorCode::IntegerOverflow => "ERR increment or decrement would overflow".into(),
        ErrorCode::ValueTooLarge => {
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)".into()
        }
        ErrorCode::KeyTooLarge => "ERR key exceeds this node's --max-key-bytes".into(),
        ErrorCode::NoLeader | ErrorCode::Busy => format!("TRYAGAIN {}", error.detail),
        _ => format!("ERR {}", error.detail),
    }
}

/// A one-request job: sends `request` and answers as `shape` says.
pub fn one(sink: &mut dyn RequestSink, request: &Request<'_>, shape: Shape) -> Job {
    sink.send(request);
    Job::One(shape)
}

#[cfg(test)]
mod tests {
    use memdi_core::wire::{Packed, ValueRef};

    use super::*;

    struct Recorded(Vec<String>);

    impl RequestSink for Recorded {
        fn send(&mut self, request: &Request<'_>) {
            self.0.push(format!("{request:?}"));
        }
    }

    #[test]
    fn answers_become_redis_replies() {
        let mut sink = Recorded(Vec::new());
        let value = ValueRef {
            value: b"v",
            version: 1,
            expires_at_ms: None,
        };
        let cases: Vec<(Shape, Response<'_>, &[u8])> = vec![
            (Shape::Ok, Response::Stored { version: 3 }, b"+OK\r\n"),
            (Shape::Ok, Response::NotStored, b"$-1\r\n"),
            (Shape::Flag, Response::NotStored, b":0\r\n"),
            (Shape::Bulk, Response::Value(Some(value)), b"$1\r\nv\r\n"),
            (Shape::Bulk, Response::Value(None), b"$-1\r\n"),
            (Shape::Length, Response::Value(Some(value)), b":1\r\n"),
            (Shape::Type, Response::Count(0), b"+none\r\n"),
            (Shape::Seconds, Response::Integer(1499), b":1\r\n"),
            (Shape::Seconds, Response::Integer(1500), b":2\r\n"),
            (Shape::Seconds, Response::Integer(-2), b":-2\r\n"),
            (
                Shape::Values,
                Response::Values(Packed::from_encoded(&[0, 2, b'x']).unwrap()),
                b"*2\r\n$-1\r\n$1\r\nx\r\n",
            ),
            (
                Shape::Integer,
                Response::Error(ErrorReply {
                    code: ErrorCode::StoreFull,
                    detail: "full",
                }),
                b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            ),
        ];
        for (shape, response, expected) in cases {
            let mut job = Job::One(shape.clone());
            let reply = job.on_response(&response, &mut sink).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&reply),
                String::from_utf8_lossy(expected),
                "{shape:?}"
            );
        }
        assert!(sink.0.is_empty());
    }

    #[test]
    fn a_sum_waits_for_every_answer_and_reports_the_first_error() {
        let mut sink = Recorded(Vec::new());
        let keys: Vec<Vec<u8>> = (0..SUM_WINDOW + 2)
            .map(|i| i.to_string().into_bytes())
            .collect();
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut job = sum(SumOf::Deleted, &keys, &mut sink);
        assert_eq!(sink.0.len(), SUM_WINDOW, "a window of requests at first");
        for _ in 0..SUM_WINDOW + 1 {
            assert_eq!(job.on_response(&Response::Count(1), &mut sink), None);
        }
        assert_eq!(
            sink.0.len(),
            SUM_WINDOW + 2,
            "one more per answer, then none"
        );
        assert!(sink.0[SUM_WINDOW + 1].contains(&format!("{:?}", b"65")));
        assert_eq!(
            job.on_response(&Response::Count(0), &mut sink),
            Some(format!(":{}\r\n", SUM_WINDOW + 1).into_bytes())
        );
        let error = Response::Error(ErrorReply {
            code: ErrorCode::NoLeader,
            detail: "none",
        });
        let mut job = sum(SumOf::Existing, &keys[..2], &mut sink);
        assert_eq!(job.on_response(&error, &mut sink), None);
        assert_eq!(
            job.on_response(&Response::Count(1), &mut sink),
            Some(b"-TRYAGAIN none\r\n".to_vec())
        );
    }

    #[test]
    fn keys_follows_the_cursor_and_filters() {
        let mut sink = Recorded(Vec::new());
        let mut job = Job::Keys {
            pattern: b"a*".to_vec(),
            found: Vec::new(),
            pages_left: KEYS_MAX_PAGES,
        };
        let page = Packed::from_encoded(&[3, b'a', b'1', 2, b'b']).unwrap();
        let first = Response::ScanPage {
            next_cursor: 7,
            keys: page,
        };
        assert_eq!(job.on_response(&first, &mut sink), None);
        assert_eq!(sink.0.len(), 1, "asked for the next page");
        assert!(sink.0[0].contains("cursor: 7"));
        let last = Response::ScanPage {
            next_cursor: 0,
            keys: Packed::from_encoded(&[2, b'a']).unwrap(),
        };
        assert_eq!(
            job.on_response(&last, &mut sink),
            Some(b"*2\r\n$2\r\na1\r\n$1\r\na\r\n".to_vec())
        );
    }
}
