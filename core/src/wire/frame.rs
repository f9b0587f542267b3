//! Framing: cutting a byte stream into messages.
//!
//! A frame is a 4-byte little-endian payload length followed by the payload. TCP (or a UART)
//! delivers bytes in arbitrary pieces, so [`FrameDecoder`] accumulates them in a caller-owned
//! buffer and hands out whole payloads. The length prefix lets a receiver refuse an oversized
//! frame as soon as its header arrives, before spending memory or time on its payload.

use core::fmt;

use serde::Serialize;

use super::codec::{encode, EncodeError};
use super::error_code::ErrorCode;

/// The payload limit a server uses unless configured otherwise: large enough for big values,
/// small enough that one connection cannot pin much memory.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 1 << 20;

/// The size of the length prefix in front of every payload.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a [`FrameDecoder`] stopped. The stream cannot be resynchronised, so the connection must
/// close; the decoder keeps returning this error.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// A header announced a payload larger than the decoder accepts.
    TooLarge {
        /// The announced payload length.
        len: u32,
        /// The decoder's `max_frame_bytes`.
        max: u32,
    },
}

impl FrameError {
    /// The code to put in the error reply sent before closing the connection.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "frame of {len} bytes exceeds {max}"),
        }
    }
}

/// The buffer given to [`FrameDecoder::new`] cannot hold a header and a 1-byte payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FrameBufferTooSmall {
    /// The length of the buffer that was given.
    pub buffer_bytes: usize,
}

impl fmt::Display for FrameBufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame buffer of {} bytes is smaller than {} bytes",
            self.buffer_bytes,
            FRAME_HEADER_BYTES + 1
        )
    }
}

/// Reassembles frames from a byte stream in a caller-owned buffer.
///
/// The buffer is a `Vec` on a server and a static array on a board; its length fixes the
/// largest payload accepted, `max_frame_bytes = buffer length - 4`, so a frame that is accepted
/// always fits. Bytes come in through [`feed`](Self::feed) (copying) or
/// [`unfilled`](Self::unfilled) + [`commit`](Self::commit) (a socket reads straight into the
/// buffer); call [`next_frame`](Self::next_frame) until it returns `Ok(None)` before adding
/// more, since a buffer full of complete frames has no room left.
pub struct FrameDecoder<B> {
    buffer: B,
    /// `buffer.as_ref().len()`, read once so that every index stays within it.
    capacity: usize,
    max_frame_bytes: u32,
    /// Offset of the first byte (header) of the frame `next_frame` returns next.
    start: usize,
    /// Offset just past the last buffered byte.
    end: usize,
    /// Offset of the first header not yet checked against `max_frame_bytes`. Every header in
    /// `start..checked` was accepted; `checked` may lie past `end` while a payload is arriving.
    checked: usize,
    /// Set once an oversized header is buffered; from then on no bytes are taken.
    failure: Option<FrameError>,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> FrameDecoder<B> {
    /// Wraps `buffer`, whose length must not change while the decoder owns it. A buffer
    /// longer than `u32::MAX + 4` bytes works, but frames stay limited to `u32::MAX` bytes.
    pub fn new(buffer: B) -> Result<Self, FrameBufferTooSmall> {
        let capacity = buffer.as_ref().len();
        if capacity <= FRAME_HEADER_BYTES {
            return Err(FrameBufferTooSmall {
                buffer_bytes: capacity,
            });
        }
        let max_frame_bytes = u32::try_from(capacity - FRAME_HEADER_BYTES).unwrap_or(u32::MAX);
        Ok(Self {
            buffer,
            capacity,
            max_frame_bytes,
            start: 0,
            end: 0,
            checked: 0,
            failure: None,
        })
    }

    /// The largest payload accepted, to announce in the handshake.
    pub fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// How many received bytes have not yet been returned as frames, so a caller can tell a
    /// clean end of stream (0) from one that cut a frame.
    pub fn buffered_bytes(&self) -> usize {
        self.end - self.start
    }

    /// The received bytes not yet returned as frames, so a caller can move them to a decoder
    /// with a larger buffer (a connection that has just authenticated) without losing any.
    /// Includes an oversized header and what follows it: the new decoder checks it again.
    pub fn pending(&self) -> &[u8] {
        &self.buffer.as_ref()[self.start..self.end]
    }

    /// Gives the buffer back, for reuse by the next connection.
    pub fn into_buffer(self) -> B {
        self.buffer
    }

    /// Copies as much of `bytes` as fits and returns how many were taken; the caller keeps
    /// the rest for a later call. Takes nothing after a [`FrameError`], and stops right after
    /// an oversized header so that none of its payload is buffered.
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() && self.failure.is_none() {
            let rest = &bytes[taken..];
            self.make_room(rest.len());
            // Copy at most up to the end of the next unchecked header, so that it is checked
            // before anything after it is taken.
            let to_next_header_end = self.checked + FRAME_HEADER_BYTES - self.end;
            let step = rest
                .len()
                .min(self.capacity - self.end)
                .min(to_next_header_end);
            if step == 0 {
                break;
            }
            self.buffer.as_mut()[self.end..self.end + step].copy_from_slice(&rest[..step]);
            self.end += step;
            taken += step;
            self.check_headers();
        }
        taken
    }

