//! Property tests of framing: random messages, framed and concatenated into one stream, survive
//! any split of that stream into reads, through both ways of filling a `FrameDecoder`.

mod wire_support;

use memdi_core::wire::{
    decode, encode_frame, ClientMessage, FrameDecoder, FrameError, ServerMessage,
    FRAME_HEADER_BYTES,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::Serialize;
use wire_support::{client_message, server_message};

/// How bytes get into the decoder.
#[derive(Copy, Clone, Debug)]
enum Intake {
    /// `feed`, which copies.
    Feed,
    /// `unfilled` + `commit`, as a socket read straight into the buffer would.
    ZeroCopy,
}

fn intake() -> impl Strategy<Value = Intake> {
    prop_oneof![Just(Intake::Feed), Just(Intake::ZeroCopy)]
}

/// Read sizes: mostly small, as a slow TCP stream delivers, occasionally large.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![9 => 1..=64usize, 1 => 65..=20_000usize], 1..32)
}

/// How much bigger than the largest frame the decoder's buffer is: a tight buffer forces the
/// decoder to move partial frames to the front, a large one lets it avoid that.
fn spare_buffer_bytes() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0..64usize, 1 => Just(100_000usize)]
}

/// Frames every message into one stream; also returns the largest payload.
fn frame_all<T: Serialize>(messages: &[T]) -> (Vec<u8>, usize) {
    let mut stream = Vec::new();
    let mut largest_payload = 0;
    let mut out = vec![0u8; 1 << 16];
    for message in messages {
        let frame_len = encode_frame(message, &mut out).expect("test messages fit 64 KiB");
        stream.extend_from_slice(&out[..frame_len]);
        largest_payload = largest_payload.max(frame_len - FRAME_HEADER_BYTES);
    }
    (stream, largest_payload)
}

/// Offers `bytes` to the decoder through `intake`; returns how many it took.
fn deliver(decoder: &mut FrameDecoder<Vec<u8>>, bytes: &[u8], intake: Intake) -> usize {
    match intake {
        Intake::Feed => decoder.feed(bytes),
        Intake::ZeroCopy => {
            let space = decoder.unfilled();
            let count = space.len().min(bytes.len());
            space[..count].copy_from_slice(&bytes[..count]);
            decoder.commit(count);
            count
        }
    }
}

fn frame_error(error: FrameError) -> TestCaseError {
    TestCaseError::fail(format!("unexpected frame error: {error}"))
}

/// Delivers `stream` to `decoder` in reads of the given sizes (cycled), passing every payload
/// to `on_payload`, and returns how many payloads there were.
fn pump(
    decoder: &mut FrameDecoder<Vec<u8>>,
    stream: &[u8],
    chunk_sizes: &[usize],
    intake: Intake,
    mut on_payload: impl FnMut(&[u8]) -> Result<(), TestCaseError>,
) -> Result<usize, TestCaseError> {
    let mut offset = 0;
    let mut payloads = 0;
    // Where, in the stream, the first frame not yet returned starts.
    let mut next_frame_at = 0;
    let mut sizes = chunk_sizes.iter().cycle();
    while offset < stream.len() {
        let chunk_end = (offset + sizes.next().copied().unwrap_or(1)).min(stream.len());
        while offset < chunk_end {
            if let Intake::ZeroCopy = intake {
                // Once a frame's length is known, a socket read can finish it in one go.
                if let Some(header) = stream.get(next_frame_at..offset.min(next_frame_at + 4)) {
                    if let Ok(header) = <[u8; 4]>::try_from(header) {
                        let frame_end = next_frame_at
                            + FRAME_HEADER_BYTES
                            + u32::from_le_bytes(header) as usize;
                        let unfilled = decoder.unfilled().len();
                        prop_assert!(unfilled >= frame_end - offset);
                    }
                }
            }
            let taken = deliver(decoder, &stream[offset..chunk_end], intake);
            offset += taken;
            let mut drained = 0;
            while let Some(payload) = decoder.next_frame().map_err(frame_error)? {
                on_payload(payload)?;
                next_frame_at += FRAME_HEADER_BYTES + payload.len();
                drained += 1;
            }
            payloads += drained;
            prop_assert!(taken > 0 || drained > 0, "decoder stalled at {}", offset);
        }
    }
    prop_assert_eq!(decoder.buffered_bytes(), 0);
    Ok(payloads)
}

