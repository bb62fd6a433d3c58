//! The HTTP ingest path: Influx line-protocol bodies of 5,000 lines x 3 fields posted by 4
//! keep-alive clients to the release `ingestor serve` (under `--sync batch` and `--sync
//! always`) and to VictoriaMetrics (Debian's `victoria-metrics`, started here on loopback with
//! its own temporary `-storageDataPath`), the same bodies to each, in the same run.
//!
//! Each client owns 5,000 hosts (20,000 in all, 60,000 series) and posts one body after another
//! on one connection; every line of a body carries the same timestamp, a millisecond after the
//! client's previous body, written into the body in place (the bodies are made once, before
//! the clock starts). A second of warm-up (which creates the series) is not counted. Figures:
//! points acknowledged (2xx) per second, and the request latency p50 and p99, each the median
//! of the runs, the systems taking turns. The CPU time each server used per point is noted,
//! to tell where the time goes.
//!
//! The same run with Prometheus remote write 1.0 (`POST /api/v1/write` on both servers):
//! requests of 2,000 samples (one per series; each client owns 2,000 series, 8,000 in all),
//! protobuf in a snappy block made of literals, so that each request's timestamps (a fixed
//! six-byte varint each) are rewritten in place as for line protocol.
//!
//! The HTTP client is a minimal HTTP/1.1 one (`Content-Length` bodies only, which is what both
//! servers answer a write with): `cargo xtask abuse` has the byte-level one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::table::{Against, Figure, Report};

/// Clients posting at once.
const CLIENTS: usize = 4;
/// Lines in one body.
const LINES: usize = 5_000;
/// Fields in one line.
const FIELDS: usize = 3;
/// Samples in one remote-write request.
const RW_SAMPLES: usize = 2_000;

/// What the clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Influx line protocol bodies of [`LINES`] lines x [`FIELDS`] fields.
    LineProtocol,
    /// Prometheus remote write 1.0 requests of [`RW_SAMPLES`] samples.
    RemoteWrite,
}

impl Workload {
    /// Points (samples) in one request.
    fn points(self) -> u64 {
        match self {
            Workload::LineProtocol => (LINES * FIELDS) as u64,
            Workload::RemoteWrite => RW_SAMPLES as u64,
        }
    }

    /// The path each system takes it at.
    fn path(self, system: System) -> &'static str {
        match (self, system) {
            (Workload::LineProtocol, System::VictoriaMetrics) => "/write",
            (Workload::LineProtocol, _) => "/api/v2/write",
            (Workload::RemoteWrite, _) => "/api/v1/write",
        }
    }

    fn headers(self) -> &'static str {
        match self {
            Workload::LineProtocol => "Content-Type: text/plain\r\n",
            Workload::RemoteWrite => {
                "Content-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n\
                 X-Prometheus-Remote-Write-Version: 0.1.0\r\n"
            }
        }
    }
}
/// Width of the nanosecond timestamp written into every line.
const TS_WIDTH: usize = 19;

/// What the driver is given to run this section.
pub struct Binaries {
    /// The release `ingestor`.
    pub ingestor: PathBuf,
    /// VictoriaMetrics' single-node server, if there is one.
    pub victoria_metrics: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum System {
    Batch,
    Always,
    VictoriaMetrics,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Batch => "ingestor --sync batch",
            System::Always => "ingestor --sync always",
            System::VictoriaMetrics => "VictoriaMetrics",
        }
    }
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Run {
    /// The cores each of the server's thread groups kept busy (by thread name).
    threads: String,
    points_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server CPU time per acknowledged point, in microseconds.
    cpu_us_per_point: f64,
    /// Server CPU time over the measured window: cores kept busy.
    cores: f64,
    /// Requests answered other than 2xx, or not at all.
    failed: u64,
}

/// A body whose timestamps can be rewritten in place.
struct Body {
    workload: Workload,
    bytes: Vec<u8>,
    /// Where each line's (or sample's) timestamp starts.
    ts_at: Vec<usize>,
}

