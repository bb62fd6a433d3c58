//! The offline tools: `inspect wal`, `inspect snapshot`, `verify`, `repair`, `snapshot`.
//! Output goes to standard output, in formats pinned by golden tests.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use ingestor::offline::{self, Codec, FrameInfo, Record, SegmentId};
use ingestor::{Config, FinalSnapshot, Lsn, Op, RecoveryMode, SeriesKey, StdFs, format_value};
use serde_json::json;

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::None => "none",
        Codec::Lz4 => "lz4",
        Codec::Zstd => "zstd",
    }
}

/// An operation's value as `inspect` prints it: its number, or a histogram sample's bounds,
/// buckets and sum; empty for a delete.
fn op_text(op: &Op) -> String {
    match (op.value(), op.sample()) {
        (Some(v), _) => format!(" {}", format_value(v)),
        (None, Some(s)) => {
            let list = |xs: Vec<String>| xs.join(",");
            format!(
                " bounds [{}] buckets [{}] sum {}",
                list(s.bounds.iter().map(|&b| format_value(b)).collect()),
                list(s.buckets.iter().map(u64::to_string).collect()),
                format_value(s.sum)
            )
        }
        (None, None) => String::new(),
    }
}

/// Names series ids as the segment that holds them defined them.
#[derive(Default)]
struct Names {
    segment: Option<SegmentId>,
    keys: HashMap<u32, SeriesKey>,
}

impl Names {
    fn enter(&mut self, segment: SegmentId) -> bool {
        if self.segment == Some(segment) {
            return false;
        }
        self.segment = Some(segment);
        self.keys.clear();
        true
    }

    fn name(&self, id: u32) -> String {
        self.keys
            .get(&id)
            .map_or_else(|| "(no definition in this segment)".to_string(), |k| k.to_string())
    }
}

/// `ingestor inspect wal [--from LSN] [--json]`: every record with LSN, offset, type, sizes
/// and decoded content; damage is listed at the end and makes the exit status non-zero.
pub(crate) fn inspect_wal(data_dir: &Path, from: u64, json: bool) -> Result<(), String> {
    let mut out = String::new();
    let mut names = Names::default();
    let mut failure = None;
    // Series definitions are needed from the segment's start to name ids after `from`.
    let report = offline::inspect_wal(&StdFs::new(), data_dir, Lsn::ZERO, |info, payload| {
        let new_segment = names.enter(info.segment);
        let record = Record::decode(info.record_type, payload);
        if let Ok(Record::SeriesDefs(defs)) = &record {
            for d in defs {
                names.keys.insert(d.id.0, d.key.clone());
            }
        }
        if info.lsn.0 < from {
            return;
        }
        if new_segment && !json {
            let _ = writeln!(out, "segment {}", info.segment.file_name());
        }
        let line = match (&record, json) {
            (Ok(r), true) => json_record(info, r, &names),
            (Ok(r), false) => text_record(info, r, &names),
            (Err(e), _) => {
                failure.get_or_insert_with(|| format!("LSN {}: does not decode: {e}", info.lsn));
                format!("  LSN {} offset {}: does not decode: {e}\n", info.lsn, info.offset)
            }
        };
        out.push_str(&line);
    })
    .map_err(|e| e.to_string())?;
    print!("{out}");
    let Some(report) = report else {
        return Err(format!("{}: no log", data_dir.display()));
    };
    if !json {
        println!(
            "{} records, {} bytes, LSNs {}..={}",
            report.records,
            report.bytes,
            report.first_lsn.map_or(0, |l| l.0),
            report.last_lsn
        );
    }
    for t in &report.truncations {
        eprintln!(
            "torn tail: wal/{} byte {}: {} bytes from LSN {} ({})",
            t.segment.file_name(),
            t.offset,
            t.bytes,
            t.from_lsn,
            t.cause
        );
    }
    if !report.corruptions.is_empty() {
        for c in &report.corruptions {
            eprintln!("damage: wal/{} byte {}: {}", c.segment.file_name(), c.offset, c.cause);
        }
        return Err(format!("{} damaged places in the log", report.corruptions.len()));
    }
    failure.map_or(Ok(()), Err)
}

fn text_record(info: &FrameInfo, record: &Record, names: &Names) -> String {
    let mut s = String::new();
    let kind = match record {
        Record::SeriesDefs(d) => format!("series-defs ({} series)", d.len()),
        Record::Batch(p) => format!("batch ({} points)", p.len()),
    };
    let _ = writeln!(
        s,
        "  LSN {} offset {} {kind}: stored {} B ({}), payload {} B, durable lag {}",
        info.lsn,
        info.offset,
        info.stored_len,
        codec_name(info.codec),
        info.payload_len,
        info.durable_lag
    );
    match record {
        Record::SeriesDefs(defs) => {
            for d in defs {
                let _ = writeln!(s, "    define #{} = {}", d.id.0, d.key);
            }
        }
        Record::Batch(points) => {
            for p in points {
                let _ = writeln!(
                    s,
                    "    #{} {} @{} {}{}",
                    p.series.0,
                    names.name(p.series.0),
                    p.timestamp.0,
                    p.op.name(),
                    op_text(&p.op)
                );
            }
        }
    }
    s
}

