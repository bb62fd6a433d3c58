//! A series' current state as remote-write samples: exactly what `/metrics` shows for it.

use ingestor::{SeriesRecord, SeriesState, exposed_family, format_value};
use ingestor_protocols::remote_write::{MetricType, Series};

/// The remote-write series of one series' state, stamped with its last update:
/// a counter is `<family>` (its name with `_total` unless it has it) with its total; a gauge
/// its value; a histogram `_bucket{le}` (cumulative, `+Inf` last), `_sum` and `_count`. A
/// label `le` of a histogram becomes `exported_le`, as in the exposition. Labels are sorted
/// by name, `__name__` among them, as the remote-write specification asks.
pub(crate) fn series_of(record: &SeriesRecord) -> Vec<Series> {
    let kind = record.state.kind();
    let family = exposed_family(record.key.name(), kind);
    let ts = record.last_update.0;
    let histogram = matches!(record.state, SeriesState::Histogram(_));
    let one = |name: String, le: Option<String>, value: f64, metric_type: MetricType| {
        let mut labels: Vec<(String, String)> = record
            .key
            .labels()
            .iter()
            .map(|l| {
                let n = if histogram && l.name() == "le" {
                    "exported_le".to_owned()
                } else {
                    l.name().to_owned()
                };
                (n, l.value().to_owned())
            })
            .collect();
        labels.push(("__name__".to_owned(), name));
        if let Some(le) = le {
            labels.push(("le".to_owned(), le));
        }
        labels.sort_unstable();
        Series {
            labels,
            samples: vec![(ts, value)],
            metric_type: Some(metric_type),
            histograms: 0,
            exemplars: 0,
        }
    };
    match &record.state {
        SeriesState::Counter(c) => {
            vec![one(family.to_string(), None, c.total, MetricType::Counter)]
        }
        SeriesState::Gauge(g) => vec![one(family.to_string(), None, g.value, MetricType::Gauge)],
        SeriesState::Histogram(h) => {
            let mut out = Vec::with_capacity(h.bounds.len() + 3);
            let cumulative = h.cumulative();
            for (bound, n) in h.bounds.iter().zip(&cumulative) {
                let le = Some(format_value(*bound));
                out.push(one(format!("{family}_bucket"), le, *n as f64, MetricType::Other));
            }
            let inf = Some("+Inf".to_owned());
            out.push(one(format!("{family}_bucket"), inf, h.count as f64, MetricType::Other));
            out.push(one(format!("{family}_sum"), None, h.sum, MetricType::Other));
            out.push(one(format!("{family}_count"), None, h.count as f64, MetricType::Other));
            out
        }
        // A kind added later is forwarded as nothing rather than as something wrong.
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingestor::{Config, HistogramSample, Ingestor, Op, SeriesKey, Timestamp, Update};

    fn record(key: SeriesKey, ops: &[Op]) -> SeriesRecord {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Ingestor::open(dir.path(), Config::default()).unwrap();
        for (i, op) in ops.iter().enumerate() {
            let ts = Timestamp(1_000 + i as i64);
            db.ingest(&[Update::new(key.clone(), ts, op.clone()).unwrap()]).unwrap();
        }
        db.memstore().freeze().iter().next().unwrap()
    }

    fn flat(series: &[Series]) -> Vec<String> {
        series
            .iter()
            .map(|s| {
                let l: Vec<String> = s.labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!("{} {:?}", l.join(","), s.samples)
            })
            .collect()
    }

    #[test]
    fn counters_gauges_and_histograms_as_the_exposition_names_them() {
        let key = SeriesKey::new("reqs", [("Code", "200"), ("path", "/")]).unwrap();
        let c = series_of(&record(key, &[Op::CounterAdd(2.0), Op::CounterAdd(3.0)]));
        // `Code` sorts before `__name__` (uppercase before underscore): byte order.
        assert_eq!(flat(&c), ["Code=200,__name__=reqs_total,path=/ [(1001, 5.0)]"]);
        assert_eq!(c[0].metric_type, Some(MetricType::Counter));
        let g = series_of(&record(
            SeriesKey::new("temp", [("a", "b")]).unwrap(),
            &[Op::GaugeSet(-1.5)],
        ));
        assert_eq!(flat(&g), ["__name__=temp,a=b [(1000, -1.5)]"]);
        let sample = HistogramSample::new([0.5, 1.0], [1, 2, 3], 9.0).unwrap();
        let h = series_of(&record(
            SeriesKey::new("lat", [("le", "x")]).unwrap(),
            &[Op::HistogramSet(sample.into())],
        ));
        assert_eq!(
            flat(&h),
            [
                "__name__=lat_bucket,exported_le=x,le=0.5 [(1000, 1.0)]",
                "__name__=lat_bucket,exported_le=x,le=1 [(1000, 3.0)]",
                "__name__=lat_bucket,exported_le=x,le=+Inf [(1000, 6.0)]",
                "__name__=lat_sum,exported_le=x [(1000, 9.0)]",
                "__name__=lat_count,exported_le=x [(1000, 6.0)]",
            ]
        );
    }
}
