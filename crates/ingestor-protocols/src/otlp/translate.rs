//! The mapping of decoded OTLP metrics to updates, and of OTLP names to Prometheus names, as
//! Prometheus' own OTLP translation (`otlptranslator`, with suffixes added and names escaped
//! to underscores) does it. See the [module documentation](super) for the table.

use std::borrow::Cow;
use std::fmt::Write as _;

use std::sync::Arc;

use ingestor_codec::{HistogramSample, Op, SeriesKey, Timestamp, Update};

use super::proto::{
    self, Any, AnyValue, Data, FLAG_NO_RECORDED_VALUE, KeyValue, TEMPORALITY_CUMULATIVE,
    TEMPORALITY_DELTA,
};

/// The kind of a metric, as its name is built for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A monotonic sum: `_total` is appended.
    Counter,
    /// A gauge: `_ratio` is appended for the unit `1`.
    Gauge,
    /// A non-monotonic sum, a histogram or a summary: only the unit is appended.
    Other,
}

/// OTLP (UCUM) units and the words Prometheus names them with.
const UNITS: &[(&str, &str)] = &[
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("1", ""),
    ("%", "percent"),
];

/// The units after a `/`, in the singular.
const PER_UNITS: &[(&str, &str)] = &[
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
];

fn lookup<'a>(table: &[(&str, &'a str)], unit: &'a str) -> &'a str {
    table.iter().find(|(k, _)| *k == unit).map_or(unit, |(_, v)| v)
}

fn metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Invalid characters to `_`, runs of `_` to one, no leading `_`.
fn clean_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = if metric_char(c) { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out.trim_start_matches('_').to_string()
}

/// The main and the "per" suffix of a unit (`By/s`: `bytes`, `per_second`); a part in braces
/// (`{requests}`, an annotation) gives none.
fn unit_suffixes(unit: &str) -> (String, String) {
    let mut parts = unit.splitn(2, '/');
    let main = parts.next().unwrap_or("").trim();
    let main = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(lookup(UNITS, main))
    };
    let per = match parts.next().map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            clean_unit(&format!("per_{}", lookup(PER_UNITS, p)))
        }
        _ => String::new(),
    };
    (main, per)
}

/// The Prometheus name of an OTLP metric: the name split at every character other than
/// `[a-zA-Z0-9:]` and joined with `_`, the unit's words appended unless the name holds
/// them already, `_total` for counters and `_ratio` for gauges of unit `1` (moved to the
/// end if the name holds them), `_` before a leading digit.
///
/// # Errors
/// A name that translates to nothing but underscores.
///
/// ```
/// use ingestor_protocols::otlp::{NameKind, metric_name};
/// assert_eq!(metric_name("http.server.duration", "ms", NameKind::Other).unwrap(),
///            "http_server_duration_milliseconds");
/// assert_eq!(metric_name("requests", "{request}", NameKind::Counter).unwrap(), "requests_total");
/// ```
pub fn metric_name(name: &str, unit: &str, kind: NameKind) -> Result<String, String> {
    let mut tokens: Vec<&str> = name.split(|c| !metric_char(c)).filter(|t| !t.is_empty()).collect();
    let (mut main, mut per) = unit_suffixes(unit);
    if tokens.contains(&main.as_str()) {
        main.clear();
    }
    if per == "per_" {
        per.clear();
    } else {
        if per.ends_with('_') {
            per.pop();
        }
        if tokens.contains(&per.as_str()) {
            per.clear();
        }
    }
    if !per.is_empty() && main.ends_with('_') {
        main.pop();
    }
    if !main.is_empty() {
        tokens.push(&main);
    }
    if !per.is_empty() {
        tokens.push(&per);
    }
    if kind == NameKind::Counter {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if unit == "1" && kind == NameKind::Gauge {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let mut out = tokens.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    if out.chars().all(|c| c == '_') {
        return Err(format!("the metric name {name:?} translates to {out:?}, not a name"));
    }
    Ok(out)
}

/// The Prometheus label name of an OTLP attribute: characters other than `[a-zA-Z0-9_]` to
/// `_`, runs of `_` to one, `key_` before a leading digit.
///
/// # Errors
/// A key that translates to nothing but underscores.
///
/// ```
/// use ingestor_protocols::otlp::label_name;
/// assert_eq!(label_name("http.request.method").unwrap(), "http_request_method");
/// assert_eq!(label_name("2xx").unwrap(), "key_2xx");
/// ```
pub fn label_name(key: &str) -> Result<String, String> {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    if out.chars().all(|c| c == '_') {
        return Err(format!("the attribute {key:?} translates to {out:?}, not a label name"));
    }
    Ok(out)
}

/// An attribute value as a label value: strings as they are, numbers and booleans written
/// out, arrays and maps as JSON, bytes as base64.
#[must_use]
pub fn value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Any::StringValue(s)) => s.clone(),
        other => {
            let mut out = String::new();
            write_value(&mut out, other, false);
            out
        }
    }
}

