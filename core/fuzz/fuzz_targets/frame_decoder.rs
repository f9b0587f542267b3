//! Fuzzes `memdi_core::wire::FrameDecoder` with arbitrary byte streams fed in arbitrary chunks.
//!
//! Input layout: the first byte picks the chunking (and whether bytes go in through `feed` or
//! through `unfilled` + `commit`), the second the buffer size, the rest is the byte stream.
//! Small buffers let inputs of libFuzzer's default maximum length (4096 bytes) reach the
//! buffer-full paths.
//!
//! Checked, besides "no panic, no hang":
//! - `feed` never claims more bytes than it was given, and frames fit the buffer;
//! - liveness: after every complete frame has been drained, `feed` (or `unfilled`) takes at
//!   least one byte unless the decoder has reported an error (a full buffer without a frame
//!   must be an error, not a silent stall);
//! - the frames do not depend on how the stream was chunked: a run in the chosen chunks and a
//!   run feeding as much as possible at once yield the same frames (up to the first error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memdi_core::wire::FrameDecoder;

/// The buffer size of the planned API's example; `FrameDecoder::new` must accept it.
const DEFAULT_BUFFER_LEN: usize = 4096;
/// Buffer sizes the second input byte picks from. `new` may reject the small ones.
const BUFFER_LENS: [usize; 8] = [DEFAULT_BUFFER_LEN, 8, 16, 32, 64, 100, 256, 1024];
/// Consecutive `next_frame` errors after which the decoder is taken as poisoned (it keeps
/// reporting the same error and accepts no input), which the API allows.
const POISONED_AFTER: usize = 3;

struct Outcome {
    /// The frames decoded before the first error.
    frames: Vec<Vec<u8>>,
    errored: bool,
}

/// Chunk lengths: a tiny LCG seeded by the selector byte, bounded by one of a few scales so
/// that byte-at-a-time, small, and larger-than-the-buffer chunks are all exercised.
struct Chunker {
    state: u32,
    max: usize,
    /// Write into `unfilled()` and `commit` instead of calling `feed`.
    zero_copy: bool,
}

impl Chunker {
    const AT_ONCE: u8 = 0x7;

    fn new(selector: u8) -> Self {
        let max = match selector & 0x7 {
            0 => 1,
            1 => 3,
            2 => 16,
            3 => 100,
            4 => 1000,
            5 => 512,
            6 => 2 * DEFAULT_BUFFER_LEN,
            _ => usize::MAX, // the whole remaining stream
        };
        Self {
            state: u32::from(selector) | 1,
            max,
            zero_copy: selector & 0x8 != 0,
        }
    }

    fn next_len(&mut self, remaining: usize) -> usize {
        if self.max == usize::MAX {
            return remaining;
        }
        self.state = self
            .state
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        let len = (self.state >> 8) as usize % self.max + 1;
        len.min(remaining)
    }
}

/// Runs the stream through a decoder with a `buffer_len`-byte buffer; `None` if `new` rejected
/// that (small) size.
fn run(stream: &[u8], buffer_len: usize, mut chunker: Chunker) -> Option<Outcome> {
    let mut decoder = match FrameDecoder::new(vec![0u8; buffer_len]) {
        Ok(decoder) => decoder,
        Err(_) if buffer_len < DEFAULT_BUFFER_LEN => return None,
        Err(_) => panic!("FrameDecoder::new rejected a {buffer_len}-byte buffer"),
    };
    let mut outcome = Outcome {
        frames: Vec::new(),
        errored: false,
    };
    let mut rest = stream;
    loop {
        // Drain every complete frame (bounded: a buffer of N bytes holds at most N frames).
        let mut consecutive_errors = 0;
        let mut errored_now = false;
        for _ in 0..=buffer_len + POISONED_AFTER {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= buffer_len,
                        "frame of {} bytes from a {buffer_len}-byte buffer",
                        frame.len()
                    );
                    consecutive_errors = 0;
                    if !outcome.errored {
                        outcome.frames.push(frame.to_vec());
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    outcome.errored = true;
                    errored_now = true;
                    consecutive_errors += 1;
                    if consecutive_errors >= POISONED_AFTER {
                        break;
                    }
                }
            }
        }
        if rest.is_empty() {
            return Some(outcome);
        }
        let offered = chunker.next_len(rest.len());
        let consumed = if chunker.zero_copy {
            let space = decoder.unfilled();
            let n = offered.min(space.len());
            space[..n].copy_from_slice(&rest[..n]);
            decoder.commit(n);
            n
        } else {
            decoder.feed(&rest[..offered])
        };
        assert!(
            consumed <= offered,
            "feed consumed {consumed} of {offered} bytes"
        );
        if consumed == 0 {
            if errored_now {
                // The decoder refuses input after an error: allowed, the stream ends here.
                return Some(outcome);
            }
            panic!(
                "FrameDecoder stalled: no frame, no error, and {} accepted 0 of {offered} bytes \
                 ({} of {} stream bytes consumed, {buffer_len}-byte buffer)",
                if chunker.zero_copy {
                    "unfilled/commit"
                } else {
                    "feed"
                },
                stream.len() - rest.len(),
                stream.len()
            );
        }
        rest = &rest[consumed..];
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunking, buffer, stream @ ..] = data else {
        return;
    };
    let buffer_len = BUFFER_LENS[usize::from(*buffer) % BUFFER_LENS.len()];
    let Some(chunked) = run(stream, buffer_len, Chunker::new(*chunking)) else {
        return;
    };
    let at_once = run(stream, buffer_len, Chunker::new(Chunker::AT_ONCE))
        .expect("FrameDecoder::new accepted this buffer size a moment ago");
    if !chunked.errored && !at_once.errored {
        assert_eq!(chunked.frames, at_once.frames, "frames depend on chunking");
    } else {
        // Up to the first error, the frames must still agree.
        let common = chunked.frames.len().min(at_once.frames.len());
        assert_eq!(
            chunked.frames[..common],
            at_once.frames[..common],
            "frames depend on chunking"
        );
    }
});
