//! Decimal integers stored as values, as INCRBY reads and writes them.
//!
//! The rules are Redis's: a value counts as an integer only if it is the canonical decimal
//! form of an `i64` (optional `-`, digits, no leading zeros, no `+`, no spaces), so that
//! every value INCRBY accepts reads back exactly as it was written.

/// Longest canonical `i64`: `-9223372036854775808`.
pub const MAX_DECIMAL_BYTES: usize = 20;

/// Parses a canonical decimal `i64`, or `None`.
pub(crate) fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    let canonical = match digits {
        [] => false,
        [b'0'] => !negative,
        [first, ..] => *first != b'0',
    };
    if !canonical || digits.len() > 19 {
        return None;
    }
    let mut value: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(digit - b'0');
        // Accumulate negatively so that i64::MIN parses without overflow.
        value = value.checked_mul(10)?.checked_sub(digit)?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Writes `value` in canonical decimal into `out`, returning the used tail. Shells use it
/// too (memdi-server's RESP replies), so that no reply allocates a `String` for a number.
pub fn format_i64(value: i64, out: &mut [u8; MAX_DECIMAL_BYTES]) -> &[u8] {
    let mut at = out.len();
    // Work on the magnitude as u64 so that i64::MIN is fine; two digits per division (it
    // runs twice for every INCR: the value stored and the reply).
    let mut magnitude = value.unsigned_abs();
    while magnitude >= 100 {
        let pair = (magnitude % 100) as usize * 2;
        magnitude /= 100;
        at -= 2;
        out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if magnitude >= 10 {
        let pair = magnitude as usize * 2;
        at -= 2;
        out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        out[at] = b'0' + magnitude as u8;
    }
    if value < 0 {
        at -= 1;
        out[at] = b'-';
    }
    &out[at..]
}

/// "00", "01", ... "99", back to back.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::ToString;
    use std::vec;

    #[test]
    fn accepts_canonical_forms_only() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", core::str::from_utf8(bad));
        }
    }

    #[test]
    fn formats_every_digit_count_and_both_ends_as_std_does() {
        let mut values = vec![0, i64::MIN, i64::MAX, i64::MIN + 1];
        let mut power: i64 = 1;
        for _ in 0..19 {
            for value in [power - 1, power, power + 1, 2 * power - 1] {
                values.extend([value, -value]);
            }
            power = power.saturating_mul(10);
        }
        for value in values {
            let mut buf = [0; MAX_DECIMAL_BYTES];
            assert_eq!(format_i64(value, &mut buf), value.to_string().as_bytes());
        }
    }

    proptest! {
        #[test]
        fn format_round_trips_and_matches_std(value: i64) {
            let mut buf = [0; MAX_DECIMAL_BYTES];
            let text = format_i64(value, &mut buf);
            let expected = value.to_string();
            prop_assert_eq!(text, expected.as_bytes());
            prop_assert_eq!(parse_i64(text), Some(value));
        }

        #[test]
        fn parse_agrees_with_std_on_canonical_text(bytes in proptest::collection::vec(any::<u8>(), 0..22)) {
            if let Some(value) = parse_i64(&bytes) {
                let canonical = value.to_string();
                prop_assert_eq!(canonical.as_bytes(), &bytes[..]);
            }
        }
    }
}
