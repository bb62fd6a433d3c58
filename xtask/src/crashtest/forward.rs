//! Forwarding under simulated power cuts (`--mode forward`, and part of `--mode all`; its
//! process-kill half is `forward_proc`).
//!
//! Each iteration runs an ingestor and a forwarder on one simulated disk through three
//! lives: batches of new series (and newer values of earlier ones) are ingested (`--sync always`: each acknowledgement is
//! durable; or, for odd seeds, `--sync os` with a `sync` every few batches), flushes to the
//! outbox happen at random, the forwarder's sender posts to a
//! receiver in this process, and the power is cut at a random file-system operation
//! (anywhere: an ingest, a flush's append or sync, a cursor write, a segment deletion); one
//! life in four ends with the process's death instead (`SimFs::kill`: the page cache stays).
//! While the power is cut the receiver refuses what arrives, as a dead machine's requests
//! never arrive. After the last life the forwarder drains. Then every update acknowledged
//! durable must have arrived with its value or a newer one (a power cut never loses a
//! durable outbox record nor moves a cursor past a request that was not delivered, and the
//! first flush of a life takes every series changed after the last durable flush marker,
//! those a snapshot taken now and then holds included),
//! each series' last arrival must be its newest value (its order kept across shards, shard
//! count changes and power cuts), and no more samples may
//! arrive twice than the cursor window's requests (plus the one in flight) per shard and
//! power cut, beside one more arrival of each series' value per snapshot a life loaded with
//! the series at that value (those series count as changed at the snapshot's LSN, and are
//! sent once more). Each life is configured with 1 to [`MAX_SHARDS`] shards, so lives restart with
//! another count: with requests waiting the destination keeps its count (each shard at its
//! own cursor), with none it takes the new one.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{
    AckLevel, Config, FinalSnapshot, Fs, Ingestor, Op, SeriesKey, SeriesState, SimFs, SyncPolicy,
    Timestamp, Update,
};
use ingestor_forward::{Destination, ForwardConfig, Forwarder};
use ingestor_testkit::receiver;

use super::oracle::{Invariant, Violation};
use super::workload::Rng;
use super::{Failure, Options, Profile, Report};

/// Samples per request: small, so that an iteration has many requests.
pub(crate) const MAX_SAMPLES: usize = 6;
const LIVES: usize = 3;
/// The most senders per destination a life runs.
pub(crate) const MAX_SHARDS: usize = 4;

/// A remote-write receiver (the test kit's) that records every sample it accepts, and
/// refuses (503) while the current disk's power is cut.
#[derive(Clone)]
pub(crate) struct Receiver(receiver::Receiver);

impl Receiver {
    /// Forgets what it received; refuses while `disk`'s power is cut or its process is dead
    /// (never without one).
    pub(crate) fn reset(&self, disk: Option<SimFs>) {
        let refusal = disk.map(|disk| -> receiver::Refusal {
            Arc::new(move || disk.is_crashed() || disk.is_killed())
        });
        self.0.set_refusal(refusal);
        self.0.clear();
    }

    /// Every sample accepted (answered 204), `(timestamp, value)`, by series id.
    pub(crate) fn received(&self) -> BTreeMap<u64, Vec<(i64, f64)>> {
        let mut got: BTreeMap<u64, Vec<(i64, f64)>> = BTreeMap::new();
        for request in self.0.requests().iter().filter(|r| r.status == 204) {
            for s in &request.series {
                let id = s
                    .labels
                    .iter()
                    .find(|(n, _)| n == "id")
                    .and_then(|(_, v)| v.parse::<u64>().ok());
                if let Some(id) = id {
                    got.entry(id).or_default().extend(s.samples.iter().copied());
                }
            }
        }
        got
    }

    /// Its URL.
    pub(crate) fn url(&self) -> &str {
        self.0.url()
    }

    fn start() -> Receiver {
        Receiver(receiver::Receiver::start())
    }
}

fn budget(options: &Options) -> Duration {
    options.duration.unwrap_or(match options.profile {
        Profile::Smoke => Duration::from_secs(20),
        Profile::Ci => Duration::from_secs(90),
        Profile::Long => Duration::from_secs(600),
    })
}

