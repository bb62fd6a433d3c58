#!/usr/bin/env python3
"""End-to-end test of `ingestor serve` with real clients that nobody here wrote.

    python e2e/run.py target/release/ingestor      (normally through `cargo xtask e2e`)

Starts the server on free loopback ports with `--sync always`, then:

  influxdb-client    writes Point objects and line-protocol strings (with and without
                     timestamps, several precisions, gzip, a batch, a refused body) through
                     the official InfluxDB 2 client; the query API must show the exact values
                     and timestamps.
  statsd             counters (with and without a sample rate), gauges (set, deltas, a
                     negative set), timings and a pipeline over UDP; the values must appear.
  datadog            DogStatsd over UDP: tags (key:value and bare), a distribution, gauges
                     and counts with their own unix timestamps (kept; a late one does not win,
                     an absurd one is refused), an event and a service check (counted, not
                     bad lines).
  prometheus_client  parses GET /metrics: every series written above with its type and
                     value, the ingestor_* self metrics, the Content-Type.
  promtool           `promtool check metrics` must accept the exposition.
  prometheus         a real Prometheus server scrapes /metrics every second; `promtool query
                     instant` against it must return the ingested values.
  kill -9            a stream of writes, SIGKILL of the server in the middle of it, a restart
                     on the same data directory: every write that got its 204 must be there,
                     whole, with its value (several rounds).
  remote write       Prometheus in agent mode and vmagent scrape a target and remote-write
                     into the server; kill -9 during a remote-write stream
                     (e2e/remote_write_checks.py).
  otlp               the OpenTelemetry Python SDK's OTLP/HTTP exporter: a counter, an
                     up-down counter, a histogram, an observable gauge, cumulative and delta,
                     with resource attributes; exact names and values in /metrics; edge
                     cases built with the upstream .proto files' generated classes, in
                     protobuf and OTLP/JSON (e2e/otlp_checks.py).
  remote write 2.0   edge cases (metadata, exemplars, stale markers, native histograms, bad
                     symbol references, odd label references, a 1.0 body as 2.0) encoded by
                     protoc from Prometheus' own types.proto (e2e/rw2_checks.py).
  forwarding         two more servers forward through their outboxes into VictoriaMetrics and
                     Prometheus (remote-write receiver); an outage of Prometheus and a SIGKILL
                     of a forwarder lose nothing acknowledged (e2e/forward_checks.py).
  full disk          a tmpfs made for the test filled below the free-space floor: writes 503,
                     the server up, writes accepted again once space is back, nothing
                     acknowledged lost (e2e/disk_checks.py; needs root to mount).

Prints a summary of what each client checked; exits 1 on the first failure, with the reason
and the tail of the server's log. Child processes are always killed on the way out.
Needs: the packages of e2e/requirements.txt, /usr/bin/prometheus and promtool (Debian's
`prometheus` package), /usr/bin/vmagent (Debian's `victoria-metrics` package) and protoc
(Debian's `protobuf-compiler`).
"""

import argparse
import ctypes
import datetime
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import statsd
import statsd.client.base as statsd_base
from datadog.dogstatsd import DogStatsd
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from prometheus_client.parser import text_string_to_metric_families

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROMETHEUS = "/usr/bin/prometheus"
# The time-outs below are generous for a loaded 2-core machine; a healthy run takes seconds.
READY_TIMEOUT = 30.0
# The ingestor binary under test (set by main, for the modules that start more servers).
BINARY = None
STATSD_TIMEOUT = 15.0
PROMETHEUS_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Failure(Exception):
    """A check that did not hold: the message says what was expected and what came."""


def check(condition, message):
    if not condition:
        raise Failure(message)


def close_enough(got, want):
    """Exact for the values this test writes, up to float noise from a division (1/rate)."""
    return got == want or abs(got - want) <= 1e-9 * max(1.0, abs(want))


# --------------------------------------------------------------------------------------------
# What each client checked, for the summary.


class Summary:
    def __init__(self):
        self.sections = []  # (client, [checks])

    def section(self, client):
        print(f"\n==> {client}", flush=True)
        self.sections.append((client, []))

    def ok(self, what):
        print(f"    ok  {what}", flush=True)
        self.sections[-1][1].append(what)

    def print(self):
        print("\n==> summary: what each real client checked")
        total = 0
        for client, checks in self.sections:
            print(f"  {client}: {len(checks)} check{'' if len(checks) == 1 else 's'}")
            for c in checks:
                print(f"    - {c}")
            total += len(checks)
        print(f"\ne2e: {total} passed, 0 failed")


SUMMARY = Summary()

# --------------------------------------------------------------------------------------------
# Child processes: every one is tracked, and killed on any way out (the kernel kills them too
# should this script itself die: PR_SET_PDEATHSIG).

CHILDREN = []


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(args, log_path, env=None):
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        args,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    log.close()
    CHILDREN.append(proc)
    return proc


def kill_children():
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def tail(path, lines=40):
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


def free_ports(tcp, udp):
    """Ports nothing listens on, from the kernel (bind to port 0), all distinct."""
    socks, ports = [], []
    try:
        for kind, n in ((socket.SOCK_STREAM, tcp), (socket.SOCK_DGRAM, udp)):
            for _ in range(n):
                while True:
                    s = socket.socket(socket.AF_INET, kind)
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                    socks.append(s)
                    if port not in ports:
                        ports.append(port)
                        break
    finally:
        for s in socks:
            s.close()
    return ports


