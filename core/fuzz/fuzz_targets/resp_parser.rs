//! Fuzzes memdi-server's RESP2 request parser (`memdi_node::resp::parse`) with arbitrary
//! bytes, as a connection would buffer them.
//!
//! Checked, besides "no panic":
//! - a parsed request consumed at least one byte and no more than it was given, and every
//!   argument lies inside what it consumed, within the limits it was given;
//! - the parser is a streaming parser: on every prefix of the input it answers "need more"
//!   or exactly what it answers on the whole input (so a request split across reads parses
//!   the same as one read in one go), and an error on a prefix is the error on the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memdi_node::resp::parse::{parse, ParseLimits};

const LIMITS: ParseLimits = ParseLimits {
    max_bulk_bytes: 64,
    max_args: 8,
    max_inline_bytes: 64,
    max_request_bytes: 256,
};

fuzz_target!(|input: &[u8]| {
    // Quadratic in the input (every prefix is parsed): keep inputs small.
    let input = &input[..input.len().min(1024)];
    let mut at = 0;
    while at < input.len() {
        let rest = &input[at..];
        let whole = parse(rest, &LIMITS);
        for end in 0..rest.len() {
            match parse(&rest[..end], &LIMITS) {
                Ok(None) => {}
                prefix => assert_eq!(prefix, whole, "prefix of {end} bytes"),
            }
        }
        let Ok(Some(parsed)) = whole else {
            break;
        };
        assert!(parsed.consumed > 0 && parsed.consumed <= rest.len());
        assert!(parsed.args.len() <= LIMITS.max_args.max(LIMITS.max_inline_bytes));
        for arg in &parsed.args {
            assert!(arg.start <= arg.end && arg.end <= parsed.consumed);
            assert!(arg.len() <= LIMITS.max_bulk_bytes.max(LIMITS.max_inline_bytes));
        }
        at += parsed.consumed;
    }
});
