//! Hostile requests and packets: a gzip bomb, a 1 MiB header, garbage bodies (random bytes and
//! broken line protocol) and random StatsD packets, each made cheaply and sent with the
//! outcome noted.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Crc, FlushCompress};

use super::http::{self, Client};

/// A small deterministic generator (xorshift64*), so that a run can be repeated from its seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Between 1 and `max` random bytes.
    pub(crate) fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A gzip member whose inflated size dwarfs its size on the wire.
pub(crate) struct Bomb {
    /// The gzip bytes.
    pub(crate) wire: Vec<u8>,
    /// What they inflate to, in bytes (all zeros).
    pub(crate) inflated: u64,
}

/// Builds a gzip bomb that inflates to `chunks` MiB of zeros without compressing them: deflate
/// compresses a MiB of zeros and sync-flushes it, until the compressed block of a MiB is the
/// same from one MiB to the next (the window is all zeros by then); that block is repeated,
/// and the trailer's CRC-32 is combined from the CRC of one MiB.
pub(crate) fn gzip_bomb(chunks: u64) -> Result<Bomb, String> {
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    let mut deflate = Compress::new(Compression::best(), false);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut steady = None;
    for _ in 0..8 {
        let mut out = Vec::with_capacity(MIB);
        let before = deflate.total_in();
        deflate.compress_vec(&zeros, &mut out, FlushCompress::Sync).map_err(|e| e.to_string())?;
        if deflate.total_in() - before != MIB as u64 {
            return Err("deflate did not take a whole MiB in one call".into());
        }
        if blocks.last() == Some(&out) {
            steady = Some(out);
            break;
        }
        blocks.push(out);
    }
    let steady = steady.ok_or("the deflate block of a MiB of zeros never settled")?;
    let mut finish = Vec::with_capacity(64);
    deflate.compress_vec(&[], &mut finish, FlushCompress::Finish).map_err(|e| e.to_string())?;
    if chunks < blocks.len() as u64 {
        return Err(format!("a bomb of at least {} MiB", blocks.len()));
    }
    let repeats = chunks - blocks.len() as u64;
    let body: usize = blocks.iter().map(Vec::len).sum::<usize>() + steady.len() * repeats as usize;
    let mut wire = Vec::with_capacity(10 + body + finish.len() + 8);
    wire.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff]);
    for b in &blocks {
        wire.extend_from_slice(b);
    }
    for _ in 0..repeats {
        wire.extend_from_slice(&steady);
    }
    wire.extend_from_slice(&finish);
    let mut one = Crc::new();
    one.update(&zeros);
    let mut crc = Crc::new();
    for _ in 0..chunks {
        crc.combine(&one);
    }
    wire.extend_from_slice(&crc.sum().to_le_bytes());
    wire.extend_from_slice(&crc.amount().to_le_bytes());
    Ok(Bomb { wire, inflated: chunks * MIB as u64 })
}

/// How one big request went.
#[derive(Debug, Clone)]
pub(crate) struct BigOutcome {
    /// The status the server answered, if it did.
    pub(crate) status: Option<u16>,
    /// From the first byte sent to the answer (or the error).
    pub(crate) after: Duration,
    /// Bytes of the request we managed to send before the server answered or closed.
    pub(crate) sent: usize,
    /// What went wrong on our side, if anything (a reset while sending is expected when the
    /// server answers early and closes).
    pub(crate) error: Option<String>,
}

/// Sends `request` on a new connection from one thread while this one waits for the answer,
/// so that an early answer (413 before the body is all sent) is read, not lost to a reset.
pub(crate) fn send_big(addr: SocketAddr, request: Vec<u8>, timeout: Duration) -> BigOutcome {
    let started = Instant::now();
    let stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            return BigOutcome {
                status: None,
                after: started.elapsed(),
                sent: 0,
                error: Some(format!("connect: {e}")),
            };
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let writer = stream.try_clone().map(|mut w| {
        std::thread::spawn(move || {
            let mut sent = 0;
            for piece in request.chunks(64 * 1024) {
                if w.write_all(piece).is_err() {
                    break;
                }
                sent += piece.len();
            }
            sent
        })
    });
    let mut reader = std::io::BufReader::new(&stream);
    let answer = http::read_response(&mut reader);
    let after = started.elapsed();
    let _ = stream.shutdown(Shutdown::Both);
    let sent = match writer {
        Ok(w) => w.join().unwrap_or(0),
        Err(_) => 0,
    };
    match answer {
        Ok(r) => BigOutcome { status: Some(r.status), after, sent, error: None },
        Err(e) => BigOutcome { status: None, after, sent, error: Some(e.to_string()) },
    }
}

