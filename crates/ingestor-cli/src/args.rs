//! The flags shared by the commands that write: the log's sync policy and the log and
//! snapshot settings, turned into an [`ingestor::Config`].

use std::time::Duration;

use clap::Args;
use ingestor::{
    Compression, Config, FinalSnapshot, FreeSpaceFloor, SnapshotCompression, SnapshotOptions,
    SyncPolicy,
};

/// The sync policy flag: `always`, `os`, `batch`, `batch:DURATION` (for example
/// `batch:5ms`), `buffered` or `buffered:DURATION`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncArg(pub(crate) SyncPolicy);

impl std::str::FromStr for SyncArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(SyncArg(SyncPolicy::Always)),
            "os" => Ok(SyncArg(SyncPolicy::Os)),
            "batch" => Ok(SyncArg(SyncPolicy::default())),
            "buffered" => Ok(SyncArg(SyncPolicy::BUFFERED)),
            other => {
                if let Some(deadline) = other.strip_prefix("buffered:") {
                    return Ok(SyncArg(SyncPolicy::Buffered(parse_duration(deadline)?)));
                }
                let window = other.strip_prefix("batch:").ok_or_else(|| {
                    format!("{other:?}: expected always, os, batch:DURATION or buffered:DURATION")
                })?;
                Ok(SyncArg(SyncPolicy::Batch(parse_duration(window)?)))
            }
        }
    }
}

/// `250us`, `5ms`, `1s`, `10m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    ingestor::duration::parse(s)
}

/// A byte count: a number, optionally with a unit (`B`, `KiB`, `MiB`, `GiB`, or `k`, `M`,
/// `G` as powers of 1,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bytes(pub(crate) usize);

impl std::str::FromStr for Bytes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: usize = digits
            .parse()
            .map_err(|_| format!("{s:?}: expected a number of bytes, such as 65536 or 64KiB"))?;
        let scale: usize = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "k" | "kB" | "KB" => 1_000,
            "M" | "MB" => 1_000_000,
            "G" | "GB" => 1_000_000_000,
            _ => {
                return Err(format!("{s:?}: unknown unit {unit:?} (B, KiB, MiB, GiB, kB, MB, GB)"));
            }
        };
        n.checked_mul(scale).map(Bytes).ok_or_else(|| format!("{s:?}: too large"))
    }
}

/// A duration, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptionalDuration(Option<Duration>);

impl std::str::FromStr for OptionalDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            Ok(OptionalDuration(None))
        } else {
            parse_duration(s).map(|d| Self(Some(d)))
        }
    }
}

/// Log and snapshot settings; defaults are the library's.
#[derive(Debug, Clone, Args)]
pub(crate) struct EngineArgs {
    /// When writes are synced: always (acknowledged after fdatasync), os (acknowledged once
    /// written to the OS), batch:DURATION (durable within the window plus up to two
    /// sync durations), or buffered:DURATION (opt-in: acknowledged while still in the
    /// process's buffer, written when it fills or the deadline passes, 200ms by default; a
    /// kill -9 loses up to one deadline of acknowledged writes).
    #[arg(long, default_value = "batch:5ms")]
    sync: SyncArg,
    /// Under --sync buffered, the bytes of logged batches gathered before they are written
    /// (1KiB ..= 64MiB).
    #[arg(long, default_value = "1MiB")]
    wal_buffer_bytes: Bytes,
    /// Log segment size in bytes.
    #[arg(long, default_value_t = 128 << 20)]
    segment_bytes: u64,
    /// Log record compression: none, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = ["none", "lz4", "zstd"])]
    wal_compression: String,
    /// Write a snapshot once the log grew by this many bytes.
    #[arg(long, default_value_t = 128 << 20)]
    snapshot_bytes: u64,
    /// Write a snapshot at least this often when something was logged (or `off`).
    #[arg(long, default_value = "1h")]
    snapshot_interval: OptionalDuration,
    /// Snapshots kept (the log is kept from the oldest one on).
    #[arg(long, default_value_t = 2)]
    snapshot_keep: usize,
    /// Snapshot compression: none, lz4 or zstd.
    #[arg(long, default_value = "zstd", value_parser = ["none", "lz4", "zstd"])]
    snapshot_compression: String,
    /// Do not write a snapshot when closing (restarts then replay more of the log).
    #[arg(long)]
    no_final_snapshot: bool,
    /// Delete series not updated for this long (or `off`).
    #[arg(long, default_value = "off")]
    series_ttl: OptionalDuration,
    /// Free space to keep on the data directory's file system: below it writes are refused
    /// (503) until space is freed. `auto` (1GiB or 5%, whichever is less), a size, or `off`.
    #[arg(long, default_value = "auto")]
    free_space_floor: FloorArg,
}

/// `--free-space-floor`: `auto`, `off`, or a size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloorArg(FreeSpaceFloor);

