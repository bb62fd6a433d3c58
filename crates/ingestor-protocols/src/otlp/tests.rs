use ingestor_codec::Update;
use proptest::prelude::*;

use super::proto::*;
use super::*;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Any::StringValue(v.into())) }) }
}

fn number(attrs: Vec<KeyValue>, t_ns: u64, v: Value) -> NumberDataPoint {
    NumberDataPoint { attributes: attrs, time_unix_nano: t_ns, value: Some(v), flags: 0 }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource }),
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric { name: name.into(), unit: unit.into(), data: Some(data) }
}

/// `key op` of every update, in order.
fn rendered(t: &Translation) -> Vec<String> {
    t.updates.iter().map(|u| format!("{} {:?} @{}", u.key, u.op, u.timestamp.0)).collect()
}

const T: u64 = 1_700_000_000_123_456_789;
const MS: i64 = 1_700_000_000_123;

#[test]
fn metric_and_label_names_follow_prometheus_translation() {
    use NameKind::*;
    // (name, unit, kind, expected)
    let table = [
        ("http.server.duration", "ms", Other, "http_server_duration_milliseconds"),
        ("http.server.request.duration", "s", Other, "http_server_request_duration_seconds"),
        ("requests", "{request}", Counter, "requests_total"),
        ("requests.total", "1", Counter, "requests_total"),
        ("total.requests", "", Counter, "requests_total"),
        ("system.memory.usage", "By", Other, "system_memory_usage_bytes"),
        ("network.io", "By/s", Gauge, "network_io_bytes_per_second"),
        ("cpu.utilization", "1", Gauge, "cpu_utilization_ratio"),
        ("cpu.utilization", "1", Other, "cpu_utilization"),
        ("disk.free", "%", Gauge, "disk_free_percent"),
        ("queue.latency.seconds", "s", Gauge, "queue_latency_seconds"),
        ("rate", "/s", Gauge, "rate_per_second"),
        ("temp", "Cel", Gauge, "temp_celsius"),
        ("size", "KiBy", Gauge, "size_kibibytes"),
        ("weird-name/with spaces", "", Gauge, "weird_name_with_spaces"),
        ("a__b___c", "", Gauge, "a_b_c"),
        ("2xx.responses", "", Counter, "_2xx_responses_total"),
        ("ns:metric", "", Gauge, "ns:metric"),
        ("jobs", "{job}/min", Counter, "jobs_per_min_total"),
        ("uptime", "d", Counter, "uptime_days_total"),
        ("custom", "widgets", Gauge, "custom_widgets"),
        ("élan", "", Gauge, "lan"),
    ];
    for (name, unit, kind, want) in table {
        assert_eq!(metric_name(name, unit, kind).as_deref(), Ok(want), "{name} {unit} {kind:?}");
    }
    assert!(metric_name("...", "", Gauge).is_err());
    assert!(metric_name("", "", Counter).is_ok(), "a counter is at least `total`");
    let labels = [
        ("http.request.method", "http_request_method"),
        ("service.name", "service_name"),
        ("k8s.pod-name", "k8s_pod_name"),
        ("a..b", "a_b"),
        ("_private", "_private"),
        ("__reserved", "_reserved"),
        ("2xx", "key_2xx"),
        ("Ünïcode", "_n_code"),
    ];
    for (key, want) in labels {
        assert_eq!(label_name(key).as_deref(), Ok(want), "{key}");
    }
    assert!(label_name("..").is_err());
    assert!(label_name("").is_err());
}

