//! Fuzzes the native message decoders: `decode::<ClientMessage>` and `decode::<ServerMessage>`
//! on arbitrary bytes.
//!
//! Checked, besides "no panic": a message that decodes re-encodes to bytes that decode to the
//! same message, and `Packed` lists inside it iterate without failing (decoding validated
//! them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memdi_core::wire::{decode, encode, ClientMessage, Request, Response, ServerMessage};

fn check_client(bytes: &[u8]) {
    let Ok(message) = decode::<ClientMessage<'_>>(bytes) else {
        return;
    };
    match message.request {
        Request::MultiGet { keys, .. } => assert_eq!(keys.iter().count(), keys.len()),
        Request::MultiSet { pairs, .. } => assert_eq!(pairs.iter().count(), pairs.len()),
        _ => {}
    }
    let mut out = vec![0; bytes.len() + 64];
    let encoded = encode(&message, &mut out).expect("a decoded message re-encodes");
    let again = decode::<ClientMessage<'_>>(encoded).expect("re-encoded bytes decode");
    assert_eq!(again, message);
}

fn check_server(bytes: &[u8]) {
    let Ok(message) = decode::<ServerMessage<'_>>(bytes) else {
        return;
    };
    match message.response {
        Response::Values(values) => assert_eq!(values.iter().count(), values.len()),
        Response::ScanPage { keys, .. } => assert_eq!(keys.iter().count(), keys.len()),
        _ => {}
    }
    let mut out = vec![0; bytes.len() + 64];
    let encoded = encode(&message, &mut out).expect("a decoded message re-encodes");
    let again = decode::<ServerMessage<'_>>(encoded).expect("re-encoded bytes decode");
    assert_eq!(again, message);
}

fuzz_target!(|bytes: &[u8]| {
    check_client(bytes);
    check_server(bytes);
});
