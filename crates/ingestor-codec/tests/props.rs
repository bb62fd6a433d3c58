//! Property tests: round trips of arbitrary valid records, decoders that never panic, and
//! checksums that catch every single-bit flip.

mod common;

use ingestor_codec::{
    Compression, DecodeErrorKind, Lsn, Op, Point, Record, SeriesDef, SeriesId, SeriesKey,
    Timestamp, decode_batch, decode_frame, decode_record, decode_series_defs, encode_frame,
    encode_record,
};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(2f64.powi(48)),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        value().prop_map(|v| Op::CounterAdd(v.abs())),
        value().prop_map(|v| Op::CounterSet(v.abs())),
        value().prop_map(Op::GaugeSet),
        value().prop_map(Op::GaugeAdd),
        value().prop_map(Op::HistogramObserve),
        Just(Op::Delete),
    ]
}

fn point() -> impl Strategy<Value = Point> {
    (any::<u32>(), any::<i64>(), op()).prop_map(|(s, t, op)| Point {
        series: SeriesId(s),
        timestamp: Timestamp(t),
        op,
    })
}

fn key() -> impl Strategy<Value = SeriesKey> {
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
        proptest::collection::btree_map("[a-zA-Z][a-zA-Z0-9_]{0,10}", "\\PC{1,12}", 0..6),
    )
        .prop_map(|(name, labels)| SeriesKey::new(&name, labels).unwrap())
}

fn compression() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        (1i32..6).prop_map(|level| Compression::Zstd { level }),
    ]
}

fn round_trip(record: &Record, lsn: u64, compression: Compression) -> Result<(), TestCaseError> {
    let mut out = vec![0xEE]; // bytes before the frame must be left alone
    let len = encode_record(record, Lsn(lsn), compression, &mut out).unwrap();
    prop_assert_eq!(len, out.len() - 1);
    let decoded = decode_record(&out[1..]).unwrap();
    prop_assert_eq!(decoded.frame_len, len);
    prop_assert_eq!(decoded.lsn, Lsn(lsn));
    let back = decoded.record;
    prop_assert_eq!(&back, record);
    // Bit-exact values, including the sign of zero.
    if let (Record::Batch(a), Record::Batch(b)) = (record, &back) {
        for (x, y) in a.iter().zip(b) {
            prop_assert_eq!(x.op.value().map(f64::to_bits), y.op.value().map(f64::to_bits));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batches_round_trip(
        points in proptest::collection::vec(point(), 0..300),
        lsn in any::<u64>(),
        c in compression(),
    ) {
        round_trip(&Record::Batch(points), lsn, c)?;
    }

    #[test]
    fn series_defs_round_trip(
        defs in proptest::collection::vec((any::<u32>(), key()), 0..40),
        c in compression(),
    ) {
        let defs = defs.into_iter().map(|(id, key)| SeriesDef { id: SeriesId(id), key }).collect();
        round_trip(&Record::SeriesDefs(defs), 1, c)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_record(&bytes);
        let _ = decode_batch(&bytes);
        let _ = decode_series_defs(&bytes);
    }

    /// Bytes that pass the frame checksum but hold garbage payloads: the record decoders
    /// must still refuse them cleanly (this is what a fuzzer that fixes up CRCs would find).
    #[test]
    fn garbage_payloads_in_valid_frames_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512),
        record_type in 1u8..=255,
    ) {
        let mut out = Vec::new();
        encode_frame(Lsn(9), record_type, &payload, Compression::None, &mut out).unwrap();
        let _ = decode_record(&out);
    }

    #[test]
    fn every_single_bit_flip_is_detected(points in proptest::collection::vec(point(), 1..20), c in compression()) {
        let mut out = Vec::new();
        encode_record(&Record::Batch(points), Lsn(77), c, &mut out).unwrap();
        for bit in 0..out.len() * 8 {
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&flipped).is_err(), "flip of bit {} went unnoticed", bit);
        }
    }
}

/// Exhaustive flips over the golden frames of both types and every codec: the checksum
/// catches each one (CRC32C detects every single-bit error; this pins that the header fields
/// are covered too).
#[test]
fn every_bit_flip_in_the_sample_frames_is_detected() {
    for record in [common::sample_defs(), common::sample_batch()] {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd { level: 3 }] {
            let mut out = Vec::new();
            encode_record(&record, Lsn(1 << 40), c, &mut out).unwrap();
            for bit in 0..out.len() * 8 {
                let mut flipped = out.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let err = decode_frame(&flipped).expect_err("flip went unnoticed");
                // A flip in the length field may make the frame look longer than the input.
                assert!(
                    matches!(
                        err.kind,
                        DecodeErrorKind::ChecksumMismatch { .. }
                            | DecodeErrorKind::Truncated { .. }
                            | DecodeErrorKind::UnknownRecordType(_)
                            | DecodeErrorKind::UnknownFlags(_)
                            | DecodeErrorKind::LimitExceeded { .. }
                    ),
                    "bit {bit}: {err}"
                );
            }
        }
    }
}
