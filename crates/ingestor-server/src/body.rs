//! Reading a request body within its limits: size on the wire, size after gzip (cut while
//! inflating, so that a gzip bomb never grows past the limit), the time a client may take,
//! and the memory budget shared by every body being read and parsed.

use std::io::Write;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::BodyExt;

use crate::state::Lease;

/// Why a body was not read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over a size limit: 413.
    TooLarge(String),
    /// The client was too slow: 408.
    Timeout(Duration),
    /// Over the memory budget: 503 with `Retry-After`.
    OverBudget,
    /// Not readable (bad gzip, an encoding we do not take, a broken connection): 400/415.
    Bad(u16, String),
}

/// Counted multiplier of decoded bytes in the budget: parsed updates take about this much
/// more memory than their text.
pub(crate) const PARSE_FACTOR: usize = 4;

/// The inflated bytes, refusing to grow past the limit.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("decoded body over the limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Sink {
    Plain(Vec<u8>),
    Gzip(Box<flate2::write::MultiGzDecoder<Capped>>),
}

/// How a body's `Content-Encoding` is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// gzip is inflated (within the decoded limit), identity kept, anything else refused.
    Http,
    /// The bytes as sent: the route decodes them itself (remote write's snappy), and counts
    /// the decoded bytes in the lease itself.
    Raw,
}

/// Reads the whole body. `lease` grows by the wire bytes and [`PARSE_FACTOR`] times the
/// decoded bytes; the caller keeps it until the parsed batch is gone.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    limits: &crate::Limits,
    lease: &mut Lease,
    encoding: Encoding,
) -> Result<Vec<u8>, BodyError> {
    let too_large = |what: &str, limit: usize| {
        BodyError::TooLarge(format!("the request body is larger than {limit} bytes {what}"))
    };
    let length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large("on the wire", limits.max_body_bytes));
    }
    let declared = match encoding {
        Encoding::Http => headers.get(axum::http::header::CONTENT_ENCODING).map(|v| v.as_bytes()),
        Encoding::Raw => None,
    };
    let factor = match encoding {
        Encoding::Http => 1 + PARSE_FACTOR,
        Encoding::Raw => 1,
    };
    let mut sink = match declared {
        None => Sink::Plain(Vec::new()),
        Some(e) if e.eq_ignore_ascii_case(b"identity") => Sink::Plain(Vec::new()),
        Some(e) if e.eq_ignore_ascii_case(b"gzip") || e.eq_ignore_ascii_case(b"x-gzip") => {
            Sink::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Capped {
                out: Vec::new(),
                limit: limits.max_decoded_body_bytes,
                over: false,
            })))
        }
        Some(other) => {
            return Err(BodyError::Bad(
                415,
                format!(
                    "Content-Encoding {:?} is not supported: send gzip or identity",
                    String::from_utf8_lossy(other)
                ),
            ));
        }
    };
    if let (Some(n), Sink::Plain(v)) = (length, &mut sink) {
        if !lease.grow(n as usize * factor) {
            return Err(BodyError::OverBudget);
        }
        v.reserve_exact(n as usize);
    }
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    let mut body = body;
    let mut wire = 0usize;
    let mut counted_decoded = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout(limits.body_timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Bad(400, format!("reading the body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else { continue };
        wire += chunk.len();
        if wire > limits.max_body_bytes {
            return Err(too_large("on the wire", limits.max_body_bytes));
        }
        match &mut sink {
            Sink::Plain(v) => {
                if v.len() + chunk.len() > v.capacity() && length.is_none() {
                    // Chunked: count as the body grows.
                    if !lease.grow(chunk.len() * factor) {
                        return Err(BodyError::OverBudget);
                    }
                }
                v.extend_from_slice(&chunk);
            }
            Sink::Gzip(d) => {
                if !lease.grow(chunk.len()) {
                    return Err(BodyError::OverBudget);
                }
                if let Err(e) = d.write_all(&chunk) {
                    return Err(if d.get_ref().over {
                        too_large("after gzip", limits.max_decoded_body_bytes)
                    } else {
                        BodyError::Bad(400, format!("the gzip body is invalid: {e}"))
                    });
                }
                let decoded = d.get_ref().out.len();
                if !lease.grow((decoded - counted_decoded) * PARSE_FACTOR) {
                    return Err(BodyError::OverBudget);
                }
                counted_decoded = decoded;
            }
        }
    }
    match sink {
        Sink::Plain(v) => {
            if length.is_some_and(|n| n != v.len() as u64) {
                return Err(BodyError::Bad(400, "the body is shorter than Content-Length".into()));
            }
            Ok(v)
        }
        Sink::Gzip(d) => {
            let over = d.get_ref().over;
            match d.finish() {
                Ok(capped) => Ok(capped.out),
                Err(_) if over => Err(too_large("after gzip", limits.max_decoded_body_bytes)),
                Err(e) => Err(BodyError::Bad(400, format!("the gzip body is invalid: {e}"))),
            }
        }
    }
}

/// Reads a request's body within the server's limits; the bytes and the budget lease they
/// hold (keep it until the parsed batch is gone), or the answer to give.
pub(crate) async fn read_request_body(
    state: &std::sync::Arc<crate::state::AppState>,
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
) -> Result<(Vec<u8>, Lease), axum::response::Response> {
    let mut lease = Lease::new(state);
    match read(headers, body, &state.config.limits, &mut lease, encoding).await {
        Ok(bytes) => Ok((bytes, lease)),
        Err(e) => Err(crate::routes::body_error(state, e)),
    }
}
