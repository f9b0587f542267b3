//! Fuzzes memdi-server's log file reader: the length-and-CRC framing
//! (`memdi_node::log_file::parse_records`) and the record payloads
//! (`memdi_node::log_record::LogRecord::decode`), with arbitrary bytes as a damaged or
//! foreign log file would hold.
//!
//! Checked, besides "no panic": the whole records found re-frame to exactly the bytes they
//! were read from; a payload that decodes re-encodes to a payload that decodes the same.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use memdi_node::log_file::{encode_record, parse_records};
use memdi_node::log_record::LogRecord;

fuzz_target!(|input: &[u8]| {
    if let Ok((records, whole_bytes)) = parse_records(Path::new("fuzz.log"), input) {
        assert!(whole_bytes <= input.len());
        let mut framed = Vec::new();
        for record in &records {
            encode_record(record, &mut framed);
            check_payload(record);
        }
        assert_eq!(framed, input[..whole_bytes]);
    }
    check_payload(input);
});

fn check_payload(payload: &[u8]) {
    if let Ok(record) = LogRecord::decode(payload) {
        let mut again = Vec::new();
        record.encode(&mut again);
        assert_eq!(LogRecord::decode(&again), Ok(record));
    }
}
