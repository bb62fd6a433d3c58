//! Golden bytes: one frame of each record type, stored plainly and compressed, pinned as hex
//! dumps (insta) and as fixture files that must keep decoding forever.

mod common;

use common::{hexdump, sample_batch, sample_defs, sample_histogram_batch};
use ingestor_codec::{
    Codec, Compression, DecodeErrorKind, Lsn, Record, decode_frame, decode_record, encode_record,
};

fn encode(record: &Record, compression: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(record, Lsn(42), compression, &mut out).unwrap();
    out
}

const CASES: [(&str, Compression, Codec); 3] = [
    ("plain", Compression::None, Codec::None),
    ("lz4", Compression::Lz4, Codec::Lz4),
    ("zstd", Compression::Zstd { level: 3 }, Codec::Zstd),
];

#[test]
fn golden_series_defs_frames() {
    for (name, compression, codec) in CASES {
        let bytes = encode(&sample_defs(), compression);
        assert_eq!(decode_frame(&bytes).unwrap().codec, codec, "{name}");
        assert_eq!(decode_record(&bytes).unwrap().record, sample_defs());
        insta::assert_snapshot!(format!("series_defs_{name}"), hexdump(&bytes));
    }
}

#[test]
fn golden_batch_frames() {
    for (name, compression, codec) in CASES {
        let bytes = encode(&sample_batch(), compression);
        assert_eq!(decode_frame(&bytes).unwrap().codec, codec, "{name}");
        assert_eq!(decode_record(&bytes).unwrap().record, sample_batch());
        insta::assert_snapshot!(format!("batch_{name}"), hexdump(&bytes));
    }
}

#[test]
fn golden_histogram_sample_frames() {
    for (name, compression, codec) in CASES {
        let bytes = encode(&sample_histogram_batch(), compression);
        assert_eq!(decode_frame(&bytes).unwrap().codec, codec, "{name}");
        assert_eq!(decode_record(&bytes).unwrap().record, sample_histogram_batch());
        insta::assert_snapshot!(format!("histogram_batch_{name}"), hexdump(&bytes));
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    fixture_of(1, name)
}

fn fixture_of(version: u16, name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/v{version}"))
        .join(name)
}

/// Version-2 frames (histogram samples, the operation version 2 added): they must decode to
/// the same records with every later version. (Produced by `encode_record` on
/// `sample_histogram_batch`, at LSN 42.)
#[test]
fn version_2_fixtures_still_decode() {
    for (name, _, codec) in CASES {
        let path = fixture_of(2, &format!("histogram_batch_{name}.frame"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()));
        let frame = decode_frame(&bytes).unwrap();
        assert_eq!(frame.codec, codec, "{}", path.display());
        let decoded = decode_record(&bytes).unwrap();
        assert_eq!(decoded.lsn, Lsn(42), "{}", path.display());
        assert_eq!(decoded.record, sample_histogram_batch(), "{}", path.display());
    }
}

/// Writes the version-2 fixtures; run once by hand when they are first made
/// (`cargo test -p ingestor-codec --test golden -- --ignored write_version_2_fixtures`),
/// never again: fixtures are history.
#[test]
#[ignore = "writes fixtures; run by hand once"]
fn write_version_2_fixtures() {
    for (name, compression, _) in CASES {
        let path = fixture_of(2, &format!("histogram_batch_{name}.frame"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        assert!(!path.exists(), "{} exists: fixtures are never rewritten", path.display());
        std::fs::write(&path, encode(&sample_histogram_batch(), compression)).unwrap();
    }
}

/// Version-1 frames written by the first release: they must decode to the same records with
/// every later version. (The files were produced by `encode_record` on the sample records, at LSN 42.)
#[test]
fn version_1_fixtures_still_decode() {
    for (name, _, codec) in CASES {
        for (kind, record) in [("series_defs", sample_defs()), ("batch", sample_batch())] {
            let path = fixture(&format!("{kind}_{name}.frame"));
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()));
            let frame = decode_frame(&bytes).unwrap();
            assert_eq!(frame.codec, codec, "{}", path.display());
            assert_eq!(frame.frame_len, bytes.len(), "{}", path.display());
            let decoded = decode_record(&bytes).unwrap();
            assert_eq!(decoded.lsn, Lsn(42), "{}", path.display());
            assert_eq!(decoded.record, record, "{}", path.display());
        }
    }
}

/// A fixture with one bit flipped in its payload: the checksum catches it.
#[test]
fn corrupt_fixture_is_a_checksum_mismatch() {
    let bytes = std::fs::read(fixture("batch_plain_bitflip.frame")).unwrap();
    let err = decode_frame(&bytes).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::ChecksumMismatch { .. }), "{err}");
    assert_eq!(err.offset, 0);
}

/// A fixture cut in the middle of its payload, as a torn write leaves it.
#[test]
fn torn_fixture_is_truncated() {
    let bytes = std::fs::read(fixture("batch_plain_torn.frame")).unwrap();
    let err = decode_frame(&bytes).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::Truncated { .. }), "{err}");
}
