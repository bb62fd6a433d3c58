//! `docs/format.md` is a contract: its constants table and worked examples must match the
//! code, byte for byte.

use std::collections::BTreeMap;

use ingestor_codec::{
    CRC_MASK_DELTA, Compression, FORMAT_VERSION, FRAME_HEADER_LEN, HistogramSample, Lsn,
    MAX_BATCH_POINTS, MAX_HISTOGRAM_BOUNDS, MAX_LABEL_NAME_LEN, MAX_LABEL_VALUE_LEN, MAX_LABELS,
    MAX_METRIC_NAME_LEN, MAX_PAYLOAD_LEN, MAX_SERIES_DEFS, MIN_COMPRESS_LEN, Op, Point, Record,
    SEGMENT_HEADER_LEN, SegmentHeader, SeriesDef, SeriesId, SeriesKey, Timestamp, encode_record,
};

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/format.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the constants table that belong to `krate`: name -> value as written.
fn documented_constants(doc: &str, krate: &str) -> BTreeMap<String, String> {
    let prefix = format!("| `{krate}` | `");
    doc.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|rest| {
            let mut cells = rest.split('|').map(str::trim);
            let name = cells.next().unwrap().trim_end_matches('`').to_string();
            let value = cells.next().unwrap().to_string();
            (name, value)
        })
        .collect()
}

fn parse_number(text: &str) -> u64 {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap(),
        None => text.parse().unwrap_or_else(|_| panic!("not a number: {text}")),
    }
}

#[test]
fn constants_table_matches_the_code() {
    let code: BTreeMap<&str, u64> = [
        ("FORMAT_VERSION", u64::from(FORMAT_VERSION)),
        ("FRAME_HEADER_LEN", FRAME_HEADER_LEN as u64),
        ("MAX_PAYLOAD_LEN", MAX_PAYLOAD_LEN as u64),
        ("MIN_COMPRESS_LEN", MIN_COMPRESS_LEN as u64),
        ("CRC_MASK_DELTA", u64::from(CRC_MASK_DELTA)),
        ("MAX_BATCH_POINTS", MAX_BATCH_POINTS as u64),
        ("MAX_SERIES_DEFS", MAX_SERIES_DEFS as u64),
        ("MAX_METRIC_NAME_LEN", MAX_METRIC_NAME_LEN as u64),
        ("MAX_LABEL_NAME_LEN", MAX_LABEL_NAME_LEN as u64),
        ("MAX_LABEL_VALUE_LEN", MAX_LABEL_VALUE_LEN as u64),
        ("MAX_LABELS", MAX_LABELS as u64),
        ("MAX_HISTOGRAM_BOUNDS", MAX_HISTOGRAM_BOUNDS as u64),
        ("SEGMENT_HEADER_LEN", SEGMENT_HEADER_LEN as u64),
    ]
    .into_iter()
    .collect();
    let documented = documented_constants(&doc(), "ingestor-codec");
    let documented_names: Vec<&str> = documented.keys().map(String::as_str).collect();
    let code_names: Vec<&str> = code.keys().copied().collect();
    assert_eq!(documented_names, code_names, "the table and the code list different constants");
    for (name, text) in &documented {
        assert_eq!(parse_number(text), code[name.as_str()], "docs/format.md says {name} = {text}");
    }
}

/// The hex bytes of the code block that follows `<!-- example:NAME -->`: on each line, the
/// two-digit hex tokens before the comment.
fn documented_example(doc: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- example:{name} -->");
    let start = doc.find(&marker).unwrap_or_else(|| panic!("no {marker} in docs/format.md"));
    let block = doc[start..].split("```").nth(1).expect("a code block after the marker");
    let mut bytes = Vec::new();
    for line in block.lines().skip(1) {
        for token in line.split_whitespace() {
            if token.len() != 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                break;
            }
            bytes.push(u8::from_str_radix(token, 16).unwrap());
        }
    }
    bytes
}

#[test]
fn worked_examples_match_the_encoder() {
    let doc = doc();
    let batch = Record::Batch(vec![
        Point { series: SeriesId(3), timestamp: Timestamp(1000), op: Op::CounterAdd(1.0) },
        Point { series: SeriesId(4), timestamp: Timestamp(1250), op: Op::GaugeSet(0.5) },
    ]);
    let defs = Record::SeriesDefs(vec![SeriesDef {
        id: SeriesId(3),
        key: SeriesKey::new("up", [("job", "api")]).unwrap(),
    }]);
    let sample = HistogramSample::new([0.5, 1.0], [2, 0, 1], 3.5).unwrap();
    let histogram = Record::Batch(vec![Point {
        series: SeriesId(5),
        timestamp: Timestamp(2000),
        op: Op::HistogramSet(sample.into()),
    }]);
    for (name, lsn, record) in
        [("batch", Lsn(8), batch), ("defs", Lsn(7), defs), ("histogram", Lsn(9), histogram)]
    {
        let mut encoded = Vec::new();
        encode_record(&record, lsn, Compression::None, &mut encoded).unwrap();
        assert_eq!(documented_example(&doc, name), encoded, "example {name}");
    }
    let header = SegmentHeader { first_lsn: Lsn(1), follows_unsynced: false }.encode();
    assert_eq!(documented_example(&doc, "segment-header"), header, "example segment-header");
    assert_eq!(&documented_example(&doc, "segment-header")[..8], b"INGSTWAL");
}
