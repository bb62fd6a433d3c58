//! Automation for the ingestor workspace, in Rust rather than shell.
//!
//! - `cargo xtask ci`: runs exactly what CI runs (`bash .ci/run`).
//! - `cargo xtask layering`: checks the dependency rule of `docs/design.md` on the workspace.
//! - `cargo xtask crashtest`: crashes the engine thousands of times against an oracle.
//! - `cargo xtask e2e`: drives `ingestor serve` with real clients nobody here wrote.
//! - `cargo xtask abuse [--profile ci|full]`: hostile clients against `ingestor serve` while a
//!   well-behaved writer streams; checks that the server holds.
//! - `cargo xtask bench [--quick]`: the benchmark report, beside peers and ceilings.

mod abuse;
mod bench;
mod crashtest;
mod e2e;
mod layering;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci         run exactly what CI runs (bash .ci/run: fmt, clippy, tests, docs, crashtest smoke)
  layering   check that no crate depends on one docs/design.md's layering forbids
  crashtest  crash the engine (simulated power cuts, real SIGKILL) and check every recovery;
             --mutants: show that it catches each deliberate defect (cargo xtask crashtest --help)
  e2e        the end-to-end test with real clients: influxdb-client, statsd, prometheus_client,
             promtool, a Prometheus server, kill -9 (cargo xtask e2e --help)
  abuse      hostile clients (idle, slow, huge, gzip bomb, garbage, UDP) against ingestor serve
             while a writer streams: every write kept, p99, readiness, limits, resources come
             back (--profile ci, the default, under 2 minutes; --profile full; --help)
  bench      the benchmark report beside okaywal, commitlog, raft-engine, the ideal loop and
             the fsync rate: target/bench-report.md and .json (--quick: under 2 minutes)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("layering") => layering(),
        Some("crashtest") => crashtest::main(&args[1..]),
        Some("crashtest-child") => crashtest::proc::child_main(&args[1..]),
        Some("crashtest-forward-child") => crashtest::forward_proc::child_main(&args[1..]),
        Some("e2e") => e2e::main(&args[1..]),
        Some("abuse") => abuse::main(&args[1..]),
        Some("bench") => bench::main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!(
                "{}{USAGE}",
                other.map(|c| format!("unknown command {c:?}\n\n")).unwrap_or_default()
            );
            ExitCode::from(2)
        }
    }
}

/// The workspace root: xtask lives one level below it.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn ci() -> ExitCode {
    let status = Command::new("bash").arg(".ci/run").current_dir(root()).status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("xtask ci: .ci/run failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("xtask ci: cannot run bash .ci/run: {e}");
            ExitCode::FAILURE
        }
    }
}

fn layering() -> ExitCode {
    match layering::check_workspace() {
        Ok(v) if v.is_empty() => {
            println!("layering: every dependency points down, as docs/design.md lays out");
            ExitCode::SUCCESS
        }
        Ok(v) => {
            for line in v {
                eprintln!("layering: {line}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("layering: {e}");
            ExitCode::FAILURE
        }
    }
}
