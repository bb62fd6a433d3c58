//! `cargo xtask bench [--quick] [--only NAME]`: the benchmark report of `benches/` (the
//! ingestor beside okaywal, commitlog, raft-engine, the ideal loop and the disk's fsync rate,
//! and its HTTP ingest path beside VictoriaMetrics), written to `target/bench-report.md` and
//! `target/bench-report.json`.
//!
//! For the HTTP section it first builds the release `ingestor` (`cargo build --release -p
//! ingestor-cli --locked`) and installs Debian's `victoria-metrics` package with `apt-get` when
//! `/usr/bin/victoria-metrics` is missing (its service is not used: the bench starts its own
//! server on loopback), then passes both paths to the report driver.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask bench [--quick] [--only NAME]

  --quick      smaller runs (under two minutes); without it the full run takes under 15 minutes
  --only NAME  only the workloads whose name contains NAME: W1, W2, durable, W5, fsync,
               metrics, churn, http

Writes target/bench-report.md and target/bench-report.json; docs/benchmarks.md keeps the
latest full table. The http section builds target/release/ingestor and installs Debian's
victoria-metrics package if /usr/bin/victoria-metrics is missing.";

/// VictoriaMetrics' single-node server, where Debian's package puts it.
const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

/// Runs the report driver, passing `--quick` and `--only` through.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let mut quick = false;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => match it.next() {
                Some(name) => only = Some(name.clone()),
                None => {
                    eprintln!("--only needs a NAME\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
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
    if let Some(only) = &only {
        cmd.arg("--only").arg(only);
    }
    if only.as_deref().is_none_or(|o| "http".contains(o) || "forward".contains(o)) {
        println!("xtask bench: building the release ingestor for the HTTP and forwarding sections");
        match crate::abuse::build_release() {
            Ok(ingestor) => {
                cmd.arg("--ingestor-bin").arg(ingestor);
            }
            Err(e) => {
                eprintln!("xtask bench: {e}");
                return ExitCode::FAILURE;
            }
        }
        match ensure_victoria_metrics() {
            Ok(vm) => {
                cmd.arg("--victoria-metrics").arg(vm);
            }
            Err(e) => eprintln!("xtask bench: {e}: the HTTP section runs without its peer"),
        }
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

/// Installs Debian's `victoria-metrics` package unless its server is there (`apt-get update`
/// first only if the install fails); its path.
fn ensure_victoria_metrics() -> Result<PathBuf, String> {
    let vm = Path::new(VICTORIA_METRICS);
    if vm.is_file() {
        return Ok(vm.to_path_buf());
    }
    let apt = |args: &[&str]| -> Result<(), String> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed ({status})", args.join(" ")))
        }
    };
    let install = ["install", "-y", "--no-install-recommends", "victoria-metrics"];
    println!(
        "xtask bench: installing Debian's victoria-metrics package (apt-get {})",
        install.join(" ")
    );
    if let Err(first) = apt(&install) {
        println!("{first}; updating the package lists and trying again");
        apt(&["update"])?;
        apt(&install)?;
    }
    if vm.is_file() {
        Ok(vm.to_path_buf())
    } else {
        Err(format!("the victoria-metrics package is installed but {VICTORIA_METRICS} is missing"))
    }
}
