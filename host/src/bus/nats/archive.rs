//! The archive: events read back by time range from `BUSBAR_ARCHIVE`, and the
//! scan that the dead-letter and kv listings share.

use super::*;
use async_nats::jetstream::consumer::{self, pull};
use futures::StreamExt;
use std::ops::ControlFlow;

/// One stored message as a scan sees it.
pub(super) struct Scanned {
    pub seq: u64,
    /// When the server stored it (ms since the epoch).
    pub time_ms: i64,
    pub payload: Bytes,
}

/// Reads the messages of `stream` matching `filter` from `start` on, in order,
/// until `f` breaks or the messages stored when the scan began are read. Uses
/// an ephemeral consumer without acks, deleted afterwards (and by the server
/// after a short idle time should this node die mid-scan).
pub(super) async fn scan(
    inner: &Inner,
    stream: &stream::Stream,
    filter: String,
    start: consumer::DeliverPolicy,
    headers_only: bool,
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
            let next = tokio::time::timeout(inner.config.request_timeout, messages.next())
                .await
                .map_err(|_| store_err(&what, "timed out"))?;
            let Some(m) = next else { return Ok(()) };
            let m = m.map_err(|e| store_err(&what, e))?;
            let info = m.info().map_err(|e| store_err(&what, e))?;
            let last = info.pending == 0;
            let item = Scanned {
                seq: info.stream_sequence,
                time_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
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

pub(super) async fn query(inner: &Inner, q: ArchiveQuery<'_>) -> Result<Vec<Event>, BusError> {
    let start = match q.since_ms {
        Some(ms) if ms > 0 => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map_err(|e| BusError::Invalid(format!("archive start {ms}: {e}")))?,
        },
        _ => consumer::DeliverPolicy::All,
    };
    let until = q.until_ms.unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let mut bad = None;
    scan(
        inner,
        &inner.archive,
        format!("{}.>", names::ARCHIVE_PREFIX),
        start,
        false,
        |m| {
            if m.time_ms > until {
                return ControlFlow::Break(());
            }
            match serde_json::from_slice::<Event>(&m.payload) {
                Ok(e) => {
                    if (q.filter)(&e) {
                        out.push(e);
                        if out.len() >= q.limit {
                            return ControlFlow::Break(());
                        }
                    }
                }
                Err(e) => bad = Some(format!("archived message {}: {e}", m.seq)),
            }
            ControlFlow::Continue(())
        },
    )
    .await?;
    if let Some(b) = bad {
        tracing::error!(error = %b, "skipped an unreadable archived event");
    }
    Ok(out)
}

/// Purges the archive up to the first event received at or after `before_ms`.
pub(super) async fn expire(inner: &Inner, before_ms: i64) -> Result<usize, BusError> {
    let mut archive = inner.archive.clone();
    let last = archive
        .info()
        .await
        .map_err(|e| store_err("reading the archive's state", e))?
        .state
        .last_sequence;
    let start =
        time::OffsetDateTime::from_unix_timestamp_nanos(before_ms.max(0) as i128 * 1_000_000)
            .map_err(|e| BusError::Invalid(format!("archive cut-off {before_ms}: {e}")))?;
    let mut keep_from = None;
    scan(
        inner,
        &inner.archive,
        format!("{}.>", names::ARCHIVE_PREFIX),
        consumer::DeliverPolicy::ByStartTime { start_time: start },
        true,
        |m| {
            keep_from = Some(m.seq);
            ControlFlow::Break(())
        },
    )
    .await?;
    // Nothing newer: everything stored before the scan began goes, and nothing after.
    let upto = keep_from.unwrap_or(last + 1);
    let purged = inner
        .archive
        .purge()
        .sequence(upto)
        .await
        .map_err(|e| store_err("purging the archive", e))?;
    Ok(purged.purged as usize)
}