/// A protobuf varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length-delimited protobuf field.
fn field(tag: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(tag << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Six bytes of varint for a millisecond timestamp (enough until the year 2109).
fn varint6(ms: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        let bits = (ms >> (7 * i)) as u8 & 0x7f;
        *b = if i < 5 { bits | 0x80 } else { bits };
    }
}

impl Body {
    fn new(workload: Workload, client: usize) -> Body {
        match workload {
            Workload::LineProtocol => Body::lines(client),
            Workload::RemoteWrite => Body::remote_write(client),
        }
    }

    /// A `prometheus.WriteRequest` of one sample per series, in a snappy block of literals
    /// (valid snappy that any decoder reads; the timestamps stay at fixed places).
    fn remote_write(client: usize) -> Body {
        let mut request = Vec::new();
        let mut ts_in_request = Vec::new();
        for i in 0..RW_SAMPLES {
            let host = client * RW_SAMPLES + i;
            let mut series = Vec::new();
            for (name, value) in [
                ("__name__", "rw_bench_cpu_seconds_total".to_string()),
                ("cpu", (host % 64).to_string()),
                ("instance", format!("host-{}:9100", host / 64)),
                ("job", "node".to_string()),
                ("mode", ["user", "system", "idle"][host % 3].to_string()),
            ] {
                let mut label = Vec::new();
                field(1, name.as_bytes(), &mut label);
                field(2, value.as_bytes(), &mut label);
                field(1, &label, &mut series);
            }
            let mut sample = vec![0x09];
            sample.extend_from_slice(&(host as f64 * 0.5).to_le_bytes());
            sample.push(0x10);
            let ts_in_sample = sample.len();
            sample.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
            // Where the timestamp lands: the sample field's tag and length come first.
            let mut s2 = Vec::new();
            field(2, &sample, &mut s2);
            let ts_in_s2 = s2.len() - sample.len() + ts_in_sample;
            let at_in_series = series.len() + ts_in_s2;
            series.extend_from_slice(&s2);
            let mut ts = Vec::new();
            field(1, &series, &mut ts);
            ts_in_request.push(request.len() + ts.len() - series.len() + at_in_series);
            request.extend_from_slice(&ts);
        }
        // Snappy: the length, then literals of at most 65,536 bytes (tag 61: a two-byte
        // length follows).
        let mut bytes = Vec::with_capacity(request.len() + request.len() / 65_536 * 3 + 8);
        varint(request.len() as u64, &mut bytes);
        let mut ts_at = Vec::with_capacity(ts_in_request.len());
        let mut next = ts_in_request.iter().peekable();
        for (n, chunk) in request.chunks(65_536).enumerate() {
            let len = chunk.len() - 1;
            if len < 60 {
                bytes.push((len as u8) << 2);
            } else if len < 256 {
                bytes.extend_from_slice(&[60 << 2, len as u8]);
            } else {
                bytes.extend_from_slice(&[61 << 2, len as u8, (len >> 8) as u8]);
            }
            let base = bytes.len();
            let start = n * 65_536;
            while let Some(&&at) = next.peek() {
                // A timestamp split across two literals would not be rewritable in place.
                if at + 6 > start + chunk.len() {
                    assert!(at >= start + chunk.len(), "a timestamp across a literal boundary");
                    break;
                }
                ts_at.push(base + at - start);
                next.next();
            }
            bytes.extend_from_slice(chunk);
        }
        Body { workload: Workload::RemoteWrite, bytes, ts_at }
    }

    fn lines(client: usize) -> Body {
        let mut bytes = Vec::with_capacity(LINES * 120);
        let mut ts_at = Vec::with_capacity(LINES);
        for i in 0..LINES {
            let host = client * LINES + i;
            write!(
                bytes,
                "http_bench,host=host-{host},region=region-{},rack=r{} usage_user={}.5,usage_system={}.25,load={}i ",
                host % 8,
                host % 64,
                host % 100,
                (host * 7) % 100,
                host % 16
            )
            .unwrap();
            ts_at.push(bytes.len());
            bytes.extend_from_slice(&[b'0'; TS_WIDTH]);
            bytes.push(b'\n');
        }
        Body { workload: Workload::LineProtocol, bytes, ts_at }
    }

    fn set_timestamp(&mut self, ns: u64) {
        match self.workload {
            Workload::LineProtocol => {
                let digits = format!("{ns:0TS_WIDTH$}");
                for &at in &self.ts_at {
                    self.bytes[at..at + TS_WIDTH].copy_from_slice(digits.as_bytes());
                }
            }
            Workload::RemoteWrite => {
                let mut six = [0u8; 6];
                varint6(ns / 1_000_000, &mut six);
                for &at in &self.ts_at {
                    self.bytes[at..at + 6].copy_from_slice(&six);
                }
            }
        }
    }
}

/// Posts `body` on `conn` with `headers` (each ending in CRLF) and reads the answer: its
/// status.
fn post(
    conn: &mut BufReader<TcpStream>,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<u16> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0u64;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    std::io::copy(&mut conn.by_ref().take(length), &mut std::io::sink())?;
    Ok(status)
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// A server under test; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn start(system: System, bins: &Binaries, dir: &Path) -> Result<Server, String> {
        let addr = free_port();
        let mut cmd = match system {
            System::Batch | System::Always => {
                let mut c = Command::new(&bins.ingestor);
                c.arg("serve")
                    .arg("--data-dir")
                    .arg(dir)
                    .arg("--http")
                    .arg(addr.to_string())
                    .arg("--sync")
                    .arg(if system == System::Batch { "batch" } else { "always" });
                c
            }
            System::VictoriaMetrics => {
                let mut c =
                    Command::new(bins.victoria_metrics.as_ref().ok_or("no VictoriaMetrics")?);
                c.arg(format!("-storageDataPath={}", dir.display()))
                    .arg(format!("-httpListenAddr={addr}"))
                    .arg("-loggerLevel=ERROR");
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", system.name()))?;
        let mut server = Server { child, addr };
        let ready = if system == System::VictoriaMetrics { "/health" } else { "/-/ready" };
        let started = Instant::now();
        while get_status(addr, ready) != Some(200) {
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{} not ready within 30 s", system.name()));
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{} exited at start ({status})", system.name()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// CPU time so far of the server's process.
    pub(crate) fn cpu(&self) -> Duration {
        stat_cpu(&format!("/proc/{}/stat", self.child.id()))
    }

    /// CPU time so far of the server's threads, summed by thread name.
    fn cpu_by_thread(&self) -> Vec<(String, Duration)> {
        let mut out: Vec<(String, Duration)> = Vec::new();
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        for task in tasks.into_iter().flatten().flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let cpu = stat_cpu(&task.path().join("stat").to_string_lossy());
            match out.iter_mut().find(|(n, _)| n == name.trim()) {
                Some((_, c)) => *c += cpu,
                None => out.push((name.trim().to_string(), cpu)),
            }
        }
        out
    }
}

/// CPU time (user and system) so far of the process or thread whose `stat` file is `path`.
pub(crate) fn stat_cpu(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks: u64 =
        fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ingestor_benches::clock_tick() * u32::try_from(ticks).unwrap_or(u32::MAX)
}

/// The cores each thread group kept busy between two readings, busiest first, for people.
fn busiest(
    before: &[(String, Duration)],
    after: &[(String, Duration)],
    window: Duration,
) -> String {
    let mut groups: Vec<(String, f64)> = after
        .iter()
        .map(|(name, cpu)| {
            let was = before.iter().find(|(n, _)| n == name).map_or(Duration::ZERO, |b| b.1);
            (name.clone(), cpu.saturating_sub(was).as_secs_f64() / window.as_secs_f64())
        })
        .filter(|(_, cores)| *cores >= 0.01)
        .collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups.iter().map(|(n, c)| format!("{n} {c:.2}")).collect::<Vec<_>>().join(", ")
}

/// One run of `system`: 4 clients for `warmup` + `measure`; the figures of `measure`.
fn run(
    system: System,
    workload: Workload,
    bins: &Binaries,
    dir: &Path,
    warmup: Duration,
    measure: Duration,
) -> Result<Run, String> {
    let server = Server::start(system, bins, dir)?;
    let addr = server.addr;
    let path = workload.path(system);
    let headers = workload.headers();
    let points = workload.points();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let counted_from = t0 + warmup;
    let start_ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let (results, cpu, threads, window) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let stop = &stop;
                s.spawn(move || -> Result<(u64, u64, Vec<Duration>), String> {
                    let mut body = Body::new(workload, c);
                    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                    stream.set_nodelay(true).map_err(|e| e.to_string())?;
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(|e| e.to_string())?;
                    let mut conn = BufReader::new(stream);
                    let (mut acked, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
                    let mut ns = start_ns;
                    while !stop.load(Relaxed) {
                        ns += 1_000_000;
                        body.set_timestamp(ns);
                        let at = Instant::now();
                        let status = post(&mut conn, path, headers, &body.bytes);
                        let counted = at >= counted_from;
                        match status {
                            Ok(s) if (200..300).contains(&s) => {
                                if counted {
                                    acked += points;
                                    latencies.push(at.elapsed());
                                }
                            }
                            Ok(s) => {
                                failed += 1;
                                if failed == 1 {
                                    eprintln!("  {}: answered {s}", system.name());
                                }
                            }
                            Err(e) => return Err(format!("{}: {e}", system.name())),
                        }
                    }
                    Ok((acked, failed, latencies))
                })
            })
            .collect();
        std::thread::sleep(warmup);
        let cpu_from = server.cpu();
        let threads_from = server.cpu_by_thread();
        let clients_from = stat_cpu("/proc/self/stat");
        std::thread::sleep(measure);
        let cpu = server.cpu().saturating_sub(cpu_from);
        let mut threads = busiest(&threads_from, &server.cpu_by_thread(), measure);
        let clients_cpu = stat_cpu("/proc/self/stat").saturating_sub(clients_from);
        threads.push_str(&format!(
            "; the 4 clients {:.2}",
            clients_cpu.as_secs_f64() / measure.as_secs_f64()
        ));
        stop.store(true, Relaxed);
        let window = counted_from.elapsed();
        (clients.into_iter().map(|c| c.join().unwrap()).collect::<Vec<_>>(), cpu, threads, window)
    });
    let (mut acked, mut failed, mut latencies) = (0, 0, Vec::new());
    for r in results {
        let (a, f, l) = r?;
        acked += a;
        failed += f;
        latencies.extend(l);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((p * latencies.len() as f64).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Ok(Run {
        points_per_s: acked as f64 / window.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_us_per_point: cpu.as_secs_f64() * 1e6 / acked.max(1) as f64,
        cores: cpu.as_secs_f64() / measure.as_secs_f64(),
        threads,
        failed,
    })
}

/// Runs the section (line protocol, then remote write) and adds its figures to `report`.
pub fn run_section(report: &mut Report, bins: &Binaries, quick: bool) {
    workload_section(report, bins, quick, Workload::LineProtocol);
    workload_section(report, bins, quick, Workload::RemoteWrite);
}

/// One workload against every system.
fn workload_section(report: &mut Report, bins: &Binaries, quick: bool, workload: Workload) {
    let (repeats, warmup, measure) = if quick {
        (1, Duration::from_secs(1), Duration::from_secs(4))
    } else {
        (3, Duration::from_secs(1), Duration::from_secs(10))
    };
    let mut systems = vec![System::Batch, System::Always];
    if bins.victoria_metrics.is_some() {
        systems.push(System::VictoriaMetrics);
    }
    let tmp = tempfile::tempdir().unwrap();
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
            .to_string()
    };
    let load_before = load();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); systems.len()];
    for round in 0..repeats {
        for (i, &system) in systems.iter().enumerate() {
            eprintln!(
                "http ingest, {workload:?}: {} (run {} of {repeats})",
                system.name(),
                round + 1
            );
            let dir = tmp.path().join(format!("{i}-{round}"));
            match run(system, workload, bins, &dir, warmup, measure) {
                Ok(r) => runs[i].push(r),
                Err(e) => eprintln!("http ingest: {e}"),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let load_after = load();
    let median = |i: usize, f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs[i].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let section = match workload {
        Workload::LineProtocol => format!(
            "HTTP ingest: Influx line protocol, bodies of {LINES} lines x {FIELDS} fields from {CLIENTS} keep-alive clients, \
             60,000 series (median of {repeats} interleaved run(s) of {} s)",
            measure.as_secs()
        ),
        Workload::RemoteWrite => format!(
            "HTTP ingest: Prometheus remote write 1.0, requests of {RW_SAMPLES} samples from {CLIENTS} keep-alive clients, \
             {} series (median of {repeats} interleaved run(s) of {} s)",
            CLIENTS * RW_SAMPLES,
            measure.as_secs()
        ),
    };
    let vm = systems.iter().position(|&s| s == System::VictoriaMetrics);
    let cpu_note = |i: usize| {
        let cpu = |i: usize| {
            format!(
                "{:.2} us/point, {:.2} cores busy [cores by thread, last run: {}]",
                median(i, |r| r.cpu_us_per_point).unwrap_or(f64::NAN),
                median(i, |r| r.cores).unwrap_or(f64::NAN),
                runs[i].last().map_or("", |r| r.threads.as_str())
            )
        };
        let mut note = format!("server CPU {}", cpu(i));
        if let Some(v) = vm {
            note.push_str(&format!("; VictoriaMetrics CPU {}", cpu(v)));
        }
        note.push_str(&format!(
            "; load average (1 min) {load_before} before the section, {load_after} after, on {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        let failed: u64 = runs[i].iter().map(|r| r.failed).sum();
        if failed > 0 {
            note.push_str(&format!("; {failed} requests refused"));
        }
        note
    };
    for (i, &system) in systems.iter().enumerate().filter(|(_, s)| **s != System::VictoriaMetrics) {
        let sync = if system == System::Batch { "--sync batch" } else { "--sync always" };
        let Some(points) = median(i, |r| r.points_per_s) else { continue };
        let mut f = Figure::new(&section, &format!("points/s, {sync}"), points, "points/s");
        if let Some(v) = vm.and_then(|v| median(v, |r| r.points_per_s)) {
            f = f.peer("VictoriaMetrics", v);
            if system == System::Batch {
                f = f.at_least(Against::Peer("VictoriaMetrics"), 1.5);
            }
        }
        report.add(f.note(cpu_note(i)));
        for (name, get) in
            [("p50", (|r: &Run| r.p50_ms) as fn(&Run) -> f64), ("p99", |r: &Run| r.p99_ms)]
        {
            let Some(v) = median(i, get) else { continue };
            let mut f = Figure::new(&section, &format!("request {name}, {sync}"), v, "ms")
                .lower_is_better();
            if let Some(p) = vm.and_then(|vm| median(vm, get)) {
                f = f.peer("VictoriaMetrics", p);
            }
            report.add(f);
        }
    }
    if vm.is_none() {
        eprintln!("http ingest: no VictoriaMetrics binary: the ingestor's figures only");
    }
}
