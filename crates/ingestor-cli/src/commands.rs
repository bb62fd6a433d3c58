//! The offline commands: ingest a file, query, stats.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Instant;

use ingestor::{Config, Ingestor, Selector};

use ingestor_protocols::line::{Precision, parse_body};

fn open(data_dir: &Path, config: Config) -> Result<Ingestor, String> {
    crate::progress::open(data_dir, config).map(|(db, _)| db)
}

/// Reading commands leave no snapshot behind.
fn read_only() -> Config {
    Config::default().final_snapshot(ingestor::FinalSnapshot::Never)
}

/// `ingestor ingest FILE|-`: line protocol in batches of `batch_lines` lines; a bad line stops
/// with its number, and nothing of its batch is applied.
pub(crate) fn ingest(
    data_dir: &Path,
    file: &str,
    precision: &str,
    batch_lines: usize,
    config: Config,
) -> Result<(), String> {
    let precision = Precision::parse(precision)
        .ok_or(format!("--precision {precision}: expected ns, us, ms or s"))?;
    let (input, len): (Box<dyn Read>, Option<u64>) = if file == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let db = open(data_dir, config)?;
    let started = Instant::now();
    let (mut lines, mut points) = (0usize, 0usize);
    let mut chunk = String::new();
    let mut chunk_lines = 0;
    let bar = crate::progress::bytes_bar(len);
    let mut reader = BufReader::new(bar.wrap_read(input));
    let flush = |chunk: &mut String, first_line: usize| -> Result<usize, String> {
        let updates = parse_body(chunk, precision, ingestor::system_clock_ms()).map_err(|e| {
            format!(
                "{file}: line {}: {}; nothing of that batch was applied",
                first_line + e.line,
                e.reason
            )
        })?;
        db.ingest(&updates)
            .map_err(|e| format!("{file}: batch starting at line {}: {e}", first_line + 1))?;
        chunk.clear();
        Ok(updates.len())
    };
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| format!("{file}: read: {e}"))?;
        if n == 0 {
            break;
        }
        chunk.push_str(&line);
        chunk_lines += 1;
        if chunk_lines == batch_lines.max(1) {
            points += flush(&mut chunk, lines)?;
            lines += chunk_lines;
            chunk_lines = 0;
            bar.set_message(format!("{lines} lines, {points} points"));
        }
    }
    if chunk_lines > 0 {
        points += flush(&mut chunk, lines)?;
        lines += chunk_lines;
    }
    bar.finish_and_clear();
    let series = db.stats().series;
    db.close().map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingested {lines} lines, {points} points into {series} series in {secs:.2} s ({:.0} points/s)",
        points as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// `ingestor query SELECTOR`: the matching samples as exposition lines.
pub(crate) fn query(data_dir: &Path, selector: &str) -> Result<(), String> {
    let selector = Selector::parse(selector).map_err(|e| e.to_string())?;
    let db = open(data_dir, read_only())?;
    // Matched as Prometheus would after a scrape: `reqs_total` is the counter `reqs`.
    print!(
        "{}",
        ingestor_server::query_api::text(&ingestor_server::query_api::select(&db, &selector))
    );
    db.close().map_err(|e| e.to_string())
}

/// `ingestor stats`.
pub(crate) fn stats(data_dir: &Path, json: bool) -> Result<(), String> {
    let db = open(data_dir, read_only())?;
    let s = db.stats();
    let free = db.free_space();
    db.close().map_err(|e| e.to_string())?;
    let outbox_dir = data_dir.join("outbox");
    let outbox = if outbox_dir.is_dir() {
        let fs: std::sync::Arc<dyn ingestor::Fs> = std::sync::Arc::new(ingestor::StdFs::new());
        Some(ingestor_forward::outbox_report(fs, &outbox_dir).map_err(|e| e.to_string())?)
    } else {
        None
    };
    if json {
        let v = serde_json::json!({
            "stats": s,
            "disk": free.map(|(available, total, floor)| serde_json::json!({
                "available": available, "total": total, "floor": floor,
            })),
            "outbox": outbox,
        });
        println!("{v}");
        return Ok(());
    }
    println!("series:            {}", s.series);
    println!("log segments:      {}", s.wal.segments);
    println!("log LSNs:          written {}, durable {}", s.wal.written_lsn, s.wal.durable_lsn);
    println!(
        "newest snapshot:   {}",
        s.last_snapshot_lsn.map_or_else(|| "none".to_string(), |l| format!("LSN {l}"))
    );
    println!("open took:         {:.1?}", s.open_duration);
    if let Some((available, total, floor)) = free {
        println!("disk:              {available} of {total} bytes free, floor {floor}");
    }
    if let Some(r) = outbox {
        println!(
            "forward outbox:    LSNs {}..{}, last flush covered log LSN {}",
            r.lsns.0, r.lsns.1, r.covered
        );
        for (name, at, bytes, requests, samples) in &r.destinations {
            println!(
                "  {name}: cursor at {at}; waiting {requests} requests, {samples} samples, \
                 {bytes} bytes"
            );
        }
    }
    Ok(())
}
