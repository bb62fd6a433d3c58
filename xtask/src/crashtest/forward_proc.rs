//! Forwarding under real process kills (the second half of `--mode forward`).
//!
//! A child process (`xtask crashtest-forward-child`) runs an ingestor and a forwarder on a
//! real directory, flushing every few milliseconds to a receiver in the parent: it ingests
//! batches of new series under the run's policy (`Always`, `Os` or `Buffered`) and says on
//! stdout which ids it is about to write (`issue <first> <last>`) and which were acknowledged
//! at a level a kill keeps (`ack <first> <last>`): `Durable` under `Always`, `Written` under
//! `Os`; under `Buffered` a batch acknowledged `Accepted` once a `flush` that followed it
//! returned, or a later batch was acknowledged `Written`. The
//! parent kills it with `SIGKILL` at a random moment (inside an ingest, a flush's append, a
//! cursor move, a POST: wherever it is), starts the next life with another shard count, and
//! after the last kill a life that only drains the outbox and exits. Then every
//! acknowledged series must have arrived with its value, and no more samples twice than the
//! cursor window's requests per shard and kill.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ingestor::{AckLevel, Config, FinalSnapshot, Ingestor, Op, SeriesKey, SyncPolicy, Timestamp};
use ingestor::{StdFs, Update};
use ingestor_forward::{Destination, ForwardConfig, Forwarder};

use super::Report;
use super::forward::{Allowance, MAX_SAMPLES, MAX_SHARDS, Receiver, check_arrivals, series_id};
use super::oracle::{Invariant, Violation};
use super::workload::Rng;

/// Kills per data directory (one run), before the draining life.
const KILLS_PER_RUN: u64 = 4;
/// An event: a child was killed while it was forwarding.
pub(crate) const KILLED: &str = "forward: SIGKILL while ingesting/flushing/sending";

fn violation(invariant: Invariant, detail: String) -> Violation {
    Violation { invariant, detail }
}

/// The forwarding configuration of a child life.
fn forward_config(url: &str, shards: usize) -> ForwardConfig {
    let mut c = ForwardConfig::default();
    c.destinations = vec![Destination::new("rx", url).expect("a valid destination")];
    c.flush_interval = Duration::from_millis(15);
    c.max_samples_per_request = MAX_SAMPLES;
    c.backoff_min = Duration::from_millis(1);
    c.backoff_max = Duration::from_millis(5);
    c.request_timeout = Duration::from_secs(5);
    c.segment_bytes = 4 << 10;
    c.shards = shards;
    c.cursor_window = WINDOW;
    c
}

/// The cursor window of the children: small, so that the duplicate bound is tight.
const WINDOW: usize = 2;

/// Runs kill runs until `deadline`; a failure ends them (reported with its repro).
pub(crate) fn run(
    seed: u64,
    deadline: Instant,
    receiver: &Receiver,
    report: &mut Report,
) -> Result<(), (Violation, String)> {
    report.required_events.insert(KILLED);
    let exe = std::env::current_exe().map_err(|e| {
        (violation(Invariant::DurableSurvives, format!("no path to xtask: {e}")), String::new())
    })?;
    let mut run = 0u64;
    while Instant::now() < deadline {
        let rseed = seed ^ run.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xf0f0;
        let repro = format!(
            "{}cargo xtask crashtest --mode forward --seed {seed:#x} (its process-kill runs: \
             kill moments depend on timing, a repro may need a few runs)",
            std::env::var("INGESTOR_DELIBERATE_BUG")
                .map(|b| format!("INGESTOR_DELIBERATE_BUG={b} "))
                .unwrap_or_default(),
        );
        let policy = POLICIES[(run % POLICIES.len() as u64) as usize];
        one_run(&exe, rseed, policy, receiver, report).map_err(|v| (v, repro))?;
        run += 1;
    }
    Ok(())
}

/// The policies of the runs' lives, one per run, in turn.
const POLICIES: [&str; 3] = ["always", "os", "buffered"];

