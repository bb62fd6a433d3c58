//! Benchmarks of `ingestor` beside its peers and ceilings, run by `cargo xtask bench`
//! (`benches/report/`: the whole-workload driver that writes `target/bench-report.md` and
//! `.json`; `benches/peers.rs`: criterion micro-benchmarks). This library holds the standard
//! metrics data set both use, and the log workloads' ideal loop.
//!
//! ```
//! let keys = ingestor_benches::standard::keys(1_000);
//! assert_eq!(keys.len(), 1_000);
//! assert_eq!(keys[0].name(), "metric_000");
//! ```

/// The standard data set of the facade issue: series keys (100 metric names x 1,000 hosts x
/// 10 label combinations, 3 to 5 labels each) and a 50/40/10 mix of gauge sets, counter adds
/// and histogram observations.
pub mod standard {
    use ingestor::{Op, SeriesHandle, SeriesKey, Timestamp, Update};

    /// The first `n` keys of the standard data set.
    #[must_use]
    pub fn keys(n: usize) -> Vec<SeriesKey> {
        (0..n)
            .map(|i| {
                let name = format!("metric_{:03}", i % 100);
                let host = format!("host-{:04}", (i / 100) % 1000);
                let combo = i / 100_000;
                let mut labels =
                    vec![("host", host), ("env", ["prod", "staging"][combo % 2].to_string())];
                if combo % 3 != 0 {
                    labels.push(("region", format!("r{}", combo % 5)));
                }
                if combo % 2 == 1 {
                    labels.push(("shard", format!("{combo}")));
                }
                labels.push(("job", format!("job-{}", i % 7)));
                SeriesKey::new(&name, labels).expect("valid key")
            })
            .collect()
    }

    /// The operation series `i` gets in round `round`: its kind is fixed by its index (50%
    /// gauges, 40% counters, 10% histograms).
    #[must_use]
    pub fn op(i: usize, round: u64) -> Op {
        let v = ((i as u64).wrapping_mul(31).wrapping_add(round) % 1000) as f64;
        match i % 10 {
            0..=4 => Op::GaugeSet(v / 10.0),
            5..=8 => Op::CounterAdd(1.0),
            _ => Op::HistogramObserve(v / 1000.0),
        }
    }

    /// A batch of updates by key: the keys of `chunk`, which starts at place `first` of the
    /// data set, each with its operation of `round` ([`op`]), all at `timestamp`.
    #[must_use]
    pub fn key_batch(
        chunk: &[SeriesKey],
        first: usize,
        round: u64,
        timestamp: Timestamp,
    ) -> Vec<Update> {
        chunk
            .iter()
            .enumerate()
            .map(|(j, k)| Update { key: k.clone(), timestamp, op: op(first + j, round) })
            .collect()
    }

    /// The same by handle: the handles of `chunk`, from place `first` of the data set.
    #[must_use]
    pub fn handle_batch(
        chunk: &[SeriesHandle],
        first: usize,
        round: u64,
        timestamp: Timestamp,
    ) -> Vec<(SeriesHandle, Timestamp, Op)> {
        chunk.iter().enumerate().map(|(j, &h)| (h, timestamp, op(first + j, round))).collect()
    }

    /// Renders every series of `db` in the exposition format as `GET /metrics` does, from a
    /// frozen view in 64 KiB pieces (dropped); returns the bytes rendered.
    pub fn scrape_frozen(db: &ingestor::Ingestor) -> usize {
        let mut bytes = 0usize;
        db.memstore().freeze().expose(
            |_| true,
            64 << 10,
            |piece| {
                bytes += piece.len();
                true
            },
        );
        bytes
    }

    /// This process's resident memory in MiB (from `/proc/self/status`; 0 if unreadable).
    #[must_use]
    pub fn rss_mib() -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// The log workloads' ceiling: u32 length + CRC32C + payload through one 1 MiB buffer to one
/// file, read back the same way (the bench's W1, W2 and W5 ceilings, and the `wal_appends`
/// example's).
pub mod ideal {
    use std::io::{BufReader, Read, Write};
    use std::path::Path;

    /// Writes one record as the ideal loop frames it.
    ///
    /// # Panics
    /// If the write fails (a benchmark has nothing better to do).
    pub fn write_frame(out: &mut impl Write, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("a record under 4 GiB");
        out.write_all(&len.to_le_bytes()).unwrap();
        out.write_all(&crc32c::crc32c(payload).to_le_bytes()).unwrap();
        out.write_all(payload).unwrap();
    }

