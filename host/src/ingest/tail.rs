//! `GET /v1/tail[?pattern=...]`: the live stream of accepted events and ended
//! deliveries as Server-Sent Events, one JSON [`TailItem`] per `data:` line.
//!
//! With a pattern, an event passes when the pattern matches it, and a delivery
//! passes when it belongs to an event that passed (ids are remembered for the
//! last [`REMEMBERED`] matching events). A slow reader that falls behind the
//! node's tail buffer gets an `event: lagged` line saying how many items it missed,
//! then the stream goes on. Keep-alive comments flow while nothing happens, so
//! proxies do not cut an idle stream.

use crate::node::TailItem;
use crate::pattern::Pattern;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;

/// How many matching event ids a filtered tail remembers to let their deliveries through.
pub const REMEMBERED: usize = 10_000;

struct Filter {
    pattern: Option<Pattern>,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Filter {
    fn pass(&mut self, item: &TailItem) -> bool {
        let Some(pattern) = &self.pattern else {
            return true;
        };
        match item {
            TailItem::Event { event, .. } => {
                let matched = serde_json::to_value(event.as_ref())
                    .map(|v| pattern.matches(&v))
                    .unwrap_or(false);
                if matched && self.ids.insert(event.id.clone()) {
                    self.order.push_back(event.id.clone());
                    if self.order.len() > REMEMBERED
                        && let Some(old) = self.order.pop_front()
                    {
                        self.ids.remove(&old);
                    }
                }
                matched
            }
            TailItem::Delivery(d) => self.ids.contains(&d.event_id),
        }
    }
}

/// The SSE response for a subscription to the node's tail.
pub fn stream(
    rx: broadcast::Receiver<TailItem>,
    pattern: Option<Pattern>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let filter = Filter {
        pattern,
        ids: HashSet::new(),
        order: VecDeque::new(),
    };
    let events = futures::stream::unfold((rx, filter), |(mut rx, mut filter)| async move {
        loop {
            match rx.recv().await {
                Ok(item) => {
                    if !filter.pass(&item) {
                        continue;
                    }
                    let data = match serde_json::to_string(&item) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(error = %e, "tail item could not be serialized");
                            continue;
                        }
                    };
                    return Some((Ok(SseEvent::default().data(data)), (rx, filter)));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let ev = SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"skipped\":{n}}}"));
                    return Some((Ok(ev), (rx, filter)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}
