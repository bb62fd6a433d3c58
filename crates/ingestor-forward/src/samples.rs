//! A series' current state as remote-write samples: exactly what `/metrics` shows for it.

use ingestor::{SeriesRecord, SeriesState, exposed_family, format_value};
use ingestor_protocols::remote_write::MetricType;
use ingestor_protocols::remote_write_writer::WriteRequestWriter;

/// How many samples [`write_series`] writes for `record`.
pub(crate) fn sample_count(record: &SeriesRecord) -> usize {
    match &record.state {
        SeriesState::Histogram(h) => h.bounds.len() + 3,
        _ => 1,
    }
}

/// Writes the remote-write series of one series' state into `w`, stamped with its last
/// update: a counter is `<family>` (its name with `_total` unless it has it) with its total;
/// a gauge its value; a histogram `_bucket{le}` (cumulative, `+Inf` last), `_sum` and
/// `_count`. A label `le` of a histogram becomes `exported_le`, as in the exposition. Labels
/// are sorted by name, `__name__` among them, as the remote-write specification asks.
/// Returns the family and its type, for the request's metadata.
pub(crate) fn write_series(
    record: &SeriesRecord,
    w: &mut WriteRequestWriter,
) -> (String, MetricType) {
    let kind = record.state.kind();
    let family = exposed_family(record.key.name(), kind);
    // Deliberate defect: samples are stamped with the flush's time, not the data's.
    #[cfg(ingestor_deliberate_bugs)]
    let ts = if crate::bugs::on("forward-flush-time") {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    } else {
        record.last_update.0
    };
    #[cfg(not(ingestor_deliberate_bugs))]
    let ts = record.last_update.0;
    let histogram = matches!(record.state, SeriesState::Histogram(_));
    let key_labels: Vec<(&str, &str)> = record
        .key
        .labels()
        .iter()
        .map(|l| {
            let n = if histogram && l.name() == "le" { "exported_le" } else { l.name() };
            (n, l.value())
        })
        .collect();
    let one = |w: &mut WriteRequestWriter, name: &str, le: Option<&str>, value: f64| {
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(key_labels.len() + 2);
        labels.extend_from_slice(&key_labels);
        labels.push(("__name__", name));
        if let Some(le) = le {
            labels.push(("le", le));
        }
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        w.series(&labels, &[(ts, value)]);
    };
    let metric_type = match &record.state {
        SeriesState::Counter(c) => {
            one(w, &family, None, c.total);
            MetricType::Counter
        }
        SeriesState::Gauge(g) => {
            one(w, &family, None, g.value);
            MetricType::Gauge
        }
        SeriesState::Histogram(h) => {
            let bucket = format!("{family}_bucket");
            for (bound, n) in h.bounds.iter().zip(&h.cumulative()) {
                one(w, &bucket, Some(&format_value(*bound)), *n as f64);
            }
            one(w, &bucket, Some("+Inf"), h.count as f64);
            one(w, &format!("{family}_sum"), None, h.sum);
            one(w, &format!("{family}_count"), None, h.count as f64);
            MetricType::Other
        }
        // A kind added later is forwarded as nothing rather than as something wrong.
        #[allow(unreachable_patterns)]
        _ => MetricType::Other,
    };
    (family.into_owned(), metric_type)
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

    fn series_of(record: &SeriesRecord) -> Vec<ingestor_protocols::remote_write::Series> {
        let mut w = WriteRequestWriter::new();
        let (_, kind) = write_series(record, &mut w);
        assert_eq!(w.sample_count(), sample_count(record));
        let body = w.finish();
        let mut r = ingestor_protocols::remote_write::decode(
            &body,
            ingestor_protocols::remote_write::Version::V1,
            1 << 20,
        )
        .unwrap();
        for s in &mut r.series {
            s.metric_type = Some(kind);
        }
        r.series
    }

    fn flat(series: &[ingestor_protocols::remote_write::Series]) -> Vec<String> {
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
