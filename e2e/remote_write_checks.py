"""Remote write into `ingestor serve` from real senders (imported by e2e/run.py).

  prometheus --enable-feature=agent   scrapes a target (a static exposition served here) and
                                      remote-writes into the ingestor: every series it
                                      scraped, and the series it adds (up, scrape_*), must be
                                      in /api/v1/series, with the target's exact values.
  vmagent                             the same target, the same check (Debian's
                                      victoria-metrics package).
  kill -9                             writers stream remote-write 1.0 requests (encoded here:
                                      protobuf by hand, snappy as literals) while the server
                                      is killed; every request answered 204 is there after
                                      the restart.

`run(m, srv, tmp)` takes run.py's module for its helpers (SUMMARY, spawn, check, Failure,
tail, free_ports) so that this file stays independent of its order.
"""

import http.client
import http.server
import os
import random
import shutil
import signal
import struct
import subprocess
import threading
import time

VMAGENT = "/usr/bin/vmagent"
PROMETHEUS = "/usr/bin/prometheus"
WAIT = 60.0

# The target's exposition: counters, a gauge, a classic histogram and a summary, with the
# values every sender must deliver.
TARGET = {
    'rw_requests_total{code="200"}': 1027.0,
    'rw_requests_total{code="500"}': 3.0,
    'rw_temperature{room="a b"}': -21.5,
    'rw_latency_seconds_bucket{le="0.1"}': 5.0,
    'rw_latency_seconds_bucket{le="1"}': 9.0,
    'rw_latency_seconds_bucket{le="+Inf"}': 10.0,
    "rw_latency_seconds_sum": 2.75,
    "rw_latency_seconds_count": 10.0,
    'rw_rpc_seconds{quantile="0.5"}': 0.25,
    'rw_rpc_seconds{quantile="0.99"}': 1.5,
    "rw_rpc_seconds_sum": 40.0,
    "rw_rpc_seconds_count": 100.0,
}

EXPOSITION = """# HELP rw_requests_total Requests.
# TYPE rw_requests_total counter
rw_requests_total{code="200"} 1027
rw_requests_total{code="500"} 3
# HELP rw_temperature A gauge.
# TYPE rw_temperature gauge
rw_temperature{room="a b"} -21.5
# HELP rw_latency_seconds A histogram.
# TYPE rw_latency_seconds histogram
rw_latency_seconds_bucket{le="0.1"} 5
rw_latency_seconds_bucket{le="1"} 9
rw_latency_seconds_bucket{le="+Inf"} 10
rw_latency_seconds_sum 2.75
rw_latency_seconds_count 10
# HELP rw_rpc_seconds A summary.
# TYPE rw_rpc_seconds summary
rw_rpc_seconds{quantile="0.5"} 0.25
rw_rpc_seconds{quantile="0.99"} 1.5
rw_rpc_seconds_sum 40
rw_rpc_seconds_count 100
"""


