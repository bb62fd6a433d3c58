//! `cargo xtask bench [--quick]`: the benchmark report of `benches/` (the ingestor beside
//! okaywal, commitlog, raft-engine, the ideal loop and the disk's fsync rate), written to
//! `target/bench-report.md` and `target/bench-report.json`.

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask bench [--quick]

  --quick   smaller runs (under two minutes); without it the full run takes under 15 minutes

Writes target/bench-report.md and target/bench-report.json; docs/benchmarks.md keeps the
latest full table.";

/// Runs the report driver, passing `--quick` through.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let mut quick = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let root = crate::root();
    let out = root.join("target");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root)
        .args(["bench", "--locked", "-p", "ingestor-benches", "--bench", "report", "--"])
        .arg("--out")
        .arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("xtask bench: the report driver failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask bench: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
