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
/// until `f` breaks or the messages stored when the scan began are read. See
/// [`Scan`] for the consumer it reads through.
pub(super) async fn scan(
    stream: &stream::Stream,
    filter: String,
    start: consumer::DeliverPolicy,
    headers_only: bool,
    timeout: Duration,
    mut f: impl FnMut(Scanned) -> ControlFlow<()>,
) -> Result<(), BusError> {
    let mut scan = Scan::open(stream, filter, start, headers_only, timeout).await?;
    while let Some(m) = scan.next().await? {
        if f(m).is_break() {
            break;
        }
    }
    Ok(())
}

/// An ordered read of a stream's stored messages, one at a time, for callers that
/// await between messages (the archive hands batches to a blocking thread). Uses
/// an ephemeral consumer without acks, deleted when the scan is dropped (and by
/// the server after a short idle time should this node die mid-scan).
pub(super) struct Scan {
    stream: stream::Stream,
    consumer: String,
    what: String,
    timeout: Duration,
    /// `None` once every message stored when the scan began has been read.
    messages: Option<pull::Stream>,
}

type PullConsumer = consumer::Consumer<pull::Config>;

impl Scan {
    /// Starts reading `stream`'s messages on `filter` from `start`. `timeout`
    /// bounds the wait for each message.
    pub(super) async fn open(
        stream: &stream::Stream,
        filter: String,
        start: consumer::DeliverPolicy,
        headers_only: bool,
        timeout: Duration,
    ) -> Result<Scan, BusError> {
        let what = format!("reading {filter}");
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                filter_subject: filter,
                deliver_policy: start,
                ack_policy: consumer::AckPolicy::None,
                headers_only,
                inactive_threshold: Duration::from_secs(30),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| store_err(&what, e))?;
        let mut scan = Scan {
            stream: stream.clone(),
            consumer: consumer.cached_info().name.clone(),
            what,
            timeout,
            messages: None,
        };
        if consumer.cached_info().num_pending > 0 {
            scan.messages = Some(
                consumer
                    .stream()
                    .max_messages_per_batch(512)
                    .messages()
                    .await
                    .map_err(|e| store_err(&scan.what, e))?,
            );
        }
        Ok(scan)
    }

    /// The next stored message, or `None` once all stored when the scan began are read.
    pub(super) async fn next(&mut self) -> Result<Option<Scanned>, BusError> {
        let Some(messages) = self.messages.as_mut() else {
            return Ok(None);
        };
        let next = tokio::time::timeout(self.timeout, messages.next())
            .await
            .map_err(|_| store_err(&self.what, "timed out"))?;
        let Some(m) = next else {
            self.messages = None;
            return Ok(None);
        };
        let m = m.map_err(|e| store_err(&self.what, e))?;
        let info = m.info().map_err(|e| store_err(&self.what, e))?;
        let item = Scanned {
            seq: info.stream_sequence,
            time_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
            subject: m.subject.clone(),
            headers: m.headers.clone(),
            payload: m.payload.clone(),
        };
        if info.pending == 0 {
            self.messages = None;
        }
        Ok(Some(item))
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.consumer));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }
}