    /// Reads every record of the file at `path` back through a 1 MiB buffer, checking each
    /// one's checksum; returns how many there were.
    ///
    /// # Panics
    /// If the file cannot be opened or read, or a checksum does not match.
    #[must_use]
    pub fn read_all(path: &Path) -> u64 {
        let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
        let mut head = [0u8; 8];
        let mut buf = Vec::new();
        let mut n = 0;
        while input.read_exact(&mut head).is_ok() {
            let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            buf.resize(len, 0);
            input.read_exact(&mut buf).unwrap();
            assert_eq!(crc32c::crc32c(&buf), u32::from_le_bytes(head[4..].try_into().unwrap()));
            n += 1;
        }
        n
    }
}

/// One clock tick of the kernel's `/proc` counters (CPU time in `/proc/<pid>/stat`, steal
/// time in `/proc/stat`).
#[must_use]
pub fn clock_tick() -> std::time::Duration {
    std::time::Duration::from_secs_f64(1.0 / rustix::param::clock_ticks_per_second().max(1) as f64)
}

/// Steal time: how long the host kept this virtual machine's CPUs from running (the `steal`
/// column of `/proc/stat`, one count per CPU), sampled about every 2 ms on a thread of its
/// own, so that a long batch can be checked for the host's part in it. Where the kernel
/// reports no steal time (no virtual machine, or a hypervisor that does not account it),
/// every interval shows none; where `/proc/stat` cannot be read, none is known
/// ([`Samples::during`](steal::Samples::during) answers `None`).
pub mod steal {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// How long the sampler sleeps between two reads of `/proc/stat`.
    const PERIOD: Duration = Duration::from_millis(2);

    /// Each CPU's steal time so far, in clock ticks, from the `cpuN` lines of `/proc/stat`
    /// (`None` if the file cannot be read or a line has no steal column).
    #[must_use]
    pub fn ticks() -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // "cpuN user nice system idle iowait irq softirq steal ...", after the "cpu" line
        // that sums them.
        let per_cpu: Option<Vec<u64>> = stat
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu").is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(|l| l.split_whitespace().nth(8)?.parse().ok())
            .collect();
        per_cpu.filter(|v| !v.is_empty())
    }

    /// One read of `/proc/stat`: when it started and ended, and each CPU's steal ticks.
    #[derive(Debug, Clone)]
    struct Sample {
        from: Instant,
        to: Instant,
        ticks: Vec<u64>,
    }

    /// Reads `/proc/stat` once.
    fn sample() -> Option<Sample> {
        let from = Instant::now();
        let ticks = ticks()?;
        Some(Sample { from, to: Instant::now(), ticks })
    }

    /// A running sampler; [`Sampler::stop`] returns what it saw.
    #[derive(Debug)]
    pub struct Sampler {
        stop: Arc<AtomicBool>,
        samples: Arc<Mutex<Vec<Sample>>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Sampler {
        /// Takes a first sample, then goes on sampling on a thread of its own.
        ///
        /// # Panics
        /// If the thread cannot be started.
        #[must_use]
        pub fn start() -> Sampler {
            let stop = Arc::new(AtomicBool::new(false));
            // Before the caller's first interval begins.
            let samples = Arc::new(Mutex::new(sample().into_iter().collect::<Vec<_>>()));
            let thread = {
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                std::thread::Builder::new()
                    .name("steal-sampler".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(PERIOD);
                            // Sampled once more after the stop: the caller's last interval
                            // ended before it asked.
                            let last = stop.load(Ordering::Acquire);
                            if let Some(s) = sample() {
                                samples
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .push(s);
                            }
                            if last {
                                break;
                            }
                        }
                    })
                    .expect("the steal sampler's thread")
            };
            Sampler { stop, samples, thread: Some(thread) }
        }

        /// Stops sampling, after one more sample, and returns the samples.
        ///
        /// # Panics
        /// If the sampling thread panicked.
        #[must_use]
        pub fn stop(mut self) -> Samples {
            self.stop.store(true, Ordering::Release);
            if let Some(thread) = self.thread.take() {
                thread.join().expect("the steal sampler");
            }
            let samples = std::mem::take(
                &mut *self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            Samples { samples, tick: super::clock_tick() }
        }
    }

