//! StatsD and DogStatsD packets in, validated ingestor updates out.
//!
//! A packet holds metrics separated by `\n` (a `\r` before it is ignored), each
//! `name:value|type[|@rate][|#tag:value,tag:value][|T<unix seconds>]`:
//!
//! - `c`, a counter: adds `value / rate` (the sample rate is in (0, 1], default 1); the value
//!   must not be negative.
//! - `g`, a gauge: `value` sets it, but a value written with a sign (`+5`, `-5`) adds to it, as
//!   in Etsy's StatsD.
//! - `ms`, `h`, `d`: one histogram observation. A timer (`ms`) is observed in seconds
//!   (`320|ms` is 0.32), as Prometheus' statsd_exporter does, so that it lands in the default
//!   buckets, which are Prometheus' buckets in seconds; `h` and `d` are observed as given. A
//!   sample rate is checked but otherwise ignored for gauges and observations (one
//!   observation is recorded, not 1/rate of them).
//! - `s` (sets) is refused.
//!
//! DogStatsD tags become labels; a tag without `:` becomes a label with the value `true`, so
//! that the tag is kept rather than silently lost, and a tag with an empty value is dropped. A
//! value may be several values separated by `:` (DogStatsD 1.1: `name:1:2:3|d`), one update
//! each.
//!
//! # Timestamps
//!
//! An update is stamped with the time its packet arrived, unless the line carries
//! DogStatsD 1.3's `|T<unix seconds>` (as the Datadog clients' `gauge_with_timestamp` and
//! `count_with_timestamp` send it): then with that second, in milliseconds. A gauge keeps the
//! value with the latest timestamp, so a late line with an older `T` does not overwrite a newer
//! value. A bad timestamp (not a positive whole number of seconds, or given twice) makes the
//! line a bad line. So does an absurd one: more than [`MAX_AHEAD_MS`] (10 minutes) after the
//! packet's arrival, or more than [`MAX_BEHIND_MS`] (one hour) before it, the window Datadog's
//! own intake takes; such a line is refused, not stamped with another time, so that a value is
//! never filed at a moment it was not measured (and a gauge is not pinned by a far-future
//! stamp that every later value would be older than).
//!
//! # Events and service checks
//!
//! DogStatsD events (`_e{<title length>,<text length>}:<title>|<text>[|d:..|h:..|p:..|t:..|#..]`,
//! lengths in UTF-8 bytes) and service checks (`_sc|<name>|<status 0-3>[|d:..|h:..|#..|m:..]`)
//! are read, checked for that form, and counted in [`Packet::events`] and
//! [`Packet::service_checks`]: they are not samples, so they give no update, and a well-formed
//! one is not a bad line. A malformed one is.
//!
//! Other DogStatsD sections that start with a letter (`|c:` container id, `|e:` external
//! data, `|card:` cardinality) are accepted and ignored.
//!
//! Names are sanitized as in [`crate::line`]: `api.requests` is `api_requests`, tag `k.x` is the
//! label `k_x`. A bad line is reported with its 1-based number and never stops the others, and
//! a line gives all its updates or none.

use std::fmt;

use ingestor_codec::{Op, SeriesKey, Timestamp, Update};

use crate::line::{parse_decimal, quoted, sanitize_label_name, sanitize_metric_name};

/// How far after its packet's arrival a `|T` timestamp may be: 10 minutes, in milliseconds.
pub const MAX_AHEAD_MS: i64 = 10 * 60 * 1_000;

/// How far before its packet's arrival a `|T` timestamp may be: one hour, in milliseconds.
pub const MAX_BEHIND_MS: i64 = 60 * 60 * 1_000;

/// A line of a packet that could not be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsdError {
    /// The line's number in the packet, counting from 1 (blank lines count).
    pub line: usize,
    /// What is wrong with it, naming the metric when the line got that far.
    pub reason: String,
}

impl fmt::Display for StatsdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for StatsdError {}

/// What one packet held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Packet {
    /// The updates of its good metric lines, in order.
    pub updates: Vec<Update>,
    /// Its bad lines, in order (a bad line never stops the others).
    pub errors: Vec<StatsdError>,
    /// Well-formed DogStatsD events (`_e{...}`): read, counted, not stored.
    pub events: usize,
    /// Well-formed DogStatsD service checks (`_sc|...`): read, counted, not stored.
    pub service_checks: usize,
}

