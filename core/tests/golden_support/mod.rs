//! Shared by the golden tests: hex literals and a collector that reports every mismatch of
//! a group at once.
#![allow(dead_code)]

use std::fmt::Debug;
use std::string::String;
use std::vec::Vec;

use memdi_core::wire::{decode, encode};
use serde::{Deserialize, Serialize};

pub fn to_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    parts.join(" ")
}

pub fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).expect("golden literal is hex"))
        .collect()
}

/// Collects every mismatch of a group so that one run shows them all.
#[derive(Default)]
pub struct Golden {
    failures: Vec<String>,
}

impl Golden {
    /// Checks that `value` encodes to `expected_hex`, and that those bytes decode back to it.
    pub fn check<'de, T>(&mut self, value: &T, expected_hex: &str, expected: &'de [u8])
    where
        T: Serialize + Deserialize<'de> + PartialEq + Debug,
    {
        let mut out = [0u8; 512];
        let encoded = encode(value, &mut out).expect("golden value encodes");
        let actual_hex = to_hex(encoded);
        if actual_hex != expected_hex {
            self.failures.push(format!(
                "{value:?}\n    expected: {expected_hex}\n    actual:   {actual_hex}"
            ));
            return;
        }
        match decode::<T>(expected) {
            Ok(decoded) if decoded == *value => {}
            other => self
                .failures
                .push(format!("{value:?} decoded from golden bytes as {other:?}")),
        }
    }

    /// Records a mismatch found by a check of the caller's own.
    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Fails the test with every mismatch recorded.
    pub fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "wire encoding changed (needs a PROTOCOL_VERSION bump):\n{}",
            self.failures.join("\n")
        );
    }
}
