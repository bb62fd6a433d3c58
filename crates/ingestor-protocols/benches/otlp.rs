//! OTLP decode and mapping throughput on one core: an `ExportMetricsServiceRequest` of
//! 2,000 data points (as an SDK exports them: a resource with service attributes; sums,
//! gauges and 10-bucket histograms with three attributes each), decoded from protobuf and
//! translated to updates. Throughput is in data points.
//!
//! ```sh
//! cargo bench -p ingestor-protocols --bench otlp
//! ```
//!
//! After criterion's figures (wall time), it prints the same work per second of this
//! thread's CPU time, which other work on a shared machine does not inflate.

use criterion::{Criterion, Throughput, criterion_group};
use ingestor_protocols::otlp::proto::*;
use ingestor_protocols::otlp::{self, Encoding};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(Any::StringValue(v.into())) }) }
}

/// 2,000 data points: 100 metrics (40 sums, 40 gauges, 20 histograms) of 20 points each.
fn request() -> ExportMetricsServiceRequest {
    let attrs = |i: usize| {
        vec![
            kv("http.route", &format!("/api/v1/item/{i}")),
            kv("http.request.method", if i.is_multiple_of(2) { "GET" } else { "POST" }),
            kv("http.response.status_code", "200"),
        ]
    };
    let t = 1_700_000_000_000_000_000u64;
    let mut metrics = Vec::new();
    for m in 0..100 {
        let data = match m % 5 {
            0 | 1 => Data::Sum(Sum {
                data_points: (0..20)
                    .map(|i| NumberDataPoint {
                        attributes: attrs(i),
                        time_unix_nano: t,
                        value: Some(Value::AsInt(1000 + i as i64)),
                        flags: 0,
                    })
                    .collect(),
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
                is_monotonic: true,
            }),
            2 | 3 => Data::Gauge(Gauge {
                data_points: (0..20)
                    .map(|i| NumberDataPoint {
                        attributes: attrs(i),
                        time_unix_nano: t,
                        value: Some(Value::AsDouble(i as f64 * 0.5)),
                        flags: 0,
                    })
                    .collect(),
            }),
            _ => Data::Histogram(Histogram {
                data_points: (0..20)
                    .map(|i| HistogramDataPoint {
                        attributes: attrs(i),
                        time_unix_nano: t,
                        count: 55,
                        sum: Some(12.5),
                        bucket_counts: (0..11).collect(),
                        explicit_bounds: vec![
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        ],
                        flags: 0,
                    })
                    .collect(),
                aggregation_temporality: TEMPORALITY_CUMULATIVE,
            }),
        };
        metrics.push(Metric {
            name: format!("app.metric.{m}"),
            unit: "s".into(),
            data: Some(data),
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.instance.id", "pod-1"),
                    kv("host.name", "web-1"),
                ],
            }),
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
}

fn bench(c: &mut Criterion) {
    let body = otlp::encode_request(&request());
    let points = 2_000u64;
    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(points));
    g.bench_function("decode_protobuf_2000_points", |b| {
        b.iter(|| otlp::decode(&body, Encoding::Protobuf).expect("decodes"));
    });
    g.bench_function("decode_and_translate_2000_points", |b| {
        b.iter(|| {
            let r = otlp::decode(&body, Encoding::Protobuf).expect("decodes");
            let t = otlp::translate(&r, 0);
            assert_eq!(t.data_points, 2_000);
            t
        });
    });
    g.finish();
}

/// This thread's CPU time so far, from `/proc/thread-self/schedstat` (`None` elsewhere).
fn thread_cpu() -> Option<std::time::Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(std::time::Duration::from_nanos(s.split_whitespace().next()?.parse().ok()?))
}

/// Decode and translation per second of CPU time (not of wall time): on a machine shared
/// with other work, what one core does when it runs this.
fn cpu_time_report() {
    let body = otlp::encode_request(&request());
    let rounds = 300u32;
    let (Some(start), wall) = (thread_cpu(), std::time::Instant::now()) else { return };
    let mut updates = 0usize;
    for _ in 0..rounds {
        let r = otlp::decode(&body, Encoding::Protobuf).expect("decodes");
        updates += otlp::translate(&r, 0).updates.len();
    }
    let cpu = thread_cpu().map_or(std::time::Duration::ZERO, |end| end - start);
    let points = 2_000.0 * f64::from(rounds);
    println!(
        "otlp decode+translate, CPU time: {rounds} requests of 2,000 data points ({} updates \
         each) in {:.3} s of CPU ({:.3} s wall): {:.0} data points/s, {:.0} updates/s per core",
        updates / rounds as usize,
        cpu.as_secs_f64(),
        wall.elapsed().as_secs_f64(),
        points / cpu.as_secs_f64(),
        updates as f64 / cpu.as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
    // Under `cargo bench` only (not `cargo test --benches`).
    if std::env::args().any(|a| a == "--bench") {
        cpu_time_report();
    }
}
