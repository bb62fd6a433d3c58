"""A full disk (imported by e2e/run.py).

A 48 MiB tmpfs is mounted for the test (and removed after), an `ingestor serve` keeps its
data there with a 16 MiB free-space floor; a filler file eats the space: writes must be
answered 503 (with Retry-After and the reason), the server must stay up (no crash, no
restart loop), everything acknowledged before must still be there, and once the filler is
removed writes must be accepted again by themselves. Then a clean restart on the same
directory keeps every acknowledged write.

Needs root (to mount); the test fails without it, as CI runs as root.
"""

import http.client
import os
import subprocess
import time
import urllib.parse

SIZE_MB = 48


def _write(srv, line):
    u = urllib.parse.urlparse(srv.base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", "/api/v2/write?precision=ms", line.encode())
        r = conn.getresponse()
        return r.status, r.getheader("Retry-After"), r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _available(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def run(m, tmp):
    m.SUMMARY.section(f"a full disk (a {SIZE_MB} MiB tmpfs made for the test, floor 16 MiB)")
    mnt = os.path.join(tmp, "small-fs")
    os.makedirs(mnt, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", mnt],
                       capture_output=True, text=True)
    m.check(r.returncode == 0, f"mount a tmpfs (needs root): {r.stderr.strip()}")
    (port,) = m.free_ports(tcp=1, udp=0)
    (udp,) = m.free_ports(tcp=0, udp=1)
    srv = m.Ingestor(m.BINARY, os.path.join(mnt, "data"), port, udp,
                     os.path.join(tmp, "disk.log"),
                     extra=["--free-space-floor", "16MiB", "--segment-bytes", str(1 << 20),
                            "--snapshot-interval", "off"])
    filler = os.path.join(mnt, "filler")
    try:
        srv.start()
        acked = {}
        for i in range(50):
            status, _, body = _write(srv, f"disk,i={i} v={i} {1_700_000_000_000 + i}")
            m.check(status == 204, f"write {i} with room to spare: {status} {body}")
            acked[i] = float(i)
        # Eat the space down to 8 MiB free, below the 16 MiB floor.
        with open(filler, "wb") as f:
            chunk = b"\0" * (1 << 20)
            while _available(mnt) > (8 << 20):
                f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        time.sleep(0.4)  # the floor is checked at most every 250 ms
        status, retry_after, body = _write(srv, "disk,i=full v=1 1700000001000")
        m.check(status == 503 and retry_after is not None and "below the floor" in body,
                f"a write below the floor: {status} Retry-After={retry_after} {body[:200]}")
        status, _, metrics = m.http_get(srv.base + "/metrics")
        m.check("ingestor_disk_floor_bytes 16777216" in metrics,
                "/metrics shows the floor (ingestor_disk_floor_bytes 16777216)")
        for _ in range(20):
            _write(srv, "disk,i=full v=1 1700000001000")
        m.check(srv.proc.poll() is None, "the server is still running after refusing writes")
        status, _, _ = m.http_get(srv.base + "/-/healthy")
        m.check(status == 200, f"/-/healthy while the disk is full: {status}")
        m.SUMMARY.ok("below the floor: 503 with Retry-After and the reason, the server up, "
                     "/metrics shows the floor")
        os.remove(filler)
        time.sleep(0.4)
        status, _, body = _write(srv, "disk,i=50 v=50 1700000000050")
        m.check(status == 204, f"a write once space is back: {status} {body[:200]}")
        acked[50] = 50.0
        m.SUMMARY.ok("space freed: writes accepted again by themselves, no restart")
        srv.stop()
        srv.start()
        got = {int(r["metric"]["i"]): float(r["value"][1])
               for r in srv.query("disk_v") if r["metric"]["i"] != "full"}
        m.check(got == acked, f"after a restart: {len(got)} of {len(acked)} acknowledged writes, "
                              f"missing {sorted(set(acked) - set(got))[:5]}")
        m.check(srv.value('disk_v{i="full"}') is None, "a refused write left nothing behind")
        m.SUMMARY.ok(f"after a clean restart all {len(acked)} acknowledged writes are there, "
                     "nothing of the refused ones")
        srv.stop()
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        subprocess.run(["umount", mnt], capture_output=True)
