//! The library crates' `serde` feature as a program embedding them uses it: the facade's
//! `Config` and forwarding's `ForwardConfig` read from TOML (durations as `"15s"` or
//! seconds, unknown keys refused), and reports written as JSON.

use std::time::Duration;

use ingestor::{Compression, Config, FinalSnapshot, FreeSpaceFloor, RecoveryMode, SyncPolicy};
use ingestor_forward::{BudgetPolicy, ForwardConfig};

#[test]
fn a_config_reads_from_toml_with_defaults_for_what_is_missing() {
    let c: Config = toml::from_str(
        r#"
        sync_policy = { batch = "2ms" }
        recovery_mode = "point_in_time"
        segment_bytes_max = 1048576
        wal_compression = { zstd = { level = 5 } }
        snapshot_interval = "off"
        series_ttl = "2h"
        maintenance_interval = 0.5
        final_snapshot = "never"
        free_space_floor = { bytes = 4096 }
        snapshot = { keep = 3 }
        memstore = { max_series = 1000 }
        "#,
    )
    .unwrap();
    assert_eq!(c.sync_policy, SyncPolicy::Batch(Duration::from_millis(2)));
    assert_eq!(c.recovery_mode, RecoveryMode::PointInTime);
    assert_eq!(c.segment_bytes_max, 1 << 20);
    assert_eq!(c.wal_compression, Compression::Zstd { level: 5 });
    assert_eq!(c.snapshot_interval, None);
    assert_eq!(c.series_ttl, Some(Duration::from_secs(7_200)));
    assert_eq!(c.maintenance_interval, Duration::from_millis(500));
    assert_eq!(c.final_snapshot, FinalSnapshot::Never);
    assert_eq!(c.free_space_floor, FreeSpaceFloor::Bytes(4096));
    assert_eq!(c.snapshot.keep, 3);
    assert_eq!(c.memstore.max_series, 1000);
    // What the file does not name keeps its default.
    let d = Config::default();
    assert_eq!(c.snapshot_bytes, d.snapshot_bytes);
    assert_eq!(c.snapshot.compression, d.snapshot.compression);
    assert_eq!(c.memstore.histogram_bounds, d.memstore.histogram_bounds);
    let empty: Config = toml::from_str("").unwrap();
    assert_eq!(empty.sync_policy, d.sync_policy);
    assert_eq!(empty.snapshot_interval, d.snapshot_interval);
}

#[test]
fn a_config_refuses_unknown_keys_and_bad_values_naming_them() {
    let e = toml::from_str::<Config>("sync_polcy = \"always\"\n").unwrap_err().to_string();
    assert!(e.contains("sync_polcy"), "{e}");
    let e = toml::from_str::<Config>("sync_policy = \"sometimes\"\n").unwrap_err().to_string();
    assert!(e.contains("sometimes"), "{e}");
    let e = toml::from_str::<Config>("series_ttl = \"10 parsecs\"\n").unwrap_err().to_string();
    assert!(e.contains("10 parsecs"), "{e}");
    let e = toml::from_str::<Config>("series_ttl = -3\n").unwrap_err().to_string();
    assert!(e.contains("not negative"), "{e}");
    let e = toml::from_str::<Config>("snapshot = { kep = 3 }\n").unwrap_err().to_string();
    assert!(e.contains("kep"), "{e}");
}

#[test]
fn a_forward_config_reads_from_toml() {
    let c: ForwardConfig = toml::from_str(
        r#"
        destinations = [{ name = "vm", url = "http://127.0.0.1:8428/api/v1/write", v2 = false }]
        flush_interval = "1s"
        backoff_max = 2
        budget_policy = "drop_oldest"
        shards = 2
        "#,
    )
    .unwrap();
    assert_eq!(c.destinations[0].name, "vm");
    assert_eq!(c.flush_interval, Duration::from_secs(1));
    assert_eq!(c.backoff_max, Duration::from_secs(2));
    assert_eq!(c.backoff_min, ForwardConfig::default().backoff_min);
    assert_eq!(c.budget_policy, BudgetPolicy::DropOldest);
    assert_eq!(c.shards, 2);
    c.validate().unwrap();
}

#[test]
fn settings_write_back_as_they_are_read() {
    let c =
        Config::default().sync_policy(SyncPolicy::Always).series_ttl(Some(Duration::from_secs(90)));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["sync_policy"], "always");
    assert_eq!(json["series_ttl"], 90.0);
    assert!(json.get("clock_ms").is_none() && json.get("wal_listener").is_none(), "{json}");
    let back: Config = serde_json::from_value(json).unwrap();
    assert_eq!(back.sync_policy, SyncPolicy::Always);
    assert_eq!(back.series_ttl, Some(Duration::from_secs(90)));
}
