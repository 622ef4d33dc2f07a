//! The archive: events read back by time range from `BUSBAR_ARCHIVE`, a page at a
//! time (see [`ArchiveQuery`]), and expired by time.

use super::scan::{Scan, Scanned, scan};
use super::*;
use async_nats::jetstream::consumer;
use std::ops::ControlFlow;

/// Messages read from the server before they are decoded and filtered together
/// on a blocking thread.
const CHUNK: usize = 256;

/// One page of the archive. JetStream finds the start by itself (by time for
/// `since`, by sequence for a cursor); reading is async, and decoding and
/// filtering, the CPU work, run on blocking threads a chunk at a time.
pub(super) async fn query(inner: &Inner, q: ArchiveQuery) -> Result<ArchivePage, BusError> {
    let _slot = inner
        .archive_scans
        .acquire()
        .await
        .map_err(|_| BusError::Closed)?;
    let since = q.since_ms.filter(|&ms| ms > 0);
    // Sequences and times grow together: resume by sequence past the cursor, or by
    // time at `since` when that is later (a cursor from before the range).
    let resume = q
        .after
        .filter(|c| since.is_none_or(|s| c.time_ms as i64 >= s));
    let start = match (resume, since) {
        (Some(c), _) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: c.seq.saturating_add(1),
        },
        (None, Some(ms)) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map_err(|e| BusError::Invalid(format!("archive start {ms}: {e}")))?,
        },
        (None, None) => consumer::DeliverPolicy::All,
    };
    let since = q.since_ms.unwrap_or(i64::MIN);
    let until = q.until_ms.unwrap_or(i64::MAX);
    let mut state = PageState {
        page: ArchivePage::default(),
        meter: ScanMeter::new(q.budget),
        query: q,
        done: false,
    };
    if state.query.limit == 0 || until < since {
        return Ok(state.page);
    }
    let mut scan = Scan::open(
        &inner.archive,
        format!("{}.>", names::ARCHIVE_PREFIX),
        start,
        false,
        inner.config.request_timeout,
    )
    .await?;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut end = false;
        while chunk.len() < CHUNK {
            match scan.next().await? {
                Some(m) if m.time_ms > until => {
                    end = true;
                    break;
                }
                // A cursor resumes by sequence; `since` still holds.
                Some(m) if m.time_ms < since => continue,
                Some(m) => chunk.push(m),
                None => {
                    end = true;
                    break;
                }
            }
        }
        state = tokio::task::spawn_blocking(move || {
            state.take(chunk);
            state
        })
        .await
        .map_err(|e| BusError::Store(format!("archive task failed: {e}")))?;
        if state.done || end {
            return Ok(state.page);
        }
    }
}

/// A page being gathered, moved to a blocking thread with each chunk and back.
struct PageState {
    query: ArchiveQuery,
    page: ArchivePage,
    meter: ScanMeter,
    /// The limit was reached or the budget spent: `page.next` says where.
    done: bool,
}

impl PageState {
    fn take(&mut self, chunk: Vec<Scanned>) {
        for m in chunk {
            let here = ArchiveCursor {
                time_ms: m.time_ms.max(0) as u64,
                seq: m.seq,
            };
            match serde_json::from_slice::<Event>(&m.payload) {
                Ok(e) if (self.query.filter)(&e, &m.payload) => {
                    self.page.events.push(e);
                    if self.page.events.len() >= self.query.limit {
                        self.stop(here);
                        return;
                    }
                }
                Ok(_) => {}
                // One bad message must not hide the rest of the archive.
                Err(e) => tracing::error!(
                    seq = m.seq,
                    error = %e,
                    "skipped an unreadable archived event"
                ),
            }
            if !self.meter.read(m.payload.len()) {
                self.stop(here);
                return;
            }
        }
    }

    fn stop(&mut self, at: ArchiveCursor) {
        self.page.next = Some(at);
        self.done = true;
    }
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