proptest! {
    #[test]
    fn client_messages_survive_any_chunking(
        messages in vec(client_message(), 0..16),
        chunk_sizes in chunk_sizes(),
        spare in spare_buffer_bytes(),
        intake in intake(),
    ) {
        let borrowed: Vec<ClientMessage<'_>> = messages.iter().map(|m| m.borrowed()).collect();
        let (stream, largest_payload) = frame_all(&borrowed);
        let buffer = vec![0u8; FRAME_HEADER_BYTES + largest_payload.max(1) + spare];
        let mut decoder = FrameDecoder::new(buffer).unwrap();
        let mut expected = borrowed.iter();
        let count = pump(&mut decoder, &stream, &chunk_sizes, intake, |payload| {
            let decoded: ClientMessage<'_> = decode(payload)
                .map_err(|error| TestCaseError::fail(format!("decode: {error}")))?;
            prop_assert_eq!(Some(&decoded), expected.next());
            Ok(())
        })?;
        prop_assert_eq!(count, borrowed.len());
    }

    #[test]
    fn server_messages_survive_any_chunking(
        messages in vec(server_message(), 0..16),
        chunk_sizes in chunk_sizes(),
        spare in spare_buffer_bytes(),
        intake in intake(),
    ) {
        let borrowed: Vec<ServerMessage<'_>> = messages.iter().map(|m| m.borrowed()).collect();
        let (stream, largest_payload) = frame_all(&borrowed);
        let buffer = vec![0u8; FRAME_HEADER_BYTES + largest_payload.max(1) + spare];
        let mut decoder = FrameDecoder::new(buffer).unwrap();
        let mut expected = borrowed.iter();
        let count = pump(&mut decoder, &stream, &chunk_sizes, intake, |payload| {
            let decoded: ServerMessage<'_> = decode(payload)
                .map_err(|error| TestCaseError::fail(format!("decode: {error}")))?;
            prop_assert_eq!(Some(&decoded), expected.next());
            Ok(())
        })?;
        prop_assert_eq!(count, borrowed.len());
    }

    #[test]
    fn raw_payloads_survive_any_chunking(
        payloads in vec(vec(any::<u8>(), 0..300), 0..24),
        chunk_sizes in chunk_sizes(),
        spare in spare_buffer_bytes(),
        intake in intake(),
    ) {
        let mut stream = Vec::new();
        for payload in &payloads {
            stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            stream.extend_from_slice(payload);
        }
        let largest = payloads.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut decoder =
            FrameDecoder::new(vec![0u8; FRAME_HEADER_BYTES + largest + spare]).unwrap();
        let mut expected = payloads.iter();
        pump(&mut decoder, &stream, &chunk_sizes, intake, |payload| {
            prop_assert_eq!(Some(payload), expected.next().map(Vec::as_slice));
            Ok(())
        })?;
        prop_assert!(expected.next().is_none());
    }

    #[test]
    fn an_oversized_header_is_rejected_before_its_payload(
        buffer_bytes in 5..2000usize,
        excess in 1..=u32::MAX,
        earlier in vec(vec(any::<u8>(), 0..=1), 0..3),
        header_split in 1..=4usize,
        intake in intake(),
    ) {
        let max = (buffer_bytes - FRAME_HEADER_BYTES) as u32;
        let len = max.saturating_add(excess).max(max + 1);
        let mut stream = Vec::new();
        for payload in &earlier {
            stream.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            stream.extend_from_slice(payload);
        }
        let header_at = stream.len();
        stream.extend_from_slice(&len.to_le_bytes());
        stream.extend_from_slice(&[0xAB; 64]);

        let mut decoder = FrameDecoder::new(vec![0u8; buffer_bytes]).unwrap();
        // Everything before the header, and the header's first bytes, are accepted.
        let first_part = header_at + header_split - 1;
        let mut received = Vec::new();
        let mut offset = 0;
        while offset < first_part {
            let taken = deliver(&mut decoder, &stream[offset..first_part], intake);
            offset += taken;
            let mut drained = 0;
            while let Some(payload) = decoder.next_frame().map_err(frame_error)? {
                received.push(payload.to_vec());
                drained += 1;
            }
            prop_assert!(taken > 0 || drained > 0, "decoder stalled at {}", offset);
        }
        prop_assert_eq!(&received, &earlier);
        prop_assert_eq!(decoder.next_frame(), Ok(None));
        // The rest of the header arrives with the payload: the payload must not be taken
        // (the copying path stops right after the header) and the error comes at once.
        let taken = deliver(&mut decoder, &stream[first_part..], intake);
        if let Intake::Feed = intake {
            prop_assert_eq!(taken, FRAME_HEADER_BYTES - (header_split - 1));
        }
        let error = FrameError::TooLarge { len, max };
        prop_assert_eq!(decoder.next_frame(), Err(error));
        prop_assert_eq!(decoder.next_frame(), Err(error));
        prop_assert_eq!(decoder.feed(&[1, 2, 3]), 0);
        prop_assert!(decoder.unfilled().is_empty());
    }

    #[test]
    fn the_decoder_never_panics_on_random_bytes(
        buffer_bytes in 5..300usize,
        stream in vec(any::<u8>(), 0..2000),
        chunk_sizes in chunk_sizes(),
        intake in intake(),
    ) {
        let mut decoder = FrameDecoder::new(vec![0u8; buffer_bytes]).unwrap();
        let max = decoder.max_frame_bytes();
        let mut offset = 0;
        let mut sizes = chunk_sizes.iter().cycle();
        'stream: while offset < stream.len() {
            let chunk_end = (offset + sizes.next().copied().unwrap_or(1)).min(stream.len());
            while offset < chunk_end {
                let taken = deliver(&mut decoder, &stream[offset..chunk_end], intake);
                offset += taken;
                let mut drained = 0;
                loop {
                    match decoder.next_frame() {
                        Ok(Some(payload)) => {
                            prop_assert!(payload.len() <= max as usize);
                            drained += 1;
                        }
                        Ok(None) => break,
                        Err(FrameError::TooLarge { len, max: reported }) => {
                            prop_assert!(len > max);
                            prop_assert_eq!(reported, max);
                            break 'stream;
                        }
                    }
                }
                prop_assert!(taken > 0 || drained > 0, "decoder stalled at {}", offset);
            }
        }
    }
}