fn write_value(out: &mut String, v: Option<&Any>, quoted: bool) {
    match v {
        None => out.push_str("null"),
        Some(Any::StringValue(s)) if quoted => {
            out.push_str(&serde_json::Value::from(s.as_str()).to_string());
        }
        Some(Any::StringValue(s)) => out.push_str(s),
        Some(Any::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Any::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Any::DoubleValue(d)) => {
            if quoted && !d.is_finite() {
                let _ = write!(out, "\"{d}\"");
            } else {
                let _ = write!(out, "{d}");
            }
        }
        Some(Any::BytesValue(b)) => {
            use base64::Engine as _;
            let s = base64::engine::general_purpose::STANDARD.encode(b);
            if quoted {
                let _ = write!(out, "\"{s}\"");
            } else {
                out.push_str(&s);
            }
        }
        Some(Any::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v.value.as_ref(), true);
            }
            out.push(']');
        }
        Some(Any::KvlistValue(kv)) => {
            out.push('{');
            for (i, e) in kv.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(e.key.as_str()).to_string());
                out.push(':');
                write_value(out, e.value.as_ref().and_then(|v| v.value.as_ref()), true);
            }
            out.push('}');
        }
    }
}

/// Data points refused, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejected {
    /// Each reason and how many data points it refused, in the order first seen.
    pub by_reason: Vec<(String, usize)>,
}

impl Rejected {
    /// Counts `n` data points refused for `reason`.
    pub fn add(&mut self, reason: impl Into<String>, n: usize) {
        if n == 0 {
            return;
        }
        let reason = reason.into();
        match self.by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.by_reason.push((reason, n)),
        }
    }

    /// Data points refused.
    #[must_use]
    pub fn total(&self) -> usize {
        self.by_reason.iter().map(|(_, n)| n).sum()
    }

    /// A message for `partial_success.error_message` (the first eight reasons).
    #[must_use]
    pub fn message(&self) -> String {
        let reasons: Vec<String> =
            self.by_reason.iter().take(8).map(|(r, n)| format!("{n} x {r}")).collect();
        format!("{} data points refused: {}", self.total(), reasons.join("; "))
    }
}

/// Marks an update that comes from no data point (`target_info`).
pub const NO_DATA_POINT: u32 = u32::MAX;

/// What a request maps to.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Translation {
    /// The updates, grouped by the data point they come from, in the request's order.
    pub updates: Vec<Update>,
    /// For each update, the index of its data point in the request (counting every data
    /// point of every metric), or [`NO_DATA_POINT`].
    pub origins: Vec<u32>,
    /// Data points in the request.
    pub data_points: usize,
    /// Data points refused, with why.
    pub rejected: Rejected,
    /// Data points flagged as having no recorded value: skipped, not refused.
    pub no_value: usize,
}

/// Labels of a series being built (borrowed from the request where they need no change).
struct Labels<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Labels<'a> {
    /// Puts (or replaces) a label; an empty value removes it (Prometheus reads an empty
    /// value as an absent label).
    fn set(&mut self, name: &'a str, value: &'a str) {
        self.0.retain(|(n, _)| n != name);
        if !value.is_empty() {
            self.0.push((Cow::Borrowed(name), Cow::Borrowed(value)));
        }
    }
}

/// [`label_name`], borrowing a key that needs no change.
fn label_name_cow(key: &str) -> Result<Cow<'_, str>, String> {
    let valid = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.contains("__")
        && key.bytes().any(|b| b != b'_');
    if valid { Ok(Cow::Borrowed(key)) } else { label_name(key).map(Cow::Owned) }
}

/// [`value_string`], borrowing a string value.
fn value_cow(v: Option<&AnyValue>) -> Cow<'_, str> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => Cow::Borrowed(s),
        _ => Cow::Owned(value_string(v)),
    }
}

