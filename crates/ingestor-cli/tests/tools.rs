//! The offline tools as users run them: `inspect wal`, `inspect snapshot`, `verify`,
//! `repair`, `snapshot`; their output formats are pinned by golden files.

use std::path::Path;
use std::process::Command;

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ingestor"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("INGESTOR_LOG")
        .output()
        .expect("run ingestor");
    let redact = |s: &[u8]| {
        String::from_utf8_lossy(s)
            .replace(&dir.display().to_string(), "<DATA>")
            .lines()
            .map(redact_line)
            .collect::<Vec<_>>()
            .join("\n")
    };
    (out.status.code().unwrap_or(-1), redact(&out.stdout), redact(&out.stderr))
}

/// Times vary from run to run: durations and creation times are replaced.
fn redact_line(line: &str) -> String {
    if line.starts_with("recovery (")
        && let Some((head, _)) = line.split_once(" scanned in ")
    {
        return format!("{head} scanned in <TIME>");
    }
    if let Some((head, _)) = line.split_once(", written at ") {
        return format!("{head}, written at <TIME>");
    }
    line.to_string()
}

/// A data directory with three ingests (`--sync os`, so the durable lags are deterministic;
/// no snapshot, so that the log is all there is).
fn filled() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let inputs = [
        "cpu,host=a usage=0.5,idle=99i 1700000000000000000\ncpu,host=b usage=1.5 1700000000000000000\n",
        "cpu,host=a usage=0.75 1700000001000000000\nmem,host=a used=42u 1700000001000000000\n",
        "cpu,host=b usage=2 1700000002000000000\n",
    ];
    for (i, text) in inputs.iter().enumerate() {
        let file = dir.path().join(format!("{i}.lp"));
        std::fs::write(&file, text).unwrap();
        let (code, _, err) =
            run(&data, &["ingest", "--sync", "os", "--no-final-snapshot", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    dir
}

fn flip(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

#[test]
fn inspect_wal_shows_every_record_as_text_and_json() {
    let dir = filled();
    let data = dir.path().join("data");
    let (code, text, err) = run(&data, &["inspect", "wal"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("inspect_wal", text);
    let (code, json, err) = run(&data, &["inspect", "wal", "--json", "--from", "4"]);
    assert_eq!(code, 0, "{err}");
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        assert!(v["lsn"].as_u64().unwrap() >= 4, "{line}");
    }
    insta::assert_snapshot!("inspect_wal_json_from_4", json);
}

#[test]
fn verify_is_clean_then_names_damage_with_a_non_zero_exit_and_changes_nothing() {
    let dir = filled();
    let data = dir.path().join("data");
    let (code, out, err) = run(&data, &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    insta::assert_snapshot!("verify_clean", out);

    // Damage the second batch (LSN 4): a frame followed by valid ones.
    let (_, json, _) = run(&data, &["inspect", "wal", "--json", "--from", "4"]);
    let frame: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(frame["lsn"], 4);
    let segment = data.join("wal").join(frame["segment"].as_str().unwrap());
    flip(&segment, frame["offset"].as_u64().unwrap() + 25);
    let before = std::fs::read(&segment).unwrap();
    let (code, out, err) = run(&data, &["verify"]);
    assert_eq!(code, 1, "{out}{err}");
    insta::assert_snapshot!("verify_damaged", out);
    // The same report as JSON (serde, from `VerifyReport`), with the same exit status.
    let (code, json, _) = run(&data, &["verify", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let damage = &v["wal"]["corruptions"][0];
    assert_eq!(damage["offset"], frame["offset"], "{json}");
    assert_eq!(damage["lost"], serde_json::json!([4, 4]), "{json}");
    let first_lsn: u64 =
        frame["segment"].as_str().unwrap().trim_end_matches(".seg").parse().unwrap();
    assert_eq!(damage["segment"].as_u64(), Some(first_lsn), "the segment's first LSN: {json}");
    assert_eq!(v["wal"]["mode"], "skip_corrupted", "{json}");
    assert!(v["wal"]["duration"].is_f64(), "durations are seconds: {json}");
    let offset = frame["offset"].as_u64().unwrap();
    let named = format!("wal/{} byte {offset}: LSNs 4..=4", frame["segment"].as_str().unwrap());
    assert!(err.contains(&named), "stderr names file, offset and LSNs: {err}");
    assert_eq!(std::fs::read(&segment).unwrap(), before, "verify changed nothing");
    assert!(!data.join("wal/quarantine").exists());
    // inspect lists the damage too, and fails.
    let (code, _, err) = run(&data, &["inspect", "wal"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("byte {offset}")), "{err}");
}

#[test]
fn repair_dry_run_changes_nothing_and_repair_makes_a_default_open_work() {
    let dir = filled();
    let data = dir.path().join("data");
    let (_, json, _) = run(&data, &["inspect", "wal", "--json", "--from", "4"]);
    let frame: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let segment = data.join("wal").join(frame["segment"].as_str().unwrap());
    flip(&segment, frame["offset"].as_u64().unwrap() + 25);
    let (code, _, err) = run(&data, &["stats"]);
    assert_eq!(code, 1, "a default open refuses the damage");
    assert!(err.contains("corrupt"), "{err}");

    let before = std::fs::read(&segment).unwrap();
    let (code, out, err) = run(&data, &["repair", "--mode", "skip-corrupted", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("repair_dry_run", out);
    let (code, json, err) =
        run(&data, &["repair", "--mode", "skip-corrupted", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["dry_run"], true, "{json}");
    assert_eq!(v["wal"]["corruptions"][0]["action"], "skipped", "{json}");
    assert_eq!(v["snapshot"], serde_json::Value::Null, "a dry run writes none: {json}");
    assert_eq!(std::fs::read(&segment).unwrap(), before, "a dry run changes nothing");

    let (code, out, err) = run(&data, &["repair", "--mode", "skip-corrupted"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("repair_skip_corrupted", out);
    assert!(data.join("wal/quarantine").read_dir().unwrap().count() == 1);
    let (code, out, _) = run(&data, &["verify"]);
    assert_eq!(code, 0, "{out}");
    // LSN 4 (cpu_usage{host="a"} 0.75, mem_used 42) is lost; the rest is there.
    let (code, out, err) = run(&data, &["query", r#"{__name__=~"cpu_usage|mem_used"}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"cpu_usage{host="a"} 0.5"#), "{out}");
    assert!(out.contains(r#"cpu_usage{host="b"} 2"#), "{out}");
    assert!(!out.contains("mem_used{"), "{out}");
}

#[test]
fn snapshot_then_inspect_snapshot() {
    let dir = filled();
    let data = dir.path().join("data");
    let (code, out, err) = run(&data, &["snapshot"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("snapshot at LSN 6: 4 series"), "{out}");
    let (code, out, _) = run(&data, &["snapshot"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("nothing new since the snapshot at LSN 6"), "{out}");
    let (code, out, err) = run(&data, &["inspect", "snapshot"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("inspect_snapshot", out);
    let (code, json, err) = run(&data, &["inspect", "snapshot", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((v["info"]["lsn"].as_u64(), v["info"]["series"].as_u64()), (Some(6), Some(4)));
    assert!(v["chunks"][0]["raw_len"].as_u64().unwrap() > 0, "{json}");
    let (code, json, err) = run(&data, &["stats", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["stats"]["series"], 4, "{json}");
    assert_eq!(v["stats"]["last_snapshot_lsn"], 6, "{json}");
    assert_eq!(v["stats"]["wal"]["durable_lsn"], v["stats"]["wal"]["written_lsn"], "{json}");
    assert!(v["disk"]["total"].as_u64().unwrap() > 0, "{json}");
    assert_eq!(v["outbox"], serde_json::Value::Null, "no forwarding: {json}");
    let file = data.join("snapshots/snap-00000000000000000006.snap");
    let (code, same, _) = run(&data, &["inspect", "snapshot", file.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(same, out);
    flip(&file, 60);
    let (code, _, err) = run(&data, &["inspect", "snapshot", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("corrupt at byte"), "{err}");
}

#[test]
fn every_tool_refuses_a_directory_in_use() {
    let dir = filled();
    let data = dir.path().join("data");
    let (_db, _) = ingestor::Ingestor::open(&data, ingestor::Config::default()).unwrap();
    for args in [
        &["verify"][..],
        &["inspect", "wal"],
        &["inspect", "snapshot"],
        &["repair", "--mode", "point-in-time"],
        &["repair", "--mode", "skip-corrupted", "--dry-run"],
        &["snapshot"],
        &["stats"],
        &["query", "cpu_usage"],
    ] {
        let (code, _, err) = run(&data, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("in use"), "{args:?}: {err}");
    }
}

#[test]
fn bad_arguments_and_missing_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for args in [&["verify"][..], &["inspect", "wal"], &["repair", "--mode", "point-in-time"]] {
        let (code, _, err) = run(&missing, args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("no data directory"), "{args:?}: {err}");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    let (code, _, err) = run(&missing, &["repair", "--mode", "sideways"]);
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("point-in-time"), "{err}");
}
