//! The `ingestor` command: serve metrics over HTTP, ingest line-protocol files, query and
//! inspect a data directory.
//!
//! ```text
//! ingestor serve                      # HTTP on 127.0.0.1:8428, data in ./ingestor-data
//! ingestor ingest metrics.lp          # line protocol from a file (or - for stdin)
//! ingestor query 'cpu{host="a"}'      # matching series in the exposition format
//! ingestor stats                      # series, log segments and bytes, snapshots, LSNs
//! ingestor inspect wal --from 100     # every log record from LSN 100, decoded
//! ingestor inspect snapshot           # the newest snapshot: header, chunks, series
//! ingestor verify                     # read everything, change nothing, name any damage
//! ingestor repair --mode point-in-time --dry-run
//! ingestor snapshot                   # an offline snapshot and compaction
//! ```
//!
//! Logs go to standard error (`INGESTOR_LOG=debug` for more); progress bars are drawn only
//! when standard error is a terminal.
#![forbid(unsafe_code)]

mod args;
mod commands;
mod config_file;
mod inspect;
mod progress;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// A crash-recoverable metrics ingestor.
///
/// A flag given twice takes its last value (`args_override_self`): that is how the command
/// line overrides the flags `serve --config FILE` inserts before it.
#[derive(Debug, Parser)]
#[command(name = "ingestor", version, about, args_override_self = true)]
struct Cli {
    /// The data directory.
    #[arg(long, global = true, default_value = "./ingestor-data")]
    data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP: line-protocol writes, /metrics, a Prometheus-shaped query API.
    Serve {
        /// Listeners, limits, TLS and auth.
        #[command(flatten)]
        server: Box<serve::ServeArgs>,
        /// Log and snapshot settings.
        #[command(flatten)]
        engine: args::EngineArgs,
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
        /// Log and snapshot settings.
        #[command(flatten)]
        engine: args::EngineArgs,
    },
    /// Print the series a Prometheus selector matches, in the exposition format.
    Query {
        /// The selector, for example `cpu{host="a"}`.
        selector: String,
    },
    /// Print counts: series, log segments and bytes, snapshots, LSNs.
    Stats {
        /// One JSON object: the engine's stats, the free space, the forwarding outbox.
        #[arg(long)]
        json: bool,
    },
    /// Show what the log or a snapshot holds, record by record.
    Inspect {
        /// What to inspect.
        #[command(subcommand)]
        what: Inspect,
    },
    /// Read every log segment and snapshot, change nothing; exit non-zero naming the file,
    /// byte offset and LSN range of any damage.
    Verify {
        /// The report as one JSON object (the exit status is the same).
        #[arg(long)]
        json: bool,
    },
    /// Repair a damaged log deliberately: damaged bytes are copied to wal/quarantine/ first,
    /// the recovered state is snapshotted and the damaged segments deleted; prints the LSN
    /// ranges lost.
    Repair {
        /// point-in-time: keep everything before the first damage; skip-corrupted: skip
        /// damaged records and keep every valid one after them.
        #[arg(long, value_enum)]
        mode: inspect::RepairMode,
        /// Report what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Log and snapshot settings.
        #[command(flatten)]
        engine: args::EngineArgs,
    },
    /// Write a snapshot now and delete the log segments it covers.
    Snapshot {
        /// Log and snapshot settings.
        #[command(flatten)]
        engine: args::EngineArgs,
    },
}

#[derive(Debug, Subcommand)]
enum Inspect {
    /// Every log record: LSN, segment, offset, type, sizes, decoded series and points.
    Wal {
        /// Start at this LSN.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// One JSON object per record, one per line.
        #[arg(long)]
        json: bool,
    },
    /// A snapshot's header, chunks and series (the newest one unless FILE is given).
    Snapshot {
        /// A snapshot file (`snap-<LSN>.snap`).
        file: Option<PathBuf>,
        /// Its header and chunks as one JSON object (without the series).
        #[arg(long)]
        json: bool,
    },
}

/// Parses `argv` (the program name first) with `serve --config FILE`'s flags inserted
/// before the user's own, exiting as clap does on an error (adding where a flag from the file
/// came from) or on `--help`.
fn parse(argv: Vec<std::ffi::OsString>) -> Result<Cli, ExitCode> {
    let expanded = config_file::expand(&Cli::command(), argv).map_err(|e| {
        eprintln!("ingestor: {e}");
        ExitCode::from(2)
    })?;
    Cli::try_parse_from(&expanded.argv).map_err(|e| {
        let note = if e.use_stderr() { expanded.explain(&e) } else { None };
        let _ = e.print();
        if let Some(note) = note {
            eprintln!("{note}");
        }
        ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
    })
}

fn main() -> ExitCode {
    let cli = match parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    progress::init_logs(if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" });
    let result = match cli.command {
        Command::Serve { server, engine } => serve::serve(&cli.data_dir, &server, engine.config()),
        Command::Ingest { file, precision, batch_lines, engine } => {
            commands::ingest(&cli.data_dir, &file, &precision, batch_lines, engine.config())
        }
        Command::Query { selector } => commands::query(&cli.data_dir, &selector),
        Command::Stats { json } => commands::stats(&cli.data_dir, json),
        Command::Inspect { what: Inspect::Wal { from, json } } => {
            inspect::inspect_wal(&cli.data_dir, from, json)
        }
        Command::Inspect { what: Inspect::Snapshot { file, json } } => {
            inspect::inspect_snapshot(&cli.data_dir, file.as_deref(), json)
        }
        Command::Verify { json } => inspect::verify(&cli.data_dir, json),
        Command::Repair { mode, dry_run, json, engine } => {
            inspect::repair(&cli.data_dir, mode, dry_run, json, engine.config())
        }
        Command::Snapshot { engine } => inspect::snapshot(&cli.data_dir, engine.config()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingestor: {e}");
            ExitCode::FAILURE
        }
    }
}
