//! A fake Prometheus remote-write receiver (feature `receiver`): it listens on a loopback
//! port, answers each request from a script (then 204), or 503 while it is down or a refusal
//! predicate holds, and records every request it read, decoded with `ingestor-protocols`.
//!
//! ```no_run
//! use ingestor_testkit::receiver::Receiver;
//!
//! let rx = Receiver::start();
//! rx.script([(503, None), (429, Some("0"))]);
//! // ... point a forwarder at rx.url() ...
//! let statuses: Vec<u16> = rx.requests().iter().map(|r| r.status).collect();
//! # let _ = statuses;
//! ```

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use ingestor_protocols::remote_write;
pub use ingestor_protocols::remote_write::{Series, Version};

/// The largest decompressed body the receiver decodes.
const MAX_DECODED: usize = 1 << 26;

/// A predicate under which the receiver refuses everything with 503, checked for each
/// request (the crash test refuses while a simulated disk's power is cut, as a dead
/// machine's requests never arrive).
pub type Refusal = Arc<dyn Fn() -> bool + Send + Sync>;

/// One request the receiver read, and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The remote-write version its content type named (2.0 for
    /// `io.prometheus.write.v2.Request`, else 1.0).
    pub version: Version,
    /// Its series (labels and samples), as decoded; empty if it did not decode.
    pub series: Vec<Series>,
    /// Why the body did not decode, if it did not (answered 400 unless refused).
    pub error: Option<String>,
    /// The status answered.
    pub status: u16,
}

impl Request {
    /// The number of samples it carried.
    #[must_use]
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<(u16, Option<String>)>,
    down: bool,
    quiet_v2: bool,
    refusal: Option<Refusal>,
    requests: Vec<Request>,
}

/// A remote-write receiver on a loopback port, serving each connection on a thread of its
/// own (keep-alive: any number of requests per connection). Clones share the receiver.
#[derive(Clone)]
pub struct Receiver {
    url: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1` at a free port; it runs until the process ends.
    /// Panics if no port can be bound.
    #[must_use]
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}/api/v1/write", listener.local_addr().expect("bound"));
        let r = Receiver { url, state: Arc::default() };
        let me = r.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let me = me.clone();
                std::thread::spawn(move || me.serve(stream));
            }
        });
        r
    }

    /// Its URL: `http://127.0.0.1:PORT/api/v1/write`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends answers to the script: a status and an optional `Retry-After` value. Each
    /// request that decodes and is not refused takes the next one; with none left, 204.
    pub fn script<'a>(&self, answers: impl IntoIterator<Item = (u16, Option<&'a str>)>) {
        self.state().script.extend(answers.into_iter().map(|(s, r)| (s, r.map(str::to_string))));
    }

    /// While down, the receiver answers 503 to everything (the script waits).
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// Whether 2.0 answers carry the written-count header
    /// (`X-Prometheus-Remote-Write-Samples-Written`: the request's samples), as a 2.0
    /// receiver's do (the default), or not, as a 1.0-only receiver's that took the body for
    /// something else.
    pub fn set_speaks_v2(&self, speaks_v2: bool) {
        self.state().quiet_v2 = !speaks_v2;
    }

    /// Refuses (503) every request for which `refusal` holds when it arrives; `None`: never.
    pub fn set_refusal(&self, refusal: Option<Refusal>) {
        self.state().refusal = refusal;
    }

    /// Every request read so far, in the order answered.
    #[must_use]
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear(&self) {
        self.state().requests.clear();
    }

    /// Decides the answer to a request and records it; returns the status, the
    /// `Retry-After` value and the written-count header's value.
    fn answer(&self, v2: bool, body: &[u8]) -> (u16, Option<String>, Option<usize>) {
        let version = if v2 { Version::V2 } else { Version::V1 };
        let (series, error) = match remote_write::decode(body, version, MAX_DECODED) {
            Ok(request) => (request.series, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        // Called without the lock: the predicate may take locks of its own.
        let refusal = self.state().refusal.clone();
        let refused = refusal.is_some_and(|r| r());
        let mut state = self.state();
        let (status, retry_after) = if state.down || refused {
            (503, None)
        } else if error.is_some() {
            (400, None)
        } else {
            state.script.pop_front().unwrap_or((204, None))
        };
        let request = Request { version, series, error, status };
        let written = (v2 && !state.quiet_v2).then(|| request.samples());
        state.requests.push(request);
        (status, retry_after, written)
    }

    fn serve(&self, stream: TcpStream) {
        // One write per answer, sent at once (no Nagle delay against delayed ACKs).
        let _ = stream.set_nodelay(true);
        let Ok(read_half) = stream.try_clone() else { return };
        let mut reader = BufReader::new(read_half);
        let mut out = stream;
        loop {
            let mut len = 0usize;
            let mut v2 = false;
            let mut line = String::new();
            let mut first = true;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if first {
                    first = false;
                    continue;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if k.eq_ignore_ascii_case("content-type") {
                        v2 = v.contains("io.prometheus.write.v2.Request");
                    }
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let (status, retry_after, written) = self.answer(v2, &body);
            let reason = if status == 400 { "out of bounds sample" } else { "" };
            let mut extra =
                retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            if let Some(written) = written {
                extra
                    .push_str(&format!("X-Prometheus-Remote-Write-Samples-Written: {written}\r\n"));
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n{extra}\r\n{reason}",
                reason.len()
            );
            if out.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }
}
