//! The Prometheus-shaped query API: selectors are matched against the *exposed* samples, as
//! Prometheus sees them after a scrape. A counter `reqs` is the sample `reqs_total`; a
//! histogram `lat` is `lat_bucket{le=...}`, `lat_sum` and `lat_count`. So
//! `query=reqs_total` finds the counter, and `query=reqs` does not (as in Prometheus).

use ingestor::{Ingestor, MatchOp, Matcher, Selector, SeriesState, SeriesView, format_value};
use serde_json::json;

/// Suffixes under which a series' samples are exposed, besides its own name.
const SUFFIXES: [&str; 4] = ["_total", "_count", "_sum", "_bucket"];

/// One exposed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's metric name (`__name__`).
    pub name: String,
    /// Its other labels, sorted.
    pub labels: Vec<(String, String)>,
    /// The last update of its series, in milliseconds.
    pub timestamp_ms: i64,
    /// Its value.
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        if name == "__name__" {
            return Some(&self.name);
        }
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn labels_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("__name__".into(), json!(self.name));
        for (k, v) in &self.labels {
            m.insert(k.clone(), json!(v));
        }
        serde_json::Value::Object(m)
    }
}

/// Matchers that only the exposed samples can answer: the name (a series `reqs` exposes
/// `reqs_total`), a bucket's `le`, and `exported_le` (a series' own `le`).
fn sample_only(m: &Matcher) -> bool {
    matches!(m.label(), "__name__" | "le" | "exported_le")
}

/// The selectors whose series can expose samples `selector` matches, or `None` when only a
/// scan of every series can tell (a name matched other than by equality, or no name): when
/// it names a metric, itself and, for a name ending in an exposition suffix, the same
/// selector on the name without it; otherwise the selector without its name, `le` and
/// `exported_le` matchers, if any matcher remains.
pub fn candidate_selectors(selector: &Selector) -> Option<Vec<Selector>> {
    let Some(name) = selector.metric_name() else {
        let rest: Vec<Matcher> =
            selector.matchers().iter().filter(|m| !sample_only(m)).cloned().collect();
        return Selector::new(rest).ok().map(|s| vec![s]);
    };
    let mut out = vec![selector.clone()];
    for suffix in SUFFIXES {
        let Some(base) = name.strip_suffix(suffix).filter(|b| !b.is_empty()) else { continue };
        // `le` of a bucket, and `exported_le` (a series' own `le`), exist only on the exposed
        // samples: they are matched there, not against the series.
        let matchers: Option<Vec<Matcher>> = selector
            .matchers()
            .iter()
            .filter(|m| !(sample_only(m) && !(m.label() == "__name__" && m.op() == MatchOp::Equal)))
            .map(|m| {
                if m.label() == "__name__" && m.op() == MatchOp::Equal {
                    Matcher::new("__name__", MatchOp::Equal, base).ok()
                } else {
                    Some(m.clone())
                }
            })
            .collect();
        if let Some(s) = matchers.and_then(|m| Selector::new(m).ok()) {
            out.push(s);
        }
    }
    Some(out)
}

/// The samples a series exposes, named as in the text format.
pub fn samples(v: &SeriesView) -> Vec<Sample> {
    let name = v.key.name();
    let mut labels: Vec<(String, String)> =
        v.key.labels().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
    let sample = |n: String, labels: Vec<(String, String)>, value: f64| Sample {
        name: n,
        labels,
        timestamp_ms: v.last_update.0,
        value,
    };
    match &v.state {
        SeriesState::Counter(c) => {
            let n =
                if name.ends_with("_total") { name.to_string() } else { format!("{name}_total") };
            vec![sample(n, labels, c.total)]
        }
        SeriesState::Gauge(g) => vec![sample(name.to_string(), labels, g.value)],
        SeriesState::Histogram(h) => {
            // A series' own `le` label is exposed as `exported_le`, as Prometheus renames it.
            for (k, _) in &mut labels {
                if k == "le" {
                    *k = "exported_le".to_string();
                }
            }
            labels.sort();
            let bucket = |le: &str| {
                let mut l = labels.clone();
                l.push(("le".to_string(), le.to_string()));
                l.sort();
                l
            };
            let mut out = Vec::new();
            for (&bound, &count) in h.bounds.iter().zip(&h.cumulative()) {
                if bound != f64::INFINITY {
                    out.push(sample(
                        format!("{name}_bucket"),
                        bucket(&format_value(bound)),
                        count as f64,
                    ));
                }
            }
            out.push(sample(format!("{name}_bucket"), bucket("+Inf"), h.count as f64));
            out.push(sample(format!("{name}_sum"), labels.clone(), h.sum));
            out.push(sample(format!("{name}_count"), labels, h.count as f64));
            out
        }
    }
}

/// Every exposed sample `selector` matches, in key order.
pub fn select(db: &Ingestor, selector: &Selector) -> Vec<Sample> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let series: Vec<Vec<SeriesView>> = match candidate_selectors(selector) {
        Some(candidates) => candidates.iter().map(|c| db.memstore().select(c)).collect(),
        None => vec![db.memstore().all()],
    };
    for views in series {
        for v in views {
            if !seen.insert(v.key.to_string()) {
                continue;
            }
            out.extend(
                samples(&v)
                    .into_iter()
                    .filter(|s| selector.matchers().iter().all(|m| m.matches(s.label(m.label())))),
            );
        }
    }
    out
}

