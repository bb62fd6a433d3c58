//! Line protocol through a cache of the series it names, by their text.
//!
//! Agents send the same series again and again (every scrape, every flush). Building and
//! validating a [`SeriesKey`] for each field of each line is most of what parsing costs, so
//! [`parse_body_cached`] remembers, for the text of a line's measurement and tags and the
//! text of a field key, the series they make. A line whose every field is known is read
//! without building anything: its values and timestamp are parsed and looked up. Any line
//! that is new, or unusual (a string field, a repeated field, anything that fails), goes
//! through [`crate::line::parse_body`]'s own line parser, so the two agree on every input:
//! same updates, same errors.
//!
//! Each cached series can carry a value of the caller's (the server keeps the engine's
//! handle for the series there, to ingest by handle).
//!
//! ```
//! use ingestor_protocols::line::Precision;
//! use ingestor_protocols::line_cache::{SeriesCache, parse_body_cached};
//!
//! let mut cache: SeriesCache<u32> = SeriesCache::new(1_000);
//! let mut points = Vec::new();
//! parse_body_cached("cpu,host=a usage=1.5 1\ncpu,host=a usage=2 2", Precision::S, 0, &mut cache, &mut points)?;
//! assert_eq!(points.len(), 2);
//! assert_eq!(points[0].slot, points[1].slot); // one series, built once
//! assert_eq!(cache.key(points[1].slot).to_string(), r#"cpu_usage{host="a"}"#);
//! assert_eq!(points[1].value, 2.0);
//! cache.set_value(points[0].slot, 7);
//! assert_eq!(cache.value(points[1].slot), Some(7));
//! # Ok::<(), ingestor_protocols::line::LineError>(())
//! ```

use std::collections::HashMap;

use ingestor_codec::{Op, SeriesKey, Timestamp, Update};

use crate::line::{
    Cursor, LineError, Precision, lines, parse_field_value, parse_line, parse_timestamp,
};

/// One value of a body read through the cache: a gauge set of the series in `slot`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachedPoint {
    /// The series' slot in the cache ([`SeriesCache::key`]); valid until the next body is
    /// parsed through the cache (a full cache is emptied when a body starts).
    pub slot: u32,
    /// When, in milliseconds.
    pub timestamp: Timestamp,
    /// The value the series is set to.
    pub value: f64,
}

impl CachedPoint {
    /// The update it stands for.
    #[must_use]
    pub fn op(&self) -> Op {
        Op::GaugeSet(self.value)
    }
}

/// The series bodies named, by the text that named them, each with an optional value of the
/// caller's. Bounded: when it holds `capacity` series as a body starts, it is emptied.
#[derive(Debug)]
pub struct SeriesCache<V> {
    /// `<measurement and tags as written> <field key as written>` to a slot.
    by_text: HashMap<Box<str>, u32>,
    slots: Vec<(SeriesKey, Option<V>)>,
    capacity: usize,
    /// Times the cache was emptied.
    generation: u64,
    scratch: String,
}

impl<V: Copy> SeriesCache<V> {
    /// An empty cache that holds about `capacity` series.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        SeriesCache {
            by_text: HashMap::new(),
            slots: Vec::new(),
            capacity,
            generation: 0,
            scratch: String::new(),
        }
    }

    /// Series cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// How many times the cache was emptied: slots of an older generation are gone.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The series in `slot`.
    ///
    /// # Panics
    /// On a slot this cache did not give out in its current generation.
    #[must_use]
    pub fn key(&self, slot: u32) -> &SeriesKey {
        &self.slots[slot as usize].0
    }

    /// The caller's value for the series in `slot`, if set.
    #[must_use]
    pub fn value(&self, slot: u32) -> Option<V> {
        self.slots.get(slot as usize).and_then(|s| s.1)
    }

    /// Sets the caller's value for the series in `slot`.
    pub fn set_value(&mut self, slot: u32, value: V) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.1 = Some(value);
        }
    }

    /// Forgets every caller's value (the series stay cached).
    pub fn forget_values(&mut self) {
        for s in &mut self.slots {
            s.1 = None;
        }
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.by_text.clear();
        self.slots.clear();
        self.generation += 1;
    }

    fn text(scratch: &mut String, series: &str, field: &str) {
        scratch.clear();
        scratch.push_str(series);
        scratch.push(' ');
        scratch.push_str(field);
    }

    fn lookup(&mut self, series: &str, field: &str) -> Option<u32> {
        Self::text(&mut self.scratch, series, field);
        self.by_text.get(self.scratch.as_str()).copied()
    }

    fn insert(&mut self, series: &str, field: &str, key: SeriesKey) -> u32 {
        Self::text(&mut self.scratch, series, field);
        let text: Box<str> = self.scratch.as_str().into();
        if let Some(&slot) = self.by_text.get(&text) {
            return slot;
        }
        let slot = self.slots.len() as u32;
        self.slots.push((key, None));
        self.by_text.insert(text, slot);
        slot
    }
}

