"""OTLP metrics over HTTP into `ingestor serve` from the OpenTelemetry Python SDK (imported by
e2e/run.py).

  opentelemetry-sdk with its OTLP/HTTP exporter (protobuf, as the exporter sends it): a
  counter, an up-down counter, a histogram with explicit buckets and an observable gauge,
  under a resource with service.name, service.namespace, service.instance.id and one more
  attribute; exported cumulatively, twice. Then a counter exported with delta temporality,
  twice, gzipped. Every series must be in /metrics (read by prometheus_client's parser) under the
  name Prometheus' OTLP translation gives it, with its exact value and type; the resource
  gives job, instance and target_info; no data point refused.

  edge cases, from fixtures built with the upstream .proto files (the opentelemetry-proto
  package's generated classes; OTLP/JSON from protobuf's json_format with integer enums):
  every metric type and temporality, every attribute value type, NaN, a negative delta,
  "no recorded value", exponential histograms, unspecified temporality, mismatched buckets,
  the reserved namespace; the same request in protobuf and in JSON must be answered with the
  same partial_success and give the same series; a body that does not decode gets 400 with
  a google.rpc.Status.

`run(m, srv)` takes run.py's module for its helpers (SUMMARY, check, Failure) so that this
file stays independent of its order.
"""

import http.client
import math
import time

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
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

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
    kind("e2e_request_duration_seconds", "histogram")
    m.SUMMARY.ok("histogram e2e.request.duration s, bounds 0.1/1/10 (0.05 0.5 5 50, then 0.5): "
                 "e2e_request_duration_seconds_bucket le=0.1 1, le=1 3, le=10 4, +Inf 5; "
                 "_sum 56.05, _count 5, a histogram")
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
    edge_cases(m, srv)


# --------------------------------------------------------------------------------------------
# Edge cases from the upstream .proto files' generated classes.

DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