#[test]
fn each_metric_type_maps_to_its_operations() {
    let r = request(
        vec![
            kv("service.name", "cart"),
            kv("service.namespace", "shop"),
            kv("service.instance.id", "pod-7"),
            kv("host.name", "web-1"),
        ],
        vec![
            metric(
                "requests",
                "1",
                Data::Sum(Sum {
                    data_points: vec![number(vec![kv("code", "200")], T, Value::AsInt(42))],
                    aggregation_temporality: TEMPORALITY_CUMULATIVE,
                    is_monotonic: true,
                }),
            ),
            metric(
                "bytes.sent",
                "By",
                Data::Sum(Sum {
                    data_points: vec![number(vec![], T, Value::AsDouble(512.0))],
                    aggregation_temporality: TEMPORALITY_DELTA,
                    is_monotonic: true,
                }),
            ),
            metric(
                "queue.depth",
                "",
                Data::Sum(Sum {
                    data_points: vec![number(vec![], T, Value::AsInt(-3))],
                    aggregation_temporality: TEMPORALITY_CUMULATIVE,
                    is_monotonic: false,
                }),
            ),
            metric(
                "active",
                "",
                Data::Sum(Sum {
                    data_points: vec![number(vec![], T, Value::AsInt(-2))],
                    aggregation_temporality: TEMPORALITY_DELTA,
                    is_monotonic: false,
                }),
            ),
            metric(
                "temperature",
                "Cel",
                Data::Gauge(Gauge {
                    data_points: vec![number(vec![kv("room", "a")], T, Value::AsDouble(21.5))],
                }),
            ),
        ],
    );
    let t = translate(&r, 7);
    let base = r#"instance="pod-7",job="shop/cart""#;
    assert_eq!(
        rendered(&t),
        [
            format!(r#"requests_total{{code="200",{base}}} CounterSet(42.0) @{MS}"#),
            // The unit's word is in the name already.
            format!(r#"bytes_sent_total{{{base}}} CounterAdd(512.0) @{MS}"#),
            format!(r#"queue_depth{{{base}}} GaugeSet(-3.0) @{MS}"#),
            format!(r#"active{{{base}}} GaugeAdd(-2.0) @{MS}"#),
            format!(r#"temperature_celsius{{{base},room="a"}} GaugeSet(21.5) @{MS}"#),
            format!(r#"target_info{{host_name="web-1",{base}}} GaugeSet(1.0) @{MS}"#),
        ]
    );
    assert_eq!(t.origins, [0, 1, 2, 3, 4, NO_DATA_POINT]);
    assert_eq!(t.data_points, 5);
    assert_eq!(t.rejected.total(), 0);
}

fn histogram_request(temporality: i32) -> ExportMetricsServiceRequest {
    request(
        vec![kv("service.name", "api")],
        vec![metric(
            "http.server.duration",
            "ms",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: vec![kv("le", "ignored"), kv("route", "/")],
                    time_unix_nano: T,
                    count: 10,
                    sum: Some(1234.5),
                    bucket_counts: vec![1, 2, 3, 4],
                    explicit_bounds: vec![0.005, 10.0, 1e10],
                    flags: 0,
                }],
                aggregation_temporality: temporality,
            }),
        )],
    )
}

fn sample_of(u: &Update) -> (&'static str, Vec<f64>, Vec<u64>, f64) {
    let s = u.op.sample().unwrap_or_else(|| panic!("not a histogram sample: {:?}", u.op));
    (u.op.name(), s.bounds.to_vec(), s.buckets.to_vec(), s.sum)
}

fn with_point(
    temporality: i32,
    change: impl FnOnce(&mut HistogramDataPoint),
) -> ExportMetricsServiceRequest {
    let mut r = histogram_request(temporality);
    if let Some(Data::Histogram(h)) = &mut r.resource_metrics[0].scope_metrics[0].metrics[0].data {
        change(&mut h.data_points[0]);
    }
    r
}

#[test]
fn histograms_are_histograms_over_their_own_bounds() {
    let t = translate(&histogram_request(TEMPORALITY_CUMULATIVE), 0);
    // One series; the attribute `le` gives way to the buckets' own label.
    assert_eq!(
        t.updates.iter().map(|u| format!("{} @{}", u.key, u.timestamp.0)).collect::<Vec<_>>(),
        [format!(r#"http_server_duration_milliseconds{{job="api",route="/"}} @{MS}"#)]
    );
    assert_eq!(
        sample_of(&t.updates[0]),
        ("histogram_set", vec![0.005, 10.0, 1e10], vec![1, 2, 3, 4], 1234.5)
    );
    assert_eq!(t.origins, [0]);
    let delta = translate(&histogram_request(TEMPORALITY_DELTA), 0);
    assert_eq!(
        sample_of(&delta.updates[0]),
        ("histogram_add", vec![0.005, 10.0, 1e10], vec![1, 2, 3, 4], 1234.5)
    );
    let unspecified = translate(&histogram_request(TEMPORALITY_UNSPECIFIED), 0);
    assert!(unspecified.updates.is_empty());
    assert_eq!(unspecified.rejected.total(), 1);
}

#[test]
fn histogram_edge_cases() {
    // A last bound of +Inf is the implicit one: its bucket joins the overflow bucket.
    let t = translate(
        &with_point(TEMPORALITY_CUMULATIVE, |p| {
            p.explicit_bounds = vec![1.0, 2.0, f64::INFINITY];
            p.bucket_counts = vec![1, 2, 3, 4];
        }),
        0,
    );
    assert_eq!(sample_of(&t.updates[0]), ("histogram_set", vec![1.0, 2.0], vec![1, 2, 7], 1234.5));
    // No buckets: the count is all in +Inf; no sum: 0.
    let t = translate(
        &with_point(TEMPORALITY_CUMULATIVE, |p| {
            p.explicit_bounds = vec![];
            p.bucket_counts = vec![];
            p.count = 5;
            p.sum = None;
        }),
        0,
    );
    assert_eq!(sample_of(&t.updates[0]), ("histogram_set", vec![], vec![5], 0.0));
    // Refused, each with a reason that names the metric and the fault.
    for (change, reason) in [
        (
            Box::new(|p: &mut HistogramDataPoint| {
                p.bucket_counts.pop();
            }) as Box<dyn FnOnce(&mut HistogramDataPoint)>,
            "3 bucket counts for 3 bounds",
        ),
        (Box::new(|p: &mut HistogramDataPoint| p.count = 11), "count 11 is not the sum"),
        (
            Box::new(|p: &mut HistogramDataPoint| p.explicit_bounds = vec![10.0, 0.005, 1e10]),
            "bucket bounds must increase strictly",
        ),
        (
            Box::new(|p: &mut HistogramDataPoint| p.explicit_bounds = vec![f64::NAN, 1.0, 2.0]),
            "bucket bound NaN is not finite",
        ),
        (Box::new(|p: &mut HistogramDataPoint| p.sum = Some(f64::INFINITY)), "sum inf"),
    ] {
        let t = translate(&with_point(TEMPORALITY_CUMULATIVE, change), 0);
        assert!(t.updates.is_empty(), "{reason}");
        let message = t.rejected.message();
        assert!(message.contains(reason), "{message}");
        assert!(message.contains("http_server_duration_milliseconds"), "{message}");
    }
}

#[test]
fn summaries_and_refusals() {
    let r = request(
        vec![],
        vec![
            metric(
                "rpc.latency",
                "s",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        attributes: vec![],
                        time_unix_nano: 0,
                        count: 4,
                        sum: 2.5,
                        quantile_values: vec![
                            ValueAtQuantile { quantile: 0.5, value: 0.4 },
                            ValueAtQuantile { quantile: 0.99, value: 1.5 },
                        ],
                        flags: 0,
                    }],
                }),
            ),
            metric(
                "latency",
                "s",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![Opaque {}, Opaque {}],
                }),
            ),
            metric(
                "negative.increment",
                "",
                Data::Sum(Sum {
                    data_points: vec![
                        number(vec![], T, Value::AsDouble(-1.0)),
                        number(vec![], T, Value::AsDouble(f64::NAN)),
                        NumberDataPoint { flags: FLAG_NO_RECORDED_VALUE, ..Default::default() },
                        NumberDataPoint::default(),
                        number(vec![kv("a", "")], T, Value::AsDouble(1.0)),
                    ],
                    aggregation_temporality: TEMPORALITY_DELTA,
                    is_monotonic: true,
                }),
            ),
        ],
    );
    let t = translate(&r, 99);
    assert_eq!(
        rendered(&t),
        [
            r#"rpc_latency_seconds{quantile="0.5"} GaugeSet(0.4) @99"#,
            r#"rpc_latency_seconds{quantile="0.99"} GaugeSet(1.5) @99"#,
            r#"rpc_latency_seconds_sum GaugeSet(2.5) @99"#,
            r#"rpc_latency_seconds_count GaugeSet(4.0) @99"#,
            &format!("negative_increment_total CounterAdd(1.0) @{MS}"),
        ]
    );
    assert_eq!(t.data_points, 8);
    assert_eq!(t.no_value, 1);
    // 2 exponential, a negative increment, a NaN, a point without a value.
    assert_eq!(t.rejected.total(), 5);
    let m = t.rejected.message();
    assert!(m.contains("2 x exponential histogram"), "{m}");
    assert!(m.starts_with("5 data points refused"), "{m}");
    // No target_info without job or instance.
    assert!(t.updates.iter().all(|u| u.key.name() != "target_info"));
}

