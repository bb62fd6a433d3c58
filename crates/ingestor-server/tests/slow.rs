//! Slow and stalling clients: each is cut off within its limit, and none of them keeps the
//! server from answering others.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use ingestor::{Config, Ingestor, Op, SeriesKey, SyncPolicy, Timestamp, Update};

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection or the
/// bytes run out; returns whether it was cut off.
fn dribble(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> bool {
    for b in bytes {
        if s.write_all(&[*b]).is_err() {
            return true;
        }
        std::thread::sleep(gap);
    }
    false
}

/// `/-/ready` answers within `within` on a new connection.
fn ready_within(addr: std::net::SocketAddr, within: Duration) {
    let started = Instant::now();
    let a = get(addr, "/-/ready");
    assert_eq!(a.status, 200);
    assert!(started.elapsed() < within, "/-/ready took {:?}", started.elapsed());
}

#[test]
fn slow_bodies_get_408_and_never_stall_readiness_or_writes() {
    let srv = start(config());
    // Eight clients send headers, then their bodies a byte at a time (the old server had
    // four workers: four such clients stalled everything).
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let addr = srv.addr;
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"POST /write HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nm")
                    .unwrap();
                let started = Instant::now();
                dribble(&mut s, b" v=1", Duration::from_millis(100));
                let a = read_answer(&mut s).unwrap();
                (a.status, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        ready_within(srv.addr, Duration::from_millis(500));
        assert_eq!(post(srv.addr, "/write", "fast v=1").status, 204);
    }
    for t in slow {
        let (status, took) = t.join().unwrap();
        assert_eq!(status, 408);
        assert!(took < Duration::from_secs(3), "cut after {took:?}");
    }
    assert_eq!(value(srv.addr, "m_v"), None);
    assert!(self_metric(srv.addr, "ingestor_http_body_timeouts_total") >= 8.0);
}

#[test]
fn slow_headers_are_cut_off_and_idle_connections_closed() {
    let srv = start(config());
    let mut slow = TcpStream::connect(srv.addr).unwrap();
    let started = Instant::now();
    let cut = dribble(
        &mut slow,
        &b"GET /-/ready HTTP/1.1\r\nHost: x\r\nX-Slow: ".repeat(4),
        Duration::from_millis(50),
    );
    let took = started.elapsed();
    assert!(cut || closed_within(&mut slow, Duration::from_secs(3)).is_some(), "never cut");
    assert!(took < Duration::from_secs(4), "headers allowed for {took:?}");
    ready_within(srv.addr, Duration::from_millis(500));

    // Connected, never a byte: a connection's first request gets the header time-out (1 s
    // here), not the longer keep-alive idle time (2 s), so that silent connections cannot
    // hold every slot.
    let mut silent = TcpStream::connect(srv.addr).unwrap();
    let closed =
        closed_within(&mut silent, Duration::from_secs(6)).expect("silent connection kept");
    assert!(closed < Duration::from_millis(1_900), "a silent connection kept for {closed:?}");

    // Kept alive after a request, then idle: closed after the idle time-out.
    let mut kept = TcpStream::connect(srv.addr).unwrap();
    send(&mut kept, "GET", "/-/healthy", &[], b"");
    assert_eq!(read_answer(&mut kept).unwrap().status, 200);
    let closed = closed_within(&mut kept, Duration::from_secs(6)).expect("idle connection kept");
    assert!(
        closed >= Duration::from_millis(1_500),
        "closed after {closed:?}, before the idle time-out"
    );
    assert!(self_metric(srv.addr, "ingestor_http_idle_timeouts_total") >= 1.0);
    assert!(self_metric(srv.addr, "ingestor_http_header_timeouts_total") >= 2.0);
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_accepting_goes_on() {
    let mut c = config();
    c.limits.max_connections = 4;
    c.limits.idle_timeout = Duration::from_secs(30);
    let srv = start(c);
    std::thread::sleep(Duration::from_millis(100));
    let held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(srv.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut over = TcpStream::connect(srv.addr).unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(2)).is_some(), "the fifth was kept");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(srv.addr, "/-/ready").status, 200);
    assert!(self_metric(srv.addr, "ingestor_http_connections_refused_total") >= 1.0);
}

#[test]
fn headers_over_the_limit_get_431() {
    let mut c = config();
    c.limits.max_header_bytes = 16 << 10;
    let srv = start(c);
    let big = "x".repeat(64 << 10);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let head = format!("GET /-/ready HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(head.as_bytes());
    let a = read_answer(&mut s).unwrap();
    assert_eq!(a.status, 431);
    ready_within(srv.addr, Duration::from_millis(500));
}

#[test]
fn a_client_that_does_not_read_metrics_is_cut_off_and_writers_go_on() {
    // About 24 MB of exposition, more than loopback's socket buffers hold, written through
    // the library first (parsing that much line protocol in a debug build is slow).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let (db, _) = Ingestor::open(&path, Config::default().sync_policy(SyncPolicy::Os)).unwrap();
        let pad = "a".repeat(1_000);
        let updates: Vec<Update> = (0..24_000)
            .map(|i| {
                let key =
                    SeriesKey::new("wide", [("i", format!("s{i:05}").as_str()), ("pad", &pad)]);
                Update::new(key.unwrap(), Timestamp(1), Op::GaugeSet(f64::from(i))).unwrap()
            })
            .collect();
        db.ingest(&updates).unwrap();
        db.close().unwrap();
    }
    let srv = start_opened(config(), move || {
        Ingestor::open(&path, Config::default().sync_policy(SyncPolicy::Os))
            .map(|(db, _)| db)
            .map_err(|e| e.to_string())
    });
    wait_ready(srv.addr);
    // Several scrapes that never read their answers.
    let mut stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            send(&mut s, "GET", "/metrics", &[], b"");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..5 {
        let started = Instant::now();
        assert_eq!(post(srv.addr, "/write", &format!("during v={i}")).status, 204);
        assert!(started.elapsed() < Duration::from_secs(1), "a write took {:?}", started.elapsed());
        ready_within(srv.addr, Duration::from_millis(500));
    }
    // Each stalled scrape is cut off within the write time-out (1 s here) once blocked.
    std::thread::sleep(Duration::from_secs(4));
    for s in &mut stalled {
        assert!(cut_short(s), "a stalled scrape was kept");
    }
    assert!(self_metric(srv.addr, "ingestor_http_write_timeouts_total") >= 4.0);
}

/// Reads what the server sent: true if it had closed the connection with the answer cut
/// short of its end.
fn cut_short(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(s, &mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
    // Closed: the chunked answer must not have ended (no final zero-length chunk).
    !all.ends_with(b"0\r\n\r\n")
}
