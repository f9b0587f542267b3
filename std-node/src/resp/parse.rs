//! RESP2 request parsing: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline
//! (`GET k\r\n`, what telnet and `redis-cli` scripts send) commands.
//!
//! The parser works on the bytes a connection has buffered and never copies an argument: a
//! parsed command is a list of ranges into the buffer. Every length a client announces is
//! checked against [`ParseLimits`] before the connection waits for (and so buffers) that
//! many bytes, which is what keeps a hostile client from making the server allocate.
//! Errors are worded as Redis words them, because client libraries match on the text.

use std::ops::Range;

/// Bounds on what one request may announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Longest bulk string (an argument), in bytes: the server's largest value.
    pub max_bulk_bytes: usize,
    /// Most arguments in one multibulk request.
    pub max_args: usize,
    /// Longest inline request line, and longest header line, in bytes.
    pub max_inline_bytes: usize,
    /// Most bytes one whole request may take: it must fit one core frame.
    pub max_request_bytes: usize,
}

/// A complete request: its arguments as ranges of the buffer, and how many bytes it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Each argument's bytes in the buffer given to [`parse`].
    pub args: Vec<Range<usize>>,
    /// Bytes of the buffer the request used, terminator included.
    pub consumed: usize,
}

/// Why the buffered bytes are not a request. The connection answers the error and closes:
/// after a protocol error the stream cannot be trusted to be in step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A multibulk count that is not a number or above `max_args`.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// A bulk length that is not a number or above `max_bulk_bytes`.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// Something other than `$` where an argument must start.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedDollar(char),
    /// A header or inline line longer than `max_inline_bytes`.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// A request whose announced bulks add up to more than `max_request_bytes`.
    #[error("Protocol error: request larger than this node's largest frame")]
    RequestTooBig,
    /// An inline line with an unterminated quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk string not followed by `\r\n`.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    BulkNotTerminated,
}

/// Parses the first request in `buffer`: `Ok(None)` if more bytes are needed. An empty
/// inline line is skipped (`Some` with no arguments), as Redis does.
pub fn parse(buffer: &[u8], limits: &ParseLimits) -> Result<Option<Parsed>, ParseError> {
    let mut args = Vec::new();
    let consumed = parse_into(buffer, limits, &mut args)?;
    Ok(consumed.map(|consumed| Parsed { args, consumed }))
}

/// [`parse`] into `args` (cleared first), which a connection keeps from one request to the
/// next instead of allocating a list per request: returns the bytes the request used.
pub fn parse_into(
    buffer: &[u8],
    limits: &ParseLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ParseError> {
    args.clear();
    match buffer.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buffer, limits, args),
        Some(_) => parse_inline(buffer, limits, args),
    }
}

/// The line starting at `from`, without its `\r\n` (or bare `\n`), and where the next starts.
fn line(
    buffer: &[u8],
    from: usize,
    limits: &ParseLimits,
) -> Result<Option<(Range<usize>, usize)>, ParseError> {
    let rest = &buffer[from..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(newline) => {
            if newline > limits.max_inline_bytes {
                return Err(ParseError::InlineTooBig);
            }
            let end = if newline > 0 && rest[newline - 1] == b'\r' {
                newline - 1
            } else {
                newline
            };
            Ok(Some((from..from + end, from + newline + 1)))
        }
        None if rest.len() > limits.max_inline_bytes => Err(ParseError::InlineTooBig),
        None => Ok(None),
    }
}

/// A decimal integer as `i64::from_str` reads it (an optional sign, then at least one ASCII
/// digit, no overflow), without its UTF-8 check and generic parser: every request has two
/// or more of these headers, and they showed in profiles of pipelined writes.
fn number(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(i64::from(digit))?
        } else {
            value.checked_add(i64::from(digit))?
        };
    }
    Some(value)
}

