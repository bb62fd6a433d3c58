//! StatsD and DogStatsD packets in, validated ingestor updates out.
//!
//! A packet holds metrics separated by `\n` (a `\r` before it is ignored), each
//! `name:value|type[|@rate][|#tag:value,tag:value]`:
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
//! - `s` (sets) is refused, as are DogStatsD events (`_e{...`) and service checks (`_sc|...`).
//!
//! DogStatsD tags become labels; a tag without `:` becomes a label with the value `true`, so
//! that the tag is kept rather than silently lost, and a tag with an empty value is dropped. A
//! value may be several values separated by `:` (DogStatsD 1.1: `name:1:2:3|d`), one update
//! each. Other DogStatsD sections that start with a letter (`|c:` container id, `|T` timestamp,
//! `|e:` external data, `|card:` cardinality) are accepted and ignored: every update is
//! stamped with the time the packet arrived.
//!
//! Names are sanitized as in [`crate::line`]: `api.requests` is `api_requests`, tag `k.x` is the
//! label `k_x`. A bad line is reported with its 1-based number and never stops the others, and
//! a line gives all its updates or none.

use std::fmt;

use ingestor_codec::{Op, SeriesKey, Timestamp, Update};

use crate::line::{parse_decimal, quoted, sanitize_label_name, sanitize_metric_name};

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

/// Parses one UDP packet: metrics separated by '\n'; good lines give updates, bad lines give
/// errors (a bad line never stops the others). Every update is stamped `now_ms`.
pub fn parse_packet(packet: &str, now_ms: i64) -> (Vec<Update>, Vec<StatsdError>) {
    let mut updates = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in packet.split('\n').enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line, Timestamp(now_ms)) {
            Ok(mut some) => updates.append(&mut some),
            Err(reason) => errors.push(StatsdError { line: index + 1, reason }),
        }
    }
    (updates, errors)
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

/// Parses one non-blank line, trimmed, into all of its updates.
fn parse_line(line: &str, timestamp: Timestamp) -> Result<Vec<Update>, String> {
    if line.starts_with("_e{") || line.starts_with("_sc|") {
        return Err("DogStatsD events and service checks are not supported".to_string());
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
        } else if section.starts_with(|c: char| c.is_ascii_alphabetic()) {
            // A DogStatsD extension this ingestor has no use for; see the module docs.
        } else if section.is_empty() {
            return Err(at("empty section between two '|'".to_string()));
        } else {
            return Err(at(format!("unexpected section {}", quoted(section))));
        }
    }

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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    /// The updates of a packet that must parse cleanly, as (series, op).
    fn ok(packet: &str) -> Vec<(String, Op)> {
        let (updates, errors) = parse_packet(packet, NOW);
        assert_eq!(errors, [], "{packet:?}");
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
        let (updates, errors) = parse_packet(packet, NOW);
        assert_eq!(updates, [], "{packet:?}");
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
        let (updates, errors) = parse_packet(packet, NOW);
        let got: Vec<(String, Op)> = updates.iter().map(|u| (u.key.to_string(), u.op)).collect();
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
        assert_eq!(
            one("m:1|c|c:abc123|T1656581400|e:it-false,cn-x|card:low").1,
            Op::CounterAdd(1.0)
        );
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
            ("_e{5,4}:title|text", "DogStatsD events and service checks are not supported"),
            ("_sc|redis|0", "DogStatsD events and service checks are not supported"),
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
        let alphabet: Vec<char> = ":|@#,\n\r cgmshd0123456789.e+-_a{é".chars().collect();
        for round in 0..20_000 {
            let len = rng.below(40);
            let packet: String = if round % 2 == 0 {
                (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect()
            } else {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            let lines = packet.split('\n').count();
            let (updates, errors) = parse_packet(&packet, NOW);
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
            }
        }
    }
}
