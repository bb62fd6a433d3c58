"""Forwarding into real receivers (imported by e2e/run.py).

Two more `ingestor serve` processes forward through their outboxes into Debian's
VictoriaMetrics (`/api/v1/write`) and Debian's Prometheus 2.42
(`--web.enable-remote-write-receiver`), both started here on loopback:

  outage + kill -9   ingestor A forwards to both; line protocol goes in (each write a new
                     series, so every acknowledged write must arrive as one sample); Prometheus
                     is stopped for a while, writes go on; ingestor A is killed with SIGKILL
                     during the outage; everything restarts; then every acknowledged series must
                     be in both receivers with its value and timestamp, none missing, and in
                     VictoriaMetrics no series with more samples than the requests that were in
                     flight at the kill allow.
  two ingestors      ingestor B takes the other half of the series and forwards to
                     VictoriaMetrics too: the union arrives.

`run(m, tmp)` takes run.py's module for its helpers (SUMMARY, spawn, check, Ingestor,
free_ports, http_get, Failure, tail).
"""

import http.client
import json
import os
import signal
import time
import urllib.parse

VICTORIA = "/usr/bin/victoria-metrics"
PROMETHEUS = "/usr/bin/prometheus"
NAME = "fwd_e2e"
# Line protocol's measurement_field: the series' name.
SERIES = f"{NAME}_value"
# Samples a request holds (small, so that the test has many requests in flight and the
# duplicate bound below is tight).
MAX_SAMPLES = 50
# The forwarder's cursor window (ForwardConfig::cursor_window's default).
WINDOW = 8
# Shards (senders, each with a cursor) per destination: A runs 4 (the default), then is
# restarted after its SIGKILL with 3, so the outbox written by 4 shards is sent by 3.
SHARDS = 4


