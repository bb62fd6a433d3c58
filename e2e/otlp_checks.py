"""OTLP metrics over HTTP into `ingestor serve` from the OpenTelemetry Python SDK (imported by
e2e/run.py).

  opentelemetry-sdk with its OTLP/HTTP exporter (protobuf, as the exporter sends it): a
  counter, an up-down counter, a histogram with explicit buckets and an observable gauge,
  under a resource with service.name, service.namespace, service.instance.id and one more
  attribute; exported cumulatively, twice. Then a counter exported with delta temporality,
  twice, gzipped. Every series must be in /metrics (read by prometheus_client's parser) under the
  name Prometheus' OTLP translation gives it, with its exact value and type; the resource
  gives job, instance and target_info; no data point refused.

`run(m, srv)` takes run.py's module for its helpers (SUMMARY, check, Failure) so that this
file stays independent of its order.
"""

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableGauge,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client.parser import text_string_to_metric_families

RESOURCE = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "e2e-1",
    "deployment.environment": "e2e",
}
JOB = "shop/checkout"
INSTANCE = "e2e-1"


class _Recording(OTLPMetricExporter):
    """The SDK's exporter, keeping the result of every export."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.results = []

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.results.append(result)
        return result


def _provider(srv, temporality=None, compression=Compression.NoCompression):
    exporter = _Recording(
        endpoint=srv.base + "/v1/metrics",
        timeout=10,
        compression=compression,
        preferred_temporality=temporality or {},
    )
    # Exports only when flushed.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create(RESOURCE),
        metric_readers=[reader],
        views=[
            View(
                instrument_name="e2e.request.duration",
                aggregation=ExplicitBucketHistogramAggregation([0.1, 1.0, 10.0]),
            ),
        ],
    )
    return provider, exporter


def _samples(m, srv):
    status, _, body = m.http_get(srv.base + "/metrics")
    m.check(status == 200, f"GET /metrics: {status}")
    samples, types = {}, {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            types[s.name] = types[family.name] = family.type
    return samples, types


def _flush(m, provider, exporter, what):
    m.check(provider.force_flush(10_000), f"{what}: force_flush did not finish")
    m.check(exporter.results and exporter.results[-1] == MetricExportResult.SUCCESS,
            f"{what}: the exporter reports {exporter.results}")


def run(m, srv):
    m.SUMMARY.section("opentelemetry-sdk 1.45.2 + opentelemetry-exporter-otlp-proto-http "
                      "(OTLP/HTTP protobuf)")
    before, _ = _samples(m, srv)
    rejected_before = before[("ingestor_otlp_rejected_data_points_total", ())]
    points_before = before[("ingestor_otlp_data_points_total", ())]

    provider, exporter = _provider(srv)
    meter = provider.get_meter("e2e.otlp", "1.0")
    orders = meter.create_counter("e2e.orders", unit="{order}", description="Orders placed.")
    queue = meter.create_up_down_counter("e2e.queue.size", unit="{item}")
    duration = meter.create_histogram("e2e.request.duration", unit="s")
    temperature = [61.5]
    meter.create_observable_gauge(
        "e2e.cpu.temperature",
        callbacks=[lambda _options: [Observation(temperature[0], {"cpu.core": "0"})]],
        unit="Cel",
    )
    orders.add(3, {"region": "eu", "payment.method": "card"})
    orders.add(4, {"region": "eu", "payment.method": "card"})
    orders.add(1, {"region": "us", "payment.method": "card"})
    queue.add(10, {"queue": "mail"})
    queue.add(-3, {"queue": "mail"})
    for v in (0.05, 0.5, 5.0, 50.0):
        duration.record(v, {"http.route": "/cart"})
    _flush(m, provider, exporter, "first export")
    # A second cumulative export: totals, not increments.
    orders.add(5, {"region": "eu", "payment.method": "card"})
    queue.add(-2, {"queue": "mail"})
    duration.record(0.5, {"http.route": "/cart"})
    temperature[0] = 63.25
    _flush(m, provider, exporter, "second export")
    provider.shutdown()

    # Delta temporality for counters: each export carries the increment (gzipped).
    delta = {Counter: AggregationTemporality.DELTA, UpDownCounter: AggregationTemporality.DELTA,
             Histogram: AggregationTemporality.DELTA,
             ObservableGauge: AggregationTemporality.CUMULATIVE}
    dprovider, dexporter = _provider(srv, delta, Compression.Gzip)
    batches = dprovider.get_meter("e2e.otlp.delta").create_counter("e2e.batches")
    batches.add(2, {"kind": "delta"})
    _flush(m, dprovider, dexporter, "first delta export")
    batches.add(5, {"kind": "delta"})
    _flush(m, dprovider, dexporter, "second delta export")
    dprovider.shutdown()

    samples, types = _samples(m, srv)
    base = (("instance", INSTANCE), ("job", JOB))

    def expect(name, value, **labels):
        key = (name, tuple(sorted(base + tuple(labels.items()))))
        got = samples.get(key)
        similar = sorted(k for k in samples if k[0] == name)
        m.check(got == value, f"{name}{dict(labels)}: {got}, expected {value} (series named "
                              f"so: {similar})")

    def kind(family, want):
        m.check(types.get(family) == want, f"# TYPE of {family}: {types.get(family)}, "
                                           f"expected {want}")

    # prometheus_client's parser strips _total from counter families' names.
    expect("e2e_orders_total", 12, region="eu", payment_method="card")
    expect("e2e_orders_total", 1, region="us", payment_method="card")
    kind("e2e_orders", "counter")
    m.SUMMARY.ok("counter e2e.orders {order} (+3 +4, then +5; cumulative): "
                 "e2e_orders_total{job=\"shop/checkout\",instance=\"e2e-1\",region=\"eu\","
                 "payment_method=\"card\"} 12, a counter")
    expect("e2e_queue_size", 5, queue="mail")
    kind("e2e_queue_size", "gauge")
    m.SUMMARY.ok("up-down counter e2e.queue.size (+10 -3, then -2): e2e_queue_size 5, a gauge")
    for le, count in (("0.1", 1), ("1", 3), ("10", 4), ("+Inf", 5)):
        expect("e2e_request_duration_seconds_bucket", count, le=le, http_route="/cart")
    got = samples.get(("e2e_request_duration_seconds_sum",
                       tuple(sorted(base + (("http_route", "/cart"),)))))
    m.check(got is not None and m.close_enough(got, 56.05), f"_sum: {got}, expected 56.05")
    expect("e2e_request_duration_seconds_count", 5, http_route="/cart")
    m.SUMMARY.ok("histogram e2e.request.duration s, bounds 0.1/1/10 (0.05 0.5 5 50, then 0.5): "
                 "e2e_request_duration_seconds_bucket le=0.1 1, le=1 3, le=10 4, +Inf 5; "
                 "_sum 56.05, _count 5")
    expect("e2e_cpu_temperature_celsius", 63.25, cpu_core="0")
    kind("e2e_cpu_temperature_celsius", "gauge")
    m.SUMMARY.ok("observable gauge e2e.cpu.temperature Cel (61.5, then 63.25): "
                 "e2e_cpu_temperature_celsius{cpu_core=\"0\"} 63.25")
    expect("e2e_batches_total", 7, kind="delta")
    kind("e2e_batches", "counter")
    m.SUMMARY.ok("counter e2e.batches with delta temporality (+2 and +5 in two exports): "
                 "e2e_batches_total 7 (Content-Encoding: gzip)")
    info = [k for k in samples if k[0] == "target_info" and dict(k[1]).get("job") == JOB]
    m.check(len(info) == 1, f"target_info of {JOB}: {info}")
    labels = dict(info[0][1])
    m.check(labels.get("deployment_environment") == "e2e"
            and labels.get("telemetry_sdk_language") == "python"
            and labels.get("instance") == INSTANCE,
            f"target_info labels: {labels}")
    m.SUMMARY.ok("resource: job=\"shop/checkout\" (service.namespace/service.name), "
                 "instance=\"e2e-1\" (service.instance.id); target_info carries "
                 "deployment_environment, telemetry_sdk_*")
    rejected = samples[("ingestor_otlp_rejected_data_points_total", ())] - rejected_before
    written = samples[("ingestor_otlp_data_points_total", ())] - points_before
    m.check(rejected == 0, f"{rejected} data points refused")
    m.check(written > 0, "ingestor_otlp_data_points_total did not grow")
    m.SUMMARY.ok(f"{len(exporter.results) + len(dexporter.results)} exports answered "
                 f"SUCCESS; {written:.0f} data points written, none refused")
