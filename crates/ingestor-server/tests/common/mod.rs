//! A server on a free loopback port over a temporary (or simulated) data directory, and a
//! raw HTTP/1.1 client with byte-level control, for the server's tests.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingestor::{Config, Ingestor, SyncPolicy};
use ingestor_server::{Server, ServerConfig};

/// A running server and what it runs on; stopped (and waited for) on drop.
pub struct Running {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub _dir: Option<tempfile::TempDir>,
}

impl Running {
    /// Stops the server and returns what `wait` returned.
    pub fn stop(mut self) -> Result<(), String> {
        let server = self.server.take().expect("running");
        server.stopper().stop();
        server.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stopper().stop();
            let _ = s.wait();
        }
    }
}

/// A test configuration: port 0, short time-outs.
pub fn config() -> ServerConfig {
    let mut c = ServerConfig::default();
    c.http = "127.0.0.1:0".parse().unwrap();
    c.limits.header_timeout = Duration::from_secs(1);
    c.limits.body_timeout = Duration::from_secs(1);
    c.limits.write_timeout = Duration::from_secs(1);
    c.limits.idle_timeout = Duration::from_secs(2);
    c.limits.shutdown_timeout = Duration::from_secs(5);
    c
}

/// Starts a server over a new temporary directory, `Always` sync.
pub fn start(config: ServerConfig) -> Running {
    start_with(config, Config::default().sync_policy(SyncPolicy::Always))
}

pub fn start_with(config: ServerConfig, engine: Config) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let server = Server::start(config, move || {
        Ingestor::open(&path, engine).map(|(db, _)| db).map_err(|e| e.to_string())
    })
    .unwrap();
    let addr = server.http_addr();
    let running = Running { server: Some(server), addr, _dir: Some(dir) };
    wait_ready(addr);
    running
}

/// Starts a server whose ingestor `open` gives.
pub fn start_opened(
    config: ServerConfig,
    open: impl FnOnce() -> Result<Ingestor, String> + Send + 'static,
) -> Running {
    let server = Server::start(config, open).unwrap();
    let addr = server.http_addr();
    Running { server: Some(server), addr, _dir: None }
}

/// Waits (up to 20 s) for `/-/ready` to answer 200.
pub fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if get(addr, "/-/ready").status == 200 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the server at {addr} did not become ready");
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads one response from a stream (Content-Length or chunked bodies).
pub fn read_answer(stream: &mut impl Read) -> std::io::Result<Answer> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed in the head",
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let find =
        |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = find("content-length") {
        body.resize(len.parse().unwrap(), 0);
        stream.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                stream.read_exact(&mut byte)?;
                line.push(byte[0]);
            }
            let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

/// One request on a new connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    send(&mut s, method, path, headers, body);
    read_answer(&mut s).unwrap()
}

/// Writes a request.
pub fn send(s: &mut impl Write, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

pub fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], b"")
}

pub fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    request(addr, "POST", path, &[], body.as_bytes())
}

/// The value of the one sample `query` finds, if any.
pub fn value(addr: SocketAddr, query: &str) -> Option<String> {
    let a = get(addr, &format!("/api/v1/query?query={}", encode(query)));
    assert_eq!(a.status, 200, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert!(result.len() <= 1, "{query} matched {}", result.len());
    result.first().map(|r| r["value"][1].as_str().unwrap().to_string())
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether the server closed `s` within `within` (a read gives EOF or a reset).
pub fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

/// The `ingestor_*` self metric `name` from `/metrics`.
pub fn self_metric(addr: SocketAddr, name: &str) -> f64 {
    let body = get(addr, "/metrics").body;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

/// A shared flag for openers that wait.
pub type Gate = Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>;

pub fn gate() -> Gate {
    Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()))
}

pub fn open_gate(g: &Gate) {
    *g.0.lock().unwrap() = true;
    g.1.notify_all();
}

pub fn wait_gate(g: &Gate) {
    let mut open = g.0.lock().unwrap();
    while !*open {
        open = g.1.wait(open).unwrap();
    }
}
