//! The `ingestor` command: serve metrics over HTTP, ingest line-protocol files, query and
//! inspect a data directory.
//!
//! ```text
//! ingestor serve                      # HTTP on 127.0.0.1:8428, data in ./ingestor-data
//! ingestor ingest metrics.lp          # line protocol from a file (or - for stdin)
//! ingestor query 'cpu{host="a"}'      # matching series in the exposition format
//! ingestor stats                      # series, log segments and bytes, snapshots, LSNs
//! ```

mod commands;
mod line;
mod server;
mod statsd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ingestor::SyncPolicy;

/// A crash-recoverable metrics ingestor.
#[derive(Debug, Parser)]
#[command(name = "ingestor", version, about)]
struct Cli {
    /// The data directory.
    #[arg(long, global = true, default_value = "./ingestor-data")]
    data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The sync policy flag: `always`, `os` or `batch:DURATION` (for example `batch:5ms`).
#[derive(Debug, Clone, Copy)]
struct SyncArg(SyncPolicy);

impl std::str::FromStr for SyncArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncArg(SyncPolicy::Always)),
            "os" => Ok(SyncArg(SyncPolicy::Os)),
            "batch" => Ok(SyncArg(SyncPolicy::default())),
            other => {
                let window = other
                    .strip_prefix("batch:")
                    .ok_or_else(|| format!("{other:?}: expected always, os or batch:DURATION"))?;
                Ok(SyncArg(SyncPolicy::Batch(parse_duration(window)?)))
            }
        }
    }
}

/// `5ms`, `1s`, `250us`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 =
        digits.parse().map_err(|_| format!("{s:?}: expected a number and a unit (us, ms, s)"))?;
    match unit {
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (us, ms, s)")),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP: line-protocol writes, /metrics, a Prometheus-shaped query API.
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8428")]
        http: String,
        /// Also listen for StatsD over UDP on this address (conventional port 8125).
        #[arg(long)]
        statsd: Option<String>,
        /// When writes are synced: always, os, or batch:DURATION.
        #[arg(long, default_value = "batch:5ms")]
        sync: SyncArg,
        /// The largest accepted request body, in bytes.
        #[arg(long, default_value_t = 16 << 20)]
        body_limit: usize,
    },
    /// Ingest line protocol from a file, or `-` for standard input.
    Ingest {
        /// The file.
        file: String,
        /// Timestamp precision: ns, us, ms or s.
        #[arg(long, default_value = "ns")]
        precision: String,
        /// Lines per batch.
        #[arg(long, default_value_t = 10_000)]
        batch_lines: usize,
        /// When writes are synced: always, os, or batch:DURATION.
        #[arg(long, default_value = "batch:5ms")]
        sync: SyncArg,
    },
    /// Print the series a Prometheus selector matches, in the exposition format.
    Query {
        /// The selector, for example `cpu{host="a"}`.
        selector: String,
    },
    /// Print counts: series, log segments and bytes, snapshots, LSNs.
    Stats,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { http, statsd, sync, body_limit } => {
            server::serve(&cli.data_dir, &http, statsd.as_deref(), sync.0, body_limit)
        }
        Command::Ingest { file, precision, batch_lines, sync } => {
            commands::ingest(&cli.data_dir, &file, &precision, batch_lines, sync.0)
        }
        Command::Query { selector } => commands::query(&cli.data_dir, &selector),
        Command::Stats => commands::stats(&cli.data_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingestor: {e}");
            ExitCode::FAILURE
        }
    }
}
