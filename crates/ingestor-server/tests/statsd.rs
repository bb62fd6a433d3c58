//! StatsD over UDP: packets coalesced into batches (one fdatasync per batch under `Always`),
//! bad lines and packets dropped during recovery counted, a bad packet costing only itself.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ingestor::{Config, Ingestor, SyncPolicy};

fn statsd_config() -> ingestor_server::ServerConfig {
    let mut c = config();
    c.statsd = Some("127.0.0.1:0".parse().unwrap());
    c.statsd_batch_delay = Duration::from_millis(50);
    c
}

/// Polls `/metrics` until `name` reaches `want` (UDP is asynchronous).
fn wait_metric(addr: std::net::SocketAddr, name: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = self_metric(addr, name);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn packets_are_coalesced_into_few_synced_batches() {
    let gate = gate();
    let g = Arc::clone(&gate);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let srv = start_opened(statsd_config(), move || {
        wait_gate(&g);
        Ingestor::open(&path, Config::default().sync_policy(SyncPolicy::Always))
            .map(|(db, _)| db)
            .map_err(|e| e.to_string())
    });
    let udp = srv.server.as_ref().unwrap().statsd_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // During recovery: dropped, and counted.
    for _ in 0..3 {
        client.send_to(b"early:1|c", udp).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    open_gate(&gate);
    wait_ready(srv.addr);
    assert_eq!(self_metric(srv.addr, "ingestor_statsd_dropped_packets_total"), 3.0);
    let syncs_before = self_metric(srv.addr, "ingestor_wal_syncs_total");

    for i in 0..500 {
        client.send_to(b"hits:1|c\nbad line\ningestor_fake:1|g", udp).unwrap();
        if i % 20 == 19 {
            // Paced, so that the kernel's socket buffer does not drop any.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(wait_metric(srv.addr, "ingestor_statsd_packets_total", 503.0), 503.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(srv.addr, "hits_total").as_deref() != Some("500") {
        assert!(Instant::now() < deadline, "hits_total is {:?}", value(srv.addr, "hits_total"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let batches = self_metric(srv.addr, "ingestor_statsd_batches_total");
    let syncs = self_metric(srv.addr, "ingestor_wal_syncs_total") - syncs_before;
    assert!((1.0..100.0).contains(&batches), "{batches} batches for 500 packets");
    assert!(syncs < 100.0, "{syncs} syncs for 500 packets under Always");
    // Each packet has one bad line and one in the reserved namespace.
    assert_eq!(self_metric(srv.addr, "ingestor_statsd_bad_lines_total"), 1000.0);
    assert_eq!(value(srv.addr, "ingestor_fake"), None);
}

#[test]
fn a_packet_the_engine_refuses_costs_only_itself() {
    let srv = start(statsd_config());
    let udp = srv.server.as_ref().unwrap().statsd_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"kind:1|c", udp).unwrap();
    assert_eq!(wait_metric(srv.addr, "ingestor_statsd_batches_total", 1.0), 1.0);
    // In one batch window: a gauge update to the counter (a kind conflict), and good ones.
    client.send_to(b"before:1|g", udp).unwrap();
    client.send_to(b"kind:5|g", udp).unwrap();
    client.send_to(b"after:2|g", udp).unwrap();
    assert_eq!(wait_metric(srv.addr, "ingestor_statsd_dropped_packets_total", 1.0), 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(srv.addr, "after").is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(value(srv.addr, "before").as_deref(), Some("1"));
    assert_eq!(value(srv.addr, "kind_total").as_deref(), Some("1"));
}

/// The `[timestamp, value]` of the one sample `selector` matches, through the query API.
fn sample_at(addr: std::net::SocketAddr, selector: &str) -> Option<(f64, String)> {
    let a = get(addr, &format!("/api/v1/query?query={}", encode(selector)));
    assert_eq!(a.status, 200, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert!(result.len() <= 1, "{selector} matched {}", result.len());
    result
        .first()
        .map(|r| (r["value"][0].as_f64().unwrap(), r["value"][1].as_str().unwrap().into()))
}

#[test]
fn dogstatsd_timestamps_events_and_service_checks() {
    let srv = start(statsd_config());
    let udp = srv.server.as_ref().unwrap().statsd_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let packet = format!(
        "_e{{12,11}}:Deploy done!|version 1.2|t:success|#env:test\n\
         _sc|db.up|0|#env:test|m:fine\n\
         stamped:7|g|#env:test|T{}\n\
         too_old:1|g|T{}\n\
         _e{{9,2}}:too short|x\n\
         unstamped:3|g",
        now - 120,
        now - 7_200,
    );
    client.send_to(packet.as_bytes(), udp).unwrap();
    client.send_to(b"_sc|web|2\n_sc|web|9", udp).unwrap();
    assert_eq!(
        wait_metric(srv.addr, r#"ingestor_statsd_events_total{kind="service_check"}"#, 2.0),
        2.0
    );
    assert_eq!(self_metric(srv.addr, r#"ingestor_statsd_events_total{kind="event"}"#), 1.0);
    // Bad lines: the timestamp two hours back, the event whose text is not 2 bytes, status 9.
    assert_eq!(wait_metric(srv.addr, "ingestor_statsd_bad_lines_total", 3.0), 3.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample_at(srv.addr, "unstamped").is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // `|T` seconds: the sample is at that second; without one, at the packet's arrival.
    assert_eq!(
        sample_at(srv.addr, r#"stamped{env="test"}"#),
        Some(((now - 120) as f64, "7".to_string()))
    );
    let (t, v) = sample_at(srv.addr, "unstamped").unwrap();
    assert_eq!(v, "3");
    assert!((t - now as f64).abs() < 60.0, "{t} vs {now}");
    assert_eq!(sample_at(srv.addr, "too_old"), None);
    // A late line with an older `T` does not overwrite the gauge's newer value.
    client
        .send_to(format!("stamped:1|g|#env:test|T{}\nlate_marker:1|g", now - 600).as_bytes(), udp)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample_at(srv.addr, "late_marker").is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        sample_at(srv.addr, r#"stamped{env="test"}"#),
        Some(((now - 120) as f64, "7".to_string()))
    );
}