/// Parses one UDP packet: lines separated by '\n'; good metric lines give updates, events
/// and service checks are counted, bad lines give errors (a bad line never stops the others).
/// Every update is stamped `now_ms` (the packet's arrival), unless its line has a `|T`
/// timestamp.
pub fn parse_packet(packet: &str, now_ms: i64) -> Packet {
    let mut out = Packet::default();
    for (index, raw) in packet.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, now_ms) {
            Ok(Line::Metric(mut some)) => out.updates.append(&mut some),
            Ok(Line::Event) => out.events += 1,
            Ok(Line::ServiceCheck) => out.service_checks += 1,
            Err(reason) => out.errors.push(StatsdError { line: index + 1, reason }),
        }
    }
    out
}

/// What a good line is.
enum Line {
    Metric(Vec<Update>),
    Event,
    ServiceCheck,
}

/// The kind of metric a line's type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    /// `ms`: observed in seconds.
    Timer,
    Histogram,
}

/// A length in an event's header: decimal digits.
fn length(raw: &str) -> Option<usize> {
    raw.bytes().all(|b| b.is_ascii_digit()).then(|| raw.parse().ok()).flatten()
}

/// Checks an event line: `_e{<title length>,<text length>}:<title>|<text>` and optional
/// sections; the lengths are in bytes, the title is not empty.
fn parse_event(line: &str) -> Result<Line, String> {
    let bad = |why: &str| format!("malformed DogStatsD event: {why}");
    let rest = line.strip_prefix("_e{").unwrap_or(line);
    let Some((lengths, rest)) = rest.split_once("}:") else {
        return Err(bad("expected _e{<title length>,<text length>}:<title>|<text>"));
    };
    let (Some(title), Some(text)) =
        lengths.split_once(',').map_or((None, None), |(t, x)| (length(t), length(x)))
    else {
        return Err(bad(&format!("invalid lengths {}", quoted(lengths))));
    };
    if title == 0 {
        return Err(bad("the title is empty"));
    }
    let fits = rest.get(..title).is_some()
        && rest.as_bytes().get(title) == Some(&b'|')
        && rest.get(title + 1..title + 1 + text).is_some()
        && matches!(rest.as_bytes().get(title + 1 + text), None | Some(b'|'));
    if !fits {
        return Err(bad(&format!(
            "the title and text are not {title} and {text} bytes long, each followed by '|' or \
             the end"
        )));
    }
    Ok(Line::Event)
}

/// Checks a service check line: `_sc|<name>|<status 0 to 3>` and optional sections.
fn parse_service_check(line: &str) -> Result<Line, String> {
    let mut parts = line.splitn(4, '|').skip(1);
    let name = parts.next().unwrap_or("");
    let status = parts.next().unwrap_or("");
    if name.is_empty() {
        return Err("malformed DogStatsD service check: the name is empty".to_string());
    }
    if !matches!(status, "0" | "1" | "2" | "3") {
        return Err(format!(
            "malformed DogStatsD service check {}: status {} is not 0, 1, 2 or 3",
            quoted(name),
            quoted(status)
        ));
    }
    Ok(Line::ServiceCheck)
}

/// Reads a `|T` section's unix seconds, in milliseconds, within the window around `now_ms`.
fn parse_timestamp(raw: &str, now_ms: i64) -> Result<Timestamp, String> {
    let ms = raw
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .filter(|&s| s > 0)
        .and_then(|s| s.checked_mul(1_000))
        .ok_or_else(|| {
            format!("invalid timestamp {} (expected unix seconds, above 0)", quoted(raw))
        })?;
    if ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(format!(
            "timestamp {} is more than 10 minutes after the packet's arrival",
            quoted(raw)
        ));
    }
    if ms < now_ms.saturating_sub(MAX_BEHIND_MS) {
        return Err(format!(
            "timestamp {} is more than an hour before the packet's arrival",
            quoted(raw)
        ));
    }
    Ok(Timestamp(ms))
}

