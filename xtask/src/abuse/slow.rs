//! Connections that cost the server and give it nothing: idle ones that never send a byte,
//! ones that send their request headers one byte a second, and ones that send complete
//! headers (with a `Content-Length`) and then their body one byte a second.
//!
//! One thread drives them all with `poll(2)`: every connection is non-blocking, a byte goes
//! to each slow one once a second, and the moment the server answers or closes a connection
//! is noted to within a poll wake-up, so that the time the server took to cut it is measured,
//! not guessed from the tick.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::http::parse_status;

/// What kind of slow client a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// Sends its request line and headers one byte a second, never finishing them.
    SlowHeaders,
    /// Sends complete headers at once, then its body one byte a second.
    SlowBody,
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum How {
    /// The server answered with this status (and then closed, or we stopped).
    Answered(u16),
    /// The server closed the connection without a status line.
    Closed,
    /// The connection was reset, or a write to it failed.
    Reset(String),
    /// Still open when the harness stopped.
    StillOpen,
}

/// One connection's outcome.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// Its kind.
    pub(crate) kind: Kind,
    /// From its first byte (or its connect, for idle ones) to its end.
    pub(crate) after: Duration,
    /// How it ended.
    pub(crate) how: How,
}

/// What the slow clients saw.
#[derive(Debug, Default)]
pub(crate) struct Slow {
    /// Each connection that was made.
    pub(crate) outcomes: Vec<Outcome>,
    /// Connects that failed, by kind, with the first error.
    pub(crate) connect_failures: Vec<(Kind, usize, String)>,
    /// How the connects of each kind went.
    pub(crate) opening: Vec<Opening>,
}

/// How opening the connections of one kind went: a connect of a second or more means the
/// server's accept queue was full and the kernel dropped the SYN (it is sent again after 1 s).
#[derive(Debug, Clone)]
pub(crate) struct Opening {
    /// Their kind.
    pub(crate) kind: Kind,
    /// When the first connect started.
    pub(crate) from: Instant,
    /// How long opening them all took.
    pub(crate) took: Duration,
    /// The slowest connect.
    pub(crate) slowest: Duration,
    /// Connects that took a second or more.
    pub(crate) over_1s: usize,
}

impl Slow {
    /// The outcomes of one kind.
    pub(crate) fn of(&self, kind: Kind) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(move |o| o.kind == kind)
    }

    /// Failed connects of one kind.
    pub(crate) fn failed_connects(&self, kind: Kind) -> usize {
        self.connect_failures.iter().filter(|f| f.0 == kind).map(|f| f.1).sum()
    }
}

struct Live {
    kind: Kind,
    stream: TcpStream,
    started: Instant,
    /// The bytes it sends, one a second.
    script: &'static [u8],
    sent: usize,
    got: Vec<u8>,
}

/// A request whose headers never end.
const SLOW_HEADERS: &[u8] =
    b"POST /api/v2/write?precision=ms HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: \
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// The headers of the slow-body request, sent at once; its body follows a byte a second.
const SLOW_BODY_HEAD: &[u8] = b"POST /api/v2/write?precision=ms HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n";

/// The body of the slow-body request: a valid line, then more of it.
const SLOW_BODY: &[u8] =
    b"abuse_slow_body v=1 0000000000000000000000000000000000000000000000000000\
    0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
    0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

/// Opens `n` connections of `kind`; the failures are noted in `slow`.
fn open(addr: SocketAddr, kind: Kind, n: usize, live: &mut Vec<Live>, slow: &mut Slow) {
    let mut failed = 0;
    let mut first_error = String::new();
    let from = Instant::now();
    let (mut slowest, mut over_1s) = (Duration::ZERO, 0);
    for _ in 0..n {
        let connect_started = Instant::now();
        let made = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|s| {
            s.set_nodelay(true)?;
            if kind == Kind::SlowBody {
                s.set_write_timeout(Some(Duration::from_secs(1)))?;
                (&s).write_all(SLOW_BODY_HEAD)?;
            }
            s.set_nonblocking(true)?;
            Ok(s)
        });
        let connect = connect_started.elapsed();
        slowest = slowest.max(connect);
        over_1s += usize::from(connect >= Duration::from_secs(1));
        match made {
            Ok(stream) => live.push(Live {
                kind,
                stream,
                started: Instant::now(),
                script: match kind {
                    Kind::Idle => b"",
                    Kind::SlowHeaders => SLOW_HEADERS,
                    Kind::SlowBody => SLOW_BODY,
                },
                sent: 0,
                got: Vec::new(),
            }),
            Err(e) => {
                if failed == 0 {
                    first_error = e.to_string();
                }
                failed += 1;
            }
        }
    }
    if failed > 0 {
        slow.connect_failures.push((kind, failed, first_error));
    }
    slow.opening.push(Opening { kind, from, took: from.elapsed(), slowest, over_1s });
}