def _kv(key, **value):
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def _edge_request(service, t_ns, round_no):
    """Every case once; `round_no` (1 or 2) changes the delta values."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend([_kv("service.name", string_value=service)])
    sm = rm.scope_metrics.add()
    sm.scope.name = "edge"

    def metric(name, unit=""):
        mt = sm.metrics.add()
        mt.name, mt.unit = name, unit
        return mt

    g = metric("edge.int.gauge")
    p = g.gauge.data_points.add(time_unix_nano=t_ns, as_int=-7)
    p.attributes.extend([
        _kv("a.bool", bool_value=True),
        _kv("a.int", int_value=-42),
        _kv("a.double", double_value=1.5),
        _kv("a.array", array_value=common_pb2.ArrayValue(values=[
            common_pb2.AnyValue(string_value="x"), common_pb2.AnyValue(int_value=2)])),
        _kv("a.bytes", bytes_value=b"\x01\x02"),
        _kv("2xx", string_value="digit"),
        _kv("a.empty", string_value=""),
    ])
    metric("edge.nan").gauge.data_points.add(time_unix_nano=t_ns, as_double=math.nan)
    mono_delta = metric("edge.delta", "By").sum
    mono_delta.aggregation_temporality, mono_delta.is_monotonic = DELTA, True
    mono_delta.data_points.add(time_unix_nano=t_ns, as_int=10 * round_no)
    mono_delta.data_points.add(time_unix_nano=t_ns, as_double=-1.0,
                               attributes=[_kv("bad", string_value="negative")])
    updown = metric("edge.updown").sum
    updown.aggregation_temporality, updown.is_monotonic = DELTA, False
    updown.data_points.add(time_unix_nano=t_ns, as_int=-3 * round_no)
    unspecified = metric("edge.unspecified").sum
    unspecified.is_monotonic = True
    unspecified.data_points.add(time_unix_nano=t_ns, as_int=1)
    novalue = metric("edge.novalue").gauge
    novalue.data_points.add(time_unix_nano=t_ns, as_double=5,
                            flags=metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
    h = metric("edge.latency", "ms").histogram
    h.aggregation_temporality = DELTA
    h.data_points.add(time_unix_nano=t_ns, count=4, sum=40.0, bucket_counts=[1, 2, 1],
                      explicit_bounds=[5.0, 50.0])
    h.data_points.add(time_unix_nano=t_ns, count=1, bucket_counts=[1],
                      explicit_bounds=[5.0, 50.0], attributes=[_kv("bad", string_value="buckets")])
    e = metric("edge.exp", "s").exponential_histogram
    e.aggregation_temporality = CUMULATIVE
    for _ in range(2):
        e.data_points.add(time_unix_nano=t_ns, count=1, scale=2, zero_count=1)
    q = metric("edge.rpc", "s").summary.data_points.add(time_unix_nano=t_ns, count=9, sum=4.5)
    q.quantile_values.add(quantile=0.5, value=0.25)
    q.quantile_values.add(quantile=0.99, value=2.0)
    metric("ingestor.fake").gauge.data_points.add(time_unix_nano=t_ns, as_int=1)
    return req


# nan, negative delta, unspecified temporality, mismatched buckets, 2 exponential, reserved.
EDGE_REFUSED = 7


def _post(srv, body, content_type, path="/v1/metrics"):
    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        conn.close()


def edge_cases(m, srv):
    m.SUMMARY.section("OTLP edge cases (opentelemetry-proto 1.45.2's generated classes; "
                      "protobuf and OTLP/JSON)")
    t_ns = time.time_ns() - 5_000_000_000
    for round_no in (1, 2):
        for service, encoding in (("edge-pb", "protobuf"), ("edge-json", "json")):
            req = _edge_request(service, t_ns + round_no * 1_000_000_000, round_no)
            if encoding == "protobuf":
                status, ctype, body = _post(srv, req.SerializeToString(), "application/x-protobuf")
            else:
                text = json_format.MessageToJson(req, use_integers_for_enums=True)
                m.check('"timeUnixNano": "' in text and '"asDouble": "NaN"' in text,
                        "json_format wrote OTLP/JSON as expected (64-bit strings, NaN)")
                status, ctype, body = _post(srv, text.encode(), "application/json",
                                            path="/opentelemetry/v1/metrics")
            m.check(status == 200, f"{encoding}: {status} {body[:300]!r}")
            if encoding == "protobuf":
                resp = ExportMetricsServiceResponse.FromString(body)
            else:
                resp = json_format.Parse(body, ExportMetricsServiceResponse())
            m.check(ctype == f"application/{'x-protobuf' if encoding == 'protobuf' else 'json'}",
                    f"{encoding}: Content-Type {ctype}")
            ps = resp.partial_success
            m.check(ps.rejected_data_points == EDGE_REFUSED,
                    f"{encoding}: rejected_data_points {ps.rejected_data_points}, expected "
                    f"{EDGE_REFUSED}: {ps.error_message}")
            for why in ("exponential histogram", "ingestor_", "temporality 0",
                        "bucket counts", "invalid value"):
                m.check(why in ps.error_message, f"{encoding}: {why!r} not in {ps.error_message!r}")
    m.SUMMARY.ok(f"each request (twice, protobuf at /v1/metrics and JSON at "
                 f"/opentelemetry/v1/metrics): 200, partial_success.rejected_data_points "
                 f"{EDGE_REFUSED} (NaN, negative delta, unspecified temporality, mismatched "
                 f"buckets, 2 exponential, reserved name), with the reasons")
    samples, types = _samples(m, srv)
    attrs = (("a_array", '["x",2]'), ("a_bool", "true"), ("a_bytes", "AQI="),
             ("a_double", "1.5"), ("a_int", "-42"), ("key_2xx", "digit"))
    for job in ("edge-pb", "edge-json"):
        def get(name, *labels):
            return samples.get((name, tuple(sorted((("job", job),) + labels))))

        checks = [
            (get("edge_int_gauge", *attrs), -7),
            (get("edge_delta_bytes_total"), 30),
            (get("edge_updown"), -9),
            (get("edge_latency_milliseconds_bucket", ("le", "5")), 2),
            (get("edge_latency_milliseconds_bucket", ("le", "50")), 6),
            (get("edge_latency_milliseconds_bucket", ("le", "+Inf")), 8),
            (get("edge_latency_milliseconds_sum"), 80),
            (get("edge_latency_milliseconds_count"), 8),
            (get("edge_rpc_seconds", ("quantile", "0.5")), 0.25),
            (get("edge_rpc_seconds", ("quantile", "0.99")), 2.0),
            (get("edge_rpc_seconds_sum"), 4.5),
            (get("edge_rpc_seconds_count"), 9),
        ]
        for i, (got, want) in enumerate(checks):
            m.check(got == want, f"{job}: check {i}: {got}, expected {want}: "
                                 f"{sorted(k for k in samples if k[0].startswith('edge_'))}")
        m.check(not any(k[0].startswith(("edge_novalue", "edge_nan", "edge_unspecified",
                                         "edge_exp", "ingestor_fake"))
                        for k in samples), "a refused or valueless point became a series")
    m.check(types.get("edge_delta_bytes") == "counter", f"edge_delta_bytes: {types}")
    m.SUMMARY.ok("both encodings give the same series: every attribute value type as a label "
                 "(bool, int, double, array as JSON, bytes as base64, a leading digit as "
                 "key_, an empty value dropped); monotonic delta 10+20 = 30 (unit By in the "
                 "name already); non-monotonic delta -3-6 = -9; delta histogram buckets and "
                 "summary quantiles exact; nothing from the refused or valueless points")
    status, ctype, body = _post(srv, b"\x0a\xff\xff", "application/x-protobuf")
    m.check(status == 400, f"garbage: {status}")
    st = status_pb2.Status.FromString(body)
    m.check(st.code == 3 and "does not decode" in st.message, f"garbage: {st}")
    status, _, body = _post(srv, b"{}", "text/plain")
    m.check(status == 415, f"text/plain: {status}")
    m.SUMMARY.ok("a body that does not decode: 400 with a google.rpc.Status (code 3); "
                 "text/plain: 415")