/// Parses a body as [`crate::line::parse_body`] does (the same updates, the same errors),
/// appending its values to `out` as slots of `cache`. All or nothing: on an error, what was
/// appended is not to be used.
///
/// # Errors
/// The first bad line, as [`crate::line::parse_body`] names it.
pub fn parse_body_cached<V: Copy>(
    body: &str,
    precision: Precision,
    now_ms: i64,
    cache: &mut SeriesCache<V>,
    out: &mut Vec<CachedPoint>,
) -> Result<(), LineError> {
    if cache.len() >= cache.capacity {
        cache.clear();
    }
    let mut updates: Vec<Update> = Vec::new();
    let mut raw_keys: Vec<&str> = Vec::new();
    for (number, line) in lines(body) {
        if known_line(line, precision, now_ms, cache, out) {
            continue;
        }
        updates.clear();
        raw_keys.clear();
        parse_line(line, precision, now_ms, &mut updates, Some(&mut raw_keys))
            .map_err(|reason| LineError { line: number, reason })?;
        let series = series_text(line);
        for (update, raw_key) in updates.drain(..).zip(&raw_keys) {
            let Op::GaugeSet(value) = update.op else {
                unreachable!("line protocol gives gauge sets only")
            };
            let slot = cache.insert(series, raw_key, update.key);
            out.push(CachedPoint { slot, timestamp: update.timestamp, value });
        }
    }
    Ok(())
}

/// The measurement and tags of a line, as written: up to the first unescaped space.
fn series_text(line: &str) -> &str {
    let mut cur = Cursor { s: line, pos: 0 };
    cur.escaped_token(b" ").0
}

