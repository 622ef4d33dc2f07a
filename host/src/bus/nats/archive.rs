//! The archive: events read back by time range from `BUSBAR_ARCHIVE`.

use super::scan::scan;
use super::*;
use async_nats::jetstream::consumer;
use std::ops::ControlFlow;

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
        &inner.archive,
        format!("{}.>", names::ARCHIVE_PREFIX),
        start,
        false,
        inner.config.request_timeout,
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
        &inner.archive,
        format!("{}.>", names::ARCHIVE_PREFIX),
        consumer::DeliverPolicy::ByStartTime { start_time: start },
        true,
        inner.config.request_timeout,
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
