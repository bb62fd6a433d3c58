//! One sender per destination: reads the outbox from the destination's cursor, POSTs each
//! request until a receiver's answer settles it (2xx: sent; 4xx: dropped and counted; 5xx,
//! 429, network errors: retried with backoff), and moves the cursor on. The cursor is
//! persisted by a keeper thread (group-committed) while the next requests go out; at most
//! `cursor_window` settled requests wait for it, so that after a crash at most those and
//! the one in flight are sent again.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ingestor::Lsn;

use ingestor_protocols::remote_write::{self, MetricType, Version};

use crate::config::{BudgetPolicy, Destination};
use crate::outbox::Request;
use crate::{DestStats, Shared, cursor};

/// The cursor as the sender moved it and as the keeper made it durable.
#[derive(Debug)]
pub(crate) struct Keeper {
    state: Mutex<KeeperState>,
    changed: Condvar,
}

#[derive(Debug)]
struct KeeperState {
    want: Lsn,
    done: Lsn,
    stop: bool,
}

impl Keeper {
    pub(crate) fn new(at: Lsn) -> Keeper {
        Keeper {
            state: Mutex::new(KeeperState { want: at, done: at, stop: false }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn durable(&self) -> Lsn {
        self.lock().done
    }

    fn want(&self, at: Lsn) {
        let mut s = self.lock();
        s.want = s.want.max(at);
        self.changed.notify_all();
    }

    /// Waits until the cursor is durable at `at` or later (or the keeper stopped).
    fn wait_durable(&self, at: Lsn) {
        let mut s = self.lock();
        while s.done < at && !s.stop {
            s = self.changed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    pub(crate) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// The keeper thread: writes the wanted cursor whenever it moved, until stopped (then
    /// once more, so that a clean stop leaves the last position).
    pub(crate) fn run(&self, shared: &Shared, name: &str, shard: usize, stats: &DestStats) {
        let mut file: Option<cursor::CursorFile> = None;
        loop {
            let (want, stop) = {
                let mut s = self.lock();
                while s.want == s.done && !s.stop {
                    s = self.changed.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                (s.want, s.stop)
            };
            if want != self.durable() {
                // Deliberate defect: the keeper counts the cursor moved without storing it.
                #[cfg(ingestor_deliberate_bugs)]
                if crate::bugs::on("forward-cursor-never-stored") {
                    self.lock().done = want;
                    stats.cursor[shard].store(want.0, Relaxed);
                    self.changed.notify_all();
                    if stop {
                        return;
                    }
                    continue;
                }
                let moved = match &mut file {
                    Some(f) => f.store(want),
                    None => cursor::CursorFile::open(
                        &*shared.fs,
                        &shared.dir,
                        name,
                        stats.acked.len() as u16,
                    )
                    .and_then(|f| file.insert(f).store(want)),
                };
                if moved.is_err() {
                    // Reopen (and make the file whole) on the next move.
                    file = None;
                }
                match moved {
                    Ok(()) => {
                        self.lock().done = want;
                        stats.cursor[shard].store(want.0, Relaxed);
                        self.changed.notify_all();
                    }
                    Err(e) => {
                        // Not fatal: the cursor stays behind (more is sent twice), and the
                        // next move tries again.
                        stats.set_error(format!("cursor: {e}"));
                        tracing::warn!("forward {name}: writing the cursor failed: {e}");
                        if !stop {
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            }
            if stop {
                self.changed.notify_all();
                return;
            }
        }
    }
}

/// How a request ended.
enum Outcome {
    Sent,
    Dropped,
    Stopped,
}

/// One shard's sender: it takes the outbox's requests of its lane and passes over the rest.
pub(crate) struct Sender {
    pub(crate) dest: Destination,
    pub(crate) shard: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Arc<DestStats>,
    pub(crate) keeper: Arc<Keeper>,
    pub(crate) agent: ureq::Agent,
    pub(crate) rng: u64,
}

impl Sender {
    fn stopping(&self) -> bool {
        self.shared.stop.load(Relaxed)
    }

    /// Sends from `cursor` on until stopped.
    pub(crate) fn run(mut self, mut cursor: Lsn) {
        let name = cursor::shard_name(&self.dest.name, self.shard as u16);
        let lane = self.stats.lane(self.shard);
        let mut reader = None;
        // The cursor after each settled request not yet known durable, oldest first: at
        // most `cursor_window` of them may wait while the next request goes out.
        let window = self.shared.config.cursor_window;
        let mut settled: std::collections::VecDeque<Lsn> = std::collections::VecDeque::new();
        // Layout boundaries every shard is known to have passed.
        let mut passed = 0usize;
        while !self.stopping() {
            let r = match &mut reader {
                Some(r) => r,
                None => match self.shared.outbox.reader(cursor) {
                    Ok(r) => reader.insert(r),
                    Err(e) => {
                        self.stats.set_error(format!("outbox: {e}"));
                        self.pause(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            // Only what is durable in the outbox goes out: a record sent before its flush
            // was synced could vanish in a power cut, and a new flush reuse its LSN below
            // this destination's cursor.
            if r.next_lsn() > self.shared.outbox.durable_lsn() {
                self.shared.wait_for_records(Duration::from_millis(200));
                continue;
            }
            let record = match r.next() {
                Some(Ok(record)) => record,
                Some(Err(e)) => {
                    self.stats.set_error(format!("outbox: {e}"));
                    tracing::error!("forward {name}: reading the outbox: {e}");
                    reader = None;
                    self.pause(Duration::from_secs(1));
                    continue;
                }
                None => {
                    self.shared.wait_for_records(Duration::from_millis(200));
                    continue;
                }
            };
            if record.lsn < cursor {
                continue;
            }
            if let Some(request) = Request::decode(record.record_type, &record.payload)
                && lane.takes(request.shard)
            {
                let durable = self.keeper.durable();
                while settled.front().is_some_and(|&c| c <= durable) {
                    settled.pop_front();
                }
                if settled.len() >= window {
                    let need = settled[settled.len() - window];
                    self.keeper.wait_durable(need);
                }
                if !self.past_boundaries(record.lsn, &mut passed) {
                    break;
                }
                #[cfg(ingestor_deliberate_bugs)]
                if crate::bugs::on("forward-cursor-early") {
                    // The defect: the cursor passes the request before it is sent.
                    self.keeper.want(record.lsn.next());
                    self.keeper.wait_durable(record.lsn.next());
                }
                match self.send(record.lsn, &request) {
                    Outcome::Sent | Outcome::Dropped => settled.push_back(record.lsn.next()),
                    Outcome::Stopped => break,
                }
            }
            cursor = record.lsn.next();
            self.stats.acked[self.shard].store(cursor.0, Relaxed);
            self.keeper.want(cursor);
        }
    }

    /// Before sending the request at `lsn`: waits until every shard's stored cursor has
    /// passed each layout boundary at or below it (`passed` of them are known passed).
    /// Stored, not only moved: a shard whose cursor passed a boundary in memory may send its
    /// last requests below it again after a crash, and they must not come after this one,
    /// which may hold a newer value of one of their series. Returns `false` when stopped
    /// while waiting.
    fn past_boundaries(&self, lsn: Lsn, passed: &mut usize) -> bool {
        // Deliberate defect: a shard sends past a layout boundary without waiting for the
        // others.
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("forward-no-layout-wait") {
            return true;
        }
        while let Some(&boundary) = self.stats.boundaries.get(*passed) {
            if lsn < boundary {
                return true;
            }
            while !self.stats.cursor.iter().all(|c| c.load(Relaxed) >= boundary.0) {
                if self.stopping() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            *passed += 1;
        }
        true
    }

    /// Under `drop_oldest`, whether the request at `lsn` goes: the destination's backlog
    /// (this shard's from `lsn` on) is over the budget and no other shard is behind this one
    /// (its request is the destination's oldest waiting). Decided under the destination's
    /// budget lock, which also moves this shard past the request, so that shards never
    /// drop more than the budget needs.
    fn over_budget(&self, lsn: Lsn) -> bool {
        let c = &self.shared.config;
        if c.budget_policy != BudgetPolicy::DropOldest {
            return false;
        }
        let _one = self.stats.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let oldest = self
            .stats
            .acked
            .iter()
            .enumerate()
            .all(|(i, a)| i == self.shard || a.load(Relaxed) >= lsn.0);
        let over = oldest
            && self.shared.pending_bytes(&self.stats, Some((self.shard, lsn))) > c.budget_bytes;
        if over {
            self.stats.acked[self.shard].store(lsn.next().0, Relaxed);
        }
        over
    }

    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= until {
                return;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(50)));
        }
    }

    /// The delay before retry `attempt` (0-based): exponential from `backoff_min` to
    /// `backoff_max`, with "full jitter" between half and all of it.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let c = &self.shared.config;
        let base = c.backoff_min.saturating_mul(1u32 << attempt.min(20)).min(c.backoff_max);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let frac = (self.rng % 1_000) as f64 / 1_000.0;
        base.mul_f64(0.5 + frac / 2.0)
    }

    /// Sends the request at `lsn` until it is settled: sent (2xx), dropped (refused by a
    /// 4xx, or over the budget under `drop_oldest`, checked before every attempt), or the
    /// forwarder stopped.
    fn send(&mut self, lsn: Lsn, request: &Request) -> Outcome {
        let name = self.dest.name.clone();
        let mut attempt = 0u32;
        loop {
            if self.stopping() {
                return Outcome::Stopped;
            }
            if self.over_budget(lsn) {
                self.stats.dropped_budget.fetch_add(u64::from(request.samples), Relaxed);
                self.stats.requests_dropped.fetch_add(1, Relaxed);
                return Outcome::Dropped;
            }
            let started = Instant::now();
            let (content_type, version, body) = if self.dest.v2 {
                match to_v2(&request.body) {
                    Ok(b) => {
                        ("application/x-protobuf;proto=io.prometheus.write.v2.Request", "2.0.0", b)
                    }
                    Err(e) => {
                        // Cannot happen for what a flush wrote; never loop on it.
                        self.drop_request(request, format!("re-encoding as 2.0: {e}"));
                        return Outcome::Dropped;
                    }
                }
            } else {
                ("application/x-protobuf", "0.1.0", request.body.clone())
            };
            let result = self
                .agent
                .post(&self.dest.url)
                .header("Content-Type", content_type)
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", version)
                .header("User-Agent", concat!("ingestor/", env!("CARGO_PKG_VERSION")))
                .send(&body[..]);
            let (retry_after, why) = match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        let s = &self.stats;
                        s.requests_sent.fetch_add(1, Relaxed);
                        s.send_nanos.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
                        s.sends.fetch_add(1, Relaxed);
                        let written = if self.dest.v2 {
                            // 2.0 receivers say what they wrote; none saying it took the
                            // body for something else (a 1.0-only receiver).
                            response
                                .headers()
                                .get("x-prometheus-remote-write-samples-written")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<u64>().ok())
                                .unwrap_or(0)
                                .min(u64::from(request.samples))
                        } else {
                            u64::from(request.samples)
                        };
                        s.samples_sent.fetch_add(written, Relaxed);
                        let lost = u64::from(request.samples) - written;
                        if lost > 0 {
                            s.dropped_rejected.fetch_add(lost, Relaxed);
                            s.set_error(format!(
                                "HTTP {status} with {written} of {} samples written (remote \
                                 write 2.0's X-Prometheus-Remote-Write-Samples-Written)",
                                request.samples
                            ));
                            tracing::warn!(
                                "forward {name}: the receiver wrote {written} of {} samples",
                                request.samples
                            );
                        }
                        return Outcome::Sent;
                    }
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(3_600)));
                    let body = response
                        .body_mut()
                        .with_config()
                        .limit(4_096)
                        .read_to_string()
                        .unwrap_or_default();
                    let reason: String = body.trim().chars().take(300).collect();
                    let why = format!("HTTP {status}: {reason}");
                    let retry = status >= 500 || (status == 429 && self.shared.config.retry_429);
                    if !retry {
                        self.drop_request(request, why);
                        return Outcome::Dropped;
                    }
                    (retry_after, why)
                }
                Err(e) => (None, e.to_string()),
            };
            self.stats.retries.fetch_add(1, Relaxed);
            self.stats.set_error(why.clone());
            // A receiver's Retry-After asks for at least that long; never less than the
            // backoff (a `Retry-After: 0` must not become a tight loop).
            let backoff = self.backoff(attempt);
            let delay = retry_after.map_or(backoff, |r| r.max(backoff));
            if attempt.is_multiple_of(20) {
                tracing::warn!(
                    "forward {name}: {why}; retrying in {} ms (attempt {})",
                    delay.as_millis(),
                    attempt + 1
                );
            }
            attempt = attempt.saturating_add(1);
            self.pause(delay);
        }
    }
}

impl Sender {
    fn drop_request(&self, request: &Request, why: String) {
        let s = &self.stats;
        s.dropped_rejected.fetch_add(u64::from(request.samples), Relaxed);
        s.requests_dropped.fetch_add(1, Relaxed);
        tracing::warn!(
            "forward {}: a request of {} samples dropped: {why}",
            self.dest.name,
            request.samples
        );
        s.set_error(why);
    }
}

/// A 1.0 request body (as the outbox holds it) as a 2.0 body: the same series, each with
/// its family's type from the 1.0 metadata (histogram and summary parts untyped).
fn to_v2(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = remote_write::decode(body, Version::V1, 1 << 26).map_err(|e| e.to_string())?;
    let types: std::collections::HashMap<String, MetricType> = r.metadata.drain(..).collect();
    for s in &mut r.series {
        let name = s.labels.iter().find(|(n, _)| n == "__name__").map(|(_, v)| v.as_str());
        s.metric_type =
            name.and_then(|n| types.get(n).copied()).filter(|t| *t != MetricType::Other);
    }
    Ok(remote_write::encode_v2(&r.series))
}

/// Builds a destination's HTTP agent: keep-alive, the request timeout, answers of any status
/// returned as answers.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_of_a_short_request_is_none() {
        assert!(Request::decode(crate::outbox::REQUEST, &[1, 2, 3]).is_none());
    }
}
