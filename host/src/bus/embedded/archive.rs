//! The archive: every archived event in the `events` table, keyed by (time
//! received, sequence), read a page at a time and expired by age.

use super::*;

impl Inner {
    /// Reads one page of the archive (blocking: run it on a blocking thread).
    fn archive_page(&self, q: &ArchiveQuery) -> Result<ArchivePage, BusError> {
        let mut lo = (q.since_ms.unwrap_or(0).max(0) as u64, 0);
        if let Some(c) = q.after {
            // Strictly after the cursor's key.
            let after = match c.seq.checked_add(1) {
                Some(seq) => (c.time_ms, seq),
                None => (c.time_ms.saturating_add(1), 0),
            };
            lo = lo.max(after);
        }
        let hi = (
            q.until_ms.map(|u| u.max(0) as u64).unwrap_or(u64::MAX),
            u64::MAX,
        );
        let mut page = ArchivePage::default();
        if lo > hi || q.limit == 0 {
            return Ok(page);
        }
        let rx = self.db.begin_read()?;
        let t = rx.open_table(EVENTS)?;
        let mut meter = ScanMeter::new(q.budget);
        for row in t.range(lo..=hi)? {
            let (key, value) = row?;
            let (time_ms, seq) = key.value();
            let bytes = value.value();
            let event: Event = serde_json::from_slice(bytes).map_err(|e| {
                BusError::Store(format!(
                    "archived event ({time_ms}, {seq}) is unreadable: {e}; \
                     query past it with since after {}",
                    ms_to_rfc3339(time_ms as i64)
                ))
            })?;
            let here = ArchiveCursor { time_ms, seq };
            if (q.filter)(&event, bytes) {
                page.events.push(event);
                if page.events.len() >= q.limit {
                    page.next = Some(here);
                    break;
                }
            }
            if !meter.read(bytes.len()) {
                page.next = Some(here);
                break;
            }
        }
        Ok(page)
    }
}

/// One page of the archive, with at most [`archive_scan_slots`] scans at once.
pub(super) async fn query(
    store: &EmbeddedBus,
    query: ArchiveQuery,
) -> Result<ArchivePage, BusError> {
    let _slot = store
        .inner
        .archive_scans
        .acquire()
        .await
        .map_err(|_| BusError::Closed)?;
    store
        .blocking(move |inner| inner.archive_page(&query))
        .await
}

/// Removes the events archived before `before_ms`; answers how many.
pub(super) async fn expire(store: &EmbeddedBus, before_ms: i64) -> Result<usize, BusError> {
    store
        .blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let n = {
                let mut t = tx.open_table(EVENTS)?;
                let hi = (before_ms.max(0) as u64, 0u64);
                let mut n = 0;
                t.retain_in(..hi, |_, _| {
                    n += 1;
                    false
                })?;
                n
            };
            tx.commit()?;
            Ok(n)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::super::testing::{all, by_source, event, open};
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn replayed_events_are_not_archived_and_archive_expires() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let mut replayed = event("to-a");
        replayed.replay_name = Some("r1".into());
        bus.publish(by_source(vec![event("x"), replayed]))
            .await
            .unwrap();
        let q = || ArchiveQuery::new(10, all());
        assert_eq!(bus.archive(q()).await.unwrap().events.len(), 1);
        assert_eq!(bus.expire_archive(now_ms() + 1).await.unwrap(), 1);
        assert!(bus.archive(q()).await.unwrap().events.is_empty());
    }

    /// Pages through `q`: the events' sources and how many pages it took.
    async fn every_page(bus: &EmbeddedBus, q: ArchiveQuery) -> (Vec<String>, usize) {
        let (mut sources, mut pages, mut reader) = (Vec::new(), 0, ArchivePages::new(q));
        while let Some(events) = reader.next(bus).await.unwrap() {
            pages += 1;
            sources.extend(events.into_iter().map(|e| e.source));
        }
        (sources, pages)
    }

    #[tokio::test]
    async fn archive_pages_stop_at_the_budget_and_resume_at_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        let sources: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        let events = sources.iter().map(|s| event(s)).collect();
        bus.publish(by_source(events)).await.unwrap();

        // A filter that takes nothing still answers after `budget.events` reads.
        let none: ArchiveFilter = Arc::new(|_: &Event, _: &[u8]| false);
        let mut q = ArchiveQuery::new(10, none);
        q.budget.events = 4;
        let page = bus.archive(q.clone()).await.unwrap();
        assert!(page.events.is_empty());
        assert!(
            page.next.is_some(),
            "the budget ran out before the archive did"
        );
        assert_eq!(every_page(&bus, q).await, (vec![], 7));

        // Limit and budget together reach every event once, in order.
        let mut q = ArchiveQuery::new(3, all());
        q.budget.events = 5;
        let (got, pages) = every_page(&bus, q).await;
        assert_eq!(got, sources);
        assert!(pages >= 9, "{pages}");

        // The filter sees the stored bytes too.
        let odd: ArchiveFilter =
            Arc::new(|_: &Event, json: &[u8]| json.windows(4).any(|w| w == b"\"s1\""));
        let page = bus.archive(ArchiveQuery::new(10, odd)).await.unwrap();
        assert_eq!(page.events.len(), 1);
    }

    #[tokio::test]
    async fn archive_time_ranges_are_key_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        bus.publish(by_source(vec![event("old")])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let since = now_ms();
        bus.publish(by_source(vec![event("new")])).await.unwrap();
        let until = now_ms();
        let mut q = ArchiveQuery::new(10, all());
        q.since_ms = Some(since);
        q.until_ms = Some(until);
        // A budget of one event is enough: the range starts at its first event.
        q.budget.events = 1;
        let page = bus.archive(q.clone()).await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].source, "new");
        // A cursor before `since` does not widen the range; one past its end empties it.
        q.after = Some(ArchiveCursor { time_ms: 0, seq: 0 });
        assert_eq!(bus.archive(q.clone()).await.unwrap().events.len(), 1);
        q.after = Some(ArchiveCursor {
            time_ms: until as u64,
            seq: u64::MAX,
        });
        let page = bus.archive(q).await.unwrap();
        assert!(page.events.is_empty() && page.next.is_none());
    }
}