fn one_run(
    exe: &Path,
    seed: u64,
    policy: &str,
    rx: &Receiver,
    report: &mut Report,
) -> Result<(), Violation> {
    let tmp = tempfile::tempdir().map_err(|e| {
        violation(Invariant::DurableSurvives, format!("cannot make a temporary directory: {e}"))
    })?;
    rx.reset(None);
    let mut rng = Rng::new(seed);
    let mut acked: BTreeMap<u64, f64> = BTreeMap::new();
    let mut next_id = 1u64;
    // Series of the snapshots the lives loaded: each may be sent once more.
    let mut allowance = Allowance::new();
    for life in 0..=KILLS_PER_RUN {
        let drain = life == KILLS_PER_RUN;
        let shards = 1 + rng.below(MAX_SHARDS as u64) as usize;
        let mut cmd = Command::new(exe);
        cmd.args(["crashtest-forward-child", "--dir"])
            .arg(tmp.path())
            .args(["--url", rx.url(), "--shards", &shards.to_string(), "--policy", policy])
            .args(["--seed", &format!("{:#x}", seed ^ life), "--start", &next_id.to_string()]);
        if drain {
            cmd.arg("--drain");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| violation(Invariant::DurableSurvives, format!("spawn: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            // A line cut by the kill has no newline: it was never said.
            while r.read_until(b'\n', &mut buf).is_ok_and(|_| buf.last() == Some(&b'\n')) {
                buf.pop();
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    return;
                }
                buf.clear();
            }
        });
        let until = Instant::now()
            + if drain {
                Duration::from_secs(30)
            } else {
                Duration::from_millis(40 + rng.below(300))
            };
        let mut drained = false;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            match lines.recv_timeout(until - now) {
                Ok(line) => {
                    drained |= line == "drained";
                    take_line(&line, &mut acked, &mut next_id, &mut allowance);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = child.kill();
        let status = child.wait();
        // What the child said before it died (the reader ends with its stdout).
        for line in lines.iter() {
            drained |= line == "drained";
            take_line(&line, &mut acked, &mut next_id, &mut allowance);
        }
        let _ = reader.join();
        if drain && !drained {
            return Err(violation(
                Invariant::DurableSurvives,
                format!("the draining life did not drain the outbox in 30 s ({status:?})"),
            ));
        }
        if !drain {
            let killed = status
                .as_ref()
                .is_ok_and(|s| std::os::unix::process::ExitStatusExt::signal(s) == Some(9));
            if !killed {
                return Err(violation(
                    Invariant::NoPanic,
                    format!("life {life}: the child ended by itself ({status:?})"),
                ));
            }
            report.event(KILLED);
            *report.cycles.entry("forward kill").or_default() += 1;
            *report.cycles.entry(policy_cycle(policy)).or_default() += 1;
        }
    }
    let acked_as = format!("acknowledged under {policy} in a run of {KILLS_PER_RUN} kills,");
    // Each series is written once, with the value of its id.
    let written_to = |id: u64, v: f64| v == value_of(id);
    // Each series' one update is at 1,000 ms past the epoch plus its id.
    let stamp = |id: u64, _: f64| 1_000 + id as i64;
    let got = rx.received();
    let dup = check_arrivals(&acked, &got, &written_to, &stamp, &allowance, &acked_as, report)?;
    // Per kill, each shard's window and the request in flight (a life runs at most
    // MAX_SHARDS: its configured count, or the count its cursor files keep).
    let bound = MAX_SHARDS * (WINDOW + 1) * MAX_SAMPLES * KILLS_PER_RUN as usize;
    if dup > bound {
        return Err(violation(
            Invariant::PrefixExactlyOnce,
            format!(
                "{dup} samples arrived twice, more than the cursor window's {WINDOW} requests \
                 (and the one in flight) per shard and kill ({bound}), beside each value a \
                 snapshot load allowed once more"
            ),
        ));
    }
    Ok(())
}

/// The report's count of the kills of a policy's lives.
fn policy_cycle(policy: &str) -> &'static str {
    match policy {
        "always" => "forward kill (Always)",
        "os" => "forward kill (Os)",
        _ => "forward kill (Buffered)",
    }
}

/// Takes one line of a child: `issue F L` moves the next life's first id past `L` (an issued
/// batch may be in the log unacknowledged); `ack F L` records `F..=L` as acknowledged;
/// `loaded M` says the life loaded a snapshot, with series up to id `M` in memory (each may
/// be sent once more).
fn take_line(
    line: &str,
    acked: &mut BTreeMap<u64, f64>,
    next_id: &mut u64,
    allowance: &mut Allowance,
) {
    let mut parts = line.split(' ');
    let what = parts.next();
    let numbers: Vec<u64> = parts.map_while(|p| p.parse().ok()).collect();
    match (what, numbers.as_slice()) {
        (Some("issue"), &[_, last]) => *next_id = (*next_id).max(last + 1),
        (Some("loaded"), &[max]) => {
            for id in 1..=max {
                *allowance.entry((id, value_of(id).to_bits())).or_default() += 1;
            }
        }
        (Some("ack"), &[first, last]) => {
            for id in first..=last {
                acked.insert(id, value_of(id));
            }
        }
        _ => {}
    }
}

fn value_of(id: u64) -> f64 {
    (id * 3) as f64
}

/// Writes one whole line to stdout; a parent gone ends the child.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(format!("{line}\n").as_bytes()).and_then(|()| out.flush()).is_err() {
        std::process::exit(2);
    }
}

