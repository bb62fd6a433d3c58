//! `cargo xtask abuse`: drives the release `ingestor serve` from outside with a well-behaved
//! writer and, meanwhile, hostile clients, and checks that the server holds (issue 11, "Proven
//! by"). Bounded in count and time, loopback only.
//!
//! The run:
//!
//! 1. `cargo build --release -p ingestor-cli --locked` (or `--binary PATH`);
//! 2. `ingestor serve --sync always --data-dir <tmp> --http 127.0.0.1:<free> --statsd
//!    127.0.0.1:<free>`, plus the profile's timeouts when the binary knows those flags; wait
//!    for `GET /-/ready` 200;
//! 3. baseline: a writer posts line-protocol batches ([`writer::LINES`] lines, each a series of
//!    its own with a value unique in the run) over one keep-alive connection at a steady rate,
//!    noting each answer and its latency; a prober opens a new connection for every
//!    `GET /-/ready` (as Kubernetes does) every 250 ms; `/proc/PID` is sampled every 100 ms
//!    (threads, open files, resident memory). The baseline's figures are the writer's p99 and
//!    the median of the samples;
//! 4. abuse, while the writer and the prober go on: 2,000 idle connections; 200 connections
//!    sending their headers a byte a second; 50 sending complete headers, then their body a
//!    byte a second; a 1 MiB header; a gzip bomb (about 10 MB that inflates to 10 GiB, built
//!    without compressing 10 GiB: see [`payloads::gzip_bomb`]); 10,000 garbage bodies (random
//!    bytes, random bytes claimed to be gzip, broken line protocol); 100,000 random UDP
//!    packets to the StatsD port; `/metrics` scraped in a loop;
//! 5. once the abuse stops, `/proc/PID` is polled (for up to [`SETTLE_LIMIT`]) until threads
//!    and open files are back within 10% of the baseline;
//! 6. every write answered 204 is read back (`GET /api/v1/query`, [`writer::read_back`]);
//! 7. the checks, each printed with its figure; the server is stopped on every way out
//!    (SIGTERM, SIGKILL after 5 s), and the run exits non-zero naming each failed check.
//!
//! Budgets: resident memory must stay under [`RSS_BUDGET`] (512 MiB) throughout, and be under
//! it once the abuse stops. The server's data here is small (the writer's 15,000 to 25,000
//! series): 512 MiB holds the server's default parse-memory budget (256 MiB of bodies being
//! parsed at once) twice over, yet is a fiftieth of what the bomb inflated in memory (10 GiB)
//! would take. Measured peaks so far: 58 to 91 MiB.
//!
//! Profiles: `--profile ci` (the default) runs an 8 s baseline and 20 s of abuse against a server
//! given `--header-timeout 3s --body-timeout 5s --idle-timeout 10s`, so that the whole run
//! stays under two minutes; `--profile full` runs a 15 s baseline and 75 s of abuse against
//! the server's default timeouts.

mod http;
mod payloads;
mod report;
mod server;
mod slow;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub(crate) use server::build as build_release;

use report::{Report, mib, ms, percentile, spread};
use server::{Sampler, Server, Usage};
use slow::{How, Kind};

/// The most resident memory the server may use, at any time in the run and once the abuse
/// stops (see the module documentation for why this figure).
pub(crate) const RSS_BUDGET: u64 = 512 * 1024 * 1024;

/// How long the server has to return to its baseline threads and open files once the abuse
/// stops.
pub(crate) const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// How far above the baseline threads and open files may stay once the abuse stops.
const SETTLE_TOLERANCE: f64 = 1.10;

/// The time a readiness probe has to answer 200.
const READY_LIMIT: Duration = Duration::from_secs(1);

/// How many times its unloaded p99 the writer's p99 may grow under abuse.
const P99_FACTOR: f64 = 5.0;

/// The gzip bomb's inflated size, in MiB (10 GiB).
const BOMB_MIB: u64 = 10 * 1024;

/// The size of the big header.
const BIG_HEADER: usize = 1024 * 1024;

