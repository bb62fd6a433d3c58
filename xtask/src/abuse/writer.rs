//! The well-behaved clients: a writer that streams line-protocol batches at a steady rate
//! and notes what each one was answered and how long it took, the read-back that checks every
//! acknowledged write is there with its value, a readiness prober that opens a new connection
//! for every probe (as Kubernetes does), and a `/metrics` scraper.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::http::{self, Client};

/// Lines in each of the writer's batches, each a series of its own.
pub(crate) const LINES: u64 = 5;

/// Batches per value of the `g` label, by which the read-back queries.
const GROUP: u64 = 100;

/// How long the writer waits for an answer before it counts the write as unanswered.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One batch the writer sent.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    /// Its number: its lines are the series `abuse_writer_v{g, b, l}`.
    pub(crate) batch: u64,
    /// When it was sent.
    pub(crate) at: Instant,
    /// From the first byte sent to the whole answer read (or to the error).
    pub(crate) latency: Duration,
    /// The status, or why there was none.
    pub(crate) status: Result<u16, String>,
}

/// The value of line `l` of batch `b`: unique across the run.
pub(crate) fn value(b: u64, l: u64) -> f64 {
    (b * LINES + l) as f64 + 0.25
}

fn body(b: u64) -> Vec<u8> {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut s = String::new();
    for l in 0..LINES {
        s.push_str(&format!("abuse_writer,g={},b={b},l={l} v={} {ts}\n", b / GROUP, value(b, l)));
    }
    s.into_bytes()
}

/// Writes a batch every `1 / rate` seconds over one keep-alive connection (a new one after an
/// error) until `stop` is set; what became of each.
pub(crate) fn write(addr: SocketAddr, rate: f64, stop: &AtomicBool) -> Vec<Sent> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut client = Client::new(addr, WRITE_TIMEOUT);
    let mut sent = Vec::new();
    let mut next = Instant::now();
    let mut batch = 0;
    while !stop.load(Relaxed) {
        let body = body(batch);
        let at = Instant::now();
        let status = client
            .request("POST", "/api/v2/write?precision=ms", "Content-Type: text/plain\r\n", &body)
            .map(|r| r.status)
            .map_err(|e| e.to_string());
        sent.push(Sent { batch, at, latency: at.elapsed(), status });
        batch += 1;
        // A steady rate, without bursts to catch up after a slow answer.
        next = (next + period).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    sent
}

/// What the read-back found.
#[derive(Debug, Default)]
pub(crate) struct ReadBack {
    /// Lines acknowledged with 204.
    pub(crate) acknowledged: u64,
    /// Of those, found with their value.
    pub(crate) found: u64,
    /// Acknowledged lines absent or with another value: the first few, described.
    pub(crate) wrong: Vec<String>,
    /// How many were wrong in all.
    pub(crate) wrong_count: u64,
    /// Queries that failed, described.
    pub(crate) query_errors: Vec<String>,
}