/// The identity of a resource: its `job` and `instance`, and its other attributes.
struct ResourceLabels {
    job: Option<String>,
    instance: Option<String>,
    others: Vec<(String, String)>,
}

fn resource_labels(attributes: &[KeyValue]) -> ResourceLabels {
    let get =
        |k: &str| attributes.iter().find(|a| a.key == k).map(|a| value_string(a.value.as_ref()));
    let job = get("service.name").filter(|s| !s.is_empty()).map(|name| {
        match get("service.namespace").filter(|s| !s.is_empty()) {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        }
    });
    let instance = get("service.instance.id").filter(|s| !s.is_empty());
    let others = attributes
        .iter()
        .filter(|a| {
            !matches!(a.key.as_str(), "service.name" | "service.namespace" | "service.instance.id")
        })
        .map(|a| (a.key.clone(), value_string(a.value.as_ref())))
        .collect();
    ResourceLabels { job, instance, others }
}

/// The labels of a data point: its attributes (names translated; values of attributes that
/// translate to the same name joined with `;`, by attribute key order), then `job` and
/// `instance` from the resource.
fn point_labels<'a>(
    attributes: &'a [KeyValue],
    resource: &'a ResourceLabels,
) -> Result<Labels<'a>, String> {
    let mut named: Vec<(Cow<'a, str>, &str, Cow<'a, str>)> = Vec::with_capacity(attributes.len());
    for a in attributes {
        named.push((label_name_cow(&a.key)?, a.key.as_str(), value_cow(a.value.as_ref())));
    }
    let mut labels = Labels(Vec::with_capacity(named.len() + 3));
    if named.windows(2).any(|w| w[0].0 >= w[1].0) {
        named.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
        for (name, _, value) in named {
            if value.is_empty() {
                continue;
            }
            match labels.0.last_mut() {
                Some((n, v)) if *n == name => {
                    let v = v.to_mut();
                    v.push(';');
                    v.push_str(&value);
                }
                _ => labels.0.push((name, value)),
            }
        }
    } else {
        labels
            .0
            .extend(named.into_iter().filter(|(_, _, v)| !v.is_empty()).map(|(n, _, v)| (n, v)));
    }
    if let Some(job) = &resource.job {
        labels.set("job", job);
    }
    if let Some(instance) = &resource.instance {
        labels.set("instance", instance);
    }
    Ok(labels)
}

/// The update's timestamp: the point's time in milliseconds, `now_ms` if it has none.
fn millis(time_unix_nano: u64, now_ms: i64) -> i64 {
    if time_unix_nano == 0 { now_ms } else { (time_unix_nano / 1_000_000) as i64 }
}

/// `0.005` as `"0.005"`, `1e10` as `"10000000000"`, infinity as `"+Inf"`: Go's
/// `FormatFloat(f, 'f', -1, 64)`, as Prometheus writes `le` and `quantile`.
fn float_label(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

/// Builds the updates of one data point, all or nothing.
struct Point<'l, 'a> {
    labels: &'l Labels<'a>,
    time: Timestamp,
    updates: Vec<Update>,
}

impl Point<'_, '_> {
    fn push(&mut self, name: &str, extra: Option<(&str, &str)>, op: Op) -> Result<(), String> {
        let key = match extra {
            None => SeriesKey::new(name, self.labels.0.iter().map(|(n, v)| (&**n, &**v))),
            // A histogram: its exposition adds `le` to each bucket, so an attribute of that
            // name gives way (as it does to the bucket bound in Prometheus' translation).
            Some(("le", "")) => SeriesKey::new(
                name,
                self.labels.0.iter().filter(|(n, _)| n != "le").map(|(n, v)| (&**n, &**v)),
            ),
            Some((en, ev)) => SeriesKey::new(
                name,
                self.labels
                    .0
                    .iter()
                    .filter(|(n, _)| n != en)
                    .map(|(n, v)| (&**n, &**v))
                    .chain([(en, ev)]),
            ),
        }
        .map_err(|e| format!("invalid series {name} ({e})"))?;
        let update = Update::new(key, self.time, op)
            .map_err(|e| format!("invalid value for {name} ({e})"))?;
        self.updates.push(update);
        Ok(())
    }
}

/// Maps a decoded request to updates; `now_ms` stamps data points without a time. Pure:
/// the caller decides what to do with the updates and with the data points refused.
#[must_use]
pub fn translate(request: &proto::ExportMetricsServiceRequest, now_ms: i64) -> Translation {
    let mut t = Translation::default();
    for rm in &request.resource_metrics {
        let attributes = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        let resource = resource_labels(attributes);
        let mut latest: Option<i64> = None;
        for sm in &rm.scope_metrics {
            for metric in &sm.metrics {
                translate_metric(&mut t, metric, &resource, now_ms, &mut latest);
            }
        }
        if let Some(ts) = latest {
            target_info(&mut t, &resource, ts);
        }
    }
    t
}

/// Prometheus' `target_info`: a gauge of 1 whose labels are the resource's attributes other
/// than those `job` and `instance` come from. Written when the resource has such
/// attributes, and `job` or `instance`, at the time of its latest data point; skipped
/// (not refused: it is no data point) if it cannot be a series.
fn target_info(t: &mut Translation, resource: &ResourceLabels, ts: i64) {
    if resource.others.is_empty() || (resource.job.is_none() && resource.instance.is_none()) {
        return;
    }
    let mut attrs: Vec<KeyValue> = resource
        .others
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(AnyValue { value: Some(Any::StringValue(v.clone())) }),
        })
        .collect();
    attrs.retain(|a| a.key != "job" && a.key != "instance");
    let Ok(labels) = point_labels(&attrs, resource) else { return };
    let mut p = Point { labels: &labels, time: Timestamp(ts), updates: Vec::new() };
    if p.push("target_info", None, Op::GaugeSet(1.0)).is_ok() {
        t.updates.append(&mut p.updates);
        t.origins.push(NO_DATA_POINT);
    }
}

