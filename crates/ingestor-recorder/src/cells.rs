//! The hot path: the atomics behind each `metrics` handle. No lock (except in the rare
//! [`CounterCell::absolute`]), no allocation, no I/O.

use std::cell::Cell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

/// Stripes of a counter: each thread adds to one of them, so that threads incrementing the
/// same counter do not fight over one cache line.
pub(crate) const SHARDS: usize = 8;

/// One cache line holding one stripe.
#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

thread_local! {
    /// This thread's stripe, assigned on first use (round robin).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn shard() -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS;
            s.set(i);
        }
        i
    })
}

/// A counter: its total since the recorder started, striped per thread, plus the total the
/// series had when it was registered (recovered from the ingestor).
pub(crate) struct CounterCell {
    shards: [Padded; SHARDS],
    /// The total the store held at registration (for `absolute`, which compares with it).
    base: u64,
    /// Serialises `absolute` calls (read the total, add the difference).
    absolute: Mutex<()>,
}

impl CounterCell {
    pub(crate) fn new(base: u64) -> CounterCell {
        CounterCell { shards: Default::default(), base, absolute: Mutex::new(()) }
    }

    /// Everything added since registration (increments and `absolute` raises), wrapping at
    /// 2^64.
    pub(crate) fn added(&self) -> u64 {
        self.shards.iter().fold(0u64, |acc, s| acc.wrapping_add(s.0.load(Relaxed)))
    }

    /// The counter's total: the recovered base plus everything added.
    pub(crate) fn total(&self) -> u64 {
        self.base.wrapping_add(self.added())
    }
}

impl metrics::CounterFn for CounterCell {
    #[inline]
    fn increment(&self, value: u64) {
        self.shards[shard()].0.fetch_add(value, Relaxed);
    }

    /// Raises the total to `value` if it is below: the difference is added like an
    /// increment, so that increments made meanwhile still count.
    fn absolute(&self, value: u64) {
        let _serial = self.absolute.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let total = self.total();
        if value > total {
            self.shards[shard()].0.fetch_add(value - total, Relaxed);
        }
    }
}

/// A gauge: its value as `f64` bits, and whether it changed since the last flush.
pub(crate) struct GaugeCell {
    bits: AtomicU64,
    dirty: AtomicBool,
}

impl GaugeCell {
    /// A gauge holding `value`; `dirty` when it must be logged even if never touched.
    pub(crate) fn new(value: f64, dirty: bool) -> GaugeCell {
        GaugeCell { bits: AtomicU64::new(value.to_bits()), dirty: AtomicBool::new(dirty) }
    }

    pub(crate) fn value(&self) -> f64 {
        f64::from_bits(self.bits.load(SeqCst))
    }

    /// The value if it changed since the last call (the flusher's read).
    pub(crate) fn take_changed(&self) -> Option<f64> {
        self.dirty.swap(false, SeqCst).then(|| self.value())
    }

    /// Marks the gauge changed again (its flush failed).
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, SeqCst);
    }

    #[inline]
    fn touched(&self) {
        // Sequentially consistent with the value's update: a flusher that cleared the flag
        // after this load reads the new value (see `take_changed`).
        if !self.dirty.load(SeqCst) {
            self.dirty.store(true, SeqCst);
        }
    }

    #[inline]
    fn add(&self, delta: f64) {
        let _ = self
            .bits
            .fetch_update(SeqCst, Relaxed, |b| Some((f64::from_bits(b) + delta).to_bits()));
        self.touched();
    }
}

impl metrics::GaugeFn for GaugeCell {
    #[inline]
    fn increment(&self, value: f64) {
        self.add(value);
    }

    #[inline]
    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    #[inline]
    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), SeqCst);
        self.touched();
    }
}

/// A histogram over fixed bounds: observations per bucket (not cumulative) and their sum
/// since the last flush, which takes (swaps to zero) them.
pub(crate) struct HistogramCell {
    pub(crate) bounds: Arc<[f64]>,
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Observations refused for not being finite (NaN, infinities).
    pub(crate) refused: AtomicU64,
}