/// The hidden child: `xtask crashtest-forward-child --dir D --url U --shards N --seed S
/// --start ID --policy always|os|buffered [--drain]`.
pub(crate) fn child_main(args: &[String]) -> ExitCode {
    let mut opts: BTreeMap<&str, &str> = BTreeMap::new();
    let mut drain = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--drain" {
            drain = true;
        } else if let Some(v) = it.next() {
            opts.insert(a.as_str(), v.as_str());
        }
    }
    let get = |k: &str| opts.get(k).copied().unwrap_or_default();
    let parse = |v: &str| {
        v.strip_prefix("0x").map_or_else(|| v.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
    };
    let (Some(shards), Some(seed), Some(start)) =
        (parse(get("--shards")), parse(get("--seed")), parse(get("--start")))
    else {
        eprintln!("crashtest-forward-child: bad arguments {args:?}");
        return ExitCode::from(2);
    };
    let (policy, kept) = match get("--policy") {
        "always" => (SyncPolicy::Always, AckLevel::Durable),
        "os" => (SyncPolicy::Os, AckLevel::Written),
        // A short deadline, so that the flusher writes while the child runs.
        "buffered" => (SyncPolicy::Buffered(Duration::from_millis(5)), AckLevel::Written),
        other => {
            eprintln!("crashtest-forward-child: no policy {other:?}");
            return ExitCode::from(2);
        }
    };
    let dir = Path::new(get("--dir")).join("data");
    let engine = Config::default()
        .sync_policy(policy)
        .segment_bytes_max(16 << 10)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never);
    let db = match Ingestor::open(&dir, engine) {
        Ok((db, opened)) => {
            // The ids a snapshot load may make the forwarder send once more (every series
            // now in memory: a little lenient for those replayed from the log).
            if opened.snapshot.is_some() {
                let max = db.memstore().all().iter().filter_map(|v| series_id(&v.key)).max();
                say(&format!("loaded {}", max.unwrap_or(0)));
            }
            Arc::new(db)
        }
        Err(e) => {
            eprintln!("crashtest-forward-child: open: {e}");
            return ExitCode::from(3);
        }
    };
    let config = forward_config(get("--url"), shards as usize);
    let fwd = match Forwarder::start(
        Arc::clone(&db),
        Arc::new(StdFs::new()),
        &dir.join("outbox"),
        config,
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crashtest-forward-child: forwarding: {e}");
            return ExitCode::from(3);
        }
    };
    if drain {
        if let Err(e) = fwd.flush() {
            eprintln!("crashtest-forward-child: flush: {e}");
            return ExitCode::from(3);
        }
        while fwd.stats()[0].pending_requests > 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
        fwd.stop();
        say("drained");
        return ExitCode::SUCCESS;
    }
    let mut rng = Rng::new(seed);
    let mut next = start;
    // Under `Buffered`: the first id acknowledged `Accepted` and not yet said (a kill may
    // take it).
    let mut accepted_from = None;
    loop {
        let n = 1 + rng.below(4);
        let (first, last) = (next, next + n - 1);
        next += n;
        say(&format!("issue {first} {last}"));
        let updates: Vec<Update> = (first..=last)
            .map(|id| {
                let key = SeriesKey::new("fwd", [("id", id.to_string())]).expect("a valid key");
                Update::new(key, Timestamp(1_000 + id as i64), Op::GaugeSet(value_of(id)))
                    .expect("valid")
            })
            .collect();
        match db.ingest(&updates) {
            // Written covers every batch before it too.
            Ok(ack) if ack.level >= kept => {
                say(&format!("ack {} {last}", accepted_from.take().unwrap_or(first)));
            }
            Ok(ack) if ack.level == AckLevel::Accepted && kept == AckLevel::Written => {
                accepted_from.get_or_insert(first);
            }
            Ok(ack) => {
                eprintln!("crashtest-forward-child: acknowledged only {:?}", ack.level);
                return ExitCode::from(3);
            }
            Err(e) => {
                eprintln!("crashtest-forward-child: ingest: {e}");
                return ExitCode::from(3);
            }
        }
        if let Some(from) = accepted_from
            && rng.chance(6)
        {
            match db.flush() {
                Ok(_) => {
                    say(&format!("ack {from} {last}"));
                    accepted_from = None;
                }
                Err(e) => {
                    eprintln!("crashtest-forward-child: flush: {e}");
                    return ExitCode::from(3);
                }
            }
        }
        if rng.chance(10) {
            let _ = fwd.flush();
        }
        // A snapshot now and then (which compacts the log): a later life loads its series.
        if rng.chance(20) {
            let _ = db.snapshot();
        }
        if rng.chance(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
