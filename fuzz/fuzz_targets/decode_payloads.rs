//! Arbitrary bytes as record payloads, past the checksum (which a fuzzer rarely satisfies):
//! the batch and series-definition decoders must never panic.
#![no_main]

use ingestor_codec::{decode_batch, decode_series_defs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_batch(data);
    let _ = decode_series_defs(data);
});