def http_get(url, timeout=10.0):
    """(status, headers, body text); HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# The server under test.


class Ingestor:
    def __init__(self, binary, data_dir, http_port, udp_port, log_path, extra=()):
        self.extra = list(extra)
        self.binary = binary
        self.data_dir = data_dir
        self.http_port = http_port
        self.udp_port = udp_port
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{http_port}"
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        with open(self.log_path, "a") as f:
            f.write(f"\n---- e2e: start {self.starts} ----\n")
        self.proc = spawn(
            [
                self.binary,
                "--data-dir",
                self.data_dir,
                "serve",
                "--http",
                f"127.0.0.1:{self.http_port}",
                "--statsd",
                f"127.0.0.1:{self.udp_port}",
                "--sync",
                "always",
            ] + self.extra,
            self.log_path,
            # Plain log lines in the log file (it is shown on failure).
            env={**os.environ, "NO_COLOR": "1"},
        )
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"the ingestor exited with {self.proc.returncode} before /-/ready")
            try:
                status, _, body = http_get(self.base + "/-/ready", timeout=2)
                if status == 200:
                    return
                last = f"{status} {body.strip()!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.05)
        raise Failure(f"/-/ready did not answer 200 within {READY_TIMEOUT:.0f} s (last: {last})")

    def stop(self):
        """SIGTERM: the server must close cleanly (sync, final snapshot) and exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failure(f"the ingestor did not exit within {STOP_TIMEOUT:.0f} s of SIGTERM")
        check(rc == 0, f"the ingestor exited with {rc} after SIGTERM, expected 0")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=STOP_TIMEOUT)

    def query(self, selector):
        """The result of GET /api/v1/query?query=SELECTOR, as a list of Prometheus samples."""
        url = self.base + "/api/v1/query?" + urllib.parse.urlencode({"query": selector})
        status, _, body = http_get(url)
        check(status == 200, f"GET {url}: {status} {body!r}")
        doc = json.loads(body)
        check(
            doc.get("status") == "success" and doc["data"]["resultType"] == "vector",
            f"GET {url}: not a successful vector: {body!r}",
        )
        return doc["data"]["result"]

    def one(self, selector):
        """(timestamp in s, value) of the one sample SELECTOR matches."""
        result = self.query(selector)
        check(len(result) == 1, f"query {selector}: expected one series, got {result}")
        ts, value = result[0]["value"]
        return float(ts), float(value)

    def value(self, selector):
        """The value of the one sample SELECTOR matches, or None if it matches nothing."""
        result = self.query(selector)
        if not result:
            return None
        check(len(result) == 1, f"query {selector}: expected at most one series, got {result}")
        return float(result[0]["value"][1])


# --------------------------------------------------------------------------------------------
# b. influxdb-client


