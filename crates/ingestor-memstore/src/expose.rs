//! The Prometheus text exposition format, version 0.0.4: what a Prometheus server scrapes.

use std::borrow::Cow;

use ingestor_codec::{MetricKind, SeriesKey};

use crate::state::SeriesState;

/// The Content-Type of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes series as exposition text. `series` must be sorted by metric name (callers sort);
/// consecutive series with the same metric name form one family.
///
/// Each family gets `# HELP` and `# TYPE` lines, then its samples, without timestamps:
/// - a counter is written as `<name>_total` (the name as is when it already ends in `_total`);
/// - a gauge under its name;
/// - a histogram as `<name>_bucket` with an `le` label per bound plus `le="+Inf"`, then
///   `<name>_sum` and `<name>_count`.
///
/// A family is really a run of series with the same exposed name and kind: a counter `x`
/// followed by a counter `x_total` share one family, while a counter `x` and a gauge
/// `x_total` get one `# HELP`/`# TYPE` pair each. A histogram series with its own `le` label
/// has it written as `exported_le`, as Prometheus renames clashing labels, so that its buckets
/// stay well formed.
///
/// ```
/// use ingestor_codec::SeriesKey;
/// use ingestor_memstore::{CounterState, SeriesState, expose};
///
/// let key = SeriesKey::new("requests", [("code", "200")])?;
/// let state = SeriesState::Counter(CounterState { total: 3.0, resets: 0, last_reset: None });
/// let mut text = String::new();
/// expose(&mut text, [(&key, &state)]);
/// let lines: Vec<&str> = text.lines().collect();
/// assert_eq!(
///     lines,
///     [
///         "# HELP requests_total Ingested counter requests_total.",
///         "# TYPE requests_total counter",
///         r#"requests_total{code="200"} 3"#,
///     ]
/// );
/// # Ok::<(), ingestor_codec::ValidationError>(())
/// ```
pub fn expose<'a>(
    out: &mut String,
    series: impl IntoIterator<Item = (&'a SeriesKey, &'a SeriesState)>,
) {
    let mut exposer = Exposer::default();
    for (key, state) in series {
        exposer.write(out, key, state);
    }
}

/// Writes series one at a time in the exposition format, remembering the family of the last
/// one, so that a long exposition can be written (and sent) in pieces: the rules are those of
/// [`expose`], which is a loop over [`Exposer::write`].
#[derive(Debug, Default)]
pub struct Exposer {
    family: Option<(String, MetricKind)>,
}

impl Exposer {
    /// Writes one series: a `# HELP`/`# TYPE` pair first when it starts a family. Series must
    /// come sorted by exposed family name (see [`exposed_family`]).
    pub fn write(&mut self, out: &mut String, key: &SeriesKey, state: &SeriesState) {
        let kind = state.kind();
        let name = exposed_name(key.name(), kind);
        if self.family.as_ref().is_none_or(|(f, k)| *f != name || *k != kind) {
            write_header(out, &name, kind);
            self.family = Some((name.into_owned(), kind));
        }
        let Some((name, _)) = &self.family else { return };
        match state {
            SeriesState::Counter(c) => write_sample(out, name, "", key, None, c.total),
            SeriesState::Gauge(g) => write_sample(out, name, "", key, None, g.value),
            SeriesState::Histogram(h) => {
                // `cumulative` has one entry per bound, then the +Inf bucket, which is
                // written from `count` below.
                for (&bound, &count) in h.bounds.iter().zip(&h.cumulative()) {
                    // An explicit +Inf bound would repeat the implicit +Inf bucket.
                    if bound != f64::INFINITY {
                        write_sample(out, name, "_bucket", key, Some(bound), count as f64);
                    }
                }
                write_sample(out, name, "_bucket", key, Some(f64::INFINITY), h.count as f64);
                write_sample(out, name, "_sum", key, None, h.sum);
                write_sample(out, name, "_count", key, None, h.count as f64);
            }
        }
    }
}

/// The family name a series named `name` of `kind` is exposed under: a counter gets
/// `_total` appended unless its name already ends with it. Sorting series by this name
/// (then kind) keeps every family in one run, as the format requires.
#[must_use]
pub fn exposed_family(name: &str, kind: MetricKind) -> Cow<'_, str> {
    exposed_name(name, kind)
}

/// The family name a series is exposed under.
fn exposed_name(name: &str, kind: MetricKind) -> Cow<'_, str> {
    match kind {
        MetricKind::Counter if !name.ends_with("_total") => Cow::Owned(format!("{name}_total")),
        _ => Cow::Borrowed(name),
    }
}

fn write_header(out: &mut String, family: &str, kind: MetricKind) {
    let kind = match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    };
    out.push_str("# HELP ");
    out.push_str(family);
    out.push(' ');
    // HELP text escapes only backslash and newline.
    for c in format!("Ingested {kind} {family}.").chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(family);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// One sample line: `<family><suffix>{<labels>[,le="<le>"]} <value>`.