const USAGE: &str =
    "usage: cargo xtask abuse [--profile ci|full] [--binary PATH] [--seed N] [--keep]

Builds target/release/ingestor, starts `ingestor serve --sync always` on loopback, and while a
well-behaved writer streams batches, abuses it: 2,000 idle connections, 200 slow-header and 50
slow-body connections, a 1 MiB header, a gzip bomb (10 MB -> 10 GiB), 10,000 garbage bodies,
100,000 random StatsD packets, /metrics in a loop. Checks that every acknowledged write is
there, the writer's p99 stays within 5x, /-/ready answers 200 within 1 s throughout, the
server never exits, limits answer 408/413/431, and threads, open files and memory come back.

  --profile ci     (default) 8 s baseline, 20 s abuse, the server given
                   --header-timeout 3s --body-timeout 5s --idle-timeout 10s: under two minutes
  --profile full   15 s baseline, 75 s abuse (past the 60 s idle timeout), the server's
                   default timeouts
  --binary PATH    test this binary instead of building target/release/ingestor
  --seed N         the seed of the random payloads (printed by every run)
  --keep           keep the temporary directory (data, server.log)";

/// A profile: how long each phase lasts and what the server is given.
#[derive(Debug, Clone)]
struct Profile {
    name: &'static str,
    baseline: Duration,
    abuse: Duration,
    /// The writer's batches a second.
    writer_rate: f64,
    idle: usize,
    slow_headers: usize,
    slow_bodies: usize,
    garbage: usize,
    udp: usize,
    /// Flags for the server (each used only when its `serve --help` names it).
    server_flags: Vec<(&'static str, &'static str)>,
}

impl Profile {
    fn ci() -> Profile {
        Profile {
            name: "ci",
            baseline: Duration::from_secs(8),
            abuse: Duration::from_secs(20),
            writer_rate: 50.0,
            idle: 2_000,
            slow_headers: 200,
            slow_bodies: 50,
            garbage: 10_000,
            udp: 100_000,
            server_flags: vec![
                ("--header-timeout", "3s"),
                ("--body-timeout", "5s"),
                ("--idle-timeout", "10s"),
            ],
        }
    }

    fn full() -> Profile {
        Profile {
            name: "full",
            baseline: Duration::from_secs(15),
            abuse: Duration::from_secs(75),
            server_flags: Vec::new(),
            ..Profile::ci()
        }
    }
}