def influx_checks(srv):
    SUMMARY.section("influxdb-client 1.50.0 (InfluxDB 2 write API, SYNCHRONOUS)")
    client = InfluxDBClient(url=srv.base, token="x", org="o")
    gzip_client = InfluxDBClient(url=srv.base, token="x", org="o", enable_gzip=True)
    try:
        write = client.write_api(write_options=SYNCHRONOUS)
        before = time.time()

        # Point objects: an explicit nanosecond timestamp (the client's default precision),
        # none (the server stamps it), a datetime at millisecond precision; names and tag
        # values that need escaping or sanitizing; float, integer and boolean fields.
        write.write(
            bucket="b",
            record=Point("weather").tag("city", "paris").field("temp", 21.5)
            .time(1_700_000_000_123_456_789),
        )
        write.write(
            bucket="b",
            record=Point("sys.cpu").tag("host", "a b,c=d").tag("core", "0")
            .field("usage", 12.25).field("n", 3).field("up", True),
        )
        write.write(
            bucket="b",
            record=Point("rack").tag("dc", "eu-1").field("power", -4.75).time(
                datetime.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=datetime.timezone.utc),
                WritePrecision.MS,
            ),
            write_precision=WritePrecision.MS,
        )
        # Line-protocol strings: with timestamps in seconds, and without.
        write.write(
            bucket="b",
            record=["disk,dev=sda used=1e3,free=42u 1700000001", "disk,dev=sdb used=-0.5 1700000002"],
            write_precision=WritePrecision.S,
        )
        write.write(bucket="b", record="queue,name=jobs depth=7i")
        # A batch of 50 points in one request.
        write.write(
            bucket="b", record=[Point("batch").tag("i", str(i)).field("v", i * 1.5) for i in range(50)]
        )
        # An older sample after a newer one: a gauge keeps the newest.
        write.write(bucket="b", record="ooo v=2 1700000010", write_precision=WritePrecision.S)
        write.write(bucket="b", record="ooo v=1 1700000005", write_precision=WritePrecision.S)
        # gzip-compressed body.
        gzip_client.write_api(write_options=SYNCHRONOUS).write(
            bucket="b", record=Point("gz").tag("kind", "gzip").field("v", 99.0)
        )
        after = time.time()

        # The exact values and timestamps, through the query API.
        def expect(selector, value, ts=None):
            got_ts, got = srv.one(selector)
            check(got == value, f"query {selector}: value {got}, expected {value}")
            if ts is None:
                check(
                    before - 1 <= got_ts <= after + 1,
                    f"query {selector}: timestamp {got_ts}, expected the write's time "
                    f"({before:.3f}..{after:.3f})",
                )
            else:
                check(abs(got_ts - ts) < 1e-6, f"query {selector}: timestamp {got_ts}, expected {ts}")

        expect('weather_temp{city="paris"}', 21.5, 1_700_000_000.123)
        SUMMARY.ok("Point with a ns timestamp: weather_temp{city=\"paris\"} = 21.5 @ 1700000000.123")
        expect('sys_cpu_usage{host="a b,c=d",core="0"}', 12.25)
        expect('sys_cpu_n{host="a b,c=d",core="0"}', 3)
        expect('sys_cpu_up{host="a b,c=d",core="0"}', 1)
        SUMMARY.ok(
            "Point without timestamp, 3 fields (float, 3i, true), escaped tag value "
            "'a b,c=d', name sys.cpu sanitized to sys_cpu_*: exact values, stamped now"
        )
        expect('rack_power{dc="eu-1"}', -4.75, 1_700_000_000.5)
        SUMMARY.ok("Point with a datetime at ms precision: rack_power = -4.75 @ 1700000000.5")
        expect('disk_used{dev="sda"}', 1000, 1_700_000_001)
        expect('disk_free{dev="sda"}', 42, 1_700_000_001)
        expect('disk_used{dev="sdb"}', -0.5, 1_700_000_002)
        SUMMARY.ok("line-protocol strings with s timestamps (1e3, 42u, -0.5): exact values and times")
        expect('queue_depth{name="jobs"}', 7)
        SUMMARY.ok("line-protocol string without timestamp: queue_depth = 7, stamped now")
        batch = srv.query("batch_v")
        got = {r["metric"]["i"]: float(r["value"][1]) for r in batch}
        check(
            got == {str(i): i * 1.5 for i in range(50)},
            f"batch_v: expected 50 series i=0..49 with v=i*1.5, got {got}",
        )
        SUMMARY.ok("a batch of 50 Points in one request: all 50 series, exact values")
        expect("ooo_v", 2, 1_700_000_010)
        SUMMARY.ok("an older sample after a newer one: the gauge keeps the newer (2 @ 1700000010)")
        expect('gz_v{kind="gzip"}', 99)
        SUMMARY.ok("enable_gzip=True (Content-Encoding: gzip): gz_v = 99")

        status, _, body = http_get(
            srv.base + "/api/v1/series?" + urllib.parse.urlencode({"match[]": 'disk_used{dev="sda"}'})
        )
        check(
            status == 200 and json.loads(body)["data"] == [{"__name__": "disk_used", "dev": "sda"}],
            f"/api/v1/series: {status} {body!r}",
        )
        SUMMARY.ok("/api/v1/series lists the written series with its labels")

        # A body with one good and one bad line (a string field) is refused whole, with 400,
        # and the client raises the API's error.
        try:
            write.write(bucket="b", record=['partial,k=1 v=1', 'partial,k=2 s="text"'])
            raise Failure("a string field was accepted; expected 400")
        except ApiException as e:
            check(e.status == 400, f"a string field: HTTP {e.status}, expected 400 ({e.body})")
        check(srv.query("partial_v") == [], "a refused body left partial_v behind")
        SUMMARY.ok("a body with a string field: ApiException 400, nothing of the body applied")
        # A string with a nanosecond timestamp and no precision given: the client's default
        # (ns) applies.
        write.write(bucket="b", record="tiny v=5 1700000003000000000")
        expect("tiny_v", 5, 1_700_000_003)
        SUMMARY.ok("a string with a ns timestamp and the default precision: tiny_v = 5 @ 1700000003")
    finally:
        client.close()
        gzip_client.close()


# --------------------------------------------------------------------------------------------
# c. statsd


class _AlwaysSampled:
    """The statsd package samples client-side (`random.random() > rate` drops the call); this
    makes every sampled call go out, so that the expected totals are exact."""

    @staticmethod
    def random():
        return 0.0