/// Reads back every acknowledged line through `GET /api/v1/query`, one query per group.
pub(crate) fn read_back(addr: SocketAddr, sent: &[Sent]) -> ReadBack {
    let mut by_group: HashMap<u64, Vec<u64>> = HashMap::new();
    for s in sent.iter().filter(|s| s.status == Ok(204)) {
        by_group.entry(s.batch / GROUP).or_default().push(s.batch);
    }
    let mut out = ReadBack::default();
    let mut client = Client::new(addr, Duration::from_secs(30));
    let mut groups: Vec<_> = by_group.into_iter().collect();
    groups.sort();
    for (g, batches) in groups {
        out.acknowledged += batches.len() as u64 * LINES;
        let query = format!("abuse_writer_v{{g=\"{g}\"}}");
        let path = format!("/api/v1/query?query={}", http::encode(&query));
        let found =
            client.request("GET", &path, "", b"").map_err(|e| e.to_string()).and_then(|r| {
                if r.status == 200 {
                    parse_vector(&r.body)
                } else {
                    Err(format!(
                        "{} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()
                    ))
                }
            });
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                out.query_errors.push(format!("{query}: {e}"));
                out.wrong_count += batches.len() as u64 * LINES;
                continue;
            }
        };
        for b in batches {
            for l in 0..LINES {
                match found.get(&(b, l)) {
                    Some(&v) if v == value(b, l) => out.found += 1,
                    other => {
                        out.wrong_count += 1;
                        if out.wrong.len() < 5 {
                            out.wrong.push(format!(
                                "abuse_writer_v{{b=\"{b}\",l=\"{l}\"}}: wrote {}, read {}",
                                value(b, l),
                                other.map_or("nothing".to_string(), |v| v.to_string())
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The `(b, l) -> value` of a Prometheus instant-vector answer.
fn parse_vector(body: &[u8]) -> Result<HashMap<(u64, u64), f64>, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let result = json["data"]["result"].as_array().ok_or("no data.result in the answer")?;
    let mut out = HashMap::new();
    for r in result {
        let label = |n: &str| r["metric"][n].as_str().and_then(|v| v.parse::<u64>().ok());
        let v = r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok());
        if let (Some(b), Some(l), Some(v)) = (label("b"), label("l"), v) {
            out.insert((b, l), v);
        }
    }
    Ok(out)
}

/// One readiness probe.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    /// When it started.
    pub(crate) at: Instant,
    /// How long it took.
    pub(crate) latency: Duration,
    /// The status, or why there was none.
    pub(crate) status: Result<u16, String>,
}

/// Probes `GET /-/ready` on a new connection every `every`, each given `limit`, until `stop`.
pub(crate) fn probe(
    addr: SocketAddr,
    every: Duration,
    limit: Duration,
    stop: &AtomicBool,
) -> Vec<Probe> {
    let mut probes = Vec::new();
    let mut next = Instant::now();
    while !stop.load(Relaxed) {
        let at = Instant::now();
        let status =
            http::get_once(addr, "/-/ready", limit).map(|r| r.status).map_err(|e| e.to_string());
        probes.push(Probe { at, latency: at.elapsed(), status });
        next = (next + every).max(Instant::now());
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    probes
}

/// One `/metrics` scrape.
#[derive(Debug, Clone)]
pub(crate) struct Scrape {
    /// How long it took.
    pub(crate) latency: Duration,
    /// The status, or why there was none.
    pub(crate) status: Result<u16, String>,
    /// Bytes of the answer's body.
    pub(crate) bytes: usize,
}

/// Scrapes `/metrics` over a keep-alive connection, one scrape after another, until `stop`.
pub(crate) fn scrape(addr: SocketAddr, stop: &AtomicBool) -> Vec<Scrape> {
    let mut client = Client::new(addr, Duration::from_secs(10));
    let mut scrapes = Vec::new();
    while !stop.load(Relaxed) {
        let at = Instant::now();
        let r = client.request("GET", "/metrics", "", b"");
        scrapes.push(Scrape {
            latency: at.elapsed(),
            bytes: r.as_ref().map_or(0, |r| r.body.len()),
            status: r.map(|r| r.status).map_err(|e| e.to_string()),
        });
        if scrapes.last().is_some_and(|s| s.status.is_err()) {
            // Do not spin on a server that refuses connections.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    scrapes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unique_and_exact_in_text() {
        let v = value(123_456, 4);
        assert_eq!(v.to_string().parse::<f64>().unwrap(), v);
        assert_ne!(value(1, 0), value(0, 4));
    }

    #[test]
    fn reads_a_vector_answer() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"abuse_writer_v","b":"3","g":"0","l":"1"},"value":[1.5,"16.25"]}]}}"#;
        let m = parse_vector(body).unwrap();
        assert_eq!(m.get(&(3, 1)), Some(&16.25));
    }
}
