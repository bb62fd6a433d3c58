//! Arbitrary bytes as a frame: the decoder must return an error or a record, never panic,
//! and a record it returns must re-encode to a frame that decodes to the same record.
#![no_main]

use ingestor_codec::{Compression, decode_record, encode_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode_record(data) {
        let mut out = Vec::new();
        encode_record(&decoded.record, decoded.lsn, Compression::None, &mut out)
            .expect("a decoded record re-encodes");
        assert_eq!(decode_record(&out).expect("re-encoded frame decodes").record, decoded.record);
    }
});