/// Reads a line whose every field is cached, appending its points; `false` (appending
/// nothing) when it is not such a line, or anything about it is unusual: the full parser
/// then reads it, and reports what is wrong.
fn known_line<V: Copy>(
    line: &str,
    precision: Precision,
    now_ms: i64,
    cache: &mut SeriesCache<V>,
    out: &mut Vec<CachedPoint>,
) -> bool {
    let mut cur = Cursor { s: line, pos: 0 };
    let (series, stop) = cur.escaped_token(b" ");
    if stop.is_none() || series.is_empty() {
        return false;
    }
    cur.skip_spaces();
    let mark = out.len();
    let give_up = |out: &mut Vec<CachedPoint>| {
        out.truncate(mark);
        false
    };
    loop {
        let (raw_key, stop) = cur.escaped_token(b",= ");
        if raw_key.is_empty() || stop != Some(b'=') {
            return give_up(out);
        }
        cur.pos += 1;
        if cur.peek() == Some(b'"') {
            return give_up(out);
        }
        let raw = cur.raw_token(b", ");
        let Some(slot) = cache.lookup(series, raw_key) else { return give_up(out) };
        let value = match parse_field_value(raw_key, raw) {
            Ok(v) if v.is_finite() => v,
            _ => return give_up(out),
        };
        // A field repeated, or two that name one series: the full parser keeps one.
        if out[mark..].iter().any(|p| p.slot == slot || cache.key(p.slot) == cache.key(slot)) {
            return give_up(out);
        }
        out.push(CachedPoint { slot, timestamp: Timestamp(0), value });
        if cur.peek() == Some(b',') {
            cur.pos += 1;
        } else {
            break;
        }
    }
    cur.skip_spaces();
    let timestamp = if cur.at_end() {
        precision.default_time(now_ms)
    } else {
        let Ok(ms) = parse_timestamp(cur.raw_token(b" "), precision) else {
            return give_up(out);
        };
        cur.skip_spaces();
        if !cur.at_end() {
            return give_up(out);
        }
        ms
    };
    for p in &mut out[mark..] {
        p.timestamp = Timestamp(timestamp);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::parse_body;

    const NOW: i64 = 1_700_000_000_000;

    /// What the cached parse gives, as updates.
    fn cached(
        body: &str,
        precision: Precision,
        now: i64,
        cache: &mut SeriesCache<u8>,
    ) -> Result<Vec<Update>, LineError> {
        let mut out = Vec::new();
        parse_body_cached(body, precision, now, cache, &mut out)?;
        Ok(out
            .iter()
            .map(|p| Update { key: cache.key(p.slot).clone(), timestamp: p.timestamp, op: p.op() })
            .collect())
    }

    #[test]
    fn the_cached_parse_agrees_with_the_full_one_on_every_input() {
        let mut rng = ingestor_testkit::Rng::new(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: usize| rng.index(n);
        // Pieces that recombine into valid, near-valid and broken lines over a few series,
        // so that the cache is hit, missed and fooled.
        // Backslashes before what they do not escape, non-printable characters, tabs, stray
        // `\r`s, empty tag values and `=` in them are the reference decoder's edge cases.
        let series = [
            "m",
            "m,a=1",
            "m,a=1,b=2",
            "m\\ x,a=1",
            "n,a=x\\,y",
            "m,a=1\\ ",
            "m,=1",
            "",
            "m,a=\\\\",
            "m,a=\\\\\\ x",
            "m\\\\,a=1",
            "m\\=,a=1",
            "m,a\\\\=1",
            "m,a=\\\u{b}",
            "m\u{b},a=1",
            "\tm",
            "m\r",
            "m,a=",
            "m,a=1=2",
            "#m",
        ];
        let fields = [
            "f\\\\=1",
            "f\\\\\\==1",
            "f\\\\\\ =1",
            "\tv=1",
            "v=1\t",
            "v=+1",
            "v=1\r",
            "v=1",
            "v=2i",
            "w=t",
            "v=1,v=2",
            "v=1,w=3",
            "x.y=1,x_y=2",
            "v=\"s\"",
            "v=",
            "v=1e999",
            "=1",
            "v",
        ];
        let stamps =
            ["", " 5", " -3", " x", " 5 6", "  9", " +5", " \r5", " 5\t", " 9223372037", "\r"];
        let mut cache = SeriesCache::new(64);
        for round in 0..30_000 {
            let lines: Vec<String> = (0..1 + next(3))
                .map(|_| {
                    format!(
                        "{} {}{}",
                        series[next(series.len())],
                        fields[next(fields.len())],
                        stamps[next(stamps.len())]
                    )
                })
                .collect();
            let body = lines.join(["\n", "\r\n"][next(2)]);
            // Seconds too, with a time of arrival that is not a whole second.
            let (precision, now) =
                if round % 3 == 0 { (Precision::S, NOW + 789) } else { (Precision::Ns, NOW) };
            let want = parse_body(&body, precision, now);
            let got = cached(&body, precision, now, &mut cache);
            assert_eq!(got, want, "round {round}: {body:?}");
        }
    }

    #[test]
    fn known_series_are_built_once_and_the_cache_is_bounded() {
        let mut cache: SeriesCache<u8> = SeriesCache::new(3);
        let mut out = Vec::new();
        parse_body_cached("a v=1,w=2\nb v=3", Precision::S, 0, &mut cache, &mut out).unwrap();
        assert_eq!(cache.len(), 3);
        let first: Vec<u32> = out.iter().map(|p| p.slot).collect();
        out.clear();
        parse_body_cached("a v=4,w=5\nb v=6", Precision::S, 0, &mut cache, &mut out).unwrap();
        // Full as the body started: emptied, then filled again.
        assert_eq!(cache.generation(), 1);
        assert_eq!(cache.len(), 3);
        out.clear();
        cache.set_value(0, 9);
        parse_body_cached("a w=5 7", Precision::S, 0, &mut cache, &mut out).unwrap();
        assert_eq!(cache.generation(), 2, "3 series is the capacity: emptied again");
        assert_eq!(first.len(), 3);
        assert_eq!(cache.value(0), None);
        assert_eq!(out[0].timestamp, Timestamp(7_000));
    }
}