/// A request with one header of `bytes` bytes.
pub(crate) fn big_header_request(bytes: usize) -> Vec<u8> {
    let mut r = b"GET /-/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    r.resize(r.len() + bytes, b'a');
    r.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    r
}

/// The gzip bomb as a line-protocol write.
pub(crate) fn bomb_request(bomb: &Bomb) -> Vec<u8> {
    let mut r = format!(
        "POST /api/v2/write?precision=ms HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Encoding: gzip\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        bomb.wire.len()
    )
    .into_bytes();
    r.extend_from_slice(&bomb.wire);
    r
}

/// Lines that no line-protocol parser may take; one of them spoils a whole body.
const BROKEN_LINES: &[&str] = &[
    "abuse_garbage",
    "abuse_garbage v",
    "abuse_garbage v=",
    "abuse_garbage,t v=1",
    "abuse_garbage,t= v=1 x",
    "abuse_garbage v=\"unterminated",
    "abuse_garbage v=\"a string\"",
    "abuse_garbage v=1 notatime",
    "abuse_garbage v=1 99999999999999999999999999",
    "abuse_garbage v=1e999",
    "abuse_garbage v=NaN",
    "abuse_garbage,=x v=1",
    "abuse_garbage v=1,",
    "abuse_garbage v=1i2",
    "abuse_garbage v=tru",
    ",t=1 v=1",
    "abuse_garbage,__name__=x v=1",
    " v=1",
    "abuse_garbage v=1 1 1",
    "abuse_garbage\\",
];

/// One garbage request body and the headers it goes with: random bytes (sometimes claimed to
/// be gzip), or broken line protocol (valid lines with one broken line among them).
pub(crate) fn garbage(rng: &mut Rng) -> (String, Vec<u8>) {
    match rng.below(4) {
        0 => (String::new(), rng.some_bytes(4096)),
        1 => ("Content-Encoding: gzip\r\n".to_string(), rng.some_bytes(4096)),
        _ => {
            let lines = rng.below(50);
            let bad = rng.below(lines + 1);
            let mut body = String::new();
            for i in 0..=lines {
                if i == bad {
                    body.push_str(BROKEN_LINES[rng.below(BROKEN_LINES.len())]);
                } else {
                    body.push_str(&format!(
                        "abuse_garbage,k={} v={}",
                        rng.below(100),
                        rng.below(1000)
                    ));
                }
                body.push('\n');
            }
            (String::new(), body.into_bytes())
        }
    }
}

/// What the garbage bodies were answered.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Requests sent.
    pub(crate) sent: usize,
    /// Answered 2xx (taken).
    pub(crate) ok: usize,
    /// Answered 4xx.
    pub(crate) client_error: usize,
    /// Answered 5xx.
    pub(crate) server_error: usize,
    /// Other statuses.
    pub(crate) other: usize,
    /// No answer (an I/O error or a timeout).
    pub(crate) unanswered: usize,
    /// The first few 5xx or unanswered ones, described.
    pub(crate) examples: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.client_error += other.client_error;
        self.server_error += other.server_error;
        self.other += other.other;
        self.unanswered += other.unanswered;
        for e in &other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e.clone());
            }
        }
    }
}