#[test]
fn colliding_attributes_are_joined_and_values_written_out() {
    let attrs = vec![
        kv("a.b", "2"),
        kv("a_b", "1"),
        KeyValue { key: "n".into(), value: Some(AnyValue { value: Some(Any::IntValue(-5)) }) },
        KeyValue { key: "ok".into(), value: Some(AnyValue { value: Some(Any::BoolValue(true)) }) },
        KeyValue {
            key: "list".into(),
            value: Some(AnyValue {
                value: Some(Any::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: Some(Any::StringValue("x".into())) },
                        AnyValue { value: Some(Any::DoubleValue(1.5)) },
                    ],
                })),
            }),
        },
        KeyValue {
            key: "raw".into(),
            value: Some(AnyValue { value: Some(Any::BytesValue(vec![1, 2])) }),
        },
    ];
    let r = request(
        vec![kv("service.instance.id", "i-1")],
        vec![metric(
            "g",
            "",
            Data::Gauge(Gauge { data_points: vec![number(attrs, T, Value::AsInt(1))] }),
        )],
    );
    let t = translate(&r, 0);
    assert_eq!(
        t.updates[0].key.to_string(),
        r#"g{a_b="2;1",instance="i-1",list="[\"x\",1.5]",n="-5",ok="true",raw="AQI="}"#
    );
}

