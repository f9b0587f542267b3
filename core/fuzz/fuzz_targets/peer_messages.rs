//! Fuzzes the peer protocol decoders: `decode::<PeerMessage>` and `Command::decode` on
//! arbitrary bytes.
//!
//! Checked, besides "no panic": a peer message that decodes re-encodes to bytes that decode to
//! the same message, and the `entries` list of an `Append` iterates without failing (decoding
//! validated it); a command that decodes has an `encoded_len` equal to the input length and
//! encodes back to exactly the input bytes (the log and snapshots hold these bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memdi_core::cluster::Command;
use memdi_core::wire::{decode, encode, PeerMessage};

fn check_peer(bytes: &[u8]) {
    let Ok(message) = decode::<PeerMessage<'_>>(bytes) else {
        return;
    };
    if let PeerMessage::Append { entries, .. } = message {
        assert_eq!(entries.iter().count(), entries.len());
    }
    let mut out = vec![0; bytes.len() + 64];
    let encoded = encode(&message, &mut out).expect("a decoded message re-encodes");
    let again = decode::<PeerMessage<'_>>(encoded).expect("re-encoded bytes decode");
    assert_eq!(again, message);
}

fn check_command(bytes: &[u8]) {
    let Ok(command) = Command::decode(bytes) else {
        return;
    };
    assert_eq!(command.encoded_len(), bytes.len());
    let mut out = vec![0; bytes.len()];
    command.encode(&mut out);
    assert_eq!(out, bytes);
}

fuzz_target!(|bytes: &[u8]| {
    check_peer(bytes);
    check_command(bytes);
});