    impl Drop for Sampler {
        /// A sampler dropped without [`Sampler::stop`] (a panic in the measured code) ends
        /// its thread.
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
        }
    }

    /// The steal time a [`Sampler`] saw, in order of time.
    #[derive(Debug, Clone)]
    pub struct Samples {
        samples: Vec<Sample>,
        tick: Duration,
    }

    impl Samples {
        /// Each CPU's steal time from the last sample read wholly before `from` to the first
        /// read wholly after `to`: an interval widened to the samples around it (by about
        /// 2 ms on each side when the sampler runs on time; more when it waited for a CPU,
        /// as it does when the host holds them). `None` where the samples do not cover the
        /// interval (or `/proc/stat` could not be read).
        #[must_use]
        pub fn during(&self, from: Instant, to: Instant) -> Option<Vec<Duration>> {
            let before = self.samples.iter().rev().find(|s| s.to <= from)?;
            let after = self.samples.iter().find(|s| s.from >= to)?;
            Some(self.between(before, after))
        }

        /// How long, at least, the host held every CPU at once during the interval (see
        /// [`Samples::during`]): the steal time of the CPU with the least, less one clock
        /// tick for the counts' granularity and the widened interval. A pause of the whole
        /// machine shows here; steal on one CPU only does not (the measured thread may have
        /// run on the other).
        #[must_use]
        pub fn held_all(&self, from: Instant, to: Instant) -> Option<Duration> {
            let least = self.during(from, to)?.into_iter().min()?;
            Some(least.saturating_sub(self.tick))
        }

        /// Each CPU's steal time from `a` to `b`.
        fn between(&self, a: &Sample, b: &Sample) -> Vec<Duration> {
            a.ticks
                .iter()
                .zip(&b.ticks)
                .map(|(x, y)| self.tick * u32::try_from(y.saturating_sub(*x)).unwrap_or(u32::MAX))
                .collect()
        }

        /// All the steal time the samples saw, summed over the CPUs.
        #[must_use]
        pub fn total(&self) -> Duration {
            match (self.samples.first(), self.samples.last()) {
                (Some(first), Some(last)) => self.between(first, last).iter().sum(),
                _ => Duration::ZERO,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn at(t0: Instant, ms: u64, ticks: Vec<u64>) -> Sample {
            let from = t0 + Duration::from_millis(ms);
            Sample { from, to: from + Duration::from_micros(100), ticks }
        }

        #[test]
        fn steal_during_an_interval_is_read_from_the_samples_around_it() {
            let t0 = Instant::now();
            let ms = Duration::from_millis;
            let samples = Samples {
                samples: vec![
                    at(t0, 0, vec![10, 5]),
                    at(t0, 2, vec![10, 5]),
                    at(t0, 4, vec![13, 6]),
                    at(t0, 6, vec![13, 6]),
                ],
                tick: ms(10),
            };
            // From the sample read at 0 ms to the one read at 4 ms.
            assert_eq!(samples.during(t0 + ms(1), t0 + ms(3)), Some(vec![ms(30), ms(10)]));
            // The sample read at 2 ms ends after the interval starts: the one before it.
            assert_eq!(samples.during(t0 + ms(2), t0 + ms(3)), Some(vec![ms(30), ms(10)]));
            assert_eq!(samples.during(t0 + ms(5), t0 + ms(6)), Some(vec![ms(0), ms(0)]));
            // The end is not covered (no sample read after 7 ms), nor a start before the
            // first sample.
            assert_eq!(samples.during(t0 + ms(5), t0 + ms(7)), None);
            if let Some(early) = t0.checked_sub(ms(1)) {
                assert_eq!(samples.during(early, t0 + ms(3)), None);
            }
            assert_eq!(samples.total(), ms(40));
            // Every CPU held at least 10 ms (the least), less one tick.
            assert_eq!(samples.held_all(t0 + ms(1), t0 + ms(3)), Some(Duration::ZERO));
            let paused = Samples {
                samples: vec![at(t0, 0, vec![10, 5]), at(t0, 40, vec![14, 8])],
                tick: ms(10),
            };
            assert_eq!(paused.held_all(t0 + ms(1), t0 + ms(39)), Some(ms(20)));
            assert_eq!(paused.held_all(t0 + ms(1), t0 + ms(41)), None);
        }

        #[test]
        fn a_sampler_covers_what_ran_between_its_start_and_its_stop() {
            // Where /proc/stat has the column (Linux), every interval between the start and
            // the stop is covered, however briefly the sampler ran.
            if ticks().is_none() {
                return;
            }
            let sampler = Sampler::start();
            let (from, to) = (Instant::now(), Instant::now());
            let samples = sampler.stop();
            let steal = samples.during(from, to).expect("covered");
            assert_eq!(steal.len(), ticks().expect("read above").len(), "one figure per CPU");
        }
    }
}