/// Reads what the server sent on a readable connection: `Some(how)` once it ended.
fn on_readable(c: &mut Live) -> Option<How> {
    let mut buf = [0u8; 4096];
    loop {
        match (&c.stream).read(&mut buf) {
            Ok(0) => {
                return Some(status_of(&c.got).map_or(How::Closed, How::Answered));
            }
            Ok(n) => {
                c.got.extend_from_slice(&buf[..n]);
                if let Some(status) = status_of(&c.got) {
                    return Some(How::Answered(status));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Some(
                    status_of(&c.got).map_or(How::Reset(e.kind().to_string()), How::Answered),
                );
            }
        }
    }
}

/// The status of a response whose status line has arrived.
fn status_of(got: &[u8]) -> Option<u16> {
    let end = got.windows(2).position(|w| w == b"\r\n")?;
    parse_status(std::str::from_utf8(&got[..end]).ok()?)
}

/// Opens `idle` idle connections, `headers` slow-header ones and `bodies` slow-body ones to
/// `addr`, and drives them until `stop` is set: each slow one sends a byte a second until the
/// server answers or closes it. What became of each.
pub(crate) fn run(
    addr: SocketAddr,
    idle: usize,
    headers: usize,
    bodies: usize,
    stop: &AtomicBool,
) -> Slow {
    let mut slow = Slow::default();
    let mut live = Vec::with_capacity(idle + headers + bodies);
    open(addr, Kind::Idle, idle, &mut live, &mut slow);
    open(addr, Kind::SlowHeaders, headers, &mut live, &mut slow);
    open(addr, Kind::SlowBody, bodies, &mut live, &mut slow);
    let mut next_tick = Instant::now();
    while !stop.load(Relaxed) && !live.is_empty() {
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + Duration::from_secs(1);
            let mut i = 0;
            while i < live.len() {
                let c = &mut live[i];
                if c.sent < c.script.len() || c.kind == Kind::SlowBody {
                    let byte = c.script.get(c.sent).copied().unwrap_or(b'0');
                    if let Err(e) = (&c.stream).write(&[byte]) {
                        if e.kind() != ErrorKind::WouldBlock {
                            let mut c = live.swap_remove(i);
                            let how =
                                on_readable(&mut c).unwrap_or(How::Reset(e.kind().to_string()));
                            slow.outcomes.push(Outcome {
                                kind: c.kind,
                                after: c.started.elapsed(),
                                how,
                            });
                            continue;
                        }
                    } else {
                        c.sent += 1;
                    }
                }
                i += 1;
            }
        }
        let wait =
            next_tick.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
        let timeout = Timespec { tv_sec: 0, tv_nsec: wait.as_nanos() as i64 };
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> =
                live.iter().map(|c| PollFd::new(&c.stream, PollFlags::IN)).collect();
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(_) => Vec::new(),
                Ok(_) => fds
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.revents().is_empty())
                    .map(|(i, _)| i)
                    .collect(),
            }
        };
        // Remove from the back so that the indices stay valid.
        for &i in ready.iter().rev() {
            if let Some(how) = on_readable(&mut live[i]) {
                let c = live.swap_remove(i);
                slow.outcomes.push(Outcome { kind: c.kind, after: c.started.elapsed(), how });
            }
        }
    }
    for c in live {
        slow.outcomes.push(Outcome {
            kind: c.kind,
            after: c.started.elapsed(),
            how: How::StillOpen,
        });
        let _ = c.stream.as_fd();
    }
    slow
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers slow bodies 408 after `cut`, closes slow headers after `cut`
    /// without a word, and leaves idle connections be.
    fn cutting_server(cut: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let started = Instant::now();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    while started.elapsed() < cut {
                        if let Ok(n) = stream.read(&mut buf) {
                            got.extend_from_slice(&buf[..n]);
                        }
                    }
                    if got.is_empty() {
                        std::thread::sleep(Duration::from_secs(60));
                    } else if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = stream.write_all(
                            b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n",
                        );
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn slow_clients_are_timed_until_the_server_cuts_them() {
        let addr = cutting_server(Duration::from_millis(1500));
        let stop = AtomicBool::new(false);
        let slow = std::thread::scope(|s| {
            let run = s.spawn(|| run(addr, 3, 2, 2, &stop));
            std::thread::sleep(Duration::from_millis(3000));
            stop.store(true, Relaxed);
            run.join().unwrap()
        });
        assert_eq!(slow.outcomes.len(), 7);
        for o in slow.of(Kind::SlowBody) {
            assert_eq!(o.how, How::Answered(408));
            assert!(
                o.after >= Duration::from_millis(1400) && o.after < Duration::from_millis(2500),
                "{o:?}"
            );
        }
        for o in slow.of(Kind::SlowHeaders) {
            assert_eq!(o.how, How::Closed, "{o:?}");
        }
        assert!(slow.of(Kind::Idle).all(|o| o.how == How::StillOpen));
    }
}
