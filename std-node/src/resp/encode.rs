//! RESP2 reply encoding: the five reply types, appended to a connection's output buffer.
//!
//! Replies are written straight into one `Vec<u8>` per connection (no intermediate value
//! tree), which is what pipelined replies are flushed from.

use memdi_core::store::integer::{format_i64, MAX_DECIMAL_BYTES};

/// Appends RESP2 replies to a buffer.
#[derive(Debug)]
pub struct Reply<'b>(pub &'b mut Vec<u8>);

impl Reply<'_> {
    /// `+text`: `text` must hold no `\r` or `\n`.
    pub fn simple(&mut self, text: &str) {
        self.line(b'+', text.as_bytes());
    }

    /// `-text`: an error, its first word its kind (`ERR`, `OOM`, `NOPROTO`...). Line
    /// breaks in `text` become spaces, since they would end the reply early.
    pub fn error(&mut self, text: &str) {
        let clean: Vec<u8> = text
            .bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        self.line(b'-', &clean);
    }

    /// `:n`.
    pub fn integer(&mut self, value: i64) {
        self.line(b':', format_i64(value, &mut [0; MAX_DECIMAL_BYTES]));
    }

    /// `$len` and the bytes.
    pub fn bulk(&mut self, bytes: &[u8]) {
        let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        self.line(b'$', format_i64(len, &mut [0; MAX_DECIMAL_BYTES]));
        self.0.extend_from_slice(bytes);
        self.0.extend_from_slice(b"\r\n");
    }

    /// `$-1`: a missing value.
    pub fn null(&mut self) {
        self.0.extend_from_slice(b"$-1\r\n");
    }

    /// `*len`: the header of an array whose `len` items follow.
    pub fn array(&mut self, len: usize) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        self.line(b'*', format_i64(len, &mut [0; MAX_DECIMAL_BYTES]));
    }

    /// `*-1`: a missing array.
    pub fn null_array(&mut self) {
        self.0.extend_from_slice(b"*-1\r\n");
    }

    /// An array of bulk strings.
    pub fn bulks<'i>(&mut self, items: impl ExactSizeIterator<Item = &'i [u8]>) {
        self.array(items.len());
        for item in items {
            self.bulk(item);
        }
    }

    fn line(&mut self, kind: u8, text: &[u8]) {
        self.0.push(kind);
        self.0.extend_from_slice(text);
        self.0.extend_from_slice(b"\r\n");
    }
}

/// The reply bytes of one call to `write`.
pub fn reply_bytes(write: impl FnOnce(&mut Reply<'_>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut Reply(&mut out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reply_type_has_its_resp2_bytes() {
        let bytes = reply_bytes(|r| {
            r.array(6);
            r.simple("OK");
            r.error("ERR bad\r\nthing");
            r.integer(-3);
            r.bulk(b"hi");
            r.null();
            r.null_array();
        });
        assert_eq!(
            bytes,
            b"*6\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n*-1\r\n"
        );
    }
}