fn json_record(info: &FrameInfo, record: &Record, names: &Names) -> String {
    let mut v = json!({
        "segment": info.segment.file_name(),
        "offset": info.offset,
        "lsn": info.lsn.0,
        "record_type": info.record_type,
        "codec": codec_name(info.codec),
        "stored_len": info.stored_len,
        "payload_len": info.payload_len,
        "durable_lag": info.durable_lag,
    });
    match record {
        Record::SeriesDefs(defs) => {
            v["type"] = json!("series_defs");
            v["defs"] =
                defs.iter().map(|d| json!({"id": d.id.0, "series": d.key.to_string()})).collect();
        }
        Record::Batch(points) => {
            v["type"] = json!("batch");
            v["points"] = points
                .iter()
                .map(|p| {
                    let mut point = json!({
                        "id": p.series.0,
                        "series": names.name(p.series.0),
                        "timestamp_ms": p.timestamp.0,
                        "op": p.op.name(),
                        "value": p.op.value(),
                    });
                    if let Some(s) = p.op.sample() {
                        point["histogram"] = json!({
                            "bounds": &s.bounds[..],
                            "buckets": &s.buckets[..],
                            "sum": s.sum,
                        });
                    }
                    point
                })
                .collect();
        }
    }
    format!("{v}\n")
}

/// `ingestor inspect snapshot [FILE]`: the newest snapshot of the data directory, or FILE:
/// its header, chunks and every series it holds (in the exposition format).
pub(crate) fn inspect_snapshot(
    data_dir: &Path,
    file: Option<&Path>,
    json: bool,
) -> Result<(), String> {
    let fs = StdFs::new();
    let path = match file {
        Some(f) => f.to_path_buf(),
        None => {
            // Refuses a directory a server holds, and names damage, before reading.
            offline::verify(&fs, data_dir).map_err(|e| e.to_string())?;
            let files = offline::snapshot_files(&fs, data_dir).map_err(|e| e.to_string())?;
            files.last().cloned().ok_or(format!("{}: no snapshot", data_dir.display()))?
        }
    };
    let c = offline::inspect_snapshot(&fs, &path).map_err(|e| e.to_string())?;
    if json {
        let v = serde_json::json!({
            "info": c.info,
            "compression": c.compression,
            "chunks": c.chunks,
        });
        println!("{v}");
        return Ok(());
    }
    println!("snapshot {}", path.display());
    println!(
        "  LSN {}, {} series, {} bytes, {} compression, written at {} ms",
        c.info.lsn, c.info.series, c.info.bytes, c.compression, c.info.created_ms
    );
    for chunk in &c.chunks {
        println!(
            "  chunk {} offset {}: stored {} B, raw {} B",
            chunk.index, chunk.offset, chunk.stored_len, chunk.raw_len
        );
    }
    let mut text = String::new();
    c.memstore.expose(&mut text, None);
    print!("{text}");
    Ok(())
}

/// `ingestor verify`: non-zero when anything is damaged.
pub(crate) fn verify(data_dir: &Path, json: bool) -> Result<(), String> {
    let report = offline::verify(&StdFs::new(), data_dir).map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{report}");
    }
    let damage = report.damage();
    if damage.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {} damaged: {}", data_dir.display(), damage.len(), damage.join("; ")))
    }
}

/// The two deliberate repair modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RepairMode {
    /// Keep everything before the first damage; drop the rest of the log.
    PointInTime,
    /// Skip damaged records, keep every valid one after them.
    SkipCorrupted,
}

/// `ingestor repair --mode ... [--dry-run]`.
pub(crate) fn repair(
    data_dir: &Path,
    mode: RepairMode,
    dry_run: bool,
    json: bool,
    config: Config,
) -> Result<(), String> {
    let mode = match mode {
        RepairMode::PointInTime => RecoveryMode::PointInTime,
        RepairMode::SkipCorrupted => RecoveryMode::SkipCorrupted,
    };
    let config = config.recovery_mode(mode);
    let report = offline::repair(Arc::new(StdFs::new()), data_dir, config, dry_run)
        .map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// `ingestor snapshot`: an offline snapshot and compaction.
pub(crate) fn snapshot(data_dir: &Path, config: Config) -> Result<(), String> {
    let config = config.final_snapshot(FinalSnapshot::Never);
    let (db, _) = crate::progress::open(data_dir, config)?;
    let written = db.snapshot().map_err(|e| e.to_string())?;
    let stats = db.stats();
    match written {
        Some(info) => println!(
            "snapshot at LSN {}: {} series, {} bytes, {}",
            info.lsn,
            info.series,
            info.bytes,
            info.path.display()
        ),
        None => println!(
            "nothing new since the snapshot at LSN {}",
            stats.last_snapshot_lsn.map_or(0, |l| l.0)
        ),
    }
    println!("log: {} segments after compaction", stats.wal.segments);
    db.close().map_err(|e| e.to_string())
}
