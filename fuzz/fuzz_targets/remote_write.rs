//! Arbitrary bytes as a remote-write body, both versions: decoding must return an error or a
//! request, never panic, and never allocate past the limit it is given (the snappy header is
//! checked before the buffer is made).
#![no_main]

use ingestor_protocols::remote_write::{Version, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for version in [Version::V1, Version::V2] {
        if let Ok(request) = decode(data, version, 1 << 20) {
            // Every sample belongs to a series, and counts add up.
            assert_eq!(request.samples(), request.series.iter().map(|s| s.samples.len()).sum::<usize>());
        }
    }
});
