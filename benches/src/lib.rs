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

/// Steal time: how long the host kept this virtual machine's CPUs from running (the `steal`
/// column of `/proc/stat`, summed over every CPU), sampled every 2 ms on a thread of its
/// own, so that a long batch can be checked for the host's part in it. Where the kernel
/// reports no steal time (no virtual machine, or a hypervisor that does not account it),
/// every batch shows none.
pub mod steal {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    /// How often the sampler reads `/proc/stat`.
    const PERIOD: Duration = Duration::from_millis(2);

    /// The steal time of every CPU so far, in clock ticks (`None` if `/proc/stat` cannot be
    /// read or has no steal column).
    #[must_use]
    pub fn ticks() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // "cpu  user nice system idle iowait irq softirq steal ...": the first line sums
        // the CPUs.
        stat.lines().next()?.split_whitespace().nth(8)?.parse().ok()
    }

    /// A running sampler; [`Sampler::stop`] returns what it saw.
    #[derive(Debug)]
    pub struct Sampler {
        stop: Arc<AtomicBool>,
        samples: Arc<Mutex<Vec<(Instant, u64)>>>,
        thread: JoinHandle<()>,
    }

    impl Sampler {
        /// Starts sampling.
        ///
        /// # Panics
        /// If the thread cannot be started.
        #[must_use]
        pub fn start() -> Sampler {
            let stop = Arc::new(AtomicBool::new(false));
            let samples = Arc::new(Mutex::new(Vec::new()));
            let thread = {
                let (stop, samples) = (Arc::clone(&stop), Arc::clone(&samples));
                std::thread::Builder::new()
                    .name("steal-sampler".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            let at = Instant::now();
                            if let Some(t) = ticks() {
                                samples.lock().unwrap().push((at, t));
                            }
                            std::thread::sleep(PERIOD);
                        }
                    })
                    .expect("the steal sampler's thread")
            };
            Sampler { stop, samples, thread }
        }

        /// Stops sampling (after one more sample, so that the last interval is covered).
        ///
        /// # Panics
        /// If the sampling thread panicked.
        #[must_use]
        pub fn stop(self) -> Samples {
            std::thread::sleep(PERIOD * 2);
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().expect("the steal sampler");
            let samples = std::mem::take(&mut *self.samples.lock().unwrap());
            Samples { samples, tick: tick() }
        }
    }

    /// One clock tick of `/proc/stat`.
    fn tick() -> Duration {
        Duration::from_secs_f64(1.0 / rustix::param::clock_ticks_per_second() as f64)
    }

    /// The steal time a [`Sampler`] saw, in order of time.
    #[derive(Debug, Clone)]
    pub struct Samples {
        samples: Vec<(Instant, u64)>,
        tick: Duration,
    }

    impl Samples {
        /// The steal time (summed over the CPUs) between the last sample taken at or before
        /// `from` and the first taken at or after `to`: an interval at most one sampling
        /// period wider on each side. `None` where the samples do not cover the interval.
        #[must_use]
        pub fn during(&self, from: Instant, to: Instant) -> Option<Duration> {
            let before = self.samples.iter().rev().find(|(at, _)| *at <= from)?.1;
            let after = self.samples.iter().find(|(at, _)| *at >= to)?.1;
            Some(self.tick * u32::try_from(after.saturating_sub(before)).unwrap_or(u32::MAX))
        }

        /// All the steal time the samples saw.
        #[must_use]
        pub fn total(&self) -> Duration {
            match (self.samples.first(), self.samples.last()) {
                (Some(first), Some(last)) => {
                    self.tick * u32::try_from(last.1.saturating_sub(first.1)).unwrap_or(u32::MAX)
                }
                _ => Duration::ZERO,
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn steal_during_an_interval_is_read_from_the_samples_around_it() {
            let t0 = Instant::now();
            let ms = Duration::from_millis;
            let samples = Samples {
                samples: vec![(t0, 10), (t0 + ms(2), 10), (t0 + ms(4), 13), (t0 + ms(6), 13)],
                tick: ms(10),
            };
            // From the sample at t0 (10 ticks) to the one at 4 ms (13).
            assert_eq!(samples.during(t0 + ms(1), t0 + ms(3)), Some(ms(30)));
            assert_eq!(samples.during(t0 + ms(4), t0 + ms(6)), Some(Duration::ZERO));
            // An interval the samples do not cover on either side.
            assert_eq!(samples.during(t0 + ms(5), t0 + ms(7)), None);
            assert_eq!(samples.total(), ms(30));
        }

        #[test]
        fn a_sampler_reads_the_steal_column_of_this_machine() {
            // Where /proc/stat has the column (Linux), the sampler sees it; its total never
            // goes backwards.
            if ticks().is_none() {
                return;
            }
            let samples = Sampler::start().stop();
            assert!(!samples.samples.is_empty(), "the sampler took no sample");
            assert!(samples.samples.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 <= w[1].0));
        }
    }
}