/// Runs iterations until the budget is spent or one fails.
pub(crate) fn run(options: &Options) -> Report {
    let mut report = Report::default();
    report.required_events.extend([CUT_IN_LIFE, RESENT, SNAPSHOT_TAKEN, KILLED_IN_SIM]);
    let receiver = Receiver::start();
    let started = Instant::now();
    // Simulated power cuts for 70% of the budget, real process kills for the rest.
    let deadline = started + budget(options).mul_f64(0.7);
    let mut i = options.iteration.unwrap_or(0);
    loop {
        let seed = options.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if let Err(v) = iteration(seed, &receiver, &mut report) {
            let repro = format!(
                "{}cargo xtask crashtest --mode forward --seed {:#x} --iteration {i} (power cuts \
                 land among threads: a repro may need a few runs)",
                std::env::var("INGESTOR_DELIBERATE_BUG")
                    .map(|b| format!("INGESTOR_DELIBERATE_BUG={b} "))
                    .unwrap_or_default(),
                options.seed
            );
            report.fail(Failure { violation: v, repro, saved: None });
            break;
        }
        *report.cycles.entry("forward").or_default() += LIVES as u64 - 1;
        i += 1;
        if options.iteration.is_some() || Instant::now() >= deadline {
            break;
        }
    }
    if report.failures.is_empty() && options.iteration.is_none() {
        let deadline = started + budget(options);
        if let Err((violation, repro)) =
            super::forward_proc::run(options.seed, deadline, &receiver, &mut report)
        {
            report.fail(Failure { violation, repro, saved: None });
        }
    }
    report
}

/// An event: a power cut landed inside a life (not at its end).
const CUT_IN_LIFE: &str = "forward: power cut while ingesting/flushing/sending";
/// An event: a life ended with its process's death alone (no power cut).
const KILLED_IN_SIM: &str = "forward: a life ended by a process kill (page cache kept)";
/// An event: a life took a snapshot (the next life loads series from it).
const SNAPSHOT_TAKEN: &str = "forward: a snapshot taken (the next life loads from it)";
/// An event: some sample arrived twice (the duplicates bound was exercised).
pub(crate) const RESENT: &str = "forward: a request sent again after a power cut";

/// Checks what the receiver got against what was acknowledged. A series' values grow with
/// every update (each is newer than all before it), and `acked` holds, per series, the
/// newest value acknowledged (`acked_as` says at which level, for the messages); every value
/// that arrived was issued (`issued`), and carries the timestamp of the update that wrote
/// it (`stamp`: a sample carries its series' newest update time, and each workload's
/// timestamps grow with its values). A value may arrive once more per snapshot load that
/// found it the series' value (`allowance`). Every acknowledged series must have arrived, its
/// newest arrival no older than its acknowledged value, and its last arrival its newest
/// (a series keeps its order, across shards and restarts: a value sent again after a crash
/// comes before the newer ones). Returns how many samples arrived more than once (and
/// records the event when any did).
pub(crate) fn check_arrivals(
    acked: &BTreeMap<u64, f64>,
    got: &BTreeMap<u64, Vec<(i64, f64)>>,
    issued: &dyn Fn(u64, f64) -> bool,
    stamp: &dyn Fn(u64, f64) -> i64,
    allowance: &Allowance,
    acked_as: &str,
    report: &mut Report,
) -> Result<usize, Violation> {
    report.series_forwarded_checked += acked.len() as u64;
    for (id, samples) in got {
        let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
        if let Some(v) = values.iter().find(|&&v| !issued(*id, v)) {
            return Err(violation(
                Invariant::PrefixExactlyOnce,
                format!("series id={id} arrived as {values:?}: {v} was never written to it"),
            ));
        }
        if let Some((t, v)) = samples.iter().find(|&&(t, v)| t != stamp(*id, v)) {
            return Err(violation(
                Invariant::PrefixExactlyOnce,
                format!(
                    "series id={id} arrived with {v} at time {t}, but the update that wrote it \
                     was at {}",
                    stamp(*id, *v)
                ),
            ));
        }
        let newest = values.iter().copied().fold(f64::MIN, f64::max);
        if values.last() != Some(&newest) {
            return Err(violation(
                Invariant::PrefixExactlyOnce,
                format!(
                    "series id={id} arrived out of order, as {values:?}: its last value is not \
                     its newest"
                ),
            ));
        }
    }
    for (id, value) in acked {
        match got.get(id) {
            Some(samples) if samples.iter().any(|s| s.1 >= *value) => {}
            Some(samples) => {
                let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
                return Err(violation(
                    Invariant::DurableSurvives,
                    format!(
                        "series id={id} arrived as {values:?}, without the value {value} \
                         acknowledged {acked_as} (nor a newer one)"
                    ),
                ));
            }
            None => {
                return Err(violation(
                    Invariant::DurableSurvives,
                    format!(
                        "series id={id} was acknowledged {acked_as} but never reached the \
                         receiver ({} of {} acknowledged series arrived)",
                        acked.keys().filter(|k| got.contains_key(k)).count(),
                        acked.len()
                    ),
                ));
            }
        }
    }
    // Each value's arrivals past the first, less those its loads allow.
    let mut dup = 0usize;
    for (id, samples) in got {
        let mut arrivals: BTreeMap<u64, usize> = BTreeMap::new();
        for s in samples {
            *arrivals.entry(s.1.to_bits()).or_default() += 1;
        }
        for (bits, n) in arrivals {
            let allowed = allowance.get(&(*id, bits)).copied().unwrap_or(0);
            dup += (n - 1).saturating_sub(allowed);
        }
    }
    if dup > 0 {
        report.event(RESENT);
    }
    Ok(dup)
}

