//! The `ingestor` command, run as users run it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ingestor"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("run ingestor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn ingest_then_query_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("m.lp");
    std::fs::write(
        &file,
        "cpu,host=a,dc=eu usage=0.5,idle=99i 1700000000000000000\n\
         # a comment\n\
         cpu,host=b usage=1.5 1700000000000000000\n\
         mem,host=a used=42u\n",
    )
    .unwrap();
    let d = data.to_str().unwrap();
    let (ok, out, err) = run(&["--data-dir", d, "ingest", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("4 lines, 4 points into 4 series"), "{out}");
    let (ok, out, err) = run(&["--data-dir", d, "query", r#"cpu_usage{host="a"}"#]);
    assert!(ok, "{err}");
    assert!(out.contains(r#"cpu_usage{dc="eu",host="a"} 0.5"#), "{out}");
    assert!(!out.contains(r#"host="b""#), "{out}");
    let (ok, out, _) = run(&["--data-dir", d, "stats"]);
    assert!(ok);
    assert!(out.contains("series:            4"), "{out}");
}

#[test]
fn a_bad_line_fails_naming_it_and_applies_nothing_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let file = dir.path().join("bad.lp");
    std::fs::write(&file, "ok_one value=1\nbroken value=\"a string\"\nok_two value=2\n").unwrap();
    let (ok, _, err) = run(&["--data-dir", d.to_str().unwrap(), "ingest", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("line 2"), "{err}");
    let (_, out, _) = run(&["--data-dir", d.to_str().unwrap(), "query", "{__name__=~\"ok.*\"}"]);
    assert!(out.is_empty(), "nothing of the failing batch was applied: {out}");
}

#[test]
fn a_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, _) = ingestor::Ingestor::open(dir.path(), ingestor::Config::default()).unwrap();
    let (ok, _, err) = run(&["--data-dir", dir.path().to_str().unwrap(), "stats"]);
    assert!(!ok);
    assert!(err.contains("in use"), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP/1.1 client: method, path, body; returns status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

fn start(data: &str, port: u16) -> std::process::Child {
    let child = bin()
        .args([
            "--data-dir",
            data,
            "serve",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--sync",
            "always",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/-/ready", "").map(|r| r.0) != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(20), "the server never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The README's quick start: write with the line protocol, read /metrics, kill -9, restart,
/// the same values.
#[test]
fn serve_write_read_kill_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let port = free_port();
    let mut server = start(data, port);
    let (status, body) = http(
        port,
        "POST",
        "/api/v2/write?precision=s",
        "weather,city=paris temp=21.5 1700000000\n",
    )
    .unwrap();
    assert_eq!(status, 204, "{body}");
    let (status, body) = http(port, "POST", "/write", "weather,city=paris temp=\"hot\"\n").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("line 1"), "{body}");
    let (status, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"weather_temp{city="paris"} 21.5"#), "{metrics}");
    assert!(metrics.contains("ingestor_batches_total 1"), "{metrics}");
    let (status, body) =
        http(port, "GET", "/api/v1/query?query=weather_temp%7Bcity%3D%22paris%22%7D", "").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(r#""value":[1700000000.0,"21.5"]"#), "{body}");
    // kill -9: every write that got its 204 under --sync always survives.
    server.kill().unwrap();
    server.wait().unwrap();
    let mut server = start(data, port);
    let (_, metrics) = http(port, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains(r#"weather_temp{city="paris"} 21.5"#), "{metrics}");
    server.kill().unwrap();
    server.wait().unwrap();
}

/// SIGINT (and SIGTERM) close cleanly: the process exits with success after a final snapshot.
#[test]
fn sigint_closes_cleanly_with_a_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = start(data.to_str().unwrap(), port);
    let (status, _) = http(port, "POST", "/write", "load,host=a value=3\n").unwrap();
    assert_eq!(status, 204);
    let killed = Command::new("kill").args(["-INT", &server.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let exit = server.wait().unwrap();
    assert!(exit.success(), "a clean close exits with success: {exit:?}");
    let snapshots: Vec<_> = std::fs::read_dir(data.join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .collect();
    assert_eq!(snapshots.len(), 1, "the final snapshot was written");
}

/// `serve --config FILE`: the server listens where the file says and keeps its data where
/// the file says; a file with an unknown key is refused (exit 2) naming the file, line and
/// key.
#[test]
fn serve_reads_its_flags_from_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-file");
    let port = free_port();
    let file = dir.path().join("ingestor.toml");
    std::fs::write(
        &file,
        format!(
            "data-dir = {:?}\nhttp = \"127.0.0.1:{port}\"\nsync = \"always\"\nbody-limit = \"1MiB\"\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut server = bin()
        .args(["serve", "--config", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/-/ready", "").map(|r| r.0) != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(20), "the server never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A 2 MiB body announced: refused from its Content-Length, before the body is read
    // (sending the body too races the server closing the connection after its answer).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("POST /write HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", 2 << 20)
            .as_bytes(),
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "--body-limit from the file");
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(data.join("wal").is_dir(), "the data directory the file names");

    std::fs::write(&file, "http = \"127.0.0.1:1\"\nbody-limt = \"1MiB\"\n").unwrap();
    let out = bin().args(["serve", "--config", file.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:2: key `body-limt`: unknown key", file.display())), "{err}");
}