impl HistogramCell {
    pub(crate) fn new(bounds: Arc<[f64]>) -> HistogramCell {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        HistogramCell {
            bounds,
            buckets,
            sum: AtomicU64::new(0f64.to_bits()),
            refused: AtomicU64::new(0),
        }
    }

    /// Adds the observations since the last take into `buckets` and `sum`; returns whether
    /// there were any.
    pub(crate) fn take_into(&self, buckets: &mut [u64], sum: &mut f64) -> bool {
        let mut any = false;
        for (acc, b) in buckets.iter_mut().zip(self.buckets.iter()) {
            let n = b.swap(0, Relaxed);
            any |= n > 0;
            *acc = acc.saturating_add(n);
        }
        *sum += f64::from_bits(self.sum.swap(0f64.to_bits(), Relaxed));
        any
    }
}

impl metrics::HistogramFn for HistogramCell {
    #[inline]
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    #[inline]
    fn record_many(&self, value: f64, count: usize) {
        if !value.is_finite() {
            self.refused.fetch_add(count as u64, Relaxed);
            return;
        }
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(count as u64, Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let add = value * count as f64;
        let _ =
            self.sum.fetch_update(Relaxed, Relaxed, |b| Some((f64::from_bits(b) + add).to_bits()));
    }
}

#[cfg(test)]
mod tests {
    use metrics::{CounterFn, GaugeFn, HistogramFn};

    use super::*;

    #[test]
    fn counter_stripes_add_up_across_threads() {
        let c = Arc::new(CounterCell::new(10));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.increment(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.added(), 60_000);
        assert_eq!(c.total(), 60_010);
    }

    #[test]
    fn counter_absolute_raises_never_lowers_and_keeps_increments() {
        let c = CounterCell::new(5);
        c.absolute(3); // below the recovered total: nothing
        assert_eq!(c.total(), 5);
        c.absolute(100);
        assert_eq!((c.total(), c.added()), (100, 95));
        c.increment(1);
        assert_eq!(c.total(), 101);
        c.absolute(50);
        assert_eq!(c.total(), 101);
    }

    #[test]
    fn gauge_changes_are_seen_once() {
        let g = GaugeCell::new(2.0, false);
        assert_eq!(g.take_changed(), None);
        g.increment(3.0);
        g.decrement(0.5);
        assert_eq!(g.take_changed(), Some(4.5));
        assert_eq!(g.take_changed(), None);
        g.set(-7.0);
        assert_eq!(g.take_changed(), Some(-7.0));
        g.mark_dirty();
        assert_eq!(g.take_changed(), Some(-7.0));
    }

    #[test]
    fn gauge_concurrent_adds_are_exact() {
        let g = Arc::new(GaugeCell::new(0.0, false));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    for _ in 0..5_000 {
                        g.increment(2.0);
                        g.decrement(1.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(g.value(), 20_000.0);
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive_and_taken_once() {
        let h = HistogramCell::new(Arc::from([1.0, 2.0, 4.0]));
        for v in [0.5, 1.0, 1.5, 2.0, 3.0, 100.0, f64::NAN, f64::INFINITY] {
            h.record(v);
        }
        h.record_many(4.0, 3);
        let (mut buckets, mut sum) = (vec![0; 4], 0.0);
        assert!(h.take_into(&mut buckets, &mut sum));
        assert_eq!(buckets, [2, 2, 4, 1]);
        assert_eq!(sum, 0.5 + 1.0 + 1.5 + 2.0 + 3.0 + 100.0 + 12.0);
        assert_eq!(h.refused.load(Relaxed), 2);
        // Taken: nothing more, and a second take adds nothing to what is carried.
        assert!(!h.take_into(&mut buckets, &mut sum));
        assert_eq!(buckets, [2, 2, 4, 1]);
    }
}
