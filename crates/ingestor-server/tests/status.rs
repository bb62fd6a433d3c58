//! Every status code the server answers, and what it leaves behind.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use common::*;
use ingestor::{Config, Fault, FaultKind, Ingestor, OpKind, SimFs, SyncPolicy};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn a_write_is_204_and_readable_and_a_bad_line_is_400_naming_it_with_nothing_applied() {
    let srv = start(config());
    let a = post(srv.addr, "/api/v2/write?precision=s", "weather,city=paris temp=21.5 1700000000");
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(value(srv.addr, "weather_temp").as_deref(), Some("21.5"));

    let a = post(srv.addr, "/write", "good v=1\nbad line here\n");
    assert_eq!(a.status, 400);
    assert!(a.body.contains("line 2"), "{}", a.body);
    assert_eq!(value(srv.addr, "good_v"), None, "nothing of a refused body is applied");

    let a = post(srv.addr, "/write?precision=h", "m v=1");
    assert_eq!(a.status, 400);
    assert!(a.body.contains("precision"), "{}", a.body);

    let a = request(srv.addr, "POST", "/write", &[], &[0xff, 0xfe, b' ', b'v']);
    assert_eq!(a.status, 400);
    assert!(a.body.contains("UTF-8"), "{}", a.body);
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let srv = start(config());
    assert_eq!(get(srv.addr, "/nope").status, 404);
    assert_eq!(request(srv.addr, "PUT", "/metrics", &[], b"").status, 405);
    assert_eq!(get(srv.addr, "/write").status, 405);
}

#[test]
fn the_ingestor_namespace_is_refused_and_metrics_stay_well_formed() {
    let srv = start(config());
    let a = post(srv.addr, "/write", "ingestor points_total=1");
    assert_eq!(a.status, 400);
    assert!(a.body.contains("reserved"), "{}", a.body);
    let metrics = get(srv.addr, "/metrics").body;
    let helps = metrics.lines().filter(|l| l.starts_with("# HELP ingestor_points_total ")).count();
    assert_eq!(helps, 1, "{metrics}");
}

#[test]
fn size_limits_are_413_on_the_wire_and_after_gzip() {
    let mut c = config();
    c.limits.max_body_bytes = 64 << 10;
    c.limits.max_decoded_body_bytes = 1 << 20;
    let srv = start(c);
    let big = "m v=1\n".repeat(20_000);
    let a = post(srv.addr, "/write", &big);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("on the wire"), "{}", a.body);

    // gzip that fits both limits is taken.
    let body = gzip(b"zipped v=7\n");
    let a = request(srv.addr, "POST", "/write", &[("Content-Encoding", "gzip")], &body);
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(value(srv.addr, "zipped_v").as_deref(), Some("7"));

    // A bomb: 256 MiB of zeros, small on the wire, cut at 1 MiB while inflating.
    let bomb = gzip(&vec![0u8; 256 << 20]);
    assert!(bomb.len() < 16 << 20, "the bomb fits the default wire limit: {} bytes", bomb.len());
    let mut c2 = config();
    c2.limits.max_decoded_body_bytes = 1 << 20;
    let srv2 = start(c2);
    let a = request(srv2.addr, "POST", "/write", &[("Content-Encoding", "gzip")], &bomb);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("after gzip"), "{}", a.body);

    let a = request(srv2.addr, "POST", "/write", &[("Content-Encoding", "gzip")], b"not gzip");
    assert_eq!(a.status, 400, "{}", a.body);
    let a = request(srv2.addr, "POST", "/write", &[("Content-Encoding", "br")], b"m v=1");
    assert_eq!(a.status, 415, "{}", a.body);
}

#[test]
fn a_batch_over_the_engine_limit_is_413_not_500() {
    let mut c = config();
    c.limits.max_body_bytes = 64 << 20;
    c.limits.max_decoded_body_bytes = 64 << 20;
    let srv = start_with(c, Config::default().sync_policy(SyncPolicy::Os));
    let body = "m v=1\n".repeat(ingestor::MAX_BATCH_POINTS + 1);
    let a = post(srv.addr, "/write", &body);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("batch"), "{}", a.body);
    assert_eq!(value(srv.addr, "m_v"), None);
}

