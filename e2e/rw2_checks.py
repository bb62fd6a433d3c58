"""Remote-write 2.0 edge cases against `ingestor serve` (imported by e2e/run.py).

Each request is written in protobuf text format against Prometheus' own Remote-Write 2.0
schema (e2e/proto/io/prometheus/write/v2/types.proto) and encoded by protoc (Debian's
protobuf-compiler), not by ingestor's types, then sent as a snappy block with the 2.0
Content-Type. Each case states the answer the 2.0 specification and docs/server.md call
for: the status, the X-Prometheus-Remote-Write-*-Written headers, and what /metrics shows
afterwards.

`run(m, srv)` takes run.py's module for its helpers (SUMMARY, check, http_get).
Standalone, against a running server: `python3 e2e/rw2_checks.py http://127.0.0.1:PORT`.
"""

import http.client
import os
import struct
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "proto")
PROTO = "io/prometheus/write/v2/types.proto"
CONTENT_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
# protoc writes a NaN as the canonical quiet NaN; the stale marker is another NaN.
CANONICAL_NAN = struct.pack("<d", float("nan"))
STALE_NAN = struct.pack("<Q", 0x7FF0000000000002)

sys.path.insert(0, HERE)
from remote_write_checks import snappy_literals  # noqa: E402


def encode(text):
    """The binary Request protoc makes of `text` (protobuf text format)."""
    r = subprocess.run(
        ["protoc", f"--proto_path={PROTO_DIR}", "--encode=io.prometheus.write.v2.Request", PROTO],
        input=text.encode(), capture_output=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"protoc --encode failed: {r.stderr.decode()}\n{text}")
    return r.stdout


def post(base, body, content_type=CONTENT_TYPE):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", "/api/v1/write", snappy_literals(body), {
            "Content-Type": content_type, "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "2.0.0"})
        r = conn.getresponse()
        headers = {k.lower(): v for k, v in r.getheaders()}
        return r.status, headers, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def written(headers):
    """(samples, histograms, exemplars) as the response headers say, None where absent."""
    def h(what):
        v = headers.get(f"x-prometheus-remote-write-{what}-written")
        return None if v is None else int(v)
    return h("samples"), h("histograms"), h("exemplars")


def series(symbols, refs, body):
    """A TimeSeries in text format: label refs and the rest of its fields."""
    return ("timeseries { " + " ".join(f"labels_refs: {r}" for r in refs) + f" {body} }}")


def request(symbols, *timeseries):
    return "".join(f"symbols: {s!r}\n".replace("'", '"') for s in symbols) + "\n".join(timeseries)


T = 1_700_000_000_000
# The symbols every case shares: index 0 must be "" (the specification's rule).
S = ["", "__name__", "job", "rw2-edge", "instance", "i-1", "rw2_jobs_total", "rw2_temp",
     "rw2_stale", "rw2_native", "rw2_bad_ref", "rw2_odd", "zone", "eu", "trace_id", "abc123",
     "rw2_unsorted", "rw2_empty_value", "rw2_meta_late", "requests handled", "seconds",
     "rw2_after_bad"]
I = {s: i for i, s in enumerate(S)}


def labels(name, *extra):
    """Label refs for `name` with job and instance, then `extra` pairs, sorted by name."""
    pairs = [("__name__", name), ("instance", "i-1"), ("job", "rw2-edge")] + list(extra)
    pairs.sort()
    return [r for n, v in pairs for r in (I[n], I[v])]


