//! `docs/format.md` is a contract: the snapshot rows of its constants table and its worked
//! snapshot example must match the code, byte for byte.

mod common;

use std::collections::BTreeMap;

use common::{Disk, golden_store, snap_name};
use ingestor_codec::Lsn;
use ingestor_snapshot::{
    CHUNK_HEADER_LEN, MAX_CHUNK_LEN, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, SNAPSHOT_TRAILER_LEN,
    SnapshotCompression, SnapshotOptions, TRAILER_MAGIC,
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

/// A magic number as the table writes it: the ASCII text in double quotes.
fn text(magic: &[u8]) -> String {
    format!("\"{}\"", std::str::from_utf8(magic).unwrap())
}

#[test]
fn constants_table_matches_the_code() {
    let code: BTreeMap<String, String> = [
        ("SNAPSHOT_MAGIC", text(&SNAPSHOT_MAGIC)),
        ("TRAILER_MAGIC", text(&TRAILER_MAGIC)),
        ("SNAPSHOT_HEADER_LEN", SNAPSHOT_HEADER_LEN.to_string()),
        ("CHUNK_HEADER_LEN", CHUNK_HEADER_LEN.to_string()),
        ("SNAPSHOT_TRAILER_LEN", SNAPSHOT_TRAILER_LEN.to_string()),
        ("MAX_CHUNK_LEN", MAX_CHUNK_LEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Exact set equality: a constant missing from either side fails, and so does a value.
    assert_eq!(documented_constants(&doc(), "ingestor-snapshot"), code);
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
fn worked_example_matches_the_writer() {
    let disk = Disk::sim(1);
    let store = disk.open(SnapshotOptions::default().compression(SnapshotCompression::None));
    store.write(Lsn(5), 1_700_000_000_000, &golden_store().freeze()).unwrap();
    let written = disk.read(&snap_name(5));
    assert_eq!(documented_example(&doc(), "snapshot"), written);
}
