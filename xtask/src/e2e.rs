//! `cargo xtask e2e`: the end-to-end test of `ingestor serve` with real clients that nobody
//! here wrote (influxdb-client, statsd, prometheus_client, promtool, a Prometheus server), as
//! one command.
//!
//! Steps, each of which stops the run with a clear error when it fails:
//!
//! 1. `cargo build --release -p ingestor-cli --locked`;
//! 2. Debian's `prometheus` package (`/usr/bin/prometheus`, `promtool`), installed with
//!    `apt-get` if either is missing (`apt-get update` first only if the install fails);
//! 3. a virtual environment in `target/e2e-venv` with `e2e/requirements.txt` installed, made
//!    again only when the requirements changed (a stamp file holds the ones installed) or the
//!    environment no longer imports them;
//! 4. `target/e2e-venv/bin/python e2e/run.py target/release/ingestor`, which does the checking
//!    (see its docstring) and always kills what it started.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// What `cargo xtask e2e --help` prints.
const USAGE: &str = "usage: cargo xtask e2e [RUN_PY_OPTIONS]

Builds the ingestor (release), installs Debian's prometheus package if prometheus or promtool
is missing, makes target/e2e-venv with e2e/requirements.txt, then runs
e2e/run.py target/release/ingestor. Options after the command go to e2e/run.py:
  --kill-rounds N   kill -9 rounds (default 3)
  --seed S          seed of the kill delays (printed by every run)
  --keep            keep the temporary directory (data, logs)";

/// Debian's Prometheus server, where its package puts it (`promtool` comes with it).
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// vmagent, where Debian's `victoria-metrics` package puts it (a remote-write sender).
const VMAGENT: &str = "/usr/bin/vmagent";
/// Debian's protobuf compiler (package `protobuf-compiler`).
const PROTOC: &str = "/usr/bin/protoc";

/// The Python the virtual environment is made from.
const PYTHON: &str = "python3";

/// The modules `e2e/requirements.txt` provides: the environment is kept only if it imports them.
const MODULES: &str = "import influxdb_client, statsd, prometheus_client, datadog, opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http.metric_exporter";

/// Runs the end-to-end test; `args` (after `e2e`) go to `e2e/run.py`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    match run(args) {
        Ok(()) => {
            println!("xtask e2e: passed in {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask e2e: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The four steps of the module documentation, in order.
fn run(args: &[String]) -> Result<(), String> {
    let root = crate::root();
    let target = target_dir(&root);

    step("build the ingestor (release)", || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut build = Command::new(cargo);
        build.args(["build", "--release", "-p", "ingestor-cli", "--locked"]).current_dir(&root);
        run_command(&mut build, "cargo build --release -p ingestor-cli --locked")
    })?;
    let binary = target.join("release").join("ingestor");
    if !binary.is_file() {
        return Err(format!("the build left no binary at {}", binary.display()));
    }

    step("prometheus and promtool", ensure_prometheus)?;

    let python = target.join("e2e-venv").join("bin").join("python");
    step("python environment (target/e2e-venv)", || {
        ensure_venv(&root, &target.join("e2e-venv"), &python)
    })?;

    step("e2e/run.py: the real clients against ingestor serve", || {
        let mut e2e = Command::new(&python);
        e2e.arg(root.join("e2e").join("run.py")).arg(&binary).args(args).current_dir(&root);
        run_command(&mut e2e, "e2e/run.py")
    })
}

/// Where cargo builds: `CARGO_TARGET_DIR` if set (relative to the workspace root), else
/// `target` in the workspace root.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// Runs one step under a heading, and says how long it took.
fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    println!("\n==> xtask e2e: {name}");
    let started = Instant::now();
    let result = f().map_err(|e| format!("{name}: {e}"));
    println!("==> xtask e2e: {name}: {:.1} s", started.elapsed().as_secs_f64());
    result
}

/// Runs a command to completion, its output going to ours; an error names `what` and how it
/// ended.
fn run_command(command: &mut Command, what: &str) -> Result<(), String> {
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s})")),
        Err(e) => Err(format!("cannot run {what}: {e}")),
    }
}

/// `promtool` on the `PATH`, or where Debian puts it.
fn promtool() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/promtool")).filter(|p| p.is_file()))
}

/// Installs Debian's `prometheus`, `victoria-metrics` and `protobuf-compiler` packages unless
/// the Prometheus server, `promtool`, `vmagent` and `protoc` (which encodes e2e's
/// remote-write 2.0 requests from Prometheus' own schema) are all there. The packages' services are of no use here
/// (and do not start in a container without systemd): `run.py` starts its own on ports it
/// picked free.
fn ensure_prometheus() -> Result<(), String> {
    if Path::new(PROMETHEUS).is_file()
        && Path::new(VMAGENT).is_file()
        && Path::new(PROTOC).is_file()
        && let Some(promtool) = promtool()
    {
        println!("{PROMETHEUS}, {VMAGENT}, {PROTOC} and {} are installed", promtool.display());
        return Ok(());
    }
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut command = Command::new("apt-get");
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_command(&mut command, &format!("apt-get {}", args.join(" ")))
    };
    let install = [
        "install",
        "-y",
        "--no-install-recommends",
        "prometheus",
        "victoria-metrics",
        "protobuf-compiler",
    ];
    println!("installing Debian's packages (apt-get {})", install.join(" "));
    if let Err(first) = apt(&install) {
        println!("{first}; updating the package lists and trying again");
        apt(&["update"])?;
        apt(&install)?;
    }
    if !Path::new(PROMETHEUS).is_file()
        || !Path::new(VMAGENT).is_file()
        || !Path::new(PROTOC).is_file()
        || promtool().is_none()
    {
        return Err(format!(
            "the packages are installed but {PROMETHEUS}, {VMAGENT}, {PROTOC} or promtool is missing"
        ));
    }
    Ok(())
}

/// Makes `venv` with `e2e/requirements.txt` installed, unless it already has exactly those
/// requirements (its stamp file holds the text of the requirements it was made with) and its
/// Python still imports them.
fn ensure_venv(root: &Path, venv: &Path, python: &Path) -> Result<(), String> {
    let requirements = root.join("e2e").join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("{}: {e}", requirements.display()))?;
    let stamp = venv.join("e2e-requirements.stamp");
    let stamped = std::fs::read_to_string(&stamp).ok();
    if stamped.as_deref() == Some(wanted.as_str())
        && Command::new(python).args(["-c", MODULES]).status().is_ok_and(|s| s.success())
    {
        println!("{} is up to date with e2e/requirements.txt", venv.display());
        return Ok(());
    }
    if venv.exists() {
        println!("{} is out of date: making it again", venv.display());
        std::fs::remove_dir_all(venv).map_err(|e| format!("removing {}: {e}", venv.display()))?;
    }
    let mut make = Command::new(PYTHON);
    make.args(["-m", "venv"]).arg(venv);
    run_command(&mut make, &format!("{PYTHON} -m venv {}", venv.display()))
        .map_err(|e| format!("{e} (a Debian python3 needs the python3-venv package for this)"))?;
    let mut install = Command::new(python);
    install
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"])
        .arg("-r")
        .arg(&requirements);
    run_command(&mut install, "pip install -r e2e/requirements.txt")?;
    let mut import = Command::new(python);
    import.args(["-c", MODULES]);
    run_command(&mut import, "the new environment's python (importing the clients)")?;
    std::fs::write(&stamp, &wanted).map_err(|e| format!("{}: {e}", stamp.display()))
}
