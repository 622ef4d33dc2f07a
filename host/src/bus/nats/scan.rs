//! Reading a stream's stored messages in order through an ephemeral consumer:
//! the archive query, the dead-letter listing and the kv key listing all do it.

use super::*;
use async_nats::jetstream::consumer::{self, pull};
use futures::StreamExt;
use std::ops::ControlFlow;

/// One stored message as a scan sees it.
pub(super) struct Scanned {
    pub seq: u64,
    /// When the server stored it (ms since the epoch).
    pub time_ms: i64,
    pub subject: async_nats::Subject,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

/// Reads the messages of `stream` matching `filter` from `start` on, in order,
/// until `f` breaks or the messages stored when the scan began are read. Uses
/// an ephemeral consumer without acks, deleted afterwards (and by the server
/// after a short idle time should this node die mid-scan). `timeout` bounds the
/// wait for each message.
pub(super) async fn scan(
    stream: &stream::Stream,
    filter: String,
    start: consumer::DeliverPolicy,
    headers_only: bool,
    timeout: Duration,
    mut f: impl FnMut(Scanned) -> ControlFlow<()>,
) -> Result<(), BusError> {
    let what = format!("reading {filter}");
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.clone(),
            deliver_policy: start,
            ack_policy: consumer::AckPolicy::None,
            headers_only,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| store_err(&what, e))?;
    let name = consumer.cached_info().name.clone();
    let result = async {
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(512)
            .messages()
            .await
            .map_err(|e| store_err(&what, e))?;
        loop {
            let next = tokio::time::timeout(timeout, messages.next())
                .await
                .map_err(|_| store_err(&what, "timed out"))?;
            let Some(m) = next else { return Ok(()) };
            let m = m.map_err(|e| store_err(&what, e))?;
            let info = m.info().map_err(|e| store_err(&what, e))?;
            let last = info.pending == 0;
            let item = Scanned {
                seq: info.stream_sequence,
                time_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
                subject: m.subject.clone(),
                headers: m.headers.clone(),
                payload: m.payload.clone(),
            };
            if f(item).is_break() || last {
                return Ok(());
            }
        }
    }
    .await;
    let stream = stream.clone();
    tokio::spawn(async move {
        let _ = stream.delete_consumer(&name).await;
    });
    result
}
