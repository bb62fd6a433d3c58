//! A hand-written HTTP/1.1 client over `std::net::TcpStream`, with the byte-level control the
//! abuse needs: requests are written as given, responses are read with a deadline, and a
//! connection the server closed is reported as closed rather than retried behind our back.
//!
//! It understands what `ingestor serve` answers: a status line, headers, and a body framed by
//! `Content-Length`, `Transfer-Encoding: chunked` (a streamed `/metrics`) or the end of the
//! connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The most header bytes accepted in a response: more is an error, not an allocation.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// One response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The body, de-chunked.
    pub(crate) body: Vec<u8>,
    /// The server will close the connection after this response.
    pub(crate) close: bool,
}

/// One client connection.
pub(crate) struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    /// Connects within `timeout`; reads and writes then time out after `timeout` each.
    pub(crate) fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn { reader: BufReader::new(stream) })
    }

    /// The stream, to write to or to change its timeouts.
    pub(crate) fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Sends one request and reads its response. `head` is the request line and headers
    /// without the blank line; `Content-Length` is added when there is a body.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}");
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream().write_all(&bytes)?;
        self.read_response()
    }

    /// Reads one response (status line, headers, body).
    pub(crate) fn read_response(&mut self) -> io::Result<Response> {
        read_response(&mut self.reader)
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads one line ending in `\n`, without it (and without a `\r` before it); an error at the
/// end of the stream.
fn line(r: &mut impl BufRead, budget: &mut usize) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = r.take(*budget as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if n > *budget {
        return Err(bad("response head too large"));
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed mid-line"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| bad("response head is not UTF-8"))
}

/// Reads one response from `r`.
pub(crate) fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    let mut budget = MAX_RESPONSE_HEAD;
    let status_line = line(r, &mut budget)?;
    let status = parse_status(&status_line)
        .ok_or_else(|| bad(format!("not an HTTP status line: {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let l = line(r, &mut budget)?;
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').ok_or_else(|| bad(format!("bad header {l:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || status_line.starts_with("HTTP/1.0");
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = get("content-length")
        .map(|v| v.parse::<u64>().map_err(|_| bad("bad Content-Length")))
        .transpose()?;
    let mut body = Vec::new();
    if status == 204 || status == 304 || (100..200).contains(&status) {
        // No body.
    } else if chunked {
        loop {
            let mut b = MAX_RESPONSE_HEAD;
            let size_line = line(r, &mut b)?;
            let size = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !line(r, &mut b)?.is_empty() {}
                break;
            }
            let before = body.len();
            r.take(size).read_to_end(&mut body)?;
            if (body.len() - before) as u64 != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed mid-chunk",
                ));
            }
            line(r, &mut b)?;
        }
    } else if let Some(n) = length {
        r.take(n).read_to_end(&mut body)?;
        if body.len() as u64 != n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed mid-body",
            ));
        }
    } else {
        r.read_to_end(&mut body)?;
        return Ok(Response { status, body, close: true });
    }
    Ok(Response { status, body, close })
}

/// The status code of an `HTTP/1.x NNN reason` line.
pub(crate) fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A keep-alive client that connects again when it has no connection (after an error or a
/// `Connection: close`), never retrying a request.
pub(crate) struct Client {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<Conn>,
}

impl Client {
    /// A client of `addr` whose connects, reads and writes each time out after `timeout`.
    pub(crate) fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client { addr, timeout, conn: None }
    }

    /// Sends one request (on the open connection, or a new one) and reads its response; any
    /// error drops the connection.
    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> io::Result<Response> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(Conn::connect(self.addr, self.timeout)?),
        };
        match conn.request(method, path, headers, body) {
            Ok(r) => {
                if r.close {
                    self.conn = None;
                }
                Ok(r)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// A one-shot GET on a new connection, as a Kubernetes probe makes it.
pub(crate) fn get_once(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let mut conn = Conn::connect(addr, timeout)?;
    conn.request("GET", path, "Connection: close\r\n", b"")
}

/// Percent-encodes a query-string component.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_chunked_and_close_delimited_bodies() {
        let mut r: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 204 No Content\r\n\r\n";
        let a = read_response(&mut r).unwrap();
        assert_eq!((a.status, a.body.as_slice(), a.close), (200, &b"abc"[..], false));
        let b = read_response(&mut r).unwrap();
        assert_eq!((b.status, b.body.len()), (204, 0));

        let mut r: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(read_response(&mut r).unwrap().body, b"abcde");

        let mut r: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\nslow";
        let c = read_response(&mut r).unwrap();
        assert_eq!((c.status, c.body.as_slice(), c.close), (408, &b"slow"[..], true));
    }

    #[test]
    fn a_closed_connection_is_an_error() {
        let mut r: &[u8] = b"";
        assert_eq!(read_response(&mut r).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut r: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
        assert_eq!(read_response(&mut r).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn encodes_query_components() {
        assert_eq!(encode(r#"m{g="1"}"#), "m%7Bg%3D%221%22%7D");
    }
}