def _wait_http(m, url, proc, log, who, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise m.Failure(f"{who} exited with {proc.returncode}:\n{m.tail(log)}")
        try:
            status, _, _ = m.http_get(url, timeout=2)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise m.Failure(f"{who} did not answer {url} within {timeout:.0f} s:\n{m.tail(log)}")


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
            proc.wait()


def _write(srv, lines):
    """POSTs line protocol (ms precision); True when it got its 204."""
    u = urllib.parse.urlparse(srv.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", "/api/v2/write?precision=ms", "\n".join(lines).encode())
        r = conn.getresponse()
        r.read()
        return r.status == 204
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class Writer:
    """Each write: a new series `fwd_e2e_value{src,seq}` = seq / 2 at a timestamp of its own."""

    def __init__(self, src, base_ms):
        self.src = src
        self.base_ms = base_ms
        self.seq = 0
        self.acked = {}  # seq -> (ts_ms, value)

    def batch(self, srv, n):
        lines, sent = [], []
        for _ in range(n):
            self.seq += 1
            ts = self.base_ms + self.seq
            value = self.seq * 0.5
            lines.append(f"{NAME},src={self.src},seq={self.seq} value={value} {ts}")
            sent.append((self.seq, ts, value))
        if _write(srv, lines):
            for seq, ts, value in sent:
                self.acked[seq] = (ts, value)
            return True
        return False


def _vm_export(m, port):
    """{(src, seq): [(ts_ms, value), ...]} of every fwd_e2e_value sample in VictoriaMetrics."""
    m.http_get(f"http://127.0.0.1:{port}/internal/force_flush")
    q = urllib.parse.urlencode({"match[]": SERIES, "start": "0"})
    status, _, body = m.http_get(f"http://127.0.0.1:{port}/api/v1/export?{q}", timeout=30)
    m.check(status == 200, f"VictoriaMetrics export: {status} {body[:300]}")
    out = {}
    for line in body.splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        key = (doc["metric"]["src"], int(doc["metric"]["seq"]))
        out.setdefault(key, []).extend(zip(doc["timestamps"], doc["values"]))
    return out


def _prom_values(m, port):
    """{(src, seq): value} of the fwd_e2e_value series Prometheus has (last sample)."""
    q = urllib.parse.urlencode({"query": f"last_over_time({SERIES}[1h])"})
    status, _, body = m.http_get(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=30)
    m.check(status == 200, f"Prometheus query: {status} {body[:300]}")
    out = {}
    for r in json.loads(body)["data"]["result"]:
        out[(r["metric"]["src"], int(r["metric"]["seq"]))] = float(r["value"][1])
    return out


def _missing(expected, got_keys):
    return sorted(k for k in expected if k not in got_keys)


def run(m, tmp):
    m.SUMMARY.section("forwarding through the outbox into VictoriaMetrics and Prometheus 2.42")
    for tool in (VICTORIA, PROMETHEUS):
        m.check(os.access(tool, os.X_OK), f"{tool} is needed (apt-get install victoria-metrics "
                                          "prometheus)")
    vm_port, prom_port, a_port, b_port = m.free_ports(tcp=4, udp=0)
    a_udp, b_udp = m.free_ports(tcp=0, udp=2)
    vm_log = os.path.join(tmp, "fwd-vm.log")
    vm = m.spawn([VICTORIA, f"-storageDataPath={os.path.join(tmp, 'fwd-vm')}",
                  f"-httpListenAddr=127.0.0.1:{vm_port}", "-retentionPeriod=100y",
                  "-loggerLevel=WARN"], vm_log)
    prom_cfg = os.path.join(tmp, "fwd-prom.yml")
    with open(prom_cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    prom_log = os.path.join(tmp, "fwd-prom.log")
    prom_args = [PROMETHEUS, f"--config.file={prom_cfg}",
                 f"--storage.tsdb.path={os.path.join(tmp, 'fwd-prom')}",
                 f"--web.listen-address=127.0.0.1:{prom_port}",
                 "--web.enable-remote-write-receiver", "--log.level=warn"]
    prom = m.spawn(prom_args, prom_log)
    fwd_flags = ["--forward-interval", "300ms", "--forward-max-samples", str(MAX_SAMPLES),
                 "--forward-backoff-max", "300ms", "--snapshot-interval", "off"]
    a = m.Ingestor(m.BINARY, os.path.join(tmp, "fwd-a"), a_port, a_udp,
                   os.path.join(tmp, "fwd-a.log"),
                   extra=fwd_flags + [
                       "--forward", f"vm=http://127.0.0.1:{vm_port}/api/v1/write",
                       "--forward", f"prom=http://127.0.0.1:{prom_port}/api/v1/write"])
    b = m.Ingestor(m.BINARY, os.path.join(tmp, "fwd-b"), b_port, b_udp,
                   os.path.join(tmp, "fwd-b.log"),
                   extra=fwd_flags + ["--forward", f"vm=http://127.0.0.1:{vm_port}/api/v1/write"])
    try:
        _wait_http(m, f"http://127.0.0.1:{vm_port}/health", vm, vm_log, "victoria-metrics")
        _wait_http(m, f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log, "prometheus")
        a.start()
        b.start()
        base = int(time.time() * 1000) - 60_000
        wa, wb = Writer("a", base), Writer("b", base)
        for _ in range(10):
            m.check(wa.batch(a, 20), "a write to ingestor A was refused")
            m.check(wb.batch(b, 20), "a write to ingestor B was refused")
        time.sleep(1.0)
        # Prometheus goes away; writes go on; A is killed during the outage.
        _stop(prom)
        for _ in range(10):
            m.check(wa.batch(a, 20), "a write to ingestor A was refused during the outage")
            wb.batch(b, 20)
            time.sleep(0.05)
        time.sleep(1.0)
        status, _, metrics = m.http_get(a.base + "/metrics")
        pending = [l for l in metrics.splitlines()
                   if l.startswith('ingestor_forward_pending_samples{destination="prom"}')]
        m.check(pending and float(pending[0].split()[-1]) > 0,
                f"with Prometheus down, A's outbox holds samples for it: {pending}")
        a.kill9()
        m.SUMMARY.ok(f"Prometheus stopped; {len(wa.acked)} series acknowledged by A, "
                     f"{pending[0].split()[-1]} samples waiting for Prometheus in A's outbox "
                     "when A got SIGKILL")
        prom = m.spawn(prom_args, prom_log)
        _wait_http(m, f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log, "prometheus")
        a.extra += ["--forward-shards", str(SHARDS - 1)]
        a.start()
        for _ in range(5):
            m.check(wa.batch(a, 20), "a write to ingestor A was refused after the restart")
            m.check(wb.batch(b, 20), "a write to ingestor B was refused")
        expected_a = {("a", s): v for s, v in wa.acked.items()}
        expected_b = {("b", s): v for s, v in wb.acked.items()}
        deadline = time.monotonic() + 60
        while True:
            vm_got = _vm_export(m, vm_port)
            prom_got = _prom_values(m, prom_port)
            miss_vm = _missing({**expected_a, **expected_b}, vm_got)
            miss_prom = _missing(expected_a, prom_got)
            if not miss_vm and not miss_prom:
                break
            if time.monotonic() > deadline:
                raise m.Failure(f"after 60 s, missing in VictoriaMetrics: {len(miss_vm)} "
                                f"(e.g. {miss_vm[:5]}), in Prometheus: {len(miss_prom)} "
                                f"(e.g. {miss_prom[:5]})\n{m.tail(a.log_path)}")
            time.sleep(0.5)
        wrong = [(k, vm_got[k], v) for k, v in {**expected_a, **expected_b}.items()
                 if any(s != (v[0], v[1]) for s in vm_got[k])]
        m.check(not wrong, f"VictoriaMetrics holds other samples than were written: {wrong[:5]}")
        wrong = [(k, prom_got[k], v[1]) for k, v in expected_a.items() if prom_got[k] != v[1]]
        m.check(not wrong, f"Prometheus holds other values than were written: {wrong[:5]}")
        # Sent twice at most: per shard, the requests of the cursor window (answered, their
        # cursor not yet durable, and the one in flight) at the kill.
        dup = sum(len(v) - 1 for v in vm_got.values())
        bound = SHARDS * WINDOW * MAX_SAMPLES
        m.check(dup <= bound, f"{dup} duplicate samples in VictoriaMetrics, more than {WINDOW} "
                              f"requests of {MAX_SAMPLES} for each of {SHARDS} shards")
        m.SUMMARY.ok(f"all {len(expected_a)} series A acknowledged are in Prometheus (after its "
                     f"outage, A's SIGKILL and its restart with {SHARDS - 1} shards instead of "
                     f"{SHARDS}) and in VictoriaMetrics, each with its value and timestamp; "
                     f"{dup} duplicate samples (at most {bound} allowed)")
        m.SUMMARY.ok(f"two ingestors, each with half of the series, into one VictoriaMetrics: "
                     f"all {len(expected_a) + len(expected_b)} arrived (the union)")
        status, _, metrics = m.http_get(a.base + "/metrics")
        sent = [l for l in metrics.splitlines()
                if l.startswith("ingestor_forward_samples_sent_total{")]
        m.check(len(sent) == 2, f"per-destination metrics: {sent}")
        a.stop()
        b.stop()
    finally:
        for p in (vm, prom):
            _stop(p)
        for s in (a, b):
            if s.proc is not None and s.proc.poll() is None:
                s.proc.kill()