def statsd_checks(srv):
    SUMMARY.section("statsd 4.0.1 (StatsClient over UDP)")
    statsd_base.random = _AlwaysSampled()
    packets = 0

    client = statsd.StatsClient("127.0.0.1", srv.udp_port, prefix="e2e")
    try:
        for _ in range(3):
            client.incr("requests")
        client.incr("requests", 2)
        packets += 4
        for _ in range(3):
            client.incr("sampled", rate=0.25)
        client.incr("sampled", 3, rate=0.1)
        packets += 4
        client.gauge("temp", 20)
        client.gauge("temp", 5, delta=True)
        client.gauge("temp", -3, delta=True)
        client.gauge("temp", 0.5, delta=True)
        packets += 4
        client.gauge("level", 7)
        client.gauge("level", -4)  # a negative set: the client sends "0|g\n-4|g" in one packet
        packets += 2
        client.timing("latency", 320)
        client.timing("latency", datetime.timedelta(milliseconds=80))
        client.timing("latency", 0.25)
        packets += 3
        with client.pipeline() as pipe:
            pipe.incr("piped")
            pipe.gauge("piped_level", 11)
            pipe.timing("piped_timing", 7)
        packets += 1
        client.decr("requests")  # "-1|c": refused, a counter only goes up
        packets += 1
        client.gauge("done", 1)
        packets += 1
    finally:
        client.close()

    # Timers are observed in seconds, as statsd_exporter does; the query API knows samples
    # by their exposed names, as Prometheus does (counters end in _total).
    expected = {
        "e2e_requests_total": 5.0,
        "e2e_sampled_total": 3 * 4.0 + 3 / 0.1,
        "e2e_temp": 22.5,
        "e2e_level": -4.0,
        "e2e_latency_count": 3.0,
        "e2e_latency_sum": 0.40025,
        "e2e_piped_total": 1.0,
        "e2e_piped_level": 11.0,
        "e2e_piped_timing_count": 1.0,
        "e2e_piped_timing_sum": 0.007,
        "e2e_done": 1.0,
    }

    def current():
        got = {}
        for selector in ("e2e_requests_total", "e2e_sampled_total", "e2e_temp", "e2e_level",
                         "e2e_latency_count", "e2e_latency_sum", "e2e_piped_total",
                         "e2e_piped_level", "e2e_piped_timing_count", "e2e_piped_timing_sum",
                         "e2e_done"):
            for r in srv.query(selector):
                got[r["metric"]["__name__"]] = float(r["value"][1])
        return got

    deadline = time.monotonic() + STATSD_TIMEOUT
    while True:
        got = current()
        if all(k in got and close_enough(got[k], v) for k, v in expected.items()):
            break
        if time.monotonic() > deadline:
            wrong = {k: (got.get(k), v) for k, v in expected.items()
                     if not (k in got and close_enough(got[k], v))}
            raise Failure(
                f"StatsD values after {STATSD_TIMEOUT:.0f} s: (got, expected) {wrong}; all: {got}"
            )
        time.sleep(0.1)
    SUMMARY.ok("incr x3 + incr(2) = counter e2e_requests 5 (prefix e2e. sanitized to e2e_)")
    SUMMARY.ok("incr(rate=0.25) x3 + incr(3, rate=0.1): adds scaled by 1/rate = 42")
    SUMMARY.ok("gauge 20, then deltas +5, -3, +0.5 = 22.5")
    SUMMARY.ok("gauge 7 then a negative set -4 (two lines in one packet: 0|g, -4|g) = -4")
    SUMMARY.ok("timing 320 ms, timedelta 80 ms, 0.25 ms: e2e_latency count 3, sum 0.40025 s "
               "(timers in seconds)")
    SUMMARY.ok("a pipeline (counter, gauge, timing in one packet): all three applied")
    check(srv.value("e2e_requests_total") == 5, "decr() changed the counter")
    check(not srv.query("e2e_requests"),
          "a counter is known by its exposed name e2e_requests_total only, as in Prometheus")
    le = srv.query('e2e_latency_bucket{le="0.1"}')
    check(len(le) == 1 and float(le[0]["value"][1]) == 2,
          f"e2e_latency_bucket{{le=\"0.1\"}} should count 80 ms and 0.25 ms: {le}")
    SUMMARY.ok("the query API knows exposed names: e2e_requests_total, e2e_latency_bucket{le}")
    SUMMARY.ok("decr() ('-1|c') is refused: the counter stays 5")
    return packets


# --------------------------------------------------------------------------------------------
# c2. datadog (DogStatsD)


def own_samples(srv):
    """The samples of GET /metrics, by (name, sorted labels), through prometheus_client."""
    status, _, body = http_get(srv.base + "/metrics")
    check(status == 200, f"GET /metrics: {status}")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def datadog_checks(srv):
    SUMMARY.section("datadog 0.56.0 (DogStatsd over UDP)")
    before = own_samples(srv)
    bad_before = before[("ingestor_statsd_bad_lines_total", ())]
    now = int(time.time())
    # No telemetry of the client's own (its counters would be series too), no buffering.
    client = DogStatsd(host="127.0.0.1", port=srv.udp_port, namespace="dd",
                       constant_tags=["env:e2e"], disable_telemetry=True,
                       origin_detection_enabled=False)
    try:
        client.increment("requests", 2, tags=["route:/api", "canary"])
        client.increment("requests", tags=["route:/api", "canary"])
        for v in (0.25, 0.5, 4.0):
            client.distribution("payload", v, tags=["kind:json"])
        client.gauge("temp", 21.5, tags=["room:a"])
        client.gauge_with_timestamp("stamped", 7, now - 120, tags=["src:batch"])
        # Older than the value above: a gauge keeps the latest by timestamp.
        client.gauge_with_timestamp("stamped", 1, now - 600, tags=["src:batch"])
        client.count_with_timestamp("rows", 5, timestamp=now - 60, tags=["src:batch"])
        # An hour and more ahead: refused as a bad line, not stamped with another time.
        client.gauge_with_timestamp("stamped", 99, now + 3600, tags=["src:batch"])
        client.event("Deploy done", "version 1.2\nrolled out", alert_type="success",
                     tags=["svc:web"], aggregation_key="deploy", priority="low")
        client.service_check("db.up", DogStatsd.OK, tags=["svc:db"], message="fine")
        client.service_check("cache.up", DogStatsd.CRITICAL, timestamp=now, hostname="h1")
        client.gauge("dd_done", 1)
    finally:
        client.close_socket()

    deadline = time.monotonic() + STATSD_TIMEOUT
    while srv.value("dd_dd_done") is None:
        check(time.monotonic() < deadline, f"dd_dd_done did not appear in {STATSD_TIMEOUT} s")
        time.sleep(0.1)
    check(srv.value('dd_requests_total{canary="true",env="e2e",route="/api"}') == 3,
          f"dd_requests_total: {srv.query('dd_requests_total')}")
    SUMMARY.ok("increment(2) + increment() with tags route:/api and bare canary, constant tag "
               "env:e2e: dd_requests_total{canary=\"true\",env=\"e2e\",route=\"/api\"} = 3")
    check(srv.value('dd_payload_count{env="e2e",kind="json"}') == 3, "dd_payload_count")
    check(close_enough(srv.value('dd_payload_sum{env="e2e",kind="json"}'), 4.75), "dd_payload_sum")
    check(srv.value('dd_payload_bucket{env="e2e",kind="json",le="0.5"}') == 2,
          f"dd_payload_bucket le=0.5: {srv.query('dd_payload_bucket')}")
    SUMMARY.ok("distribution 0.25, 0.5, 4 (|d): histogram dd_payload count 3, sum 4.75, "
               "2 at or below le=0.5")
    check(srv.value('dd_temp{env="e2e",room="a"}') == 21.5, "dd_temp")
    ts, value = srv.one('dd_stamped{env="e2e",src="batch"}')
    check((ts, value) == (now - 120, 7),
          f"dd_stamped: ({ts}, {value}), expected ({now - 120}, 7): the |T timestamp")
    SUMMARY.ok(f"gauge_with_timestamp(7, now-120 s): the sample is at that second, value 7; "
               "the later-sent one at now-600 s does not overwrite it")
    check(srv.value('dd_rows_total{env="e2e",src="batch"}') == 5, "dd_rows_total")
    SUMMARY.ok("count_with_timestamp(5, now-60 s): dd_rows_total = 5")

    after = own_samples(srv)
    events = after.get(("ingestor_statsd_events_total", (("kind", "event"),)))
    checks = after.get(("ingestor_statsd_events_total", (("kind", "service_check"),)))
    check(events == 1 and checks == 2,
          f"ingestor_statsd_events_total: event {events}, service_check {checks}; expected 1, 2")
    bad = after[("ingestor_statsd_bad_lines_total", ())] - bad_before
    check(bad == 1, f"{bad} bad lines, expected 1 (the timestamp an hour ahead): events and "
                    "service checks must not count as bad lines")
    SUMMARY.ok("event() and 2 service_check(): ingestor_statsd_events_total{kind=event} 1, "
               "{kind=service_check} 2, and no bad line for them")
    SUMMARY.ok("gauge_with_timestamp(now+3600 s): refused (1 bad line), the value stays 7")