impl std::str::FromStr for FloorArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(FloorArg(FreeSpaceFloor::Auto)),
            "off" => Ok(FloorArg(FreeSpaceFloor::Off)),
            size => size
                .parse::<Bytes>()
                .map(|b| FloorArg(FreeSpaceFloor::Bytes(b.0 as u64)))
                .map_err(|e| format!("{e} (or auto, or off)")),
        }
    }
}

impl EngineArgs {
    /// The configuration these flags describe.
    pub(crate) fn config(&self) -> Config {
        let wal_compression = match self.wal_compression.as_str() {
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd { level: 3 },
            _ => Compression::None,
        };
        let snapshot_compression = match self.snapshot_compression.as_str() {
            "none" => SnapshotCompression::None,
            "lz4" => SnapshotCompression::Lz4,
            _ => SnapshotCompression::Zstd { level: 3 },
        };
        Config::default()
            .sync_policy(self.sync.0)
            .segment_bytes_max(self.segment_bytes)
            .wal_buffer_bytes(self.wal_buffer_bytes.0)
            .wal_compression(wal_compression)
            .snapshot_bytes(self.snapshot_bytes)
            .snapshot_interval(self.snapshot_interval.0)
            .snapshot(
                SnapshotOptions::default()
                    .keep(self.snapshot_keep)
                    .compression(snapshot_compression),
            )
            .series_ttl(self.series_ttl.0)
            .free_space_floor(self.free_space_floor.0)
            .final_snapshot(if self.no_final_snapshot {
                FinalSnapshot::Never
            } else {
                FinalSnapshot::OnClose
            })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        engine: EngineArgs,
    }

    fn config(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| c.engine.config()).map_err(|e| e.to_string())
    }

    #[test]
    fn sync_policies_and_durations_parse() {
        assert_eq!(config(&["--sync", "always"]).unwrap().sync_policy, SyncPolicy::Always);
        assert_eq!(config(&["--sync", "os"]).unwrap().sync_policy, SyncPolicy::Os);
        assert_eq!(
            config(&["--sync", "batch:250us"]).unwrap().sync_policy,
            SyncPolicy::Batch(Duration::from_micros(250))
        );
        assert_eq!(config(&[]).unwrap().sync_policy, SyncPolicy::Batch(Duration::from_millis(5)));
        assert_eq!(
            config(&["--sync", "buffered"]).unwrap().sync_policy,
            SyncPolicy::Buffered(Duration::from_millis(200))
        );
        let c = config(&["--sync", "buffered:50ms", "--wal-buffer-bytes", "64KiB"]).unwrap();
        assert_eq!(c.sync_policy, SyncPolicy::Buffered(Duration::from_millis(50)));
        assert_eq!(c.wal_buffer_bytes, 64 << 10);
        assert!(config(&["--sync", "buffered:soon"]).is_err());
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        let err = config(&["--sync", "sometimes"]).unwrap_err();
        assert!(err.contains("expected always, os, batch:DURATION or buffered:DURATION"), "{err}");
        let err = config(&["--sync", "batch:5 ms"]).unwrap_err();
        assert!(err.contains("unknown unit"), "{err}");
        assert!(parse_duration("ms").unwrap_err().contains("expected a number"));
    }

    #[test]
    fn byte_counts_parse() {
        assert_eq!("65536".parse::<Bytes>(), Ok(Bytes(65_536)));
        assert_eq!("64KiB".parse::<Bytes>(), Ok(Bytes(64 << 10)));
        assert_eq!("16MiB".parse::<Bytes>(), Ok(Bytes(16 << 20)));
        assert_eq!("2GB".parse::<Bytes>(), Ok(Bytes(2_000_000_000)));
        assert!("16 MiB".parse::<Bytes>().unwrap_err().contains("unknown unit"));
        assert!("MiB".parse::<Bytes>().unwrap_err().contains("expected a number"));
    }

    #[test]
    fn engine_flags_reach_the_config() {
        let c = config(&[
            "--segment-bytes",
            "1048576",
            "--wal-compression",
            "lz4",
            "--snapshot-interval",
            "off",
            "--snapshot-keep",
            "3",
            "--snapshot-compression",
            "none",
            "--series-ttl",
            "1h",
            "--no-final-snapshot",
        ])
        .unwrap();
        assert_eq!(c.segment_bytes_max, 1 << 20);
        assert_eq!(c.wal_compression, Compression::Lz4);
        assert_eq!(c.snapshot_interval, None);
        assert_eq!(c.snapshot.keep, 3);
        assert_eq!(c.snapshot.compression, SnapshotCompression::None);
        assert_eq!(c.series_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(c.final_snapshot, FinalSnapshot::Never);
        let d = config(&[]).unwrap();
        assert_eq!(d.snapshot_interval, Some(Duration::from_secs(3600)));
        assert_eq!(d.final_snapshot, FinalSnapshot::OnClose);
        assert!(config(&["--wal-compression", "gzip"]).is_err());
    }
}
