//! OTLP metrics over HTTP at `/v1/metrics` and `/opentelemetry/v1/metrics`: protobuf and
//! JSON, gzip, each metric type's mapping with exact values, delta and cumulative
//! temporality, refused data points in `partial_success`, status codes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ingestor::{Config, Ingestor};
use ingestor_protocols::otlp::proto::*;
use ingestor_protocols::otlp::{self, Encoding};

const PB: (&str, &str) = ("Content-Type", "application/x-protobuf");
const JSON: (&str, &str) = ("Content-Type", "application/json");
/// 2023-11-14T22:13:20Z, in nanoseconds.
const T: u64 = 1_700_000_000_000_000_000;

/// An answer with its body as bytes (protobuf answers are not text).
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn raw(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Raw {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Raw { status, headers, body: all[split..].to_vec() }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Any::StringValue(v.into())) }) }
}

fn point(attrs: Vec<KeyValue>, t: u64, v: Value) -> NumberDataPoint {
    NumberDataPoint { attributes: attrs, time_unix_nano: t, value: Some(v), flags: 0 }
}

fn sum(
    name: &str,
    unit: &str,
    monotonic: bool,
    temporality: i32,
    points: Vec<NumberDataPoint>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
    }
}

fn gauge(name: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(Data::Gauge(Gauge { data_points: points })),
    }
}

fn histogram(name: &str, temporality: i32, t: u64, counts: Vec<u64>, sum: f64) -> Metric {
    Metric {
        name: name.into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![kv("route", "/cart")],
                time_unix_nano: t,
                count: counts.iter().sum(),
                sum: Some(sum),
                bucket_counts: counts,
                explicit_bounds: vec![0.1, 1.0],
                flags: 0,
            }],
            aggregation_temporality: temporality,
        })),
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "shop"),
                    kv("service.instance.id", "pod-1"),
                    kv("deployment.environment", "test"),
                ],
            }),
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
}

fn export(addr: SocketAddr, r: &ExportMetricsServiceRequest) -> Raw {
    raw(addr, "/v1/metrics", &[PB], &otlp::encode_request(r))
}

/// The answer of a 200 in `encoding`: (data points refused, message).
fn partial(a: &Raw, encoding: Encoding) -> (i64, String) {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("content-type"), Some(encoding.content_type()));
    let r = otlp::decode_response(&a.body, encoding).unwrap();
    r.partial_success.map_or((0, String::new()), |p| (p.rejected_data_points, p.error_message))
}