# --------------------------------------------------------------------------------------------
# d. prometheus_client's parser on /metrics


def metrics_checks(srv, statsd_packets):
    SUMMARY.section("prometheus_client 0.26.0 (text_string_to_metric_families on GET /metrics)")
    status, headers, body = http_get(srv.base + "/metrics")
    check(status == 200, f"GET /metrics: {status}")
    ctype = headers.get("Content-Type")
    check(
        ctype == EXPOSITION_CONTENT_TYPE,
        f"GET /metrics: Content-Type {ctype!r}, expected {EXPOSITION_CONTENT_TYPE!r}",
    )
    SUMMARY.ok(f"Content-Type is {EXPOSITION_CONTENT_TYPE!r}")

    families = {}
    samples = {}
    for family in text_string_to_metric_families(body):
        families[family.name] = family
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            check(key not in samples, f"/metrics: sample {key} appears twice")
            samples[key] = s.value
    SUMMARY.ok(f"the exposition parses: {len(families)} families, {len(samples)} samples")

    def sample(name, value, **labels):
        key = (name, tuple(sorted(labels.items())))
        check(key in samples, f"/metrics: no sample {name}{labels}")
        check(close_enough(samples[key], value),
              f"/metrics: {name}{labels} = {samples[key]}, expected {value}")

    def kind(family, want):
        check(family in families, f"/metrics: no family {family}")
        got = families[family].type
        check(got == want, f"/metrics: family {family} has type {got}, expected {want}")
        check(families[family].documentation, f"/metrics: family {family} has no HELP")

    kind("weather_temp", "gauge")
    sample("weather_temp", 21.5, city="paris")
    sample("sys_cpu_usage", 12.25, host="a b,c=d", core="0")
    sample("disk_used", 1000, dev="sda")
    sample("disk_used", -0.5, dev="sdb")
    sample("rack_power", -4.75, dc="eu-1")
    for i in range(50):
        sample("batch_v", i * 1.5, i=str(i))
    SUMMARY.ok("influx series as gauges with exact values; label value 'a b,c=d' round-trips")
    # The parser names a counter family without its _total; the sample keeps it.
    kind("e2e_requests", "counter")
    sample("e2e_requests_total", 5)
    sample("e2e_sampled_total", 42)
    kind("e2e_temp", "gauge")
    sample("e2e_temp", 22.5)
    sample("e2e_level", -4)
    kind("e2e_latency", "histogram")
    sample("e2e_latency_count", 3)
    sample("e2e_latency_sum", 0.40025)
    sample("e2e_latency_bucket", 3, le="+Inf")
    SUMMARY.ok("StatsD counters as counters (e2e_requests_total 5), gauges, timings as "
               "histograms (_count 3, _sum 0.40025 s, +Inf bucket 3); every family has HELP")

    kind("ingestor_series", "gauge")
    check(samples[("ingestor_series", ())] >= len(samples_named(samples, "batch_v")) + 10,
          "ingestor_series is lower than the series written")
    for name in ("ingestor_batches_total", "ingestor_points_total", "ingestor_wal_appends_total",
                 "ingestor_wal_syncs_total", "ingestor_wal_bytes_written_total"):
        check(samples.get((name, ()), 0) > 0, f"/metrics: {name} is missing or 0")
    check(samples[("ingestor_points_total", ())] >= 60, "ingestor_points_total < points written")
    check(samples[("ingestor_http_bad_requests_total", ())] >= 1,
          "ingestor_http_bad_requests_total does not count the refused body")
    check(samples[("ingestor_statsd_packets_total", ())] >= statsd_packets,
          f"ingestor_statsd_packets_total {samples[('ingestor_statsd_packets_total', ())]} "
          f"< {statsd_packets} packets sent")
    check(samples[("ingestor_statsd_bad_lines_total", ())] >= 1,
          "ingestor_statsd_bad_lines_total does not count the refused decr")
    SUMMARY.ok("ingestor_* self metrics present and plausible (series, batches, points, wal "
               f"appends/syncs/bytes, http bad requests >= 1, statsd packets >= {statsd_packets}, "
               "statsd bad lines >= 1)")
    return body, len(samples)