def cases():
    """(what, request text, post-process, status, (samples, histograms, exemplars) written,
    checks on /metrics: list of (sample name, labels, value or None for absent))."""
    base = {"instance": "i-1", "job": "rw2-edge"}
    return [
        ("a counter by its metadata: two samples, the last total kept, # TYPE counter",
         request(S, series(S, labels("rw2_jobs_total"),
                           f"samples {{ value: 5 timestamp: {T} }} "
                           f"samples {{ value: 7 timestamp: {T + 1000} }} "
                           f"metadata {{ type: METRIC_TYPE_COUNTER help_ref: {I['requests handled']}"
                           f" unit_ref: 0 }}")),
         None, 204, (2, 0, 0),
         [("rw2_jobs_total", base, 7.0), ("#TYPE rw2_jobs_total", "counter", None)]),
        ("a gauge with an exemplar and a created timestamp: the exemplar counted, not written",
         request(S, series(S, labels("rw2_temp", ("zone", "eu")),
                           f"samples {{ value: 21.5 timestamp: {T} }} "
                           f"exemplars {{ labels_refs: {I['trace_id']} labels_refs: {I['abc123']}"
                           f" value: 21.5 timestamp: {T} }} "
                           f"metadata {{ type: METRIC_TYPE_GAUGE unit_ref: {I['seconds']} }} "
                           f"created_timestamp: {T - 60000}")),
         None, 204, (1, 0, 0),
         [("rw2_temp", dict(base, zone="eu"), 21.5), ("#TYPE rw2_temp", "gauge", None)]),
        ("a stale marker after a value: 204, the series keeps its value",
         request(S, series(S, labels("rw2_stale"),
                           f"samples {{ value: 3 timestamp: {T} }} "
                           f"samples {{ value: nan timestamp: {T + 1000} }}")),
         lambda b: b.replace(CANONICAL_NAN, STALE_NAN), 204, None,
         [("rw2_stale", base, 3.0)]),
        ("a native histogram sample beside a float sample: 400 naming it, the float sample "
         "written, Histograms-Written 0",
         request(S,
                 series(S, labels("rw2_native"),
                        f"histograms {{ count_int: 3 sum: 1.5 schema: 0 zero_threshold: 0.001 "
                        f"zero_count_int: 1 positive_spans {{ offset: 0 length: 2 }} "
                        f"positive_deltas: 1 positive_deltas: 0 timestamp: {T} }}"),
                 series(S, labels("rw2_after_bad"), f"samples {{ value: 11 timestamp: {T} }}")),
         None, 400, (1, 0, 0),
         [("rw2_native", base, None), ("rw2_after_bad", base, 11.0)]),
        ("a label reference outside the symbols table: 400, nothing of the request written",
         request(S,
                 series(S, labels("rw2_bad_ref")[:-1] + [len(S) + 5],
                        f"samples {{ value: 1 timestamp: {T} }}"),
                 series(S, labels("rw2_odd", ("zone", "eu")), f"samples {{ value: 2 timestamp: {T} }}")),
         None, 400, (0, 0, 0),
         [("rw2_bad_ref", base, None), ("rw2_odd", dict(base, zone="eu"), None)]),
        ("an odd number of label references: 400, nothing written",
         request(S, series(S, labels("rw2_odd") + [I["zone"]],
                           f"samples {{ value: 1 timestamp: {T} }}")),
         None, 400, (0, 0, 0),
         [("rw2_odd", base, None)]),
        ("labels out of order (the specification says they should be sorted): the same series",
         request(S, series(S, [I["job"], I["rw2-edge"], I["__name__"], I["rw2_unsorted"],
                               I["instance"], I["i-1"]],
                           f"samples {{ value: 4 timestamp: {T} }}")),
         None, 204, (1, 0, 0),
         [("rw2_unsorted", base, 4.0)]),
        ("a label whose value is the empty symbol: no label, as Prometheus reads it",
         request(S, series(S, labels("rw2_empty_value") + [I["zone"], 0],
                           f"samples {{ value: 6 timestamp: {T} }}")),
         None, 204, (1, 0, 0),
         [("rw2_empty_value", base, 6.0)]),
        ("counter metadata arriving after the series exists as a gauge: it stays a gauge, "
         "the request is not refused",
         request(S, series(S, labels("rw2_meta_late"), f"samples {{ value: 1 timestamp: {T} }}")),
         None, 204, (1, 0, 0), []),
        ("... the later request with counter metadata",
         request(S, series(S, labels("rw2_meta_late"),
                           f"samples {{ value: 2 timestamp: {T + 1000} }} "
                           f"metadata {{ type: METRIC_TYPE_COUNTER }}")),
         None, 204, (1, 0, 0),
         [("rw2_meta_late", base, 2.0), ("#TYPE rw2_meta_late", "gauge", None)]),
        ("an empty request (symbols only): 204, nothing written",
         request(S), None, 204, (0, 0, 0), []),
    ]


def metrics(get, base):
    status, _, body = get(base + "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status}")
    samples, types = {}, {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples, types


def sample_key(name, labels):
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def run(m, srv):
    m.SUMMARY.section("remote write 2.0 edge cases (requests encoded by protoc from "
                      "Prometheus' types.proto)")
    check_all(m.check, m.SUMMARY.ok, m.http_get, srv.base)


def check_all(check, ok, get, base):
    for what, text, fix, status, want_written, expect in cases():
        body = encode(text)
        if fix:
            fixed = fix(body)
            check(fixed != body, f"{what}: the fixture has no NaN to turn into a stale marker")
            body = fixed
        got, headers, reason = post(base, body)
        check(got == status, f"{what}: status {got}, expected {status}: {reason[:300]}")
        if want_written is not None:
            check(written(headers) == want_written,
                  f"{what}: written headers {written(headers)}, expected {want_written}")
        if status == 400:
            check(reason.strip() != "", f"{what}: a 400 without a reason")
        samples, types = metrics(get, base)
        for name, labels, value in expect:
            if name.startswith("#TYPE "):
                family = name.split(" ", 1)[1]
                check(types.get(family) == labels,
                      f"{what}: # TYPE {family} is {types.get(family)}, expected {labels}")
                continue
            key = sample_key(name, labels)
            check(samples.get(key) == value,
                  f"{what}: {key} is {samples.get(key)}, expected {value}")
        ok(f"{what}: {status}" + (f", written {want_written}" if want_written else "")
           + (f" ({reason.strip()[:90]})" if status == 400 else ""))
    # A 1.0 WriteRequest sent as 2.0: its fields (1 to 3) are reserved in 2.0, so it reads as
    # an empty request, as the specification intends: 204, nothing written.
    from remote_write_checks import write_request
    v1 = write_request([({"__name__": "rw2_v1_as_v2", "job": "x"}, [(T, 1.0)])])
    got, headers, reason = post(base, v1)
    samples, _ = metrics(get, base)
    check(got == 204 and written(headers) == (0, 0, 0)
          and not any(k.startswith("rw2_v1_as_v2") for k in samples),
          f"a 1.0 request sent as 2.0: {got} {written(headers)} {reason[:200]}")
    ok("a 1.0 WriteRequest sent with the 2.0 Content-Type: read as an empty 2.0 request "
       "(its fields are reserved in 2.0), 204, nothing written")


if __name__ == "__main__":
    def _check(cond, msg):
        if not cond:
            raise SystemExit(f"FAILED: {msg}")

    def _get(url):
        import urllib.request
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, r.read().decode()

    started = time.monotonic()
    check_all(_check, lambda what: print("ok:", what), _get, sys.argv[1])
    print(f"rw2 checks passed in {time.monotonic() - started:.1f} s")
