//! Arbitrary bytes as an OTLP/HTTP protobuf body: decoding must return an error or a request,
//! never panic; the translation of what decodes must not panic either, and must account for
//! every data point (written, refused or skipped as having no value).
#![no_main]

use ingestor_protocols::otlp::{Encoding, NO_DATA_POINT, decode, translate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode(data, Encoding::Protobuf) {
        let t = translate(&request, 0);
        let mut written: Vec<u32> = t.origins.iter().copied().filter(|&o| o != NO_DATA_POINT).collect();
        written.dedup();
        assert_eq!(written.len() + t.rejected.total() + t.no_value, t.data_points);
        assert_eq!(t.origins.len(), t.updates.len());
    }
});
