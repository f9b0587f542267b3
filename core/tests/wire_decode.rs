//! Property tests of message decoding and `Packed` validation on hostile input: whatever bytes
//! arrive, decoding returns an error instead of panicking, and valid input round-trips.

mod wire_support;

use memdi_core::wire::{
    decode, encode, ClientMessage, DecodeError, Packed, PackedError, PackedWriter, ServerMessage,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use serde::Serialize;
use wire_support::{client_message, encode_packed, server_message};

fn encoded<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = vec![0u8; 1 << 16];
    let len = encode(message, &mut out)
        .expect("test messages fit 64 KiB")
        .len();
    out.truncate(len);
    out
}

/// Bytes that are either random or a valid message with a few bytes overwritten, which gets
/// past the first variant index and into the deeper parts of the decoder.
fn hostile_bytes(valid: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        valid,
        vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(mut bytes, edits)| {
            if !bytes.is_empty() {
                for (index, value) in edits {
                    let at = index.index(bytes.len());
                    bytes[at] = value;
                }
            }
            bytes
        });
    prop_oneof![vec(any::<u8>(), 0..256), mutated]
}

fn client_bytes() -> impl Strategy<Value = Vec<u8>> {
    client_message().prop_map(|message| encoded(&message.borrowed()))
}

fn server_bytes() -> impl Strategy<Value = Vec<u8>> {
    server_message().prop_map(|message| encoded(&message.borrowed()))
}

proptest! {
    #[test]
    fn decoding_a_client_message_never_panics(
        bytes in hostile_bytes(client_bytes()),
    ) {
        if let Ok(message) = decode::<ClientMessage<'_>>(&bytes) {
            // Whatever was accepted encodes to bytes that decode to the same message (not
            // necessarily the same bytes: postcard accepts overlong varints).
            let again = encoded(&message);
            prop_assert_eq!(decode::<ClientMessage<'_>>(&again), Ok(message));
        }
    }

    #[test]
    fn decoding_a_server_message_never_panics(
        bytes in hostile_bytes(server_bytes()),
    ) {
        if let Ok(message) = decode::<ServerMessage<'_>>(&bytes) {
            let again = encoded(&message);
            prop_assert_eq!(decode::<ServerMessage<'_>>(&again), Ok(message));
        }
    }

    #[test]
    fn truncated_or_extended_messages_are_rejected(
        message in client_message(),
        cut in any::<prop::sample::Index>(),
        extra in vec(any::<u8>(), 1..8),
    ) {
        let bytes = encoded(&message.borrowed());
        let prefix = &bytes[..cut.index(bytes.len())];
        prop_assert_eq!(decode::<ClientMessage<'_>>(prefix), Err(DecodeError::Truncated));
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert_eq!(
            decode::<ClientMessage<'_>>(&longer),
            Err(DecodeError::TrailingBytes { count: extra.len() })
        );
    }

    #[test]
    fn packed_validation_never_panics(bytes in vec(any::<u8>(), 0..128)) {
        if let Ok(packed) = Packed::from_encoded(&bytes) {
            let items: Vec<Option<Vec<u8>>> =
                packed.iter().map(|item| item.map(<[u8]>::to_vec)).collect();
            prop_assert_eq!(items.len(), packed.len());
            // The encoding is canonical: re-encoding the items gives the same bytes.
            prop_assert_eq!(encode_packed(&items), bytes);
        }
    }

    #[test]
    fn a_valid_packed_list_round_trips(
        items in vec(option::of(vec(any::<u8>(), 0..300)), 0..20),
    ) {
        let encoded_list = encode_packed(&items);
        let packed = Packed::from_encoded(&encoded_list).unwrap();
        prop_assert_eq!(packed.len(), items.len());
        prop_assert_eq!(packed.is_empty(), items.is_empty());
        let read_back: Vec<Option<&[u8]>> = packed.iter().collect();
        let expected: Vec<Option<&[u8]>> = items.iter().map(Option::as_deref).collect();
        prop_assert_eq!(&read_back, &expected);

        // Through postcard, as it travels inside a message.
        let on_the_wire = encoded(&packed);
        let decoded: Packed<'_> = postcard::from_bytes(&on_the_wire).unwrap();
        prop_assert_eq!(decoded, packed);

        // Losing the last byte of a non-empty item is noticed.
        if let Some(Some(last)) = items.last() {
            if !last.is_empty() {
                let cut = &encoded_list[..encoded_list.len() - 1];
                prop_assert_eq!(Packed::from_encoded(cut), Err(PackedError::Truncated));
            }
        }
    }

    #[test]
    fn a_writer_stops_cleanly_when_full(
        items in vec(option::of(vec(any::<u8>(), 0..40)), 1..20),
        buffer_bytes in 0..200usize,
    ) {
        let mut buffer = vec![0u8; buffer_bytes];
        let mut writer = PackedWriter::new(&mut buffer);
        let mut pushed = 0;
        for item in &items {
            if writer.push(item.as_deref()).is_err() {
                break;
            }
            pushed += 1;
        }
        let packed = writer.finish();
        let full = encode_packed(&items[..pushed]);
        prop_assert_eq!(packed.encoded(), &full[..]);
        prop_assert_eq!(Packed::from_encoded(packed.encoded()), Ok(packed));
    }
}

#[test]
fn packed_errors_are_specific() {
    assert_eq!(Packed::from_encoded(&[3, 1]), Err(PackedError::Truncated));
    assert_eq!(
        Packed::from_encoded(&[0x81, 0x00]),
        Err(PackedError::BadTag)
    );
}