    /// The free space after the buffered bytes, for a socket to read into; follow with
    /// [`commit`](Self::commit). Makes room first if the frame in progress would not fit.
    /// Empty after a [`FrameError`], or when the buffer is full of complete frames.
    pub fn unfilled(&mut self) -> &mut [u8] {
        if self.failure.is_some() {
            return &mut [];
        }
        let wanted = self.current_frame_end().saturating_sub(self.end).max(1);
        self.make_room(wanted);
        &mut self.buffer.as_mut()[self.end..]
    }

    /// Marks `count` bytes written into [`unfilled`](Self::unfilled) as received.
    ///
    /// # Panics
    ///
    /// If `count` is larger than the slice `unfilled` returned, which is a bug in the caller.
    pub fn commit(&mut self, count: usize) {
        assert!(
            count <= self.capacity - self.end,
            "FrameDecoder::commit: {count} bytes committed but only {} were unfilled",
            self.capacity - self.end
        );
        self.end += count;
        self.check_headers();
    }

    /// Returns the next complete payload, `Ok(None)` if it has not fully arrived, or the error
    /// that ended the stream (returned again on every later call). Frames buffered before an
    /// oversized header are still returned first.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let Some(len) = self.header_at(self.start) else {
            return Ok(None);
        };
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        let payload_start = self.start + FRAME_HEADER_BYTES;
        let payload_end = payload_start + widen(len);
        if payload_end > self.end {
            return Ok(None);
        }
        self.start = payload_end;
        if self.start == self.end {
            // Nothing is buffered after this frame, so the next bytes can go to the front
            // without moving anything. The payload itself stays in place until the next
            // `&mut self` call, which the borrow of the returned slice rules out.
            self.start = 0;
            self.end = 0;
            self.checked = 0;
        }
        Ok(Some(&self.buffer.as_ref()[payload_start..payload_end]))
    }

    /// The payload length in the header at `at`, if all 4 header bytes are buffered.
    fn header_at(&self, at: usize) -> Option<u32> {
        let header = self
            .buffer
            .as_ref()
            .get(at..self.end)?
            .get(..FRAME_HEADER_BYTES)?;
        Some(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]))
    }

    /// Where the frame in progress ends, as far as is known (just its header if the length has
    /// not arrived yet).
    fn current_frame_end(&self) -> usize {
        let header_end = self.start + FRAME_HEADER_BYTES;
        match self.header_at(self.start) {
            Some(len) if len <= self.max_frame_bytes => header_end + widen(len),
            _ => header_end,
        }
    }

    /// Checks every newly completed header, latching a failure at the first oversized one.
    fn check_headers(&mut self) {
        while self.failure.is_none() {
            let Some(len) = self.header_at(self.checked) else {
                return;
            };
            if len > self.max_frame_bytes {
                self.failure = Some(FrameError::TooLarge {
                    len,
                    max: self.max_frame_bytes,
                });
            } else {
                self.checked += FRAME_HEADER_BYTES + widen(len);
            }
        }
    }

    /// Moves the unreturned bytes to the front of the buffer, but only when that is needed to
    /// fit `wanted` more bytes, so that each byte is moved rarely.
    fn make_room(&mut self, wanted: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.checked = 0;
        } else if self.start > 0 && self.capacity - self.end < wanted {
            self.buffer.as_mut().copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.checked -= self.start;
            self.start = 0;
        }
    }
}

impl<B> fmt::Debug for FrameDecoder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffer's contents are left out: they can be a megabyte of payload.
        f.debug_struct("FrameDecoder")
            .field("capacity", &self.capacity)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("checked", &self.checked)
            .field("failure", &self.failure)
            .finish()
    }
}

