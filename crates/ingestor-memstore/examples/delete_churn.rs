//! Deleting a million series of one metric (what a time-to-live expiry does), timed:
//! `cargo run --release -p ingestor-memstore --example delete_churn [SERIES]`.

use std::time::Instant;

use ingestor_codec::{Lsn, Op, SeriesKey, Timestamp};
use ingestor_memstore::{Memstore, MemstoreConfig, SlotPoint};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let store = Memstore::new(MemstoreConfig::default()).expect("a memstore");
    let keys: Vec<SeriesKey> = (0..n)
        .map(|i| {
            SeriesKey::new("churn", [("host", format!("h{}", i % 1_000)), ("i", i.to_string())])
                .expect("a valid key")
        })
        .collect();
    let refs: Vec<&SeriesKey> = keys.iter().collect();
    let (ids, _) = store.intern_all(&refs).expect("interned");
    let set: Vec<SlotPoint> = ids
        .iter()
        .map(|&series| SlotPoint { series, timestamp: Timestamp(1), op: Op::GaugeSet(1.0) })
        .collect();
    store.apply(Lsn(1), &set);
    let delete: Vec<SlotPoint> = ids
        .iter()
        .map(|&series| SlotPoint { series, timestamp: Timestamp(2), op: Op::Delete })
        .collect();
    let started = Instant::now();
    for (i, chunk) in delete.chunks(10_000).enumerate() {
        store.apply(Lsn(2 + i as u64), chunk);
    }
    let took = started.elapsed();
    assert_eq!(store.len(), 0);
    println!(
        "deleted {n} series in {:.3} s ({:.0} series/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