fn translate_metric(
    t: &mut Translation,
    metric: &proto::Metric,
    resource: &ResourceLabels,
    now_ms: i64,
    latest: &mut Option<i64>,
) {
    let kind = match &metric.data {
        None => return,
        Some(Data::Gauge(_)) => NameKind::Gauge,
        Some(Data::Sum(s)) if s.is_monotonic => NameKind::Counter,
        Some(_) => NameKind::Other,
    };
    let points = match &metric.data {
        None => 0,
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
    };
    let first = t.data_points;
    t.data_points += points;
    if let Some(Data::ExponentialHistogram(_)) = &metric.data {
        t.rejected.add(
            "exponential histogram data points (not supported: send explicit-bucket histograms)",
            points,
        );
        return;
    }
    let name = match metric_name(&metric.name, &metric.unit, kind) {
        Ok(n) => n,
        Err(e) => {
            t.rejected.add(e, points);
            return;
        }
    };
    let temporality = match &metric.data {
        Some(Data::Sum(s)) => s.aggregation_temporality,
        Some(Data::Histogram(h)) => h.aggregation_temporality,
        _ => TEMPORALITY_CUMULATIVE,
    };
    if temporality != TEMPORALITY_CUMULATIVE && temporality != TEMPORALITY_DELTA {
        t.rejected.add(
            format!("data points of {name} with aggregation temporality {temporality} (neither delta nor cumulative)"),
            points,
        );
        return;
    }
    let delta = temporality == TEMPORALITY_DELTA;
    let names = Names::new(&name);
    let mut scratch = Vec::new();
    for i in 0..points {
        let origin = (first + i) as u32;
        let (attributes, time, flags) = match &metric.data {
            Some(Data::Gauge(g)) => {
                let p = &g.data_points[i];
                (&p.attributes, p.time_unix_nano, p.flags)
            }
            Some(Data::Sum(s)) => {
                let p = &s.data_points[i];
                (&p.attributes, p.time_unix_nano, p.flags)
            }
            Some(Data::Histogram(h)) => {
                let p = &h.data_points[i];
                (&p.attributes, p.time_unix_nano, p.flags)
            }
            Some(Data::Summary(s)) => {
                let p = &s.data_points[i];
                (&p.attributes, p.time_unix_nano, p.flags)
            }
            _ => return,
        };
        if flags & FLAG_NO_RECORDED_VALUE != 0 {
            t.no_value += 1;
            continue;
        }
        let labels = match point_labels(attributes, resource) {
            Ok(l) => l,
            Err(e) => {
                t.rejected.add(e, 1);
                continue;
            }
        };
        let ms = millis(time, now_ms);
        let mut p =
            Point { labels: &labels, time: Timestamp(ms), updates: std::mem::take(&mut scratch) };
        let result = match &metric.data {
            Some(Data::Gauge(g)) => number(&mut p, &name, &g.data_points[i], Op::GaugeSet),
            Some(Data::Sum(s)) => {
                number(&mut p, &name, &s.data_points[i], |v| match (s.is_monotonic, delta) {
                    (true, false) => Op::CounterSet(v),
                    (true, true) => Op::CounterAdd(v),
                    (false, false) => Op::GaugeSet(v),
                    (false, true) => Op::GaugeAdd(v),
                })
            }
            Some(Data::Histogram(h)) => histogram(&mut p, &names, &h.data_points[i], delta),
            Some(Data::Summary(s)) => summary(&mut p, &names, &s.data_points[i]),
            _ => Ok(()),
        };
        match result {
            Ok(()) => {
                *latest = Some(latest.map_or(ms, |l| l.max(ms)));
                t.origins.extend(std::iter::repeat_n(origin, p.updates.len()));
                t.updates.append(&mut p.updates);
            }
            Err(e) => {
                p.updates.clear();
                t.rejected.add(e, 1);
            }
        }
        scratch = p.updates;
    }
}