#[test]
fn json_and_protobuf_decode_to_the_same_request() {
    let json = r#"{"resourceMetrics":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"svc"}},
        {"key":"n","value":{"intValue":"7"}},
        {"key":"b","value":{"bytesValue":"AQI="}},
        {"key":"l","value":{"arrayValue":{"values":[{"boolValue":true},{"doubleValue":"-Infinity"}]}}},
        {"key":"m","value":{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}}]},
      "scopeMetrics":[{"scope":{"name":"lib","version":"1"},"metrics":[
        {"name":"h","unit":"s","description":"ignored","histogram":{"aggregationTemporality":1,
          "dataPoints":[{"startTimeUnixNano":"1","timeUnixNano":"1700000000123456789",
            "count":"3","sum":1.5,"bucketCounts":["1",2],"explicitBounds":[0.5],
            "exemplars":[{"asDouble":1,"traceId":"00","spanId":"00"}],"min":0.1,"max":1}]}},
        {"name":"s","sum":{"isMonotonic":true,"aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE",
          "dataPoints":[{"timeUnixNano":1700000000123456789,"asDouble":"Infinity"},
                        {"asInt":3,"flags":1}]}},
        {"name":"e","exponentialHistogram":{"dataPoints":[{"scale":3,"positive":{"bucketCounts":["1"]}}]}},
        {"name":"q","summary":{"dataPoints":[{"quantileValues":[{"quantile":0.5,"value":"NaN"}]}]}}
      ]}]}]}"#;
    let r = decode(json.as_bytes(), Encoding::Json).unwrap();
    let metrics = &r.resource_metrics[0].scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 4);
    let Some(Data::Histogram(h)) = &metrics[0].data else { panic!("{:?}", metrics[0]) };
    assert_eq!(h.aggregation_temporality, TEMPORALITY_DELTA);
    assert_eq!(h.data_points[0].time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(h.data_points[0].bucket_counts, [1, 2]);
    assert_eq!(h.data_points[0].sum, Some(1.5));
    let Some(Data::Sum(s)) = &metrics[1].data else { panic!() };
    assert_eq!(s.aggregation_temporality, TEMPORALITY_CUMULATIVE);
    assert_eq!(s.data_points[0].value, Some(Value::AsDouble(f64::INFINITY)));
    assert_eq!(s.data_points[1].value, Some(Value::AsInt(3)));
    assert_eq!(s.data_points[1].flags, 1);
    assert!(
        matches!(&metrics[2].data, Some(Data::ExponentialHistogram(e)) if e.data_points.len() == 1)
    );
    let Some(Data::Summary(q)) = &metrics[3].data else { panic!() };
    assert!(q.data_points[0].quantile_values[0].value.is_nan());
    let attrs = &r.resource_metrics[0].resource.as_ref().unwrap().attributes;
    assert_eq!(attrs[1].value.as_ref().unwrap().value, Some(Any::IntValue(7)));
    assert_eq!(attrs[2].value.as_ref().unwrap().value, Some(Any::BytesValue(vec![1, 2])));
    assert_eq!(value_string(attrs[3].value.as_ref()), r#"[true,"-inf"]"#);
    assert_eq!(value_string(attrs[4].value.as_ref()), r#"{"k":"v"}"#);
    // Protobuf round trip (NaN compares unequal, so compare the re-encoding).
    let bytes = encode_request(&r);
    assert_eq!(encode_request(&decode(&bytes, Encoding::Protobuf).unwrap()), bytes);
    // Bad bodies.
    assert!(decode(b"{", Encoding::Json).is_err());
    // A bad value anywhere refuses the body, data points included.
    let bad = |s: &str| {
        let body = format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{s}]}}]}}]}}"#);
        decode(body.as_bytes(), Encoding::Json).unwrap_err().0
    };
    assert!(
        bad(r#"{"name":"x","gauge":{"dataPoints":[{"timeUnixNano":"soon"}]}}"#).contains("soon")
    );
    assert!(bad(r#"{"name":"x","gauge":{"dataPoints":[{"asInt":"1.5"}]}}"#).contains("1.5"));
    assert!(
        bad(r#"{"name":"x","gauge":{"dataPoints":[{"asInt":1,"asDouble":1}]}}"#).contains("both")
    );
    assert!(bad(r#"{"name":"x","gauge":{},"sum":{}}"#).contains("more than one"));
    assert!(bad(r#"{"name":"x","gauge":{"dataPoints":[{"attributes":[{"key":"k","value":{"bytesValue":"!!"}}]}]}}"#).contains("base64"));
    assert!(
        bad(r#"{"name":"x","sum":{"aggregationTemporality":"SOMETIMES"}}"#).contains("SOMETIMES")
    );
    // null is the default.
    let ok = r#"{"resourceMetrics":[{"resource":null,"scopeMetrics":[{"metrics":[{"name":"x","unit":null,"gauge":{"dataPoints":null}}]}]}]}"#;
    assert_eq!(
        decode(ok.as_bytes(), Encoding::Json).unwrap().resource_metrics[0].scope_metrics[0].metrics
            [0]
        .name,
        "x"
    );
    assert!(decode(br#"{"resourceMetrics":"no"}"#, Encoding::Json).is_err());
    assert!(decode(&[0x0a, 0xff], Encoding::Protobuf).is_err());
    assert_eq!(decode(b"{}", Encoding::Json).unwrap(), ExportMetricsServiceRequest::default());
    assert_eq!(decode(b"", Encoding::Protobuf).unwrap(), ExportMetricsServiceRequest::default());
}

#[test]
fn content_types_and_answers() {
    assert_eq!(Encoding::from_content_type(Some("application/x-protobuf")), Ok(Encoding::Protobuf));
    assert_eq!(
        Encoding::from_content_type(Some("application/json; charset=utf-8")),
        Ok(Encoding::Json)
    );
    assert!(Encoding::from_content_type(Some("text/plain")).is_err());
    assert!(Encoding::from_content_type(None).is_err());
    let body = encode_response(Encoding::Protobuf, 3, "why");
    let decoded = ExportMetricsServiceResponse::decode(body.as_slice()).unwrap();
    let p = decoded.partial_success.unwrap();
    assert_eq!((p.rejected_data_points, p.error_message.as_str()), (3, "why"));
    assert!(encode_response(Encoding::Protobuf, 0, "").is_empty());
    assert_eq!(encode_response(Encoding::Json, 0, ""), b"{}");
    let json: serde_json::Value =
        serde_json::from_slice(&encode_response(Encoding::Json, 2, "no")).unwrap();
    assert_eq!(json["partialSuccess"]["rejectedDataPoints"], "2");
    assert_eq!(json["partialSuccess"]["errorMessage"], "no");
    let status =
        Status::decode(encode_status(Encoding::Protobuf, 503, "later").as_slice()).unwrap();
    assert_eq!((status.code, status.message.as_str()), (14, "later"));
}

fn any_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let attr = ("[a-z._0-9]{0,6}", "[a-z]{0,3}").prop_map(|(k, v)| kv(&k, &v));
    let attrs = prop::collection::vec(attr, 0..4);
    let value =
        prop_oneof![any::<f64>().prop_map(Value::AsDouble), any::<i64>().prop_map(Value::AsInt)];
    let point =
        (attrs.clone(), any::<u64>(), prop::option::of(value), 0u32..3).prop_map(|(a, t, v, f)| {
            NumberDataPoint { attributes: a, time_unix_nano: t, value: v, flags: f }
        });
    let hist = (
        attrs,
        any::<u64>(),
        prop::collection::vec(any::<u64>(), 0..5),
        prop::collection::vec(any::<f64>(), 0..4),
    )
        .prop_map(|(a, c, b, e)| HistogramDataPoint {
            attributes: a,
            time_unix_nano: 1,
            count: c,
            sum: Some(1.0),
            bucket_counts: b,
            explicit_bounds: e,
            flags: 0,
        });
    let data = prop_oneof![
        prop::collection::vec(point.clone(), 0..3)
            .prop_map(|p| Data::Gauge(Gauge { data_points: p })),
        (prop::collection::vec(point, 0..3), 0i32..4, any::<bool>()).prop_map(|(p, t, m)| {
            Data::Sum(Sum { data_points: p, aggregation_temporality: t, is_monotonic: m })
        }),
        (prop::collection::vec(hist, 0..3), 0i32..4).prop_map(|(p, t)| Data::Histogram(
            Histogram { data_points: p, aggregation_temporality: t }
        )),
    ];
    let m = ("[a-zA-Z._ /{}0-9-]{0,10}", "[a-zA-Z/{}1%]{0,4}", data)
        .prop_map(|(n, u, d)| metric(&n, &u, d));
    (
        prop::collection::vec(m, 0..4),
        prop::collection::vec(("service\\.(name|instance\\.id)|x", "[a-z]{0,2}"), 0..3),
    )
        .prop_map(|(ms, res)| request(res.iter().map(|(k, v)| kv(k, v)).collect(), ms))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No bytes panic either decoder, nor the translation of what they decode.
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for enc in [Encoding::Protobuf, Encoding::Json] {
            if let Ok(r) = decode(&bytes, enc) {
                let _ = translate(&r, 0);
            }
        }
    }

    /// Valid requests, mutated: decoding and translation never panic, and every data point
    /// is written, refused or skipped (no value), never lost.
    #[test]
    fn translation_accounts_for_every_point(r in any_request(), flip in any::<(usize, u8)>()) {
        let t = translate(&r, 0);
        let mut written: Vec<u32> = t.origins.iter().copied().filter(|&o| o != NO_DATA_POINT).collect();
        written.dedup();
        prop_assert_eq!(written.len() + t.rejected.total() + t.no_value, t.data_points);
        let mut bytes = encode_request(&r);
        if !bytes.is_empty() {
            let i = flip.0 % bytes.len();
            bytes[i] ^= flip.1;
        }
        if let Ok(r) = decode(&bytes, Encoding::Protobuf) {
            let _ = translate(&r, 0);
        }
    }

    /// JSON built like a sender's, with random punctuation: never panics.
    #[test]
    fn json_never_panics(s in r#"[\{\}\[\]":,0-9a-zA-Z. -]{0,200}"#) {
        let _ = decode(s.as_bytes(), Encoding::Json);
        let wrapped = format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{s}]}}]}}]}}"#);
        if let Ok(r) = decode(wrapped.as_bytes(), Encoding::Json) {
            let _ = translate(&r, 0);
        }
    }
}