/// The `data` of an instant query: a vector of samples.
pub fn vector_json(samples: &[Sample]) -> serde_json::Value {
    let result: Vec<serde_json::Value> = samples
        .iter()
        .map(|s| {
            json!({
                "metric": s.labels_json(),
                "value": [s.timestamp_ms as f64 / 1000.0, format_value(s.value)],
            })
        })
        .collect();
    json!({ "resultType": "vector", "result": result })
}

/// The `data` of a series query: each distinct label set once.
pub fn series_json(samples: &[Sample]) -> serde_json::Value {
    let mut seen = std::collections::HashSet::new();
    let out: Vec<serde_json::Value> = samples
        .iter()
        .filter(|s| seen.insert((s.name.as_str(), &s.labels)))
        .map(Sample::labels_json)
        .collect();
    json!(out)
}

/// Samples as lines of the text exposition format (`name{labels} value`), for people.
pub fn text(samples: &[Sample]) -> String {
    let mut out = String::new();
    for s in samples {
        out.push_str(&s.name);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                out.push_str(&format!("{k}=\"{v}\""));
            }
            out.push('}');
        }
        out.push(' ');
        out.push_str(&format_value(s.value));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use ingestor::{Config, Op, SeriesKey, Timestamp, Update};

    use super::*;

    fn db() -> (tempfile::TempDir, Ingestor) {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Ingestor::open(dir.path(), Config::default()).unwrap();
        let u = |name: &str, labels: &[(&str, &str)], op| {
            Update::new(SeriesKey::new(name, labels.iter().copied()).unwrap(), Timestamp(2_500), op)
                .unwrap()
        };
        db.ingest(&[
            u("reqs", &[("code", "200")], Op::CounterAdd(3.0)),
            u("jobs_total", &[], Op::CounterAdd(1.0)),
            u("lat", &[("le", "x")], Op::HistogramObserve(0.3)),
            u("lat", &[("le", "x")], Op::HistogramObserve(7.0)),
            u("cpu", &[("host", "a")], Op::GaugeSet(0.5)),
        ])
        .unwrap();
        (dir, db)
    }

    fn names(db: &Ingestor, selector: &str) -> Vec<String> {
        select(db, &Selector::parse(selector).unwrap())
            .iter()
            .map(|s| {
                let labels: Vec<String> =
                    s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}{{{}}} {}", s.name, labels.join(","), format_value(s.value))
            })
            .collect()
    }

    #[test]
    fn selectors_match_the_exposed_names() {
        let (_dir, db) = db();
        assert_eq!(names(&db, "reqs_total"), ["reqs_total{code=200} 3"]);
        assert!(names(&db, "reqs").is_empty(), "Prometheus only knows reqs_total");
        assert_eq!(names(&db, "jobs_total"), ["jobs_total{} 1"], "no second _total");
        assert_eq!(names(&db, "cpu"), ["cpu{host=a} 0.5"]);
        assert_eq!(names(&db, "lat_count"), ["lat_count{exported_le=x} 2"]);
        assert_eq!(names(&db, "lat_sum"), ["lat_sum{exported_le=x} 7.3"]);
        assert_eq!(names(&db, r#"lat_bucket{le="0.5"}"#), ["lat_bucket{exported_le=x,le=0.5} 1"]);
        assert_eq!(names(&db, r#"lat_bucket{le="+Inf"}"#), ["lat_bucket{exported_le=x,le=+Inf} 2"]);
        assert!(names(&db, "lat").is_empty());
        assert!(names(&db, r#"reqs_total{code="500"}"#).is_empty(), "other matchers still apply");
        assert_eq!(names(&db, r#"lat_count{exported_le="x"}"#), ["lat_count{exported_le=x} 2"]);
        // Names matched other than by equality, or not at all, are matched on the samples.
        assert_eq!(names(&db, r#"{__name__=~"reqs_.*"}"#), ["reqs_total{code=200} 3"]);
        assert_eq!(
            names(&db, r#"{__name__=~".*_total"}"#),
            ["jobs_total{} 1", "reqs_total{code=200} 3"],
            "key order"
        );
        assert_eq!(names(&db, r#"{le="+Inf"}"#), ["lat_bucket{exported_le=x,le=+Inf} 2"]);
        assert_eq!(names(&db, r#"{__name__!="cpu",host="a"}"#), Vec::<String>::new());
        assert_eq!(names(&db, r#"{host="a"}"#), ["cpu{host=a} 0.5"]);
    }

    #[test]
    fn instant_vectors_and_series_have_prometheus_shapes() {
        let (_dir, db) = db();
        let samples = select(&db, &Selector::parse("reqs_total").unwrap());
        assert_eq!(
            vector_json(&samples),
            json!({"resultType": "vector", "result": [
                {"metric": {"__name__": "reqs_total", "code": "200"}, "value": [2.5, "3"]}
            ]})
        );
        let both: Vec<Sample> = samples.iter().chain(&samples).cloned().collect();
        assert_eq!(series_json(&both), json!([{"__name__": "reqs_total", "code": "200"}]));
    }
}