fn number(
    p: &mut Point<'_, '_>,
    name: &str,
    point: &proto::NumberDataPoint,
    op: impl Fn(f64) -> Op,
) -> Result<(), String> {
    let v = match point.value {
        Some(proto::Value::AsDouble(v)) => v,
        Some(proto::Value::AsInt(v)) => v as f64,
        None => return Err(format!("data points of {name} without a value")),
    };
    p.push(name, None, op(v))
}

/// The names of a histogram's or a summary's series, made once per metric.
struct Names {
    name: String,
    sum: String,
    count: String,
}

impl Names {
    fn new(name: &str) -> Names {
        Names { name: name.to_string(), sum: format!("{name}_sum"), count: format!("{name}_count") }
    }
}

/// An explicit-bucket histogram point: one histogram series, `name`, over the point's own
/// bounds (exposed as `_bucket{le}`, `_sum` and `_count`), set to the point's distribution
/// (cumulative temporality) or increased by it (delta). A bound of `+Inf` at the end is the
/// implicit one and merges into it; a point without buckets is its count in the `+Inf`
/// bucket; a point without a sum has sum 0. An `le` attribute is dropped.
fn histogram(
    p: &mut Point<'_, '_>,
    names: &Names,
    point: &proto::HistogramDataPoint,
    delta: bool,
) -> Result<(), String> {
    let name = &names.name;
    let mut bounds = &point.explicit_bounds[..];
    let mut buckets: Vec<u64> = point.bucket_counts.clone();
    if buckets.is_empty() {
        bounds = &[];
        buckets.push(point.count);
    } else if buckets.len() != bounds.len() + 1 {
        return Err(format!(
            "histogram points of {name} with {} bucket counts for {} bounds (not one more)",
            buckets.len(),
            bounds.len()
        ));
    }
    if let Some((&f64::INFINITY, finite)) = bounds.split_last() {
        bounds = finite;
        let last = buckets.pop().unwrap_or(0);
        if let Some(inf) = buckets.last_mut() {
            *inf = inf.saturating_add(last);
        }
    }
    let total = buckets.iter().try_fold(0u64, |acc, &n| acc.checked_add(n));
    if total != Some(point.count) {
        return Err(format!(
            "histogram points of {name} whose count {} is not the sum of their bucket counts",
            point.count
        ));
    }
    let sample = HistogramSample::new(bounds, buckets, point.sum.unwrap_or(0.0))
        .map_err(|e| format!("histogram points of {name}: {e}"))?;
    let op =
        if delta { Op::HistogramAdd(Arc::new(sample)) } else { Op::HistogramSet(Arc::new(sample)) };
    p.push(name, Some(("le", "")), op)
}

/// A summary: `name{quantile}`, `name_sum`, `name_count`, as gauges set to its values.
fn summary(
    p: &mut Point<'_, '_>,
    names: &Names,
    point: &proto::SummaryDataPoint,
) -> Result<(), String> {
    for q in &point.quantile_values {
        p.push(&names.name, Some(("quantile", &float_label(q.quantile))), Op::GaugeSet(q.value))?;
    }
    p.push(&names.sum, None, Op::GaugeSet(point.sum))?;
    p.push(&names.count, None, Op::GaugeSet(point.count as f64))
}