/// Arrivals of a series' value allowed beyond the first, by `(series id, value bits)`: one
/// per open that loaded a snapshot while the series held that value (series loaded from a
/// snapshot count as changed at its LSN, and may be sent once more).
pub(crate) type Allowance = BTreeMap<(u64, u64), usize>;

/// The series id of a key `fwd{id="N"}`.
pub(crate) fn series_id(key: &SeriesKey) -> Option<u64> {
    key.labels().iter().find(|l| l.name() == "id").and_then(|l| l.value().parse().ok())
}

fn violation(invariant: Invariant, detail: String) -> Violation {
    Violation { invariant, detail }
}

fn iteration(seed: u64, rx: &Receiver, report: &mut Report) -> Result<(), Violation> {
    let sim = SimFs::new(seed);
    let fs: Arc<dyn Fs> = Arc::new(sim.clone());
    rx.reset(Some(sim.clone()));
    let mut rng = Rng::new(seed);
    let mut acked: BTreeMap<u64, f64> = BTreeMap::new();
    // Every value written to each series (values only grow: each update takes the next).
    let mut issued: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut next_value = 0u64;
    let mut next_id = 0u64;
    // Odd seeds run `Os`: batches become durable at a `sync` (every few batches), and a
    // power cut can take the log's tail, whose LSNs the next batches then take again; the
    // marker of a flush must not have claimed them (the flush syncs the log first).
    let os = seed % 2 == 1;
    // Under `Os`: batches acknowledged since the last `sync`, and how many.
    let mut written: Vec<(u64, f64)> = Vec::new();
    let mut unsynced_batches = 0u32;
    let engine = Config::default()
        .sync_policy(if os { SyncPolicy::Os } else { SyncPolicy::Always })
        .segment_bytes_max(8 << 10)
        // Spares written inline: an engine abandoned at a power cut leaves no thread that
        // would write into the next life's directory.
        .segment_fill(ingestor::SegmentFill::ZerosInline)
        .snapshot_interval(None)
        .final_snapshot(FinalSnapshot::Never);
    let mut forward = ForwardConfig::default();
    forward.destinations = vec![Destination::new("rx", rx.url()).expect("a valid destination")];
    forward.flush_interval = Duration::from_secs(3_600);
    forward.max_samples_per_request = MAX_SAMPLES;
    forward.backoff_min = Duration::from_millis(1);
    forward.backoff_max = Duration::from_millis(5);
    forward.request_timeout = Duration::from_secs(5);
    forward.segment_bytes = 4 << 10;
    // A small window, so that the duplicate bound below is tight enough to fail.
    forward.cursor_window = 2;
    // Samples that may arrive twice: per power cut, the window (and the request in flight)
    // of each shard the life ran.
    let mut bound = 0;
    let mut allowance = Allowance::new();
    for life in 0..LIVES {
        let last = life + 1 == LIVES;
        forward.shards = 1 + rng.below(MAX_SHARDS as u64) as usize;
        let (db, opened) =
            Ingestor::open_with(Arc::clone(&fs), Path::new("/data"), engine.clone(), &mut |_| {})
                .map_err(|e| {
                violation(
                    Invariant::CorruptionReported,
                    format!("life {life}: the ingestor did not open after a power cut: {e}"),
                )
            })?;
        // Series loaded from a snapshot count as changed at its LSN: each may be sent once
        // more with the value it has now (the docs' promise), beyond the cursor windows.
        // (Every series is counted, those replayed from the log too: a little lenient.)
        if opened.snapshot.is_some() {
            for v in db.memstore().all() {
                if let (Some(id), SeriesState::Gauge(g)) = (series_id(&v.key), &v.state) {
                    *allowance.entry((id, g.value.to_bits())).or_default() += 1;
                }
            }
        }
        let db = Arc::new(db);
        let fwd = Forwarder::start(
            Arc::clone(&db),
            Arc::clone(&fs),
            Path::new("/data/outbox"),
            forward.clone(),
        )
        .map_err(|e| {
            violation(
                Invariant::CorruptionReported,
                format!("life {life}: forwarding did not start after a power cut: {e}"),
            )
        })?;
        // A life ends with a power cut, or (one in four) with the process's death alone: the
        // page cache keeps what was written, and the next life, which recovers it, must sync
        // it before counting it durable (its own power cut would take it otherwise).
        let killed = !last && rng.chance(25);
        if !last && !killed {
            sim.arm_crash_at_op(1 + rng.below(400));
        }
        for _ in 0..30 {
            if sim.is_crashed() {
                break;
            }
            let n = 1 + rng.below(4);
            let batch: Vec<(u64, Update)> = (0..n)
                .map(|_| {
                    // A new series, or (one update in three, once there are some) a newer
                    // value of one of the last 16, so that a series' values must keep their
                    // order (recent series are the likeliest to wait in the outbox still).
                    let id = if next_id > 0 && rng.chance(33) {
                        next_id - rng.below(next_id.min(16))
                    } else {
                        next_id += 1;
                        next_id
                    };
                    next_value += 1;
                    let key = SeriesKey::new("fwd", [("id", id.to_string())]).expect("a valid key");
                    let value = next_value as f64;
                    issued.entry(id).or_default().push(value);
                    (
                        id,
                        Update::new(key, Timestamp(1_000 + next_value as i64), Op::GaugeSet(value))
                            .expect("valid"),
                    )
                })
                .collect();
            let updates: Vec<Update> = batch.iter().map(|(_, u)| u.clone()).collect();
            match db.ingest(&updates) {
                Ok(ack) if ack.level == AckLevel::Durable => {
                    for (id, u) in &batch {
                        acked.insert(*id, u.op.value().unwrap_or(f64::NAN));
                    }
                }
                Ok(_) => {
                    written.extend(
                        batch.iter().map(|(id, u)| (*id, u.op.value().unwrap_or(f64::NAN))),
                    );
                }
                Err(_) => {}
            }
            // Under `Os`, a sync every third batch makes what was written durable.
            unsynced_batches += 1;
            if os && unsynced_batches == 3 {
                unsynced_batches = 0;
                if db.sync().is_ok() {
                    acked.extend(written.drain(..));
                }
            }
            // A snapshot now and then (which compacts the log): the next life loads its
            // series, which must count as changed at its LSN and be sent once more.
            if rng.chance(8) && matches!(db.snapshot(), Ok(Some(_))) {
                acked.extend(written.drain(..));
                report.event(SNAPSHOT_TAKEN);
            }
            if rng.chance(40) {
                let _ = fwd.flush();
            }
            if rng.chance(30) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if last {
            fwd.flush().map_err(|e| {
                violation(Invariant::DurableSurvives, format!("the last flush failed: {e}"))
            })?;
            let until = Instant::now() + Duration::from_secs(20);
            while fwd.stats()[0].pending_requests > 0 {
                if Instant::now() > until {
                    return Err(violation(
                        Invariant::DurableSurvives,
                        format!("the outbox did not drain in 20 s: {:?}", fwd.stats()[0]),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            fwd.stop();
        } else {
            if sim.is_crashed() {
                report.event(CUT_IN_LIFE);
            }
            bound += fwd.stats()[0].shards * (forward.cursor_window + 1) * MAX_SAMPLES;
            if killed {
                // Nothing the dying process's threads do from here on reaches the disk (nor
                // the receiver: it refuses while the disk's process is dead).
                sim.kill();
                report.event(KILLED_IN_SIM);
            }
            fwd.stop_now();
            drop(fwd);
            drop(db);
            if killed {
                sim.revive();
            } else {
                sim.crash_random();
            }
            written.clear();
        }
    }
    let written_to = |id: u64, v: f64| issued.get(&id).is_some_and(|vs| vs.contains(&v));
    // Each update's timestamp is 1,000 ms past the epoch plus its value.
    let stamp = |_: u64, v: f64| 1_000 + v as i64;
    let got = rx.received();
    let dup = check_arrivals(&acked, &got, &written_to, &stamp, &allowance, "durable", report)?;
    if dup > bound {
        return Err(violation(
            Invariant::PrefixExactlyOnce,
            format!(
                "{dup} samples arrived twice, more than the cursor window's {} requests (and \
                 the one in flight) per shard and power cut ({bound}), beside each value a \
                 snapshot load allowed once more",
                forward.cursor_window
            ),
        ));
    }
    Ok(())
}
