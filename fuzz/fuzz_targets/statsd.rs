//! Arbitrary bytes as a StatsD/DogStatsD packet (read as the server reads it, lossily): the
//! parser must never panic, each non-blank line must be at most one of a bad line, an event
//! or a service check, every update must be valid, and a `|T` timestamp must be inside its
//! window around the time of arrival.
#![no_main]

use ingestor_protocols::statsd::{MAX_AHEAD_MS, MAX_BEHIND_MS, Packet, parse_packet};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Packet { updates, errors, events, service_checks } = parse_packet(&text, NOW);
    let lines = text.split('\n').count();
    let nonblank = text.split('\n').filter(|l| !l.trim().is_empty()).count();
    assert!(errors.len() + events + service_checks <= nonblank);
    for e in &errors {
        assert!(e.line >= 1 && e.line <= lines && !e.reason.is_empty());
    }
    for u in &updates {
        assert!(u.op.validate().is_ok());
        assert!((NOW - MAX_BEHIND_MS..=NOW + MAX_AHEAD_MS).contains(&u.timestamp.0));
    }
});