/// Parses one non-blank line, trimmed: a metric into all of its updates, or an event or a
/// service check.
fn parse_line(line: &str, now_ms: i64) -> Result<Line, String> {
    if line.starts_with("_e{") {
        return parse_event(line);
    }
    if line.starts_with("_sc|") {
        return parse_service_check(line);
    }
    let Some((head, rest)) = line.split_once('|') else {
        return Err(format!("{}: expected name:value|type, found no '|'", quoted(line)));
    };
    let Some((name, values)) = head.split_once(':') else {
        return Err(format!(
            "{}: expected name:value|type, found no ':' before the '|'",
            quoted(line)
        ));
    };
    if name.is_empty() {
        return Err("the metric name is empty".to_string());
    }
    let at = |reason: String| format!("metric {}: {reason}", quoted(name));

    let mut sections = rest.split('|');
    let kind = match sections.next().unwrap_or("") {
        "c" => Kind::Counter,
        "g" => Kind::Gauge,
        "ms" => Kind::Timer,
        "h" | "d" => Kind::Histogram,
        "s" => return Err(at("sets (type s) are not supported".to_string())),
        other => {
            return Err(at(format!("unknown type {} (expected c, g, ms, h or d)", quoted(other))));
        }
    };

    let mut rate: Option<f64> = None;
    let mut tags: Option<&str> = None;
    let mut timestamp: Option<Timestamp> = None;
    for section in sections {
        if let Some(raw) = section.strip_prefix('@') {
            if rate.is_some() {
                return Err(at("more than one sample rate".to_string()));
            }
            match parse_decimal(raw) {
                Some(r) if r > 0.0 && r <= 1.0 => rate = Some(r),
                _ => {
                    return Err(at(format!(
                        "invalid sample rate {} (expected a number in (0, 1])",
                        quoted(raw)
                    )));
                }
            }
        } else if let Some(raw) = section.strip_prefix('#') {
            if tags.is_some() {
                return Err(at("more than one tag section".to_string()));
            }
            tags = Some(raw);
        } else if let Some(raw) = section.strip_prefix('T') {
            if timestamp.is_some() {
                return Err(at("more than one timestamp".to_string()));
            }
            timestamp = Some(parse_timestamp(raw, now_ms).map_err(at)?);
        } else if section.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // A DogStatsD extension this ingestor has no use for; see the module docs.
        } else if section.is_empty() {
            return Err(at("empty section between two '|'".to_string()));
        } else {
            return Err(at(format!("unexpected section {}", quoted(section))));
        }
    }
    let timestamp = timestamp.unwrap_or(Timestamp(now_ms));

    let mut labels: Vec<(String, &str)> = Vec::new();
    for tag in tags.unwrap_or("").split(',').filter(|t| !t.is_empty()) {
        let (key, value) = tag.split_once(':').unwrap_or((tag, "true"));
        if key.is_empty() {
            return Err(at(format!("tag {} has an empty name", quoted(tag))));
        }
        if !value.is_empty() {
            labels.push((sanitize_label_name(key), value));
        }
    }
    let key =
        SeriesKey::new(&sanitize_metric_name(name), labels.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(|e| at(e.to_string()))?;

    let mut out = Vec::new();
    for raw in values.split(':') {
        let Some(value) = parse_decimal(raw) else {
            return Err(at(format!("invalid value {}", quoted(raw))));
        };
        let signed = raw.starts_with(['+', '-']);
        let op = match kind {
            Kind::Counter if value < 0.0 => {
                return Err(at(format!(
                    "counter value {} is negative; a counter only goes up",
                    quoted(raw)
                )));
            }
            Kind::Counter => Op::CounterAdd(value / rate.unwrap_or(1.0)),
            Kind::Gauge if signed => Op::GaugeAdd(value),
            Kind::Gauge => Op::GaugeSet(value),
            Kind::Timer => Op::HistogramObserve(value / 1000.0),
            Kind::Histogram => Op::HistogramObserve(value),
        };
        out.push(Update::new(key.clone(), timestamp, op).map_err(|e| at(e.to_string()))?);
    }
    Ok(Line::Metric(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    /// The updates of a packet that must parse cleanly, as (series, op).
    fn ok(packet: &str) -> Vec<(String, Op)> {
        let Packet { updates, errors, events, service_checks } = parse_packet(packet, NOW);
        assert_eq!(errors, [], "{packet:?}");
        assert_eq!((events, service_checks), (0, 0), "{packet:?}");
        assert!(updates.iter().all(|u| u.timestamp == Timestamp(NOW)));
        updates.into_iter().map(|u| (u.key.to_string(), u.op)).collect()
    }

    fn one(packet: &str) -> (String, Op) {
        let mut all = ok(packet);
        assert_eq!(all.len(), 1, "{packet:?}: {all:?}");
        all.remove(0)
    }

    /// The error of a packet of one bad line, as displayed.
    fn err(packet: &str) -> String {
        let Packet { updates, errors, events, service_checks } = parse_packet(packet, NOW);
        assert_eq!(updates, [], "{packet:?}");
        assert_eq!((events, service_checks), (0, 0), "{packet:?}");
        assert_eq!(errors.len(), 1, "{packet:?}: {errors:?}");
        errors[0].to_string()
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn every_type() {
        assert_eq!(one("hits:3|c"), (s("hits"), Op::CounterAdd(3.0)));
        assert_eq!(one("temp:21.5|g"), (s("temp"), Op::GaugeSet(21.5)));
        assert_eq!(one("lat:320|ms"), (s("lat"), Op::HistogramObserve(0.32)), "in seconds");
        assert_eq!(one("size:-2|h"), (s("size"), Op::HistogramObserve(-2.0)));
        assert_eq!(one("dist:1e3|d"), (s("dist"), Op::HistogramObserve(1000.0)));
    }

    #[test]
    fn sample_rate_scales_counters_only() {
        assert_eq!(one("hits:1|c|@0.1").1, Op::CounterAdd(10.0));
        assert_eq!(one("hits:3|c|@1").1, Op::CounterAdd(3.0));
        assert_eq!(one("lat:5|ms|@0.5").1, Op::HistogramObserve(0.005));
        assert_eq!(one("temp:5|g|@0.5").1, Op::GaugeSet(5.0));
        for bad in ["0", "1.5", "-0.5", "abc", "", "nan", "inf", "1e999"] {
            assert_eq!(
                err(&format!("hits:1|c|@{bad}")),
                format!(
                    "line 1: metric \"hits\": invalid sample rate {bad:?} (expected a number in (0, 1])"
                )
            );
        }
        assert_eq!(
            err("hits:1|c|@0.5|@0.5"),
            r#"line 1: metric "hits": more than one sample rate"#
        );
    }

    #[test]
    fn signed_gauges_add() {
        assert_eq!(one("g:+5|g").1, Op::GaugeAdd(5.0));
        assert_eq!(one("g:-5|g").1, Op::GaugeAdd(-5.0));
        assert_eq!(one("g:-0.5e1|g").1, Op::GaugeAdd(-5.0));
        assert_eq!(one("g:5|g").1, Op::GaugeSet(5.0));
        assert_eq!(one("g:0|g").1, Op::GaugeSet(0.0));
    }

    #[test]
    fn counters_never_go_down() {
        assert_eq!(one("c:+2|c").1, Op::CounterAdd(2.0));
        assert_eq!(
            err("c:-1|c"),
            r#"line 1: metric "c": counter value "-1" is negative; a counter only goes up"#
        );
        assert_eq!(
            err("c:1e308|c|@0.001"),
            r#"line 1: metric "c": counter_add value inf is invalid: values must be finite (no NaN or infinity)"#
        );
    }

    #[test]
    fn dogstatsd_tags_become_labels() {
        assert_eq!(
            one("api.requests:1|c|#env:prod,role:web:1,canary"),
            (s(r#"api_requests{canary="true",env="prod",role="web:1"}"#), Op::CounterAdd(1.0))
        );
        // Tags before the rate, sanitized names, an empty value dropped, stray commas skipped.
        assert_eq!(one("m:2|c|#k.x:v,empty:,,|@0.5"), (s(r#"m{k_x="v"}"#), Op::CounterAdd(4.0)));
        assert_eq!(one("m:1|g|#").0, "m");
        assert_eq!(err("m:1|g|#:v"), r#"line 1: metric "m": tag ":v" has an empty name"#);
        assert_eq!(
            err("m:1|g|#__x:1"),
            r#"line 1: metric "m": label name "__x" is invalid: names starting with '__' are reserved"#
        );
        assert_eq!(
            err("m:1|g|#a:1,a:2"),
            r#"line 1: metric "m": label "a" appears more than once"#
        );
        assert_eq!(err("m:1|g|#a:1|#b:2"), r#"line 1: metric "m": more than one tag section"#);
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(one("api.requests-total:1|c").0, "api_requests_total");
        assert_eq!(one("5xx.errors:1|c").0, "_5xx_errors");
        // StatsD names cannot hold ':', which starts the value.
        assert_eq!(err("ns:rule:1|c"), r#"line 1: metric "ns": invalid value "rule""#);
    }

    #[test]
    fn several_values_per_line() {
        assert_eq!(
            ok("lat:1:2:3|d"),
            [
                (s("lat"), Op::HistogramObserve(1.0)),
                (s("lat"), Op::HistogramObserve(2.0)),
                (s("lat"), Op::HistogramObserve(3.0)),
            ]
        );
        // A line gives all its values or none.
        assert_eq!(err("lat:1:x:3|d"), r#"line 1: metric "lat": invalid value "x""#);
    }

    #[test]
    fn a_bad_line_never_stops_the_others() {
        let packet = "a:1|c\nb:oops|g\r\n\nc:2|ms\nd:1|s\ne:4|g\n";
        let Packet { updates, errors, .. } = parse_packet(packet, NOW);
        let got: Vec<(String, Op)> =
            updates.iter().map(|u| (u.key.to_string(), u.op.clone())).collect();
        assert_eq!(
            got,
            [
                (s("a"), Op::CounterAdd(1.0)),
                (s("c"), Op::HistogramObserve(0.002)),
                (s("e"), Op::GaugeSet(4.0))
            ]
        );
        assert_eq!(
            errors,
            [
                StatsdError { line: 2, reason: s(r#"metric "b": invalid value "oops""#) },
                StatsdError {
                    line: 5,
                    reason: s(r#"metric "d": sets (type s) are not supported"#)
                },
            ]
        );
    }

    #[test]
    fn blank_lines_whitespace_and_crlf() {
        assert_eq!(ok(""), []);
        assert_eq!(ok("\n\r\n  \n"), []);
        assert_eq!(ok("  a:1|c  \r\nb:2|g\r\n").len(), 2);
    }

    #[test]
    fn dogstatsd_extensions_are_ignored() {
        assert_eq!(one("m:1|c|c:abc123|e:it-false,cn-x|card:low").1, Op::CounterAdd(1.0));
        assert_eq!(err("m:1|c||#a:b"), r#"line 1: metric "m": empty section between two '|'"#);
        assert_eq!(err("m:1|c|9"), r#"line 1: metric "m": unexpected section "9""#);
    }

    #[test]
    fn malformed_lines_name_the_reason() {
        let cases = [
            ("hits", r#""hits": expected name:value|type, found no '|'"#),
            ("hits:1", r#""hits:1": expected name:value|type, found no '|'"#),
            ("hits|c", r#""hits|c": expected name:value|type, found no ':' before the '|'"#),
            (":1|c", "the metric name is empty"),
            ("hits:1|", r#"metric "hits": unknown type "" (expected c, g, ms, h or d)"#),
            ("hits:1|x", r#"metric "hits": unknown type "x" (expected c, g, ms, h or d)"#),
            ("hits:1|C", r#"metric "hits": unknown type "C" (expected c, g, ms, h or d)"#),
            ("hits:|c", r#"metric "hits": invalid value """#),
            ("hits:NaN|g", r#"metric "hits": invalid value "NaN""#),
            ("hits:inf|g", r#"metric "hits": invalid value "inf""#),
            ("hits:1,5|g", r#"metric "hits": invalid value "1,5""#),
            (
                "hits:1e999|g",
                r#"metric "hits": gauge_set value inf is invalid: values must be finite (no NaN or infinity)"#,
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), format!("line 1: {reason}"), "{line:?}");
        }
    }

    /// The updates of a one-line packet that must parse, with their timestamps.
    fn stamped(packet: &str, now: i64) -> Vec<(Op, i64)> {
        let p = parse_packet(packet, now);
        assert_eq!(p.errors, [], "{packet:?}");
        p.updates.iter().map(|u| (u.op.clone(), u.timestamp.0)).collect()
    }

    /// The reason a one-line packet is refused.
    fn refused(packet: &str, now: i64) -> String {
        let p = parse_packet(packet, now);
        assert_eq!(p.updates, [], "{packet:?}");
        assert_eq!(p.errors.len(), 1, "{packet:?}");
        p.errors[0].reason.clone()
    }

    #[test]
    fn a_timestamp_section_stamps_the_line_in_seconds() {
        let now = 1_700_000_000_500;
        assert_eq!(stamped("g:5|g|T1699999990", now), [(Op::GaugeSet(5.0), 1_699_999_990_000)]);
        // Anywhere among the sections, with tags and a rate; every value of the line.
        assert_eq!(
            stamped("c:1:2|c|T1699999000|#a:b|@0.5", now),
            [(Op::CounterAdd(2.0), 1_699_999_000_000), (Op::CounterAdd(4.0), 1_699_999_000_000)]
        );
        let p = parse_packet("g:1|g|#env:prod|c:abc|card:low|T1700000000\nh:2|g", now);
        let got: Vec<(String, i64)> =
            p.updates.iter().map(|u| (u.key.to_string(), u.timestamp.0)).collect();
        assert_eq!(
            got,
            [(r#"g{env="prod"}"#.to_string(), 1_700_000_000_000), ("h".to_string(), now)]
        );
        // Without one: the packet's arrival.
        assert_eq!(stamped("g:5|g", now), [(Op::GaugeSet(5.0), now)]);
        // The window: 10 minutes ahead, one hour behind, both ends included.
        let now = 1_700_000_000_000;
        assert_eq!(stamped("g:1|g|T1700000600", now)[0].1, 1_700_000_600_000);
        assert_eq!(stamped("g:1|g|T1699996400", now)[0].1, 1_699_996_400_000);
        assert_eq!(
            refused("g:1|g|T1700000601", now),
            r#"metric "g": timestamp "1700000601" is more than 10 minutes after the packet's arrival"#
        );
        assert_eq!(
            refused("g:1|g|T1699996399", now),
            r#"metric "g": timestamp "1699996399" is more than an hour before the packet's arrival"#
        );
        assert!(refused("g:1|g|T9999999999", now).contains("more than 10 minutes"));
    }

    #[test]
    fn a_bad_timestamp_makes_a_bad_line() {
        for bad in [
            "",
            "0",
            "-5",
            "+1700000000",
            "1700000000.5",
            "17e8",
            "x",
            "1700000000 5",
            "9223372036854775808",
            // Seconds that overflow as milliseconds.
            "99999999999999999",
        ] {
            assert_eq!(
                refused(&format!("g:1|g|T{bad}"), NOW),
                format!("metric \"g\": invalid timestamp {bad:?} (expected unix seconds, above 0)"),
                "{bad:?}"
            );
        }
        assert_eq!(
            refused("g:1|g|T1700000000|T1700000000", NOW),
            r#"metric "g": more than one timestamp"#
        );
        // Only that line: the others of the packet are taken.
        let p = parse_packet("a:1|g|Tx\nb:2|g|T1700000000", NOW);
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].line, 1);
    }

    #[test]
    fn events_and_service_checks_are_counted_not_bad() {
        let packet = "_e{21,36}:An exception occurred|Cannot parse CSV file from 10.0.0.17|t:warning|#err_type:bad_file\n\
                      _e{5,0}:title|\n\
                      _e{3,6}:a|b|c\\nd|e|d:1700000000|h:host|p:low|s:src|k:key|c:cid|card:low\n\
                      _e{2,2}:é|ü\n\
                      hits:1|c\n\
                      _sc|Redis connection|2|#env:dev|m:Redis connection timed out after 10s\n\
                      _sc|app.ok|0\n\
                      _sc|x|3|d:1700000000|h:web|#a:b|m:msg|c:cid";
        let p = parse_packet(packet, NOW);
        assert_eq!(p.errors, []);
        assert_eq!((p.events, p.service_checks), (4, 3));
        assert_eq!(p.updates.len(), 1);
        assert_eq!(p.updates[0].key.to_string(), "hits");
    }

    #[test]
    fn malformed_events_and_service_checks_are_bad_lines() {
        let cases = [
            (
                "_e{5,4}title|text",
                "malformed DogStatsD event: expected _e{<title length>,<text length>}:<title>|<text>",
            ),
            ("_e{5}:title|text", r#"malformed DogStatsD event: invalid lengths "5""#),
            ("_e{x,4}:title|text", r#"malformed DogStatsD event: invalid lengths "x,4""#),
            ("_e{-1,4}:title|text", r#"malformed DogStatsD event: invalid lengths "-1,4""#),
            ("_e{0,4}:|text", "malformed DogStatsD event: the title is empty"),
            (
                "_e{6,4}:title|text",
                "malformed DogStatsD event: the title and text are not 6 and 4 bytes long, each followed by '|' or the end",
            ),
            (
                "_e{5,5}:title|text",
                "malformed DogStatsD event: the title and text are not 5 and 5 bytes long, each followed by '|' or the end",
            ),
            (
                "_e{5,3}:title|text",
                "malformed DogStatsD event: the title and text are not 5 and 3 bytes long, each followed by '|' or the end",
            ),
            // Lengths in bytes: `é` is two.
            (
                "_e{1,1}:é|x",
                "malformed DogStatsD event: the title and text are not 1 and 1 bytes long, each followed by '|' or the end",
            ),
            (
                "_e{99999999999999999999,1}:a|b",
                r#"malformed DogStatsD event: invalid lengths "99999999999999999999,1""#,
            ),
            ("_sc||0", "malformed DogStatsD service check: the name is empty"),
            ("_sc|a", r#"malformed DogStatsD service check "a": status "" is not 0, 1, 2 or 3"#),
            ("_sc|a|4", r#"malformed DogStatsD service check "a": status "4" is not 0, 1, 2 or 3"#),
            (
                "_sc|a|ok|m:x",
                r#"malformed DogStatsD service check "a": status "ok" is not 0, 1, 2 or 3"#,
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), format!("line 1: {reason}"), "{line:?}");
        }
    }

    /// A small deterministic generator (xorshift64*), so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet: Vec<char> = ":|@#,\n\r cgmshd0123456789.e+-_a{}éT".chars().collect();
        // Pieces that make events, service checks and timestamps likely.
        let pieces = ["_e{", "_sc|", "|T17000000", "}:", "|d:", "|#a:b", "_e{1,1}:a|b", "_sc|x|0"];
        for round in 0..30_000 {
            let len = rng.below(40);
            let packet: String = if round % 3 == 0 {
                (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect()
            } else if round % 3 == 1 {
                let mut p = String::new();
                for _ in 0..len / 4 {
                    if rng.below(2) == 0 {
                        p.push_str(pieces[rng.below(pieces.len())]);
                    } else {
                        p.push(alphabet[rng.below(alphabet.len())]);
                    }
                }
                p
            } else {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            let lines = packet.split('\n').count();
            let Packet { updates, errors, events, service_checks } = parse_packet(&packet, NOW);
            let nonblank = packet.split('\n').filter(|l| !l.trim().is_empty()).count();
            // Every non-blank line is one of: bad, an event, a service check, a metric.
            assert!(errors.len() + events + service_checks <= nonblank, "{packet:?}");
            for e in &errors {
                assert!(e.line >= 1 && e.line <= lines, "{packet:?}: {e}");
            }
            // Each line is either good or bad, never both.
            let mut bad: Vec<usize> = errors.iter().map(|e| e.line).collect();
            bad.dedup();
            assert_eq!(bad.len(), errors.len(), "{packet:?}");
            for u in updates {
                assert!(u.op.value().is_some_and(f64::is_finite), "{packet:?}");
                assert!(u.op.validate().is_ok());
                let t = u.timestamp.0;
                assert!((NOW - MAX_BEHIND_MS..=NOW + MAX_AHEAD_MS).contains(&t), "{packet:?}");
            }
        }
    }
}