fn family_type(addr: SocketAddr, family: &str) -> Option<String> {
    let body = get(addr, "/metrics").body;
    let prefix = format!("# TYPE {family} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

const ID: &str = r#"instance="pod-1",job="shop""#;

#[test]
fn protobuf_each_metric_type_with_exact_values() {
    let srv = start(config());
    let r = request(vec![
        sum(
            "http.requests",
            "{request}",
            true,
            TEMPORALITY_CUMULATIVE,
            vec![point(vec![kv("code", "200")], T, Value::AsInt(42))],
        ),
        sum(
            "queue.items",
            "",
            false,
            TEMPORALITY_CUMULATIVE,
            vec![point(vec![], T, Value::AsInt(-4))],
        ),
        gauge(
            "cpu.temperature",
            "Cel",
            vec![point(vec![kv("core", "0")], T, Value::AsDouble(61.5))],
        ),
        gauge("memory.utilization", "1", vec![point(vec![], T, Value::AsDouble(0.25))]),
        histogram("http.duration", TEMPORALITY_CUMULATIVE, T, vec![2, 3, 1], 4.5),
        Metric {
            name: "rpc.latency".into(),
            unit: "ms".into(),
            data: Some(Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: vec![],
                    time_unix_nano: T,
                    count: 7,
                    sum: 70.0,
                    quantile_values: vec![ValueAtQuantile { quantile: 0.99, value: 20.0 }],
                    flags: 0,
                }],
            })),
        },
    ]);
    let a = export(srv.addr, &r);
    assert_eq!(partial(&a, Encoding::Protobuf), (0, String::new()));
    assert!(a.body.is_empty(), "no partial_success: an empty message");
    let v = |q: &str| value(srv.addr, q);
    assert_eq!(v(&format!(r#"http_requests_total{{code="200",{ID}}}"#)).as_deref(), Some("42"));
    assert_eq!(family_type(srv.addr, "http_requests_total").as_deref(), Some("counter"));
    assert_eq!(v(&format!("queue_items{{{ID}}}")).as_deref(), Some("-4"));
    assert_eq!(family_type(srv.addr, "queue_items").as_deref(), Some("gauge"));
    assert_eq!(v(&format!(r#"cpu_temperature_celsius{{core="0",{ID}}}"#)).as_deref(), Some("61.5"));
    assert_eq!(v("memory_utilization_ratio").as_deref(), Some("0.25"));
    for (le, count) in [("0.1", "2"), ("1", "5"), ("+Inf", "6")] {
        let q = format!(r#"http_duration_seconds_bucket{{le="{le}",route="/cart",{ID}}}"#);
        assert_eq!(v(&q).as_deref(), Some(count), "{q}");
    }
    assert_eq!(v("http_duration_seconds_sum").as_deref(), Some("4.5"));
    assert_eq!(v("http_duration_seconds_count").as_deref(), Some("6"));
    assert_eq!(family_type(srv.addr, "http_duration_seconds").as_deref(), Some("histogram"));
    assert_eq!(v(r#"rpc_latency_milliseconds{quantile="0.99"}"#).as_deref(), Some("20"));
    assert_eq!(v("rpc_latency_milliseconds_sum").as_deref(), Some("70"));
    assert_eq!(v("rpc_latency_milliseconds_count").as_deref(), Some("7"));
    assert_eq!(
        v(&format!(r#"target_info{{deployment_environment="test",{ID}}}"#)).as_deref(),
        Some("1")
    );
    assert_eq!(self_metric(srv.addr, "ingestor_otlp_data_points_total"), 6.0);
    assert_eq!(self_metric(srv.addr, "ingestor_otlp_rejected_data_points_total"), 0.0);
}

#[test]
fn delta_adds_and_cumulative_sets() {
    let srv = start(config());
    for (v, t) in [(5, T), (3, T + 1_000_000_000)] {
        let r = request(vec![
            sum("jobs.done", "", true, TEMPORALITY_DELTA, vec![point(vec![], t, Value::AsInt(v))]),
            sum(
                "jobs.seen",
                "",
                true,
                TEMPORALITY_CUMULATIVE,
                vec![point(vec![], t, Value::AsInt(v * 10))],
            ),
            sum("workers", "", false, TEMPORALITY_DELTA, vec![point(vec![], t, Value::AsInt(-v))]),
            histogram("wait", TEMPORALITY_DELTA, t, vec![1, 0, v as u64], 2.0),
        ]);
        assert_eq!(partial(&export(srv.addr, &r), Encoding::Protobuf).0, 0);
    }
    let v = |q: &str| value(srv.addr, q);
    assert_eq!(v("jobs_done_total").as_deref(), Some("8"), "5 + 3");
    assert_eq!(family_type(srv.addr, "jobs_done_total").as_deref(), Some("counter"));
    assert_eq!(v("jobs_seen_total").as_deref(), Some("30"), "the last total");
    assert_eq!(v("workers").as_deref(), Some("-8"), "-5 + -3");
    assert_eq!(v(r#"wait_seconds_bucket{le="0.1"}"#).as_deref(), Some("2"));
    assert_eq!(v(r#"wait_seconds_bucket{le="+Inf"}"#).as_deref(), Some("10"), "6 + 4");
    assert_eq!(v("wait_seconds_count").as_deref(), Some("10"));
    assert_eq!(v("wait_seconds_sum").as_deref(), Some("4"));
    assert_eq!(family_type(srv.addr, "wait_seconds").as_deref(), Some("histogram"));
}

#[test]
fn json_gzip_and_the_victoriametrics_path() {
    let srv = start(config());
    let body = r#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"api"}},
        {"key":"service.namespace","value":{"stringValue":"prod"}}]},
      "scopeMetrics":[{"scope":{"name":"x"},"metrics":[
        {"name":"logins","sum":{"isMonotonic":true,"aggregationTemporality":2,
          "dataPoints":[{"timeUnixNano":"1700000000000000000","asInt":"9",
            "attributes":[{"key":"method","value":{"stringValue":"sso"}}]}]}}]}]}]}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body.as_bytes()).unwrap();
    let zipped = gz.finish().unwrap();
    let a =
        raw(srv.addr, "/opentelemetry/v1/metrics", &[JSON, ("Content-Encoding", "gzip")], &zipped);
    assert_eq!(partial(&a, Encoding::Json), (0, String::new()));
    assert_eq!(a.body, b"{}");
    assert_eq!(
        value(srv.addr, r#"logins_total{job="prod/api",method="sso"}"#).as_deref(),
        Some("9")
    );
    // The same at /v1/metrics, plain JSON.
    let a = raw(srv.addr, "/v1/metrics", &[JSON], body.replace("\"9\"", "\"11\"").as_bytes());
    assert_eq!(partial(&a, Encoding::Json).0, 0);
    assert_eq!(value(srv.addr, "logins_total").as_deref(), Some("11"));
}

#[test]
fn refused_points_are_reported_in_partial_success_and_the_rest_written() {
    let srv = start(config());
    let exp = Metric {
        name: "latency".into(),
        unit: "s".into(),
        data: Some(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![Opaque {}, Opaque {}],
        })),
    };
    let r = request(vec![
        exp,
        gauge("ingestor.series", "", vec![point(vec![], T, Value::AsInt(1))]),
        gauge(
            "ok",
            "",
            vec![
                point(vec![], T, Value::AsInt(1)),
                point(vec![kv("x", "y")], T, Value::AsDouble(f64::NAN)),
            ],
        ),
        sum("resets", "", true, TEMPORALITY_DELTA, vec![point(vec![], T, Value::AsInt(-1))]),
    ]);
    let (n, message) = partial(&export(srv.addr, &r), Encoding::Protobuf);
    assert_eq!(n, 5, "{message}");
    assert!(message.contains("2 x exponential histogram"), "{message}");
    assert!(message.contains("ingestor_"), "{message}");
    assert_eq!(value(srv.addr, "ok").as_deref(), Some("1"));
    assert_eq!(value(srv.addr, "ingestor_series{job=\"shop\"}"), None);
    // A series that exists as a counter refuses gauge points, in JSON answers too.
    let first = request(vec![sum(
        "clash",
        "",
        true,
        TEMPORALITY_CUMULATIVE,
        vec![point(vec![], T, Value::AsInt(1))],
    )]);
    assert_eq!(partial(&export(srv.addr, &first), Encoding::Protobuf).0, 0);
    let json = r#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"shop"}},
        {"key":"service.instance.id","value":{"stringValue":"pod-1"}}]},
      "scopeMetrics":[{"metrics":[
        {"name":"clash_total","gauge":{"dataPoints":[{"asDouble":2}]}},
        {"name":"fine","gauge":{"dataPoints":[{"asDouble":3}]}}]}]}]}"#;
    let (n, message) =
        partial(&raw(srv.addr, "/v1/metrics", &[JSON], json.as_bytes()), Encoding::Json);
    assert_eq!(n, 1, "{message}");
    assert!(message.contains("a counter series"), "{message}");
    assert_eq!(value(srv.addr, "clash_total").as_deref(), Some("1"));
    assert_eq!(value(srv.addr, "fine").as_deref(), Some("3"));
    assert_eq!(self_metric(srv.addr, "ingestor_otlp_rejected_data_points_total"), 6.0);
}

#[test]
fn status_codes() {
    let mut c = config();
    c.limits.max_body_bytes = 4096;
    let srv = start(c);
    // 400: a body that does not decode; nothing applied; the Status in the request's encoding.
    let a = raw(srv.addr, "/v1/metrics", &[PB], &[0x0a, 0xff, 0xff]);
    assert_eq!(a.status, 400);
    assert_eq!(a.header("content-type"), Some("application/x-protobuf"));
    let s = otlp::decode_status(&a.body, Encoding::Protobuf).unwrap();
    assert_eq!(s.code, 3);
    assert!(s.message.contains("does not decode"), "{}", s.message);
    let a = raw(srv.addr, "/v1/metrics", &[JSON], br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":1}]}},{"name":"n","gauge":{"dataPoints":[{"asDouble":"x"}]}}]}]}]}"#);
    assert_eq!(a.status, 400);
    let s = otlp::decode_status(&a.body, Encoding::Json).unwrap();
    assert!(s.message.contains("\"x\""), "{}", s.message);
    assert_eq!(value(srv.addr, "m"), None, "nothing of a bad request is applied");
    // 415: another content type, or an encoding we do not take.
    assert_eq!(raw(srv.addr, "/v1/metrics", &[("Content-Type", "text/plain")], b"x").status, 415);
    assert_eq!(raw(srv.addr, "/v1/metrics", &[], b"x").status, 415);
    assert_eq!(raw(srv.addr, "/v1/metrics", &[PB, ("Content-Encoding", "br")], b"x").status, 415);
    // 413: over the body limit.
    let big = request(vec![gauge(
        "g",
        "",
        (0..200).map(|i| point(vec![kv("i", &i.to_string())], T, Value::AsInt(i))).collect(),
    )]);
    let a = export(srv.addr, &big);
    assert_eq!(a.status, 413);
    assert!(otlp::decode_status(&a.body, Encoding::Protobuf).unwrap().message.contains("4096"));
    // 405 for GET.
    assert_eq!(get(srv.addr, "/v1/metrics").status, 405);
}

#[test]
fn while_recovering_exports_are_503_with_retry_after() {
    let gate = gate();
    let g = Arc::clone(&gate);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let srv = start_opened(config(), move || {
        wait_gate(&g);
        Ingestor::open(&path, Config::default()).map(|(db, _)| db).map_err(|e| e.to_string())
    });
    let r = request(vec![gauge("g", "", vec![point(vec![], T, Value::AsInt(1))])]);
    let a = raw(srv.addr, "/v1/metrics", &[JSON], b"{}");
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(otlp::decode_status(&a.body, Encoding::Json).unwrap().code, 14);
    open_gate(&gate);
    wait_ready(srv.addr);
    assert_eq!(partial(&export(srv.addr, &r), Encoding::Protobuf).0, 0);
    assert_eq!(value(srv.addr, "g").as_deref(), Some("1"));
}
