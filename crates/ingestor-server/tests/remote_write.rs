//! Prometheus remote write 1.0 and 2.0 at `/api/v1/write`: status codes, kinds from
//! metadata, stale markers, partial writes, the 2.0 response headers.

mod common;

use common::*;
use ingestor_protocols::remote_write::{self, MetricType, STALE_NAN_BITS, Series};

fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)], kind: Option<MetricType>) -> Series {
    Series {
        labels: pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        samples: samples.to_vec(),
        metric_type: kind,
        ..Series::default()
    }
}

const V1: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];
const V2: &[(&str, &str)] = &[
    ("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request"),
    ("Content-Encoding", "snappy"),
    ("X-Prometheus-Remote-Write-Version", "2.0.0"),
];

fn family_type(addr: std::net::SocketAddr, family: &str) -> Option<String> {
    let body = get(addr, "/metrics").body;
    let prefix = format!("# TYPE {family} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

fn v1(addr: std::net::SocketAddr, series: &[Series], meta: &[(String, MetricType)]) -> Answer {
    request(addr, "POST", "/api/v1/write", V1, &remote_write::encode_v1(series, meta))
}

#[test]
fn v1_samples_are_written_and_metadata_makes_counters() {
    let srv = start(config());
    // 1.0 senders send metadata in requests of their own.
    assert_eq!(v1(srv.addr, &[], &[("http_requests".into(), MetricType::Counter)]).status, 204);
    let requests = [("__name__", "http_requests_total"), ("code", "200"), ("empty", "")];
    let a = v1(
        srv.addr,
        &[
            series(&requests, &[(1_000, 5.0), (2_000, 7.0)], None),
            series(&[("__name__", "temperature"), ("room", "a")], &[(2_000, 21.5)], None),
        ],
        &[],
    );
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(value(srv.addr, "http_requests_total{code=\"200\"}").as_deref(), Some("7"));
    assert_eq!(value(srv.addr, "temperature").as_deref(), Some("21.5"));
    assert_eq!(family_type(srv.addr, "http_requests_total").as_deref(), Some("counter"));
    assert_eq!(family_type(srv.addr, "temperature").as_deref(), Some("gauge"));
    // A counter that goes down is a reset, not an error.
    assert_eq!(v1(srv.addr, &[series(&requests, &[(3_000, 2.0)], None)], &[]).status, 204);
    // A series that exists keeps its kind, whatever metadata comes later.
    assert_eq!(v1(srv.addr, &[], &[("temperature".into(), MetricType::Counter)]).status, 204);
    let room = [("__name__", "temperature"), ("room", "a")];
    assert_eq!(v1(srv.addr, &[series(&room, &[(3_000, 19.0)], None)], &[]).status, 204);
    assert_eq!(value(srv.addr, "temperature").as_deref(), Some("19"));
    assert_eq!(self_metric(srv.addr, "ingestor_remote_write_samples_total"), 5.0);
}

#[test]
fn v2_takes_inline_metadata_and_answers_the_written_headers() {
    let srv = start(config());
    let body = remote_write::encode_v2(&[
        series(
            &[("__name__", "jobs_done_total"), ("queue", "q1")],
            &[(1_000, 3.0)],
            Some(MetricType::Counter),
        ),
        series(
            &[("__name__", "queue_depth"), ("queue", "q1")],
            &[(1_000, 4.0), (2_000, 2.0)],
            Some(MetricType::Gauge),
        ),
    ]);
    let a = request(srv.addr, "POST", "/api/v1/write", V2, &body);
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.header("X-Prometheus-Remote-Write-Samples-Written"), Some("3"));
    assert_eq!(a.header("X-Prometheus-Remote-Write-Histograms-Written"), Some("0"));
    assert_eq!(a.header("X-Prometheus-Remote-Write-Exemplars-Written"), Some("0"));
    assert_eq!(family_type(srv.addr, "jobs_done_total").as_deref(), Some("counter"));
    assert_eq!(value(srv.addr, "queue_depth").as_deref(), Some("2"));
}

#[test]
fn stale_markers_are_counted_and_bad_samples_make_a_partial_write_with_400() {
    let srv = start(config());
    let up = [("__name__", "up"), ("job", "a")];
    assert_eq!(v1(srv.addr, &[series(&up, &[(1_000, 1.0)], None)], &[]).status, 204);
    let stale = f64::from_bits(STALE_NAN_BITS);
    assert_eq!(v1(srv.addr, &[series(&up, &[(2_000, stale)], None)], &[]).status, 204);
    assert_eq!(value(srv.addr, "up").as_deref(), Some("1"), "a stale marker deletes nothing");
    assert_eq!(self_metric(srv.addr, "ingestor_remote_write_stale_markers_total"), 1.0);

    let mixed = remote_write::encode_v2(&[
        series(&[("__name__", "good")], &[(1_000, 1.0)], None),
        series(&[("__name__", "nan_gauge")], &[(1_000, f64::NAN)], None),
        series(&[("job", "no-name")], &[(1_000, 1.0)], None),
        series(&[("__name__", "ingestor_points_total")], &[(1_000, 1.0)], None),
    ]);
    let a = request(srv.addr, "POST", "/api/v1/write", V2, &mixed);
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("3 samples refused, 1 written"), "{}", a.body);
    assert!(a.body.contains("__name__") && a.body.contains("reserved"), "{}", a.body);
    assert_eq!(a.header("X-Prometheus-Remote-Write-Samples-Written"), Some("1"));
    assert_eq!(value(srv.addr, "good").as_deref(), Some("1"));
    assert_eq!(value(srv.addr, "nan_gauge"), None);
}