fn parse_multibulk(
    buffer: &[u8],
    limits: &ParseLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ParseError> {
    let Some((header, mut at)) = line(buffer, 0, limits)? else {
        return Ok(None);
    };
    let count = number(&buffer[header.start + 1..header.end]).ok_or(ParseError::MultibulkLength)?;
    if count > limits.max_args as i64 {
        return Err(ParseError::MultibulkLength);
    }
    if count <= 0 {
        // `*0` and `*-1` are empty requests, skipped.
        return Ok(Some(at));
    }
    // Capacity grows with the arguments actually received, not with the announced count.
    args.reserve((count as usize).min(64));
    let mut announced = 0usize;
    for _ in 0..count {
        let Some((header, after_header)) = line(buffer, at, limits)? else {
            return Ok(None);
        };
        let bytes = &buffer[header.clone()];
        match bytes.first() {
            Some(b'$') => {}
            Some(&other) => return Err(ParseError::ExpectedDollar(other as char)),
            None => return Err(ParseError::ExpectedDollar(' ')),
        }
        let len = number(&bytes[1..])
            .filter(|&len| len >= 0 && len as u64 <= limits.max_bulk_bytes as u64)
            .ok_or(ParseError::BulkLength)? as usize;
        announced = announced.saturating_add(len);
        if announced > limits.max_request_bytes {
            return Err(ParseError::RequestTooBig);
        }
        let end = after_header + len;
        if buffer.len() < end + 2 {
            return Ok(None);
        }
        if &buffer[end..end + 2] != b"\r\n" {
            return Err(ParseError::BulkNotTerminated);
        }
        args.push(after_header..end);
        at = end + 2;
    }
    Ok(Some(at))
}

fn parse_inline(
    buffer: &[u8],
    limits: &ParseLimits,
    args: &mut Vec<Range<usize>>,
) -> Result<Option<usize>, ParseError> {
    let Some((text, consumed)) = line(buffer, 0, limits)? else {
        return Ok(None);
    };
    split_inline(buffer, text, args)?;
    Ok(Some(consumed))
}

/// Splits an inline line into arguments at spaces, honouring quotes. Quoted arguments with
/// escapes (`"a\x41"`) would need their bytes rewritten, which ranges cannot express, so a
/// quoted argument is taken verbatim between its quotes; an escape inside quotes is refused
/// as unbalanced rather than misread.
fn split_inline(
    buffer: &[u8],
    text: Range<usize>,
    args: &mut Vec<Range<usize>>,
) -> Result<(), ParseError> {
    let mut at = text.start;
    while at < text.end {
        let byte = buffer[at];
        if byte.is_ascii_whitespace() {
            at += 1;
            continue;
        }
        if byte == b'"' || byte == b'\'' {
            let start = at + 1;
            let close = buffer[start..text.end]
                .iter()
                .position(|&b| b == byte || b == b'\\')
                .map(|offset| start + offset)
                .filter(|&close| buffer[close] == byte)
                .ok_or(ParseError::UnbalancedQuotes)?;
            if close + 1 < text.end && !buffer[close + 1].is_ascii_whitespace() {
                return Err(ParseError::UnbalancedQuotes);
            }
            args.push(start..close);
            at = close + 1;
        } else {
            let start = at;
            while at < text.end && !buffer[at].is_ascii_whitespace() {
                at += 1;
            }
            args.push(start..at);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_rust_reads_an_i64() {
        for text in [
            "0",
            "7",
            "-0",
            "+5",
            "-42",
            "123456789",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "",
            "-",
            "+",
            "--1",
            "+-1",
            " 5",
            "5 ",
            "1a",
            "0x10",
            "\u{661}",
            "99999999999999999999",
        ] {
            assert_eq!(
                number(text.as_bytes()),
                text.parse::<i64>().ok(),
                "{text:?}"
            );
        }
    }

    const LIMITS: ParseLimits = ParseLimits {
        max_bulk_bytes: 16,
        max_args: 4,
        max_inline_bytes: 32,
        max_request_bytes: 40,
    };

    fn args(input: &[u8]) -> Vec<Vec<u8>> {
        let parsed = parse(input, &LIMITS).unwrap().expect("complete");
        assert_eq!(parsed.consumed, input.len());
        parsed.args.into_iter().map(|r| input[r].to_vec()).collect()
    }

    #[test]
    fn multibulk_and_inline_requests_parse_to_the_same_arguments() {
        assert_eq!(
            args(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
            [b"GET".to_vec(), b"k".to_vec()]
        );
        assert_eq!(args(b"GET k\r\n"), [b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(
            args(b"set  'a b' \"\"\n"),
            [b"set".to_vec(), b"a b".to_vec(), b"".to_vec()]
        );
        assert_eq!(
            args(b"*2\r\n$3\r\nSET\r\n$0\r\n\r\n"),
            [b"SET".to_vec(), b"".to_vec()]
        );
        assert_eq!(args(b"\r\n"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more() {
        let request = b"*2\r\n$3\r\nGET\r\n$5\r\nhello\r\n";
        for cut in 0..request.len() {
            assert_eq!(parse(&request[..cut], &LIMITS), Ok(None), "cut at {cut}");
        }
        assert!(parse(request, &LIMITS).unwrap().is_some());
    }

    #[test]
    fn limits_are_checked_before_the_bytes_arrive() {
        assert_eq!(parse(b"*5\r\n", &LIMITS), Err(ParseError::MultibulkLength));
        assert_eq!(parse(b"*x\r\n", &LIMITS), Err(ParseError::MultibulkLength));
        assert_eq!(
            parse(b"*1\r\n$17\r\n", &LIMITS),
            Err(ParseError::BulkLength)
        );
        assert_eq!(
            parse(b"*1\r\n$-1\r\n", &LIMITS),
            Err(ParseError::BulkLength)
        );
        assert_eq!(
            parse(
                b"*3\r\n$16\r\n0123456789abcdef\r\n$16\r\n0123456789abcdef\r\n$16\r\n",
                &LIMITS
            ),
            Err(ParseError::RequestTooBig)
        );
        assert_eq!(parse(&[b'a'; 33], &LIMITS), Err(ParseError::InlineTooBig));
        assert_eq!(
            parse(b"*1\r\n:1\r\n", &LIMITS),
            Err(ParseError::ExpectedDollar(':'))
        );
        assert_eq!(
            parse(b"*1\r\n$1\r\nab\r\n", &LIMITS),
            Err(ParseError::BulkNotTerminated)
        );
        assert_eq!(
            parse(b"get \"abc\r\n", &LIMITS),
            Err(ParseError::UnbalancedQuotes)
        );
    }

    #[test]
    fn errors_read_as_redis_writes_them() {
        assert_eq!(
            ParseError::MultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            ParseError::BulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            ParseError::ExpectedDollar('x').to_string(),
            "Protocol error: expected '$', got 'x'"
        );
    }
}