/// A payload length as a buffer offset. Only called on lengths at most `max_frame_bytes`,
/// which was itself derived from a buffer length, so it always fits in a `usize`.
fn widen(len: u32) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// Writes `message` as one frame (header, then postcard payload) at the front of `out` and
/// returns the frame's total length.
///
/// `out` bounds the payload, so size it to the receiver's `max_frame_bytes` plus
/// [`FRAME_HEADER_BYTES`] to never send a frame the receiver must reject.
pub fn encode_frame<T: Serialize + ?Sized>(
    message: &T,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if out.len() < FRAME_HEADER_BYTES {
        return Err(EncodeError::BufferFull);
    }
    let (header, payload_area) = out.split_at_mut(FRAME_HEADER_BYTES);
    // A payload must fit the 4-byte header; only matters where `usize` is wider than `u32`.
    let payload_limit = payload_area.len().min(widen(u32::MAX));
    let payload_len = encode(message, &mut payload_area[..payload_limit])?.len();
    let header_value = u32::try_from(payload_len).map_err(|_| EncodeError::BufferFull)?;
    header.copy_from_slice(&header_value.to_le_bytes());
    Ok(FRAME_HEADER_BYTES + payload_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_buffer_must_hold_a_header_and_a_byte() {
        assert_eq!(
            FrameDecoder::new([0u8; 4]).err(),
            Some(FrameBufferTooSmall { buffer_bytes: 4 })
        );
        assert_eq!(FrameDecoder::new([0u8; 5]).unwrap().max_frame_bytes(), 1);
    }

    #[test]
    fn splits_merged_frames_and_joins_split_ones() {
        let mut stream = frame(b"hello");
        stream.extend(frame(b""));
        stream.extend(frame(b"world!"));
        let mut decoder = FrameDecoder::new([0u8; 12]).unwrap();
        assert_eq!(decoder.feed(&stream[..7]), 7);
        assert_eq!(decoder.next_frame(), Ok(None));
        let mut offset = 7;
        let mut payloads = std::vec::Vec::new();
        while offset < stream.len() {
            let taken = decoder.feed(&stream[offset..]);
            assert!(taken > 0, "no progress at offset {offset}");
            offset += taken;
            while let Some(payload) = decoder.next_frame().unwrap() {
                payloads.push(payload.to_vec());
            }
        }
        assert_eq!(payloads, [&b"hello"[..], b"", b"world!"]);
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn a_frame_filling_the_whole_buffer_is_accepted() {
        let mut decoder = FrameDecoder::new([0u8; 8]).unwrap();
        let mut stream = frame(b"a");
        stream.extend(frame(b"bcde"));
        let taken = decoder.feed(&stream);
        assert_eq!(taken, 8);
        assert_eq!(decoder.next_frame(), Ok(Some(&b"a"[..])));
        // The second frame needs the whole buffer, so its partial bytes move to the front.
        assert_eq!(decoder.feed(&stream[taken..]), stream.len() - taken);
        assert_eq!(decoder.next_frame(), Ok(Some(&b"bcde"[..])));
    }

    #[test]
    fn an_oversized_header_stops_intake_at_once() {
        let mut decoder = FrameDecoder::new([0u8; 16]).unwrap();
        let mut stream = frame(b"ok");
        stream.extend_from_slice(&13u32.to_le_bytes());
        stream.extend_from_slice(b"payload");
        assert_eq!(decoder.feed(&stream), 10);
        assert_eq!(decoder.next_frame(), Ok(Some(&b"ok"[..])));
        let error = FrameError::TooLarge { len: 13, max: 12 };
        assert_eq!(decoder.next_frame(), Err(error));
        assert_eq!(decoder.next_frame(), Err(error));
        assert_eq!(decoder.feed(b"more"), 0);
        assert!(decoder.unfilled().is_empty());
    }

    #[test]
    fn encode_frame_writes_a_length_prefix() {
        let mut out = [0u8; 8];
        assert_eq!(encode_frame(&300u32, &mut out), Ok(6));
        assert_eq!(out[..6], [2, 0, 0, 0, 0xAC, 0x02]);
        assert_eq!(
            encode_frame(&300u32, &mut out[..5]),
            Err(EncodeError::BufferFull)
        );
        assert_eq!(
            encode_frame(&300u32, &mut out[..3]),
            Err(EncodeError::BufferFull)
        );
    }
}