class _Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = EXPOSITION.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve_target(port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _selector(series, job):
    """`name{labels}` plus the job label, as a query selector."""
    if "{" in series:
        name, rest = series.split("{", 1)
        return f'{name}{{job="{job}",{rest}'
    return f'{series}{{job="{job}"}}'


def _wait_for_series(m, srv, job, proc, log, who):
    """Waits until every target series (and up) is in the ingestor under `job`; checks values."""
    started = time.monotonic()
    missing = list(TARGET)
    while True:
        if proc.poll() is not None:
            raise m.Failure(f"{who} exited with {proc.returncode}:\n{m.tail(log)}")
        missing = [s for s in TARGET if srv.value(_selector(s, job)) is None]
        if not missing and srv.value(f'up{{job="{job}"}}') is not None:
            break
        if time.monotonic() - started > WAIT:
            raise m.Failure(f"{who}: after {WAIT:.0f} s the ingestor still lacks {missing[:4]} "
                            f"({len(missing)} of {len(TARGET)}):\n{m.tail(log)}")
        time.sleep(0.5)
    took = time.monotonic() - started
    for s, want in TARGET.items():
        got = srv.value(_selector(s, job))
        m.check(got == want, f"{who}: {s} = {got}, expected {want}")
    series = srv.query(f'{{job="{job}"}}')
    names = sorted({r["metric"]["__name__"] for r in series})
    m.check(any(n.startswith("scrape_") for n in names),
            f"{who}: the scrape_* series the sender adds are missing: {names}")
    for r in series:
        m.check(r["metric"].get("instance"), f"{who}: a series without instance: {r['metric']}")
    return took, len(series)


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def agent_checks(m, srv, tmp, target_port):
    m.SUMMARY.section("prometheus --enable-feature=agent (scrape, remote write 1.0 into /api/v1/write)")
    (agent_port,) = m.free_ports(tcp=1, udp=0)
    config = os.path.join(tmp, "agent.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: rw-agent\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
            "remote_write:\n"
            f"  - url: http://127.0.0.1:{srv.http_port}/api/v1/write\n"
            "    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 50ms\n"
        )
    log = os.path.join(tmp, "agent.log")
    proc = m.spawn([PROMETHEUS, "--enable-feature=agent", f"--config.file={config}",
                    f"--storage.agent.path={os.path.join(tmp, 'agent-data')}",
                    f"--web.listen-address=127.0.0.1:{agent_port}", "--log.level=warn"], log)
    try:
        took, n = _wait_for_series(m, srv, "rw-agent", proc, log, "prometheus agent")
        m.SUMMARY.ok(f"all {len(TARGET)} target series and up/scrape_* ({n} series in all) "
                     f"arrived with exact values after {took:.1f} s")
    finally:
        _stop(proc)


def vmagent_checks(m, srv, tmp, target_port):
    m.SUMMARY.section("vmagent (Debian's victoria-metrics; scrape, remote write into /api/v1/write)")
    (vm_port,) = m.free_ports(tcp=1, udp=0)
    config = os.path.join(tmp, "vmagent.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: rw-vmagent\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
    log = os.path.join(tmp, "vmagent.log")
    proc = m.spawn([VMAGENT, f"-promscrape.config={config}",
                    f"-remoteWrite.url=http://127.0.0.1:{srv.http_port}/api/v1/write",
                    f"-remoteWrite.tmpDataPath={os.path.join(tmp, 'vmagent-data')}",
                    "-remoteWrite.flushInterval=1s",
                    f"-httpListenAddr=127.0.0.1:{vm_port}", "-loggerLevel=WARN"], log)
    try:
        took, n = _wait_for_series(m, srv, "rw-vmagent", proc, log, "vmagent")
        m.SUMMARY.ok(f"all {len(TARGET)} target series and up/scrape_* ({n} series in all) "
                     f"arrived with exact values after {took:.1f} s")
    finally:
        _stop(proc)


# --- remote write 1.0 by hand, for the kill -9 writers ---------------------------------------


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(tag, wire, payload):
    return _varint((tag << 3) | wire) + payload


def _bytes_field(tag, data):
    return _field(tag, 2, _varint(len(data)) + data)


def write_request(series):
    """A `prometheus.WriteRequest` of [(labels dict, [(ts ms, value)])], protobuf-encoded."""
    out = bytearray()
    for labels, samples in series:
        ts = bytearray()
        for k, v in sorted(labels.items()):
            ts += _bytes_field(1, _bytes_field(1, k.encode()) + _bytes_field(2, v.encode()))
        for t, v in samples:
            sample = _field(1, 1, struct.pack("<d", v)) + _field(2, 0, _varint(t & (2**64 - 1)))
            ts += _bytes_field(2, sample)
        out += _bytes_field(1, bytes(ts))
    return bytes(out)


def snappy_literals(data):
    """A valid snappy block made of literals only (no compression, but any decoder reads it)."""
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 65536):
        chunk = data[i:i + 65536]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        elif n < 256:
            out += bytes([60 << 2, n])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n)
        out += chunk
    return bytes(out)


def kill9_checks(m, srv, rounds, rng):
    m.SUMMARY.section("kill -9 during a remote-write stream (--sync always)")
    acked = {}  # (writer, req) -> value
    stop = threading.Event()
    lock = threading.Lock()
    counter = [0]

    def writer(w):
        conn = None
        while not stop.is_set():
            with lock:
                counter[0] += 1
                req = counter[0]
            value = req * 1.5
            labels = {"__name__": "rw_kill9", "writer": f"w{w}", "req": str(req)}
            body = snappy_literals(write_request([(labels, [(1_700_000_000_000 + req, value)])]))
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
                conn.request("POST", "/api/v1/write", body, {
                    "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                    "X-Prometheus-Remote-Write-Version": "0.1.0"})
                r = conn.getresponse()
                r.read()
                if r.status == 204:
                    with lock:
                        acked[(w, req)] = value
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.01)

    total = 0
    for rnd in range(rounds):
        stop.clear()
        before = len(acked)
        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5 + rng.random())
        srv.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=15)
        srv.start()
        with lock:
            snapshot = dict(acked)
        got = {}
        for r in srv.query('rw_kill9'):
            got[(int(r["metric"]["writer"][1:]), int(r["metric"]["req"]))] = float(r["value"][1])
        lost = [k for k, v in snapshot.items() if got.get(k) != v]
        m.check(not lost, f"round {rnd + 1}: {len(lost)} acknowledged remote-write requests "
                          f"lost or wrong after kill -9, e.g. {lost[:3]}")
        total = len(snapshot)
        m.SUMMARY.ok(f"round {rnd + 1}: {len(snapshot) - before} requests got 204 before SIGKILL; "
                     f"all {len(snapshot)} acknowledged so far are there with their values")
    return total


def run(m, srv, tmp, rng):
    for tool in (PROMETHEUS, VMAGENT):
        m.check(os.access(tool, os.X_OK), f"{tool} is needed (apt-get install prometheus "
                                          "victoria-metrics)")
    (target_port,) = m.free_ports(tcp=1, udp=0)
    target = _serve_target(target_port)
    try:
        agent_checks(m, srv, tmp, target_port)
        vmagent_checks(m, srv, tmp, target_port)
    finally:
        target.shutdown()
    return kill9_checks(m, srv, 2, rng)