/// Posts `count` garbage bodies from `threads` keep-alive clients, about `per_second` a second
/// in all; what they were answered.
pub(crate) fn send_garbage(
    addr: SocketAddr,
    count: usize,
    threads: usize,
    per_second: f64,
    seed: u64,
) -> Tally {
    let period = Duration::from_secs_f64(threads as f64 / per_second);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ ((t as u64 + 1) * 0x1000_0001));
                let mut client = Client::new(addr, Duration::from_secs(10));
                let mut tally = Tally::default();
                let mut next = Instant::now();
                for _ in 0..count / threads + usize::from(t < count % threads) {
                    next = (next + period).max(Instant::now());
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    let (headers, body) = garbage(&mut rng);
                    tally.sent += 1;
                    match client.request("POST", "/api/v2/write?precision=ms", &headers, &body) {
                        Ok(r) => match r.status {
                            200..=299 => tally.ok += 1,
                            400..=499 => tally.client_error += 1,
                            500..=599 => {
                                tally.server_error += 1;
                                if tally.examples.len() < 5 {
                                    tally.examples.push(format!(
                                        "{}: {}",
                                        r.status,
                                        String::from_utf8_lossy(&r.body)
                                            .chars()
                                            .take(200)
                                            .collect::<String>()
                                    ));
                                }
                            }
                            _ => tally.other += 1,
                        },
                        Err(e) => {
                            tally.unanswered += 1;
                            if tally.examples.len() < 5 {
                                tally.examples.push(format!("no answer: {e}"));
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for h in handles {
        if let Ok(t) = h.join() {
            total.add(&t);
        }
    }
    total
}

/// StatsD lines no parser may take.
const BROKEN_STATSD: &[&str] = &[
    "abuse_udp",
    "abuse_udp:",
    "abuse_udp:1",
    "abuse_udp:1|",
    "abuse_udp:x|c",
    ":1|c",
    "abuse_udp:1|zz",
    "abuse_udp:1|c|@x",
    "abuse_udp:1|c|@2|#",
];

/// Sends `count` random packets (random bytes, or broken StatsD lines) to `addr`, about
/// `per_second` a second; how many the kernel refused to send.
pub(crate) fn send_udp(
    addr: SocketAddr,
    count: usize,
    per_second: usize,
    seed: u64,
) -> Result<usize, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp bind: {e}"))?;
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut failed = 0;
    for i in 0..count {
        let packet = if rng.below(2) == 0 {
            rng.some_bytes(1400)
        } else {
            (0..1 + rng.below(20))
                .map(|_| BROKEN_STATSD[rng.below(BROKEN_STATSD.len())])
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        };
        if socket.send_to(&packet, addr).is_err() {
            failed += 1;
        }
        if i % 100 == 99 {
            let due = Duration::from_secs_f64((i + 1) as f64 / per_second as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn the_bomb_inflates_to_what_it_says_with_a_valid_trailer() {
        let bomb = gzip_bomb(64).unwrap();
        let mut d = flate2::read::GzDecoder::new(bomb.wire.as_slice());
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = d.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|&b| b == 0));
            total += n as u64;
        }
        assert_eq!(total, bomb.inflated);
        assert!(
            bomb.wire.len() < (bomb.inflated / 900) as usize,
            "ratio: {} bytes",
            bomb.wire.len()
        );
    }

    #[test]
    fn broken_bodies_always_hold_a_broken_line() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let (headers, body) = garbage(&mut rng);
            if headers.is_empty()
                && std::str::from_utf8(&body).is_ok_and(|t| t.contains("abuse_garbage,k="))
            {
                let text = String::from_utf8(body).unwrap();
                assert!(text.lines().any(|l| BROKEN_LINES.contains(&l)), "{text}");
            }
        }
    }
}

#[cfg(test)]
mod early_answer {
    use super::*;
    use std::io::Read as _;
    use std::net::TcpListener;

    #[test]
    fn an_answer_before_the_body_is_sent_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 100_000];
            let _ = stream.read(&mut buf);
            stream.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
            // Close with unread data: the client sees a reset while sending.
        });
        let mut request = b"POST / HTTP/1.1\r\nContent-Length: 50000000\r\n\r\n".to_vec();
        request.resize(50_000_000, b'x');
        let o = send_big(addr, request, Duration::from_secs(10));
        assert_eq!(o.status, Some(413), "{o:?}");
        assert!(o.sent < 50_000_000, "{o:?}");
    }
}
