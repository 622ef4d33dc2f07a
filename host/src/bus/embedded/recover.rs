//! Reading the store back at open: every table is created, the sequence
//! counter and the dead-letter count are restored, and the pending deliveries
//! refill the in-memory queues, so deliveries taken but never settled before a
//! crash or a restart are delivered again.

use super::*;
use redb::{ReadableTable, ReadableTableMetadata};

impl Inner {
    /// Creates the tables, restores the sequence counter and refills the in-memory queues.
    pub(super) fn recover(&self) -> Result<(), BusError> {
        let tx = self.db.begin_write()?;
        {
            tx.open_table(EVENTS)?;
            tx.open_table(QUEUE)?;
            tx.open_table(DEAD)?;
            tx.open_table(RULES)?;
            tx.open_table(BUSES)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        let rx = self.db.begin_read()?;
        let meta = rx.open_table(META)?;
        let seq = meta.get("seq")?.map(|v| v.value()).unwrap_or(0);
        self.seq.store(seq, Ordering::SeqCst);
        let dead = rx.open_table(DEAD)?;
        self.dead_count
            .store(dead.len()? as usize, Ordering::SeqCst);
        let queue = rx.open_table(QUEUE)?;
        let mut n = 0;
        for row in queue.iter()? {
            let (_, v) = row?;
            match serde_json::from_slice::<Delivery>(v.value()) {
                Ok(d) => {
                    self.enqueue(d);
                    n += 1;
                }
                Err(e) => tracing::error!(error = %e, "skipping an unreadable delivery record"),
            }
        }
        if n > 0 {
            tracing::info!(
                deliveries = n,
                "recovered pending deliveries from the store"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{by_source, event, open, take};
    use super::*;

    #[tokio::test]
    async fn unsettled_deliveries_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let bus = open(dir.path());
            bus.publish(by_source(vec![event("to-a")])).await.unwrap();
            // Taken but never settled: as if the process died during the plugin call.
            take(&bus, "default/r/a").await.id
        };
        let bus = open(dir.path());
        let d = take(&bus, "default/r/a").await;
        assert_eq!(d.id, id, "the delivery id is stable across the restart");
        bus.settle(
            d,
            Settle::Ack {
                new_events: vec![],
                stopped: vec![],
            },
        )
        .await
        .unwrap();
        drop(bus);
        let bus = open(dir.path());
        assert!(bus.queue_stats().iter().all(|q| q.backlog == 0));
    }
}