#[test]
fn unsupported_garbage_and_oversized_requests_get_their_codes() {
    let mut c = config();
    c.limits.max_decoded_body_bytes = 1_000;
    let srv = start(c);
    let body = remote_write::encode_v1(&[series(&[("__name__", "up")], &[(1, 1.0)], None)], &[]);
    let other_proto = [
        ("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v3.Request"),
        ("Content-Encoding", "snappy"),
    ];
    assert_eq!(request(srv.addr, "POST", "/api/v1/write", &other_proto, &body).status, 415);
    let json = [("Content-Type", "application/json"), ("Content-Encoding", "snappy")];
    assert_eq!(request(srv.addr, "POST", "/api/v1/write", &json, &body).status, 415);
    let zstd = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "zstd")];
    assert_eq!(request(srv.addr, "POST", "/api/v1/write", &zstd, &body).status, 415);
    let a = request(srv.addr, "POST", "/api/v1/write", V1, b"definitely not snappy");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.header("X-Prometheus-Remote-Write-Samples-Written"), None, "1.0: no headers");
    // 2.0 asks for the written counts on failures too: 0 for a request refused whole.
    let a = request(srv.addr, "POST", "/api/v1/write", V2, b"definitely not snappy");
    assert_eq!(a.status, 400, "{}", a.body);
    assert_eq!(a.header("X-Prometheus-Remote-Write-Samples-Written"), Some("0"));
    assert_eq!(a.header("X-Prometheus-Remote-Write-Histograms-Written"), Some("0"));
    let big: Vec<Series> = (0..100)
        .map(|i| series(&[("__name__", "big"), ("i", &i.to_string())], &[(1, 1.0)], None))
        .collect();
    let a = v1(srv.addr, &big, &[]);
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(value(srv.addr, "big"), None);
}

#[test]
fn known_series_go_by_handle_keep_their_kind_and_come_back_after_a_delete() {
    let srv = start(config());
    let reqs = [("__name__", "reqs_total"), ("code", "200")];
    let temp = [("__name__", "temp")];
    let two = |t: i64, total: f64, temp_v: f64| {
        v1(
            srv.addr,
            &[
                series(&reqs, &[(t, total)], Some(MetricType::Counter)),
                series(&temp, &[(t, temp_v)], None),
            ],
            &[("reqs".into(), MetricType::Counter)],
        )
    };
    for (t, total) in [(1_000, 5.0), (2_000, 8.0), (3_000, 2.0)] {
        assert_eq!(two(t, total, total / 2.0).status, 204);
    }
    // Through the cache, the counter stayed a counter and saw a reset (8 -> 2).
    assert_eq!(family_type(srv.addr, "reqs_total").as_deref(), Some("counter"));
    assert_eq!(value(srv.addr, "reqs_total").as_deref(), Some("2"));
    assert_eq!(value(srv.addr, "temp").as_deref(), Some("1"));
    // A NaN for a known series is refused on the fast path too, the rest written.
    let a = v1(
        srv.addr,
        &[series(&reqs, &[(4_000, f64::NAN)], None), series(&temp, &[(4_000, 7.0)], None)],
        &[],
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("1 samples refused, 1 written"), "{}", a.body);
    assert_eq!(value(srv.addr, "temp").as_deref(), Some("7"));
    // Deleted behind the server's back: its cached handle is stale; it comes back by key.
    let db = srv.server.as_ref().unwrap().ingestor().unwrap();
    let key = ingestor::SeriesKey::new("temp", std::iter::empty::<(&str, &str)>()).unwrap();
    db.ingest(&[ingestor::Update::new(key, ingestor::Timestamp(1), ingestor::Op::Delete).unwrap()])
        .unwrap();
    drop(db);
    assert_eq!(value(srv.addr, "temp"), None);
    assert_eq!(two(5_000, 9.0, 3.5).status, 204);
    assert_eq!(value(srv.addr, "temp").as_deref(), Some("3.5"));
    assert_eq!(value(srv.addr, "reqs_total").as_deref(), Some("9"));
}

#[test]
fn stale_markers_are_counted_whichever_path_a_request_takes() {
    let srv = start(config());
    let stale = f64::from_bits(STALE_NAN_BITS);
    let known = [("__name__", "known")];
    assert_eq!(v1(srv.addr, &[series(&known, &[(1, 1.0)], None)], &[]).status, 204);
    // A new series first (the request goes by key), then stale markers of other series.
    let a = v1(
        srv.addr,
        &[
            series(&[("__name__", "fresh")], &[(2, 2.0)], None),
            series(&known, &[(2, stale)], None),
            series(&[("__name__", "gone")], &[(2, stale)], None),
        ],
        &[],
    );
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(self_metric(srv.addr, "ingestor_remote_write_stale_markers_total"), 2.0);
    // All known now: the request goes by handle.
    let a = v1(
        srv.addr,
        &[series(&known, &[(3, stale)], None), series(&[("__name__", "fresh")], &[(3, 3.0)], None)],
        &[],
    );
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(self_metric(srv.addr, "ingestor_remote_write_stale_markers_total"), 3.0);
    assert_eq!(value(srv.addr, "fresh").as_deref(), Some("3"));
    assert_eq!(value(srv.addr, "known").as_deref(), Some("1"));
}