def samples_named(samples, name):
    return [k for k in samples if k[0] == name]


# --------------------------------------------------------------------------------------------
# e. promtool check metrics


def promtool_check(body):
    SUMMARY.section("promtool check metrics (Prometheus' linter)")
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    r = subprocess.run([promtool, "check", "metrics"], input=body.encode(), capture_output=True,
                       timeout=60)
    out = (r.stdout + r.stderr).decode(errors="replace").strip()
    check(r.returncode == 0,
          f"promtool check metrics exited {r.returncode} on /metrics:\n{out}")
    SUMMARY.ok("promtool check metrics < /metrics: exit 0" + (f" ({out})" if out else ", no lint"))


# --------------------------------------------------------------------------------------------
# f. a real Prometheus server


def promtool_query(pport, expr):
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    r = subprocess.run([promtool, "query", "instant", "-o", "json", f"http://127.0.0.1:{pport}",
                        expr], capture_output=True, timeout=30)
    if r.returncode != 0:
        return None, (r.stdout + r.stderr).decode(errors="replace").strip()
    return json.loads(r.stdout), None


def prometheus_checks(srv, tmp, pport, n_samples):
    SUMMARY.section("prometheus server (Debian's, scraping /metrics every 1 s; promtool query)")
    version = subprocess.run([PROMETHEUS, "--version"], capture_output=True, timeout=30)
    version = (version.stdout + version.stderr).decode(errors="replace").splitlines()[0]
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: ingestor\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{srv.http_port}']\n"
        )
    log = os.path.join(tmp, "prometheus.log")
    proc = spawn(
        [PROMETHEUS, f"--config.file={config}",
         f"--storage.tsdb.path={os.path.join(tmp, 'prometheus-data')}",
         f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
        log,
    )
    try:
        started = time.monotonic()
        deadline = started + PROMETHEUS_TIMEOUT
        want = 'weather_temp{city="paris"}'
        last = None
        while True:
            if proc.poll() is not None:
                raise Failure(f"prometheus exited with {proc.returncode}:\n{tail(log)}")
            doc, err = promtool_query(pport, want)
            if doc:
                break
            last = err or "an empty result"
            if time.monotonic() > deadline:
                raise Failure(f"prometheus had no {want} after {PROMETHEUS_TIMEOUT:.0f} s "
                              f"(last: {last}):\n{tail(log)}")
            time.sleep(0.5)
        SUMMARY.ok(f"{version}: first scrape queryable after {time.monotonic() - started:.1f} s")

        def expect(expr, value, labels=None):
            doc, err = promtool_query(pport, expr)
            check(doc is not None, f"promtool query instant {expr!r}: {err}")
            check(len(doc) == 1, f"promtool query instant {expr!r}: expected one sample, got {doc}")
            got = float(doc[0]["value"][1])
            check(close_enough(got, value), f"prometheus: {expr} = {got}, expected {value}")
            if labels:
                for k, v in labels.items():
                    check(doc[0]["metric"].get(k) == v,
                          f"prometheus: {expr}: label {k}={doc[0]['metric'].get(k)!r}, expected {v!r}")

        expect('up{job="ingestor"}', 1)
        expect('weather_temp{city="paris"}', 21.5,
               {"job": "ingestor", "instance": f"127.0.0.1:{srv.http_port}"})
        expect('sys_cpu_usage{host="a b,c=d"}', 12.25)
        expect('disk_used{dev="sdb"}', -0.5)
        expect("count(batch_v)", 50)
        expect("sum(batch_v)", sum(i * 1.5 for i in range(50)))
        SUMMARY.ok("up == 1; influx gauges scraped with exact values, job/instance labels; "
                   "count(batch_v) 50, sum(batch_v) 1837.5")
        expect("e2e_requests_total", 5)
        expect("e2e_sampled_total", 42)
        expect("e2e_temp", 22.5)
        expect("e2e_latency_count", 3)
        expect("e2e_latency_sum", 0.40025)
        expect('e2e_latency_bucket{le="+Inf"}', 3)
        SUMMARY.ok("StatsD counter (e2e_requests_total 5, e2e_sampled_total 42), gauge 22.5, "
                   "histogram _count 3 / _sum 0.40025 / +Inf bucket 3")
        expect('scrape_samples_scraped{job="ingestor"}', n_samples)
        expect('count({job="ingestor", __name__!~"up|scrape_.*"})', n_samples)
        SUMMARY.ok(f"all {n_samples} samples of the exposition scraped and stored, none dropped")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------------
# g. kill -9 in the middle of a stream of acknowledged writes


PARTS = 3  # series per request: a request is one batch, all or nothing


class Writers:
    """Threads that each POST a stream of requests `kill9,writer=wK,req=N,part=P seq=N*10+P`
    (PARTS lines, so PARTS series new to the server) and record which got their 204."""

    def __init__(self, port, threads, first_req):
        self.port = port
        self.threads = threads
        self.next_req = dict(first_req)  # writer -> next request number
        self.sent = set()  # (writer, req) sent, answered or not
        self.acked = set()  # (writer, req) answered 204
        self.errors = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    @staticmethod
    def body(writer, req):
        return "".join(
            f"kill9,writer={writer},req={req},part={p} seq={req * 10 + p}i\n" for p in range(PARTS)
        )

    def run_one(self, writer):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while not self.stop.is_set():
                req = self.next_req[writer]
                self.next_req[writer] = req + 1
                with self.lock:
                    self.sent.add((writer, req))
                conn.request("POST", "/api/v2/write?bucket=b&org=o&precision=s",
                             body=self.body(writer, req).encode(),
                             headers={"Content-Type": "text/plain; charset=utf-8"})
                resp = conn.getresponse()
                text = resp.read()
                if resp.status == 204:
                    with self.lock:
                        self.acked.add((writer, req))
                else:
                    self.errors.append(f"{writer} req {req}: {resp.status} {text!r}")
                    return
        except (OSError, http.client.HTTPException):
            return  # the server died under it: that request is not acknowledged
        finally:
            conn.close()

    def start(self):
        self.workers = [threading.Thread(target=self.run_one, args=(w,), daemon=True)
                        for w in self.next_req]
        for t in self.workers:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.workers:
            t.join(timeout=30)
            check(not t.is_alive(), "a writer thread is stuck")


# Series written before the kill -9 rounds, checked after every restart.
SURVIVORS = ("weather_temp", "sys_cpu_usage", "rack_power", "disk_used", "batch_v", "ooo_v",
             "gz_v", "e2e_requests_total", "e2e_sampled_total", "e2e_temp", "e2e_level",
             "e2e_latency_count", "e2e_latency_sum", "e2e_latency_bucket")


def state_of(srv, selectors):
    """{selector: sorted [(labels, [ts, value])]} from the query API."""
    return {sel: sorted((sorted(r["metric"].items()), r["value"]) for r in srv.query(sel))
            for sel in selectors}


def check_survivors(srv, before, when):
    after = state_of(srv, before)
    for sel, samples in before.items():
        check(samples, f"{sel} had no samples to compare")
        check(after[sel] == samples, f"{when}: {sel} is {after[sel]}, expected {samples}")


def recovered_kill9(srv):
    """{(writer, req): {part: value}} of the kill9_seq series the server has."""
    out = {}
    for r in srv.query("kill9_seq"):
        m = r["metric"]
        out.setdefault((m["writer"], int(m["req"])), {})[int(m["part"])] = float(r["value"][1])
    return out


def kill9_checks(srv, rounds, rng, survivors):
    SUMMARY.section(f"kill -9 ({rounds} rounds; writers over http.client, --sync always)")
    writers = ["w0", "w1", "w2", "w3"]
    next_req = {w: 0 for w in writers}
    sent, acked = set(), set()
    totals = []
    previous = {}
    for round_no in range(1, rounds + 1):
        w = Writers(srv.http_port, writers, next_req)
        w.start()
        delay = rng.uniform(0.5, 1.0)
        time.sleep(delay)
        srv.kill9()
        w.join()
        check(not w.errors, f"round {round_no}: a write was refused: {w.errors[:3]}")
        next_req = w.next_req
        sent |= w.sent
        acked |= w.acked
        in_flight = w.sent - w.acked
        srv.start()
        got = recovered_kill9(srv)
        missing = sorted(k for k in acked if k not in got)
        check(not missing, f"round {round_no}: {len(missing)} acknowledged writes lost after "
                           f"kill -9, e.g. {missing[:5]}")
        wrong = sorted(
            k for k in acked if got[k] != {p: float(k[1] * 10 + p) for p in range(PARTS)}
        )
        check(not wrong, f"round {round_no}: acknowledged writes with wrong values: "
                         f"{[(k, got[k]) for k in wrong[:5]]}")
        torn = sorted(k for k, parts in got.items() if len(parts) != PARTS)
        check(not torn, f"round {round_no}: requests applied in part: "
                        f"{[(k, got[k]) for k in torn[:5]]}")
        phantom = sorted(k for k in got if k not in sent)
        check(not phantom, f"round {round_no}: writes that were never sent: {phantom[:5]}")
        unacked_present = sorted(k for k in in_flight if k in got)
        # What a recovery showed stays: the next recovery has it all, with the same values.
        lost = sorted(k for k in previous if got.get(k) != previous[k])
        check(not lost, f"round {round_no}: writes recovered before are gone or changed: "
                        f"{[(k, previous[k], got.get(k)) for k in lost[:5]]}")
        previous = got
        check_survivors(srv, survivors, f"round {round_no}: after kill -9")
        totals.append((len(w.acked), len(in_flight), len(unacked_present)))
        SUMMARY.ok(
            f"round {round_no}: SIGKILL after {delay:.2f} s; {len(w.acked)} writes got 204 "
            f"({len(w.acked) * PARTS} series), {len(in_flight)} in flight; after the restart "
            f"all {len(acked)} acknowledged so far are there whole with exact values, "
            f"{len(unacked_present)} of the {len(in_flight)} in flight too (whole), none never "
            f"sent, nothing recovered before lost"
        )
    # The same state through /metrics, parsed by prometheus_client.
    _, _, body = http_get(srv.base + "/metrics")
    exposed = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "kill9_seq":
                exposed[(s.labels["writer"], int(s.labels["req"]), int(s.labels["part"]))] = s.value
    want = {(k[0], k[1], p): float(k[1] * 10 + p) for k in recovered_kill9(srv) for p in range(PARTS)}
    check(exposed == want, "/metrics and /api/v1/query disagree on the kill9_seq series")
    check(all(exposed[(k[0], k[1], p)] == k[1] * 10 + p for k in acked for p in range(PARTS)),
          "/metrics lacks acknowledged writes")
    SUMMARY.ok(f"/metrics (prometheus_client parser) agrees: all {len(acked)} acknowledged "
               f"writes ({len(acked) * PARTS} series) with exact values")
    SUMMARY.ok("earlier influx and StatsD values survived every kill -9 and restart")
    return len(acked), totals


# --------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ingestor", help="path of the ingestor binary under test")
    parser.add_argument("--kill-rounds", type=int, default=3, help="kill -9 rounds (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill delays")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    binary = os.path.abspath(args.ingestor)
    if not os.access(binary, os.X_OK):
        print(f"e2e: {binary} is not an executable (build it: cargo build --release "
              "-p ingestor-cli)", file=sys.stderr)
        return 2
    for tool in (PROMETHEUS, shutil.which("promtool")):
        if not tool or not os.access(tool, os.X_OK):
            print("e2e: prometheus and promtool are needed (apt-get install prometheus)",
                  file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    # SIGTERM (cargo or CI giving up) unwinds through the finally below like an error.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = tempfile.mkdtemp(prefix="ingestor-e2e-")
    http_port, pport, udp_port = free_ports(tcp=2, udp=1)
    srv = Ingestor(binary, os.path.join(tmp, "data"), http_port, udp_port,
                   os.path.join(tmp, "ingestor.log"))
    print(f"e2e: {binary}\ne2e: http 127.0.0.1:{http_port}, statsd udp 127.0.0.1:{udp_port}, "
          f"prometheus 127.0.0.1:{pport}, data in {tmp}, seed {seed}", flush=True)
    started = time.monotonic()
    failed = True
    try:
        srv.start()
        influx_checks(srv)
        packets = statsd_checks(srv)
        body, n_samples = metrics_checks(srv, packets)
        promtool_check(body)
        prometheus_checks(srv, tmp, pport, n_samples)
        datadog_checks(srv)

        SUMMARY.section("restart (SIGTERM, clean close, reopen on the same data directory)")
        survivors = state_of(srv, SURVIVORS)
        srv.stop()
        SUMMARY.ok("SIGTERM: the server closed cleanly and exited 0")
        srv.start()
        check_survivors(srv, survivors, "after a clean restart")
        SUMMARY.ok(f"after the restart all {sum(len(v) for v in survivors.values())} earlier "
                   "influx and StatsD samples are back, values and timestamps")

        total_acked, rounds = kill9_checks(srv, args.kill_rounds, rng, survivors)
        # Remote write from real senders (Prometheus in agent mode, vmagent) and kill -9
        # during a remote-write stream; see e2e/remote_write_checks.py.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import remote_write_checks

        remote_write_checks.run(sys.modules[__name__], srv, tmp, rng)
        # OTLP metrics from the OpenTelemetry Python SDK; see e2e/otlp_checks.py.
        import otlp_checks

        otlp_checks.run(sys.modules[__name__], srv)
        # Remote-write 2.0 edge cases, encoded by protoc from Prometheus' schema; see
        # e2e/rw2_checks.py.
        import rw2_checks

        rw2_checks.run(sys.modules[__name__], srv)
        srv.stop()
        # Forwarding into VictoriaMetrics and Prometheus through the outbox, with an outage
        # and a SIGKILL; see e2e/forward_checks.py.
        import forward_checks

        global BINARY
        BINARY = binary
        forward_checks.run(sys.modules[__name__], tmp)
        # A full disk: a tmpfs made for the test; see e2e/disk_checks.py.
        import disk_checks

        disk_checks.run(sys.modules[__name__], tmp)
        failed = False
        SUMMARY.print()
        print(f"e2e: kill -9: {total_acked} acknowledged writes checked after "
              f"{len(rounds)} SIGKILLs (per round: "
              + ", ".join(f"{a} acked/{f} in flight/{p} unacked present" for a, f, p in rounds)
              + f"); seed {seed}")
        print(f"e2e: passed in {time.monotonic() - started:.1f} s")
        return 0
    except Failure as e:
        print(f"\ne2e: FAILED: {e}", file=sys.stderr)
    except Exception:
        print("\ne2e: FAILED with an unexpected error:", file=sys.stderr)
        traceback.print_exc()
    finally:
        kill_children()
        if failed:
            print(f"\ne2e: the server's log ({srv.log_path}), last lines:\n{tail(srv.log_path)}",
                  file=sys.stderr)
            print(f"e2e: seed {seed}; temporary directory kept: {tmp}", file=sys.stderr)
        elif args.keep:
            print(f"e2e: temporary directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