#[test]
fn over_the_parse_memory_budget_is_503_with_retry_after() {
    let mut c = config();
    c.limits.parse_memory_bytes = 10_000;
    let srv = start(c);
    let a = post(srv.addr, "/write", &"m v=1\n".repeat(2_000));
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.header("retry-after"), Some("1"));
    // A small body fits, and the budget was given back.
    assert_eq!(post(srv.addr, "/write", "m v=1").status, 204);
    assert_eq!(self_metric(srv.addr, "ingestor_http_parse_memory_bytes"), 0.0);
    assert_eq!(self_metric(srv.addr, "ingestor_http_over_budget_total"), 1.0);
}

#[test]
fn while_recovering_ready_is_503_healthy_200_and_writes_503_with_retry_after() {
    let gate = gate();
    let g = Arc::clone(&gate);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let srv = start_opened(config(), move || {
        wait_gate(&g);
        Ingestor::open(&path, Config::default()).map(|(db, _)| db).map_err(|e| e.to_string())
    });
    assert_eq!(get(srv.addr, "/-/healthy").status, 200);
    assert_eq!(get(srv.addr, "/-/ready").status, 503);
    let a = post(srv.addr, "/write", "m v=1");
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(get(srv.addr, "/metrics").status, 503);
    open_gate(&gate);
    wait_ready(srv.addr);
    assert_eq!(post(srv.addr, "/write", "m v=1").status, 204);
}

#[test]
fn a_poisoned_log_turns_ready_and_writes_to_503() {
    let fs = Arc::new(SimFs::new(7));
    let sim = Arc::clone(&fs);
    let srv = start_opened(config(), move || {
        Ingestor::open_with(
            sim,
            Path::new("/data"),
            Config::default().sync_policy(SyncPolicy::Always),
            &mut |_| {},
        )
        .map(|(db, _)| db)
        .map_err(|e| e.to_string())
    });
    wait_ready(srv.addr);
    assert_eq!(post(srv.addr, "/write", "kept v=1").status, 204);
    fs.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData).on_path("wal"));
    let a = post(srv.addr, "/write", "lost v=2");
    assert_eq!(a.status, 503, "a failed fsync is the disk's fault, retryable: {}", a.body);
    assert_eq!(a.header("retry-after"), Some("1"));
    let ready = get(srv.addr, "/-/ready");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("poisoned"), "{}", ready.body);
    let a = post(srv.addr, "/write", "later v=3");
    assert_eq!(a.status, 503);
    assert!(a.body.contains("poisoned"), "{}", a.body);
    assert_eq!(get(srv.addr, "/-/healthy").status, 200);
    assert_eq!(self_metric(srv.addr, "ingestor_wal_poisoned"), 1.0);
    assert_eq!(value(srv.addr, "kept_v").as_deref(), Some("1"));
}

#[test]
fn queries_take_get_and_post_forms_and_bound_their_results() {
    let mut c = config();
    c.limits.query_max_series = 3;
    c.limits.query_max_matchers = 2;
    let srv = start(c);
    let body: String = (0..5).map(|i| format!("cpu,host=h{i} load={i}\n")).collect();
    assert_eq!(post(srv.addr, "/write", &body).status, 204);

    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let a =
        request(srv.addr, "POST", "/api/v1/query", &form, b"query=cpu_load%7Bhost%3D%22h2%22%7D");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"h2\"") && !a.body.contains("\"h1\""), "{}", a.body);

    let a = get(srv.addr, "/api/v1/query?query=cpu_load");
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(a.body.contains("limit of 3"), "{}", a.body);

    let a = request(
        srv.addr,
        "POST",
        "/api/v1/series",
        &form,
        b"match[]=cpu_load%7Bhost%3D%22h1%22%7D&match[]=cpu_load%7Bhost%3D%22h3%22%7D",
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("\"h1\"") && a.body.contains("\"h3\""), "{}", a.body);

    let a = get(srv.addr, "/api/v1/series?match[]=a&match[]=b&match[]=c");
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("more than 2"), "{}", a.body);
    assert_eq!(get(srv.addr, "/api/v1/series").status, 400);
    assert_eq!(get(srv.addr, "/api/v1/query?query=%7B").status, 400);
    let a =
        request(srv.addr, "POST", "/api/v1/query", &[("Content-Type", "text/plain")], b"query=x");
    assert_eq!(a.status, 415);
}

