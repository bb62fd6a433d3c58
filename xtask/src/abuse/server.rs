//! The server under test: building it, starting it on free loopback ports, reading its
//! threads, open files and resident memory from `/proc`, and killing it on every way out.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http;

/// `cargo build --release -p ingestor-cli --locked`, and the binary it leaves.
pub(crate) fn build() -> Result<PathBuf, String> {
    let root = crate::root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "ingestor-cli", "--locked"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release -p ingestor-cli --locked failed ({status})"));
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    };
    let binary = target.join("release").join("ingestor");
    if binary.is_file() { Ok(binary) } else { Err(format!("no binary at {}", binary.display())) }
}

/// A loopback TCP port nobody listens on (bound and released at once).
pub(crate) fn free_tcp_port() -> Result<SocketAddr, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr().map_err(|e| e.to_string())
}

/// A loopback UDP port nobody listens on.
pub(crate) fn free_udp_port() -> Result<SocketAddr, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind udp 127.0.0.1:0: {e}"))?;
    s.local_addr().map_err(|e| e.to_string())
}

/// The flags of `ingestor serve` this binary knows, from its `--help`.
pub(crate) fn serve_help(binary: &Path) -> String {
    Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .map(|o| {
            format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
        })
        .unwrap_or_default()
}

/// The running server; dropping it kills it (SIGTERM, then SIGKILL after 5 s).
pub(crate) struct Server {
    child: Arc<Mutex<Child>>,
    /// Its process id.
    pub(crate) pid: u32,
    /// Its HTTP address.
    pub(crate) http: SocketAddr,
    /// Its StatsD address.
    pub(crate) statsd: SocketAddr,
    /// Where its standard output and error go.
    pub(crate) log: PathBuf,
}

impl Server {
    /// Starts `binary serve` with `args` after the data directory and addresses, its output
    /// to `<dir>/server.log`.
    pub(crate) fn start(binary: &Path, dir: &Path, args: &[String]) -> Result<Server, String> {
        let http = free_tcp_port()?;
        let statsd = free_udp_port()?;
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let data = dir.join("data");
        let child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--http")
            .arg(http.to_string())
            .arg("--statsd")
            .arg(statsd.to_string())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let pid = child.id();
        Ok(Server { child: Arc::new(Mutex::new(child)), pid, http, statsd, log })
    }

    /// Waits until `GET /-/ready` answers 200, up to `limit`; how long it took.
    pub(crate) fn wait_ready(&self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("the server exited before it was ready ({status})"));
            }
            if let Ok(r) = http::get_once(self.http, "/-/ready", Duration::from_secs(1))
                && r.status == 200
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                return Err(format!("/-/ready did not answer 200 within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How the server ended, if it has.
    pub(crate) fn exited(&self) -> Option<String> {
        let mut child = self.child.lock().unwrap();
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for it: {e}")),
        }
    }

    /// The last `n` lines of the server's log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within `grace`. How it
    /// ended.
    pub(crate) fn stop(&self, grace: Duration) -> String {
        let mut child = self.child.lock().unwrap();
        if let Ok(Some(status)) = child.try_wait() {
            return format!("had already exited ({status})");
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return format!(
                    "exited on SIGTERM in {:.1} s ({status})",
                    started.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        format!("did not exit within {grace:?} of SIGTERM: killed")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Threads, open files and resident memory of a process, read from `/proc`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// `Threads:` of `/proc/PID/status`.
    pub(crate) threads: u64,
    /// Entries of `/proc/PID/fd`.
    pub(crate) fds: u64,
    /// `VmRSS:` of `/proc/PID/status`, in bytes.
    pub(crate) rss: u64,
    /// CPU time used so far (user and system, from `/proc/PID/stat`).
    pub(crate) cpu: Duration,
}

/// Reads `pid`'s usage; `None` once it is gone.
pub(crate) fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let cpu = cpu_time(&format!("/proc/{pid}/stat")).unwrap_or_default();
    Some(Usage { threads: field("Threads:")?, fds, rss: field("VmRSS:").unwrap_or(0) * 1024, cpu })
}

/// User plus system CPU time of the process whose `stat` file is `path`.
pub(crate) fn cpu_time(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The fields after the command name (in parentheses, which may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / rustix::param::clock_ticks_per_second() as f64))
}

/// The names of `pid`'s threads, counted: `tokio-runtime-w x 2, ingestor x 1`.
pub(crate) fn thread_names(pid: u32) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(entry.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts.sort();
    counts.iter().map(|(n, c)| format!("{n} x {c}")).collect::<Vec<_>>().join(", ")
}

/// Samples a process's usage every `every` until told to stop: the samples with their times.
pub(crate) struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, Usage)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub(crate) fn start(pid: u32, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (Arc::clone(&samples), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(u) = usage(pid) {
                        samples.lock().unwrap().push((Instant::now(), u));
                    }
                    std::thread::sleep(every);
                }
            })
        };
        Sampler { samples, stop, thread: Some(thread) }
    }

    /// The samples taken so far.
    pub(crate) fn samples(&self) -> Vec<(Instant, Usage)> {
        self.samples.lock().unwrap().clone()
    }

    /// Stops sampling; the samples.
    pub(crate) fn finish(mut self) -> Vec<(Instant, Usage)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples()
    }
}
