//! Arbitrary bytes as a line-protocol body: the parser must never panic, every update it
//! gives must be a finite gauge set, an error must name a line of the body, and the cached
//! parse (through one cache kept across inputs, so that it is hit, missed and fooled) must
//! give exactly what the full parse gives.
#![no_main]

use std::cell::RefCell;

use ingestor_codec::Op;
use ingestor_protocols::line::{Precision, parse_body};
use ingestor_protocols::line_cache::{SeriesCache, parse_body_cached};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static CACHE: RefCell<SeriesCache<u8>> = RefCell::new(SeriesCache::new(256));
}

const NOW: i64 = 1_700_000_000_789;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let precision = match data.first().map(|b| b % 4) {
        Some(0) => Precision::S,
        Some(1) => Precision::Ms,
        Some(2) => Precision::Us,
        _ => Precision::Ns,
    };
    let full = parse_body(body, precision, NOW);
    match &full {
        Ok(updates) => {
            for u in updates {
                assert!(matches!(u.op, Op::GaugeSet(v) if v.is_finite()));
            }
        }
        Err(e) => assert!(e.line >= 1 && e.line <= body.split('\n').count()),
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let mut points = Vec::new();
        let cached = parse_body_cached(body, precision, NOW, &mut cache, &mut points).map(|()| {
            points
                .iter()
                .map(|p| (cache.key(p.slot).clone(), p.timestamp, p.op()))
                .collect::<Vec<_>>()
        });
        let full = full.map(|u| u.into_iter().map(|u| (u.key, u.timestamp, u.op)).collect());
        assert_eq!(cached, full, "{body:?}");
    });
});