fn write_sample(
    out: &mut String,
    family: &str,
    suffix: &str,
    key: &SeriesKey,
    le: Option<f64>,
    value: f64,
) {
    out.push_str(family);
    out.push_str(suffix);
    // Only histogram lines have a suffix (`_bucket`, `_sum`, `_count`).
    let histogram = !suffix.is_empty();
    if !key.labels().is_empty() || le.is_some() {
        out.push('{');
        for (i, label) in key.labels().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if histogram && label.name() == "le" {
                out.push_str("exported_");
            }
            out.push_str(label.name());
            out.push_str("=\"");
            push_escaped_label_value(out, label.value());
            out.push('"');
        }
        if let Some(le) = le {
            if !key.labels().is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(&format_value(le));
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(value));
    out.push('\n');
}

/// Label values escape backslash, double quote and newline.
fn push_escaped_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Formats a sample value the way Prometheus' Go client does: `strconv.FormatFloat(v, 'g',
/// -1, 64)`, with `+Inf`, `-Inf` and `NaN`.
///
/// That is: the shortest digits that read back to the same `f64`, written in exponent form
/// (at least two exponent digits, `1e+06`, `1e-07`) when the decimal exponent is below -4 or
/// at least 6, and plainly otherwise (`123456`, `0.0001`). Zero, negative zero included, is
/// `0`, as the client writes it.
///
/// ```
/// use ingestor_memstore::format_value;
/// assert_eq!(format_value(1.0), "1");
/// assert_eq!(format_value(0.5), "0.5");
/// assert_eq!(format_value(1e6), "1e+06");
/// assert_eq!(format_value(1e-7), "1e-07");
/// assert_eq!(format_value(f64::INFINITY), "+Inf");
/// ```
#[must_use]
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    // Rust's `{:e}` writes the shortest round-tripping digits, as Go's shortest mode does:
    // `d[.ddd]e<exp>`.
    let scientific = format!("{:e}", v.abs());
    let Some((mantissa, exp)) = scientific.split_once('e') else { return scientific };
    let Ok(exp) = exp.parse::<i32>() else { return scientific };
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let mut out = String::with_capacity(24);
    if v < 0.0 {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        // %e: one digit, the rest after a point, then a signed exponent of 2+ digits.
        let (first, rest) = digits.split_first().map_or((b'0', &[][..]), |(f, r)| (*f, r));
        out.push(char::from(first));
        if !rest.is_empty() {
            out.push('.');
            out.extend(rest.iter().map(|&d| char::from(d)));
        }
        out.push_str(if exp < 0 { "e-" } else { "e+" });
        let exp = exp.unsigned_abs();
        if exp < 10 {
            out.push('0');
        }
        out.push_str(&exp.to_string());
    } else {
        // %f with exactly the digits needed; `point` is where the decimal point goes.
        let point = exp + 1;
        let digit = |i: i32| {
            usize::try_from(i).ok().and_then(|i| digits.get(i)).map_or('0', |&d| char::from(d))
        };
        if point <= 0 {
            out.push('0');
        } else {
            out.extend((0..point).map(digit));
        }
        let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
        if len > point {
            out.push('.');
            out.extend((point.min(0)..0).map(|_| '0'));
            out.extend((point.max(0)..len).map(digit));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ingestor_codec::{Lsn, Timestamp};

    use super::*;
    use crate::state::{CounterState, DEFAULT_BUCKETS, GaugeState, HistogramState};

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(name, labels.iter().copied()).unwrap()
    }

    fn counter(total: f64) -> SeriesState {
        SeriesState::Counter(CounterState { total, resets: 0, last_reset: None })
    }

    fn gauge(value: f64) -> SeriesState {
        SeriesState::Gauge(GaugeState { value, timestamp: Timestamp(0), lsn: Lsn(0) })
    }

    /// A histogram over `bounds` with observations placed directly in buckets.
    fn histogram(bounds: &[f64], buckets: &[u64], sum: f64) -> SeriesState {
        let mut h = HistogramState::new(Arc::from(bounds));
        h.buckets.copy_from_slice(buckets);
        h.count = buckets.iter().sum();
        h.sum = sum;
        SeriesState::Histogram(Box::new(h))
    }

    fn render(series: &[(SeriesKey, SeriesState)]) -> String {
        let mut out = String::new();
        expose(&mut out, series.iter().map(|(k, s)| (k, s)));
        out
    }

    #[test]
    fn golden_mixed_families() {
        let mut buckets = [0; DEFAULT_BUCKETS.len() + 1];
        buckets[0] = 1; // <= 0.005
        buckets[4] = 2; // (0.05, 0.1]
        buckets[7] = 1; // (0.5, 1]
        buckets[11] = 1; // > 10
        let series = vec![
            (key("http_requests", &[("code", "200"), ("path", "/")]), counter(1027.0)),
            (key("http_requests", &[("code", "500"), ("path", "/")]), counter(3.0)),
            (key("jobs_done_total", &[]), counter(1e21)),
            (
                key("request_duration_seconds", &[("path", "/api")]),
                histogram(&DEFAULT_BUCKETS, &buckets, 12.345),
            ),
            (key("temperature", &[("room", "a \"quoted\" \\ back\nslash")]), gauge(-0.5)),
            (key("temperature", &[("room", "b")]), gauge(1e-7)),
            (key("up", &[]), gauge(1.0)),
        ];
        insta::assert_snapshot!(render(&series));
    }

    #[test]
    fn counter_families_keep_an_existing_total_suffix() {
        let text = render(&[(key("x_total", &[]), counter(2.0))]);
        assert_eq!(
            text,
            "# HELP x_total Ingested counter x_total.\n# TYPE x_total counter\nx_total 2\n"
        );
        // A gauge keeps its name, even one ending in _total.
        let text = render(&[(key("g_total", &[]), gauge(2.0))]);
        assert!(text.contains("# TYPE g_total gauge\ng_total 2\n"), "{text}");
    }

    #[test]
    fn families_with_the_same_exposed_name() {
        // A counter `x` and a gauge `x_total` both expose `x_total`: each gets its header.
        let text = render(&[
            (key("x", &[("a", "1")]), counter(1.0)),
            (key("x_total", &[("a", "2")]), gauge(2.0)),
        ]);
        assert_eq!(
            text,
            "# HELP x_total Ingested counter x_total.\n# TYPE x_total counter\nx_total{a=\"1\"} 1\n\
             # HELP x_total Ingested gauge x_total.\n# TYPE x_total gauge\nx_total{a=\"2\"} 2\n"
        );
        // Counters `x` and `x_total` expose the same family, so it is written once.
        let text = render(&[
            (key("x", &[("a", "1")]), counter(1.0)),
            (key("x_total", &[("a", "2")]), counter(2.0)),
        ]);
        assert_eq!(text.matches("# TYPE").count(), 1, "{text}");
        // One metric name with series of two kinds makes two families.
        let text = render(&[
            (key("m", &[("a", "1")]), gauge(1.0)),
            (key("m", &[("a", "2")]), counter(2.0)),
        ]);
        assert!(text.contains("# TYPE m gauge\nm{a=\"1\"} 1\n# HELP m_total"), "{text}");
    }

    #[test]
    fn histogram_lines() {
        let text = render(&[(key("h", &[]), histogram(&[0.5, 1.0], &[1, 0, 2], 7.25))]);
        assert_eq!(
            text,
            "# HELP h Ingested histogram h.\n# TYPE h histogram\n\
             h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 7.25\nh_count 3\n"
        );
        // A series label named `le` is renamed so the buckets stay well formed; `le` is last.
        let text =
            render(&[(key("h", &[("le", "x"), ("z", "1")]), histogram(&[1.0], &[0, 0], 0.0))]);
        assert!(text.contains("h_bucket{exported_le=\"x\",z=\"1\",le=\"1\"} 0\n"), "{text}");
        assert!(text.contains("h_sum{exported_le=\"x\",z=\"1\"} 0\n"), "{text}");
        // An explicit +Inf bound is not written twice; no bounds at all is fine too.
        let text = render(&[(key("h", &[]), histogram(&[1.0, f64::INFINITY], &[1, 2, 0], 3.0))]);
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1, "{text}");
        assert!(text.contains("h_bucket{le=\"+Inf\"} 3\n"), "{text}");
        let text = render(&[(key("h", &[]), histogram(&[], &[4], 1.0))]);
        assert!(
            text.contains("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 4\n"),
            "{text}"
        );
        // A counter named like a histogram's label does not get renamed labels.
        let text = render(&[(key("c", &[("le", "x")]), counter(1.0))]);
        assert!(text.contains("c_total{le=\"x\"} 1\n"), "{text}");
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert_eq!(render(&[]), "");
        let mut out = String::from("kept\n");
        expose(&mut out, std::iter::empty());
        assert_eq!(out, "kept\n");
    }

    #[test]
    fn format_value_matches_go() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1.0, "-1"),
            (0.0, "0"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (-2.5, "-2.5"),
            (100.0, "100"),
            (123_456.0, "123456"),
            (999_999.0, "999999"),
            (1e6, "1e+06"),
            (1_234_567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (1e100, "1e+100"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (0.00001, "1e-05"),
            (1e-7, "1e-07"),
            (-1.25e-10, "-1.25e-10"),
            (0.005, "0.005"),
            (123.456, "123.456"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.0f64.powi(53), "9.007199254740992e+15"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for &(v, want) in cases {
            assert_eq!(format_value(v), want, "{v:e}");
        }
    }

    #[test]
    fn format_value_round_trips() {
        let mut rng = ingestor_testkit::Rng::new(0x0123_4567_89ab_cdef);
        for _ in 0..20_000 {
            let v = f64::from_bits(rng.next_u64());
            let text = format_value(v);
            if v.is_finite() && v != 0.0 {
                assert_eq!(text.parse::<f64>().ok(), Some(v), "{text}");
            }
        }
    }
}