/// Runs the abuse test; `args` are the ones after `abuse`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    let mut profile = Profile::ci();
    let mut binary: Option<PathBuf> = None;
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.clone().next()) {
            ("--profile", Some(p)) if p == "ci" || p == "full" => {
                profile = if p == "ci" { Profile::ci() } else { Profile::full() };
                it.next();
            }
            ("--binary", Some(p)) => {
                binary = Some(PathBuf::from(p));
                it.next();
            }
            ("--seed", Some(s)) if s.parse::<u64>().is_ok() => {
                seed = s.parse().unwrap_or(seed);
                it.next();
            }
            ("--keep", _) => keep = true,
            ("-h" | "--help", _) => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            (other, _) => {
                eprintln!("xtask abuse: bad argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let started = Instant::now();
    println!("==> xtask abuse: profile {}, seed {seed}", profile.name);
    let result = run(&profile, binary, seed, keep);
    let took = started.elapsed().as_secs_f64();
    match result {
        Ok(report) => {
            report.print_summary();
            let failed = report.failed();
            if failed.is_empty() {
                println!(
                    "xtask abuse: passed, {} checks, in {took:.1} s (profile {})",
                    report.checks.len(),
                    profile.name
                );
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "xtask abuse: FAILED in {took:.1} s (profile {}, seed {seed}): {}",
                    profile.name,
                    failed.join("; ")
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("xtask abuse: FAILED in {took:.1} s: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit (the server, our child,
/// inherits it); the limit now.
fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ =
            setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    getrlimit(Resource::Nofile).current
}

/// The median of each figure of `samples`.
fn median_usage(samples: &[Usage]) -> Usage {
    let median = |f: fn(&Usage) -> u64| {
        let mut v: Vec<u64> = samples.iter().map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    Usage {
        threads: median(|u| u.threads),
        fds: median(|u| u.fds),
        rss: median(|u| u.rss),
        cpu: Duration::ZERO,
    }
}

/// Whether `now` is within the tolerance of `base`.
fn within(now: u64, base: u64) -> bool {
    now as f64 <= base as f64 * SETTLE_TOLERANCE
}

/// How one figure came back once the abuse stopped.
#[derive(Debug, Clone, Copy, Default)]
struct Settle {
    /// From the end of the abuse until it came back within the tolerance and stayed there,
    /// if it did.
    back_after: Option<Duration>,
    /// Its last value.
    last: u64,
}

impl Settle {
    fn observe(&mut self, now: u64, base: u64, since: Duration) {
        self.last = now;
        if !within(now, base) {
            self.back_after = None;
        } else if self.back_after.is_none() {
            self.back_after = Some(since);
        }
    }
}

/// This harness's CPU time so far.
fn own_cpu() -> Duration {
    server::cpu_time("/proc/self/stat").unwrap_or_default()
}

/// Seconds since `t0`, for the timeline.
fn at(t0: Instant) -> String {
    format!("[{:6.1} s]", t0.elapsed().as_secs_f64())
}

/// Everything the run gathered while the server ran.
struct Gathered {
    sent: Vec<writer::Sent>,
    probes: Vec<writer::Probe>,
    scrapes: Vec<writer::Scrape>,
    slow: slow::Slow,
    garbage: payloads::Tally,
    udp: Result<usize, String>,
    header: payloads::BigOutcome,
    bomb: payloads::BigOutcome,
    /// The bomb request's size on the wire.
    bomb_len: usize,
    baseline: (Instant, Instant),
    /// The server's usage in the baseline (medians).
    base: Usage,
    abuse: (Instant, Instant),
    /// How threads and open files came back.
    threads: Settle,
    fds: Settle,
    /// Resident memory once they came back (or at the limit).
    rss_after: u64,
    /// The server's thread names at baseline and after the abuse.
    names_base: String,
    names_after: String,
    /// CPU time used during the abuse by the server and by this harness.
    cpu: (Duration, Duration),
}

fn run(
    profile: &Profile,
    binary: Option<PathBuf>,
    seed: u64,
    keep: bool,
) -> Result<Report, String> {
    let nofile = raise_nofile();
    println!(
        "open files limit of this harness (and the server): {}",
        nofile.map_or("unlimited".into(), |n| n.to_string())
    );
    let binary = match binary {
        Some(b) => b,
        None => {
            println!("\n==> cargo build --release -p ingestor-cli --locked");
            let t = Instant::now();
            let b = server::build()?;
            println!("built in {:.1} s", t.elapsed().as_secs_f64());
            b
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("ingestor-abuse-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let t = Instant::now();
    let bomb = payloads::gzip_bomb(BOMB_MIB)?;
    println!(
        "gzip bomb: {} on the wire inflating to {} ({:.0}:1), built in {:.1} s",
        mib(bomb.wire.len() as u64),
        mib(bomb.inflated),
        bomb.inflated as f64 / bomb.wire.len() as f64,
        t.elapsed().as_secs_f64()
    );

    let help = server::serve_help(&binary);
    let mut flags: Vec<String> = vec!["--sync".into(), "always".into()];
    for (flag, value) in &profile.server_flags {
        if help.contains(flag) {
            flags.push(flag.to_string());
            flags.push(value.to_string());
        } else {
            println!(
                "NOTE: this binary's `serve --help` has no {flag}: it runs without {flag} {value}"
            );
        }
    }
    if profile.name == "ci" {
        println!(
            "NOTE: profile ci gives the server shorter timeouts than its defaults so that the run \
             fits in two minutes; `--profile full` runs with the defaults"
        );
    }
    println!("\n==> {} serve {}", binary.display(), flags.join(" "));
    let server = Server::start(&binary, tmp.path(), &flags)?;
    println!(
        "pid {}, http {}, statsd udp {}, data and log in {}",
        server.pid,
        server.http,
        server.statsd,
        tmp.path().display()
    );
    let ready = server
        .wait_ready(Duration::from_secs(60))
        .map_err(|e| format!("{e}\n{}", server.log_tail(20)))?;
    println!("ready after {}", ms(ready));

    let sampler = Sampler::start(server.pid, Duration::from_millis(100));
    let gathered = gather(profile, &server, &sampler, &bomb, seed);
    let samples = sampler.finish();
    let mut report = Report::default();
    println!("\n==> read back every acknowledged write (GET /api/v1/query)");
    let back = writer::read_back(server.http, &gathered.sent);
    let final_metrics =
        http::Client::new(server.http, Duration::from_secs(10)).request("GET", "/metrics", "", b"");
    let exited = server.exited();

    println!("\n==> checks");
    judge(&mut report, profile, &gathered, &samples, &back, exited.as_deref());
    if let Ok(m) = final_metrics {
        let text = String::from_utf8_lossy(&m.body);
        let own: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ingestor_statsd") || l.starts_with("ingestor_http"))
            .collect();
        if !own.is_empty() {
            println!("\nthe server's own counters at the end: {}", own.join(", "));
        }
    }
    println!("\n==> stop the server: {}", server.stop(Duration::from_secs(10)));
    if !report.failed().is_empty() {
        println!("last lines of the server's log:\n{}", server.log_tail(15));
    }
    if keep {
        let kept = tmp.keep();
        println!("kept {}", kept.display());
    }
    Ok(report)
}

/// Runs the baseline, the abuse and the settling, returning what every client saw.
fn gather(
    profile: &Profile,
    server: &Server,
    sampler: &Sampler,
    bomb: &payloads::Bomb,
    seed: u64,
) -> Gathered {
    let addr = server.http;
    let t0 = Instant::now();
    let stop_writer = AtomicBool::new(false);
    let stop_abuse = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| writer::write(addr, profile.writer_rate, &stop_writer));
        let prober =
            s.spawn(|| writer::probe(addr, Duration::from_millis(250), READY_LIMIT, &stop_writer));
        println!(
            "\n==> {} baseline: the writer ({} batches/s of {} lines, keep-alive) and the prober (new connection every 250 ms) for {:?}",
            at(t0),
            profile.writer_rate,
            writer::LINES,
            profile.baseline
        );
        std::thread::sleep(profile.baseline);
        let baseline = (t0 + Duration::from_secs(1), Instant::now());
        let in_baseline: Vec<Usage> =
            sampler.samples().iter().filter(|(t, _)| *t >= baseline.0).map(|(_, u)| *u).collect();
        let base = median_usage(&in_baseline);
        let names_base = server::thread_names(server.pid);
        println!(
            "    baseline of the server (median of {} samples): {} threads, {} open files, {} resident",
            in_baseline.len(),
            base.threads,
            base.fds,
            mib(base.rss)
        );

        println!(
            "==> {} abuse for at least {:?}, the writer and the prober going on",
            at(t0),
            profile.abuse
        );
        let abuse_start = Instant::now();
        let cpu_start = (server::usage(server.pid).map(|u| u.cpu).unwrap_or_default(), own_cpu());
        let spread_over = profile.abuse.mul_f64(0.8);
        let scraper = s.spawn(|| writer::scrape(addr, &stop_abuse));
        let slow = s.spawn(|| {
            slow::run(addr, profile.idle, profile.slow_headers, profile.slow_bodies, &stop_abuse)
        });
        let garbage = s.spawn(move || {
            payloads::send_garbage(
                addr,
                profile.garbage,
                2,
                profile.garbage as f64 / spread_over.as_secs_f64(),
                seed,
            )
        });
        let udp = s.spawn(move || {
            payloads::send_udp(
                server.statsd,
                profile.udp,
                (profile.udp as f64 / spread_over.as_secs_f64()) as usize,
                seed,
            )
        });
        let bomb_request = payloads::bomb_request(bomb);
        let bomb_len = bomb_request.len();
        let big = s.spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let header = payloads::send_big(
                addr,
                payloads::big_header_request(BIG_HEADER),
                Duration::from_secs(30),
            );
            println!("    {} 1 MiB header: {:?} after {}", at(t0), header.status, ms(header.after));
            let bomb = payloads::send_big(addr, bomb_request, Duration::from_secs(60));
            println!("    {} gzip bomb: {:?} after {}", at(t0), bomb.status, ms(bomb.after));
            (header, bomb)
        });
        let garbage = garbage.join().unwrap_or_default();
        println!("    {} garbage bodies sent: {}", at(t0), garbage.sent);
        let udp = udp.join().unwrap_or_else(|_| Err("the UDP sender panicked".into()));
        println!("    {} UDP packets sent", at(t0));
        let (header, bomb) = big.join().unwrap_or_else(|_| {
            let none = payloads::BigOutcome {
                status: None,
                after: Duration::ZERO,
                sent: 0,
                error: Some("panicked".into()),
            };
            (none.clone(), none)
        });
        std::thread::sleep((abuse_start + profile.abuse).saturating_duration_since(Instant::now()));
        stop_abuse.store(true, Relaxed);
        let slow = slow.join().unwrap_or_default();
        let scrapes = scraper.join().unwrap_or_default();
        let abuse = (abuse_start, Instant::now());
        let cpu = (
            server::usage(server.pid)
                .map(|u| u.cpu)
                .unwrap_or_default()
                .saturating_sub(cpu_start.0),
            own_cpu().saturating_sub(cpu_start.1),
        );
        println!(
            "==> {} abuse stopped (every hostile connection closed); waiting for threads and open files to come back",
            at(t0)
        );

        let settle_start = Instant::now();
        let (mut threads, mut fds, mut rss) = (Settle::default(), Settle::default(), 0);
        // Poll until both are back, and stay back for a second, or until the limit.
        while settle_start.elapsed() < SETTLE_LIMIT {
            let Some(now) = server::usage(server.pid) else { break };
            threads.observe(now.threads, base.threads, settle_start.elapsed());
            fds.observe(now.fds, base.fds, settle_start.elapsed());
            rss = now.rss;
            let steady = |s: &Settle| {
                s.back_after.is_some_and(|t| settle_start.elapsed() >= t + Duration::from_secs(1))
            };
            if steady(&threads) && steady(&fds) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let names_after = server::thread_names(server.pid);
        println!("==> {} settled or gave up; stopping the writer and the prober", at(t0));
        stop_writer.store(true, Relaxed);
        Gathered {
            sent: writer.join().unwrap_or_default(),
            probes: prober.join().unwrap_or_default(),
            scrapes,
            slow,
            garbage,
            udp,
            header,
            bomb,
            bomb_len,
            baseline,
            base,
            abuse,
            threads,
            fds,
            rss_after: rss,
            names_base,
            names_after,
            cpu,
        }
    })
}

/// Status counts of a list of outcomes, for people: `204 x 1,234, timeout x 2`.
fn statuses<'a>(outcomes: impl Iterator<Item = &'a Result<u16, String>>) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for o in outcomes {
        let key = match o {
            Ok(s) => s.to_string(),
            Err(e) => e.clone(),
        };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    counts.iter().map(|(k, n)| format!("{k} x {n}")).collect::<Vec<_>>().join(", ")
}

/// How the connections of one kind ended, for people.
fn endings(outcomes: &[&slow::Outcome]) -> String {
    let list: Vec<Result<u16, String>> = outcomes
        .iter()
        .map(|o| match &o.how {
            How::Answered(s) => Ok(*s),
            How::Closed => Err("closed without an answer".into()),
            How::Reset(e) => Err(format!("reset ({e})")),
            How::StillOpen => Err("still open when the harness stopped".into()),
        })
        .collect();
    statuses(list.iter())
}

/// A big request's outcome, for people.
fn big(o: &payloads::BigOutcome, total: usize) -> String {
    format!(
        "{} after {}, {} of {} sent{}",
        o.status.map_or("no answer".to_string(), |s| s.to_string()),
        ms(o.after),
        mib(o.sent as u64),
        mib(total as u64),
        o.error.as_ref().map_or(String::new(), |e| format!(" ({e})"))
    )
}

/// `t - origin` in seconds, negative when `t` is earlier.
fn signed_secs(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        t.duration_since(origin).as_secs_f64()
    } else {
        -origin.duration_since(t).as_secs_f64()
    }
}

/// Makes every check from what the run gathered.
fn judge(
    report: &mut Report,
    profile: &Profile,
    g: &Gathered,
    samples: &[(Instant, Usage)],
    back: &writer::ReadBack,
    exited: Option<&str>,
) {
    let window = |(from, to): (Instant, Instant)| move |t: Instant| t >= from && t <= to;
    let in_baseline = window(g.baseline);
    let in_abuse = window(g.abuse);

    // The server never exits.
    let last_sample = samples.last().map(|(t, _)| *t);
    report.check(
        "the server never exits",
        exited.is_none(),
        match exited {
            None => "still running after the run (its /proc entry sampled every 100 ms throughout)"
                .into(),
            Some(how) => format!(
                "it exited ({how}); last seen {}",
                last_sample.map_or("never".into(), |t| format!(
                    "{:.1} s before the end",
                    t.elapsed().as_secs_f64()
                ))
            ),
        },
    );

    // Readiness throughout.
    let bad: Vec<&writer::Probe> =
        g.probes.iter().filter(|p| p.status != Ok(200) || p.latency > READY_LIMIT).collect();
    let latencies: Vec<Duration> = g.probes.iter().map(|p| p.latency).collect();
    report.check(
        "/-/ready answers 200 within 1 s throughout",
        bad.is_empty() && !g.probes.is_empty(),
        format!(
            "{} probes (a new connection each, every 250 ms, baseline to end), {} failed; latency p99 {}, max {}{}",
            g.probes.len(),
            bad.len(),
            ms(percentile(&latencies, 99.0)),
            ms(latencies.iter().max().copied().unwrap_or_default()),
            if bad.is_empty() {
                String::new()
            } else {
                format!(
                    "; failures: {}",
                    bad.iter()
                        .take(5)
                        .map(|p| format!(
                            "{:?} after {} at {:+.1} s from the start of the abuse",
                            p.status,
                            ms(p.latency),
                            signed_secs(p.at, g.abuse.0)
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ),
    );

    // Every acknowledged write is there.
    report.check(
        "every write answered 204 is there afterwards with its value",
        back.acknowledged > 0 && back.found == back.acknowledged && back.query_errors.is_empty(),
        format!(
            "{} of {} acknowledged lines read back with their value ({} batches sent: {}){}{}",
            back.found,
            back.acknowledged,
            g.sent.len(),
            statuses(g.sent.iter().map(|s| &s.status)),
            if back.wrong.is_empty() {
                String::new()
            } else {
                format!("; {} wrong, e.g. {}", back.wrong_count, back.wrong.join("; "))
            },
            if back.query_errors.is_empty() {
                String::new()
            } else {
                format!("; query errors: {}", back.query_errors.join("; "))
            }
        ),
    );

    // The writer is served and its p99 holds.
    let abused: Vec<&writer::Sent> = g.sent.iter().filter(|s| in_abuse(s.at)).collect();
    let served = abused.iter().filter(|s| s.status == Ok(204)).count();
    report.check(
        "the writer is served under abuse (>= 99% of its batches answered 204)",
        !abused.is_empty() && served as f64 >= abused.len() as f64 * 0.99,
        format!(
            "{served} of {} batches sent during the abuse answered 204 ({})",
            abused.len(),
            statuses(abused.iter().map(|s| &s.status))
        ),
    );
    let unloaded: Vec<Duration> =
        g.sent.iter().filter(|s| in_baseline(s.at)).map(|s| s.latency).collect();
    let loaded: Vec<Duration> = abused.iter().map(|s| s.latency).collect();
    let (p99_base, p99_abuse) = (percentile(&unloaded, 99.0), percentile(&loaded, 99.0));
    let factor = p99_abuse.as_secs_f64() / p99_base.as_secs_f64().max(1e-9);
    report.check(
        "the writer's p99 under abuse within 5x its unloaded p99",
        !unloaded.is_empty() && !loaded.is_empty() && factor <= P99_FACTOR,
        format!(
            "p99 {} under abuse ({} batches, p50 {}, max {}) against {} unloaded ({} batches, p50 {}): {factor:.2}x (limit {P99_FACTOR}x)",
            ms(p99_abuse),
            loaded.len(),
            ms(percentile(&loaded, 50.0)),
            ms(loaded.iter().max().copied().unwrap_or_default()),
            ms(p99_base),
            unloaded.len(),
            ms(percentile(&unloaded, 50.0)),
        ),
    );
    // When the slow writes came, to line them up with the abuse's timeline.
    let mut slowest: Vec<&&writer::Sent> = abused.iter().collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.latency));
    println!(
        "  ---- the writer's slowest batches under abuse: {}",
        slowest
            .iter()
            .take(8)
            .map(|s| format!("{} at {:+.1} s", ms(s.latency), signed_secs(s.at, g.abuse.0)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Limits.
    report.check(
        "the gzip bomb is answered 413",
        g.bomb.status == Some(413),
        format!("{} (inflating to {})", big(&g.bomb, g.bomb_len), mib(BOMB_MIB << 20)),
    );
    let peak = samples.iter().map(|(_, u)| u.rss).max().unwrap_or(0);
    let peak_at = samples.iter().max_by_key(|(_, u)| u.rss).map(|(t, _)| *t);
    report.check(
        "resident memory never above the budget (512 MiB)",
        peak <= RSS_BUDGET && !samples.is_empty(),
        format!(
            "peak VmRSS {} ({}; {} samples every 100 ms) against the budget {} and {} at baseline",
            mib(peak),
            peak_at.map_or("never sampled".into(), |t| if in_abuse(t) {
                format!(
                    "{:.1} s into the abuse",
                    t.saturating_duration_since(g.abuse.0).as_secs_f64()
                )
            } else {
                "outside the abuse".into()
            }),
            samples.len(),
            mib(RSS_BUDGET),
            mib(g.base.rss)
        ),
    );
    report.check(
        "the 1 MiB header is answered 431",
        g.header.status == Some(431),
        big(&g.header, payloads::big_header_request(BIG_HEADER).len()),
    );
    let of = |k: Kind| g.slow.of(k).collect::<Vec<_>>();
    let cut_times = |v: &[&slow::Outcome]| {
        v.iter().filter(|o| o.how != How::StillOpen).map(|o| o.after).collect::<Vec<_>>()
    };
    let headers = of(Kind::SlowHeaders);
    report.check(
        "slow headers (a byte a second) are cut off by the server",
        headers.len() == profile.slow_headers && headers.iter().all(|o| o.how != How::StillOpen),
        format!(
            "{} connections ({} failed to connect): {}; cut after {} from the first byte",
            headers.len(),
            g.slow.failed_connects(Kind::SlowHeaders),
            endings(&headers),
            spread(&cut_times(&headers))
        ),
    );
    let bodies = of(Kind::SlowBody);
    report.check(
        "slow bodies (a byte a second) are answered 408",
        bodies.len() == profile.slow_bodies && bodies.iter().all(|o| o.how == How::Answered(408)),
        format!(
            "{} connections ({} failed to connect): {}; cut after {} from the headers",
            bodies.len(),
            g.slow.failed_connects(Kind::SlowBody),
            endings(&bodies),
            spread(&cut_times(&bodies))
        ),
    );
    let idle = of(Kind::Idle);
    println!(
        "  ---- idle connections: {} open ({} failed to connect{}): {}; closed by the server after {}",
        idle.len(),
        g.slow.failed_connects(Kind::Idle),
        g.slow
            .connect_failures
            .iter()
            .find(|f| f.0 == Kind::Idle)
            .map_or(String::new(), |f| format!(": {}", f.2)),
        endings(&idle),
        spread(&cut_times(&idle))
    );
    for o in &g.slow.opening {
        println!(
            "  ---- {:?} connections opened from {:+.1} s into the abuse in {}: slowest connect {}; connects of 1 s or more (the SYN dropped and sent again: the accept queue was full): {}",
            o.kind,
            signed_secs(o.from, g.abuse.0),
            ms(o.took),
            ms(o.slowest),
            o.over_1s
        );
    }
    let t = &g.garbage;
    report.check(
        "garbage bodies are answered 4xx (no 5xx, none unanswered)",
        t.sent == profile.garbage && t.server_error == 0 && t.unanswered == 0 && t.other == 0,
        format!(
            "{} sent: {} 4xx, {} 2xx (taken), {} 5xx, {} unanswered, {} other{}",
            t.sent,
            t.client_error,
            t.ok,
            t.server_error,
            t.unanswered,
            t.other,
            if t.examples.is_empty() {
                String::new()
            } else {
                format!("; e.g. {}", t.examples.join("; "))
            }
        ),
    );
    println!(
        "  ---- UDP: {} random packets sent to the StatsD port, {}",
        profile.udp,
        match &g.udp {
            Ok(0) => "each taken by the kernel".to_string(),
            Ok(n) => format!("{n} refused by the kernel"),
            Err(e) => e.clone(),
        }
    );
    let scrape_times: Vec<Duration> = g.scrapes.iter().map(|s| s.latency).collect();
    report.check(
        "/metrics scrapes during the abuse answered 200",
        !g.scrapes.is_empty() && g.scrapes.iter().all(|s| s.status == Ok(200)),
        format!(
            "{} scrapes back to back ({}); latency p50 {}, p99 {}, max {}; last {} bytes",
            g.scrapes.len(),
            statuses(g.scrapes.iter().map(|s| &s.status)),
            ms(percentile(&scrape_times, 50.0)),
            ms(percentile(&scrape_times, 99.0)),
            ms(scrape_times.iter().max().copied().unwrap_or_default()),
            g.scrapes.last().map_or(0, |s| s.bytes)
        ),
    );

    // Coming back.
    let abuse_secs = g.abuse.1.duration_since(g.abuse.0).as_secs_f64();
    println!(
        "  ---- CPU during the {abuse_secs:.1} s of abuse: the server {:.1} s, this harness {:.1} s (of {} cores)",
        g.cpu.0.as_secs_f64(),
        g.cpu.1.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let during = samples.iter().filter(|(t, _)| in_abuse(*t)).map(|(_, u)| *u);
    let (peak_threads, peak_fds) =
        during.fold((0, 0), |(t, f), u| (t.max(u.threads), f.max(u.fds)));
    let came_back = |s: &Settle| match s.back_after {
        Some(d) => format!("{} after {} (and stayed)", s.last, ms(d)),
        None => format!("{} after {} (not back within {SETTLE_LIMIT:?})", s.last, ms(SETTLE_LIMIT)),
    };
    report.check(
        "threads back within 10% of the baseline once the abuse stops",
        g.threads.back_after.is_some(),
        format!(
            "{} at baseline, {peak_threads} at the peak of the abuse, {}; at baseline [{}], after [{}]",
            g.base.threads,
            came_back(&g.threads),
            g.names_base,
            g.names_after
        ),
    );
    report.check(
        "open files back within 10% of the baseline once the abuse stops",
        g.fds.back_after.is_some(),
        format!(
            "{} at baseline, {peak_fds} at the peak of the abuse, {}",
            g.base.fds,
            came_back(&g.fds)
        ),
    );
    report.check(
        "resident memory under the budget (512 MiB) once the abuse stops",
        g.rss_after > 0 && g.rss_after <= RSS_BUDGET,
        format!(
            "{} ({} at baseline, budget {})",
            mib(g.rss_after),
            mib(g.base.rss),
            mib(RSS_BUDGET)
        ),
    );
}
