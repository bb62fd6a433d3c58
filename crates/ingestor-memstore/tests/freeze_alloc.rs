//! A freeze in memory allocated ahead allocates nothing: the store's read lock (and the lock
//! of a caller who freezes under its own) is never held across a call into the allocator.

use ingestor_codec::{Lsn, Op, SeriesKey, Timestamp};
use ingestor_memstore::{Memstore, MemstoreConfig, SlotPoint};

fn store_with(series: usize) -> Memstore {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    let keys: Vec<SeriesKey> =
        (0..series).map(|i| SeriesKey::new("m", [("i", i.to_string())]).unwrap()).collect();
    let (ids, _) = store.intern_all(&keys.iter().collect::<Vec<_>>()).unwrap();
    let points: Vec<SlotPoint> = ids
        .iter()
        .map(|&series| SlotPoint { series, timestamp: Timestamp(1), op: Op::CounterAdd(1.0) })
        .collect();
    store.apply(Lsn(1), &points);
    store
}

#[test]
fn a_freeze_in_room_made_ahead_allocates_nothing() {
    // 5,000 series and symbols: full chunks and a partial one of each.
    let store = store_with(5_000);
    let room = store.freeze_room();
    let mut frozen = None;
    let made = allocation_counter::measure(|| frozen = Some(store.freeze_in(room)));
    assert_eq!(made.count_total, 0, "the freeze allocated: {made:?}");
    // The counter counts: a plain freeze allocates its room.
    let plain = allocation_counter::measure(|| drop(store.freeze()));
    assert!(plain.count_total >= 3, "{plain:?}");
    let frozen = frozen.expect("frozen");
    assert_eq!(frozen.len(), 5_000);
    assert_eq!(frozen.iter().count(), 5_000);
}

#[test]
fn a_room_the_store_outgrew_still_gives_a_whole_view() {
    let store = Memstore::new(MemstoreConfig::default()).unwrap();
    let room = store.freeze_room();
    // Far more than the room's slack of chunks.
    let grown = store_with(100 * 1024);
    drop(store);
    let frozen = grown.freeze_in(room);
    assert_eq!(frozen.len(), 100 * 1024);
    let mut seen: Vec<String> = frozen.iter().map(|r| r.key.to_string()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 100 * 1024);
}
