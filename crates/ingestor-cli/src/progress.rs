//! Logs (tracing, to standard error) and progress bars (indicatif, drawn only when standard
//! error is a terminal).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use ingestor::{Config, Ingestor, OpenReport, StdFs};
use tracing_subscriber::EnvFilter;

/// Sends logs to standard error, at `default` level unless `INGESTOR_LOG` says otherwise
/// (`INGESTOR_LOG=debug`, or per module as `RUST_LOG` takes it).
pub(crate) fn init_logs(default: &str) {
    let filter =
        EnvFilter::try_from_env("INGESTOR_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// Opens the data directory with a spinner that counts the records and points replayed.
pub(crate) fn open(data_dir: &Path, config: Config) -> Result<(Ingestor, OpenReport), String> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(style("{spinner} recovering: {msg} [{elapsed}]"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut calls = 0u64;
    let mut progress = |p: &ingestor::ReplayProgress| {
        calls += 1;
        if calls.is_multiple_of(1024) {
            bar.set_message(format!(
                "LSN {}, {} batches, {} points replayed",
                p.lsn, p.records, p.points
            ));
        }
    };
    let opened = Ingestor::open_with(Arc::new(StdFs::new()), data_dir, config, &mut progress);
    bar.finish_and_clear();
    let (db, report) = opened.map_err(|e| e.to_string())?;
    tracing::info!(
        dir = %data_dir.display(),
        series = db.stats().series,
        replayed_batches = report.replayed_records,
        replayed_points = report.replayed_points,
        seconds = report.duration.as_secs_f64(),
        "opened"
    );
    for line in report.to_string().lines() {
        tracing::debug!("{line}");
    }
    if !report.wal.is_clean() || !report.rejected_snapshots.is_empty() {
        for line in report.to_string().lines() {
            tracing::warn!("recovery: {line}");
        }
    }
    Ok((db, report))
}

/// A bar over `total` bytes of input (a spinner when the length is unknown).
pub(crate) fn bytes_bar(total: Option<u64>) -> ProgressBar {
    match total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(style("{bar:40} {bytes}/{total_bytes} {msg} [{elapsed} left {eta}]"));
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(style("{spinner} {bytes} {msg} [{elapsed}]"));
            bar
        }
    }
}
