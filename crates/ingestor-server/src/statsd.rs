//! StatsD and DogStatsD over UDP: packets are received on the runtime, then parsed and
//! coalesced on one thread into batches (by count and a short deadline), so that
//! `SyncPolicy::Always` pays one fdatasync per batch rather than per packet.
//!
//! Nothing here can be flooded into unbounded work: the queue between the socket and the
//! batcher is bounded (a packet that finds it full is dropped and counted), bad lines are
//! counted and logged at most once a second with a sample, and packets that arrive while the
//! engine recovers are counted as dropped. DogStatsD events and service checks are counted
//! (`ingestor_statsd_events_total` by kind), neither stored nor logged. A batch the engine refuses for one packet's sake
//! (a kind conflict, say) is retried packet by packet, so that only that packet is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use ingestor::Update;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::routes::RESERVED_PREFIX;
use crate::state::AppState;

/// Packets waiting for the batcher, at most.
const QUEUE_PACKETS: usize = 16_384;

/// Receives packets until `stop` turns true; hands them to the batcher.
pub(crate) async fn receive(
    socket: UdpSocket,
    state: Arc<AppState>,
    queue: Sender<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        let Ok((n, _)) = received else { continue };
        state.counters.statsd_packets.fetch_add(1, Relaxed);
        if state.db.get().is_none() {
            state.counters.statsd_dropped_packets.fetch_add(1, Relaxed);
            continue;
        }
        match queue.try_send(buf[..n].to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                state.counters.statsd_dropped_packets.fetch_add(1, Relaxed);
                state.statsd_log.log(|held| {
                    tracing::warn!(
                        "statsd: the queue is full, packets dropped ({held} warnings held back)"
                    );
                });
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// A bounded queue for [`receive`] and [`batcher`].
pub(crate) fn queue() -> (Sender<Vec<u8>>, Receiver<Vec<u8>>) {
    crossbeam_channel::bounded(QUEUE_PACKETS)
}

/// Parses and ingests queued packets until the queue's senders are gone.
pub(crate) fn batcher(state: &AppState, queue: &Receiver<Vec<u8>>) {
    let max = state.config.statsd_batch_updates;
    let delay = state.config.statsd_batch_delay;
    while let Ok(first) = queue.recv() {
        let deadline = Instant::now() + delay;
        let mut packets: Vec<Vec<Update>> = Vec::new();
        let mut updates = parse(state, &first);
        let mut total = updates.len();
        packets.push(std::mem::take(&mut updates));
        while total < max {
            match queue.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(p) => {
                    let u = parse(state, &p);
                    total += u.len();
                    packets.push(u);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        ingest(state, packets);
    }
}

/// One packet's updates; bad lines counted and logged (rate-limited, with a sample).
fn parse(state: &AppState, packet: &[u8]) -> Vec<Update> {
    let text = String::from_utf8_lossy(packet);
    let ingestor_protocols::statsd::Packet { mut updates, errors, events, service_checks } =
        ingestor_protocols::statsd::parse_packet(&text, ingestor::system_clock_ms());
    if events > 0 {
        state.counters.statsd_events.fetch_add(events as u64, Relaxed);
    }
    if service_checks > 0 {
        state.counters.statsd_service_checks.fetch_add(service_checks as u64, Relaxed);
    }
    let before = updates.len();
    updates.retain(|u| !u.key.name().starts_with(RESERVED_PREFIX));
    let reserved = before - updates.len();
    let bad = errors.len() + reserved;
    if bad > 0 {
        state.counters.statsd_bad_lines.fetch_add(bad as u64, Relaxed);
        state.statsd_log.log(|held| match errors.first() {
            Some(e) => tracing::warn!(
                "statsd: bad line {}: {} ({held} warnings held back)",
                e.line,
                e.reason
            ),
            None => tracing::warn!(
                "statsd: metric names starting with {RESERVED_PREFIX} are reserved; dropped \
                 ({held} warnings held back)"
            ),
        });
    }
    updates
}

fn ingest(state: &AppState, packets: Vec<Vec<Update>>) {
    let Some(db) = state.db.get() else {
        state.counters.statsd_dropped_packets.fetch_add(packets.len() as u64, Relaxed);
        return;
    };
    // StatsD cannot be told to come back later: while forwarding holds writes back, its
    // packets are dropped, counted and logged.
    if let Some(reason) = state.forwarder.get().and_then(|f| f.blocked()) {
        state.counters.statsd_dropped_packets.fetch_add(packets.len() as u64, Relaxed);
        state.statsd_log.log(|held| {
            tracing::warn!("statsd: packets dropped: {reason} ({held} warnings held back)")
        });
        return;
    }
    let all: Vec<Update> = packets.iter().flatten().cloned().collect();
    if all.is_empty() {
        return;
    }
    let refused = |e: &ingestor::Error, n: usize| {
        state.counters.statsd_dropped_packets.fetch_add(n as u64, Relaxed);
        state
            .statsd_log
            .log(|held| tracing::warn!("statsd: refused: {e} ({held} warnings held back)"));
    };
    match db.ingest(&all) {
        Ok(_) => {
            state.counters.statsd_batches.fetch_add(1, Relaxed);
        }
        Err(ingestor::Error::InvalidUpdate { .. } | ingestor::Error::Memstore(_)) => {
            // One packet spoiled the batch: take the others one by one.
            for p in packets.iter().filter(|p| !p.is_empty()) {
                match db.ingest(p) {
                    Ok(_) => {
                        state.counters.statsd_batches.fetch_add(1, Relaxed);
                    }
                    Err(e) => refused(&e, 1),
                }
            }
        }
        Err(e) => refused(&e, packets.len()),
    }
}