#[test]
fn metrics_stream_every_series_sorted_by_family_then_the_self_metrics() {
    let srv = start_with(config(), Config::default().sync_policy(SyncPolicy::Os));
    let body: String = (0..30_000).map(|i| format!("big,i=s{i:05} v={i}\n")).collect();
    assert_eq!(post(srv.addr, "/write", &body).status, 204);
    assert_eq!(post(srv.addr, "/write", "a v=1\nz v=2").status, 204);
    let a = get(srv.addr, "/metrics");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some(ingestor::EXPOSITION_CONTENT_TYPE));
    assert_eq!(a.header("transfer-encoding"), Some("chunked"), "streamed, not buffered whole");
    let samples: Vec<&str> = a.body.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(samples.iter().filter(|l| l.starts_with("big_v{")).count(), 30_000);
    let helps: Vec<&str> = a.body.lines().filter(|l| l.starts_with("# HELP ")).collect();
    let families: Vec<&str> = helps.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    let mut unique = families.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), families.len(), "each family once");
    assert_eq!(&families[..3], ["a_v", "big_v", "z_v"]);
    assert!(families[3..].iter().all(|f| f.starts_with("ingestor_")));
}

#[test]
fn stop_finishes_and_closes_the_ingestor_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let p = path.clone();
    let srv = start_opened(config(), move || {
        Ingestor::open(&p, Config::default()).map(|(db, _)| db).map_err(|e| e.to_string())
    });
    wait_ready(srv.addr);
    assert_eq!(post(srv.addr, "/write", "kept v=5").status, 204);
    srv.stop().unwrap();
    let (db, _) = Ingestor::open(&path, Config::default()).unwrap();
    assert_eq!(db.select("kept_v").unwrap().len(), 1);
}

#[test]
fn known_series_go_by_handle_and_a_deleted_one_comes_back_by_key() {
    let srv = start(config());
    for v in 1..=3 {
        let body = format!("cpu,host=a user={v},sys={}\ncpu,host=b user={v}", v * 10);
        assert_eq!(post(srv.addr, "/write", &body).status, 204);
    }
    assert_eq!(value(srv.addr, "cpu_sys{host=\"a\"}").as_deref(), Some("30"));
    assert_eq!(value(srv.addr, "cpu_user{host=\"b\"}").as_deref(), Some("3"));
    // Deleted behind the server's back: its cached handle is stale.
    let db = srv.server.as_ref().unwrap().ingestor().unwrap();
    let key = ingestor::SeriesKey::new("cpu_user", [("host", "a")]).unwrap();
    let delete = ingestor::Update::new(key, ingestor::Timestamp(1), ingestor::Op::Delete).unwrap();
    db.ingest(&[delete]).unwrap();
    drop(db);
    assert_eq!(value(srv.addr, "cpu_user{host=\"a\"}"), None);
    let a = post(srv.addr, "/write", "cpu,host=a user=4,sys=40\ncpu,host=b user=4");
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(value(srv.addr, "cpu_user{host=\"a\"}").as_deref(), Some("4"));
    assert_eq!(value(srv.addr, "cpu_sys{host=\"a\"}").as_deref(), Some("40"));
    // A refused body through the cache leaves nothing either.
    let a = post(srv.addr, "/write", "cpu,host=a user=5\ncpu,host=a user=\"s\"");
    assert_eq!(a.status, 400);
    assert_eq!(value(srv.addr, "cpu_user{host=\"a\"}").as_deref(), Some("4"));
}
