//! Dead letters: the `dead_letters` table, by id (a number of the store's
//! sequence, so ids increase). The committer writes them (a delivery given up
//! on, or an event a handler stopped); this file lists, redrives and purges them.

use super::*;
use redb::{ReadableTable, ReadableTableMetadata};

pub(super) async fn list(
    store: &EmbeddedBus,
    after: u64,
    limit: usize,
) -> Result<Vec<DeadLetter>, BusError> {
    store
        .blocking(move |inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(DEAD)?;
            let mut out = Vec::new();
            for row in t.range(after.saturating_add(1)..)?.take(limit) {
                out.push(json(row?.1.value())?);
            }
            Ok(out)
        })
        .await
}

pub(super) async fn get(store: &EmbeddedBus, id: u64) -> Result<Option<DeadLetter>, BusError> {
    store
        .blocking(move |inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(DEAD)?;
            t.get(id)?.map(|v| json(v.value())).transpose()
        })
        .await
}

pub(super) async fn redrive(store: &EmbeddedBus, ids: Option<&[u64]>) -> Result<usize, BusError> {
    let ids = ids.map(|i| i.to_vec());
    store
        .blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let mut redriven = Vec::new();
            {
                let mut dead = tx.open_table(DEAD)?;
                let mut queue = tx.open_table(QUEUE)?;
                let letters: Vec<DeadLetter> = match &ids {
                    Some(ids) => {
                        let mut v = Vec::new();
                        for id in ids {
                            if let Some(row) = dead.get(*id)? {
                                v.push(json(row.value())?);
                            }
                        }
                        v
                    }
                    None => {
                        let mut v = Vec::new();
                        for row in dead.iter()? {
                            v.push(json(row?.1.value())?);
                        }
                        v
                    }
                };
                let now = inner.config.clock.now_ms();
                for dl in letters {
                    dead.remove(dl.id)?;
                    let d = Delivery {
                        id: dl.delivery_id,
                        seq: inner.next_seq(),
                        queue: crate::rules::queue_key(&dl.bus, &dl.rule, &dl.target),
                        rule: dl.rule,
                        target: dl.target,
                        plugin: dl.plugin,
                        event: dl.event,
                        attempts: 0,
                        created_ms: now,
                        due_ms: now,
                        last_error: Some(format!("redriven after: {}", dl.last_error)),
                    };
                    queue.insert((d.queue.as_str(), d.seq), to_json(&d)?.as_slice())?;
                    redriven.push(d);
                }
            }
            tx.open_table(META)?
                .insert("seq", inner.seq.load(Ordering::SeqCst))?;
            tx.commit()?;
            let n = redriven.len();
            inner.dead_count.fetch_sub(n, Ordering::Relaxed);
            for d in redriven {
                inner.enqueue(d);
            }
            Ok(n)
        })
        .await
}

pub(super) async fn purge(store: &EmbeddedBus, ids: Option<&[u64]>) -> Result<usize, BusError> {
    let ids = ids.map(|i| i.to_vec());
    store
        .blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let n = {
                let mut dead = tx.open_table(DEAD)?;
                match ids {
                    Some(ids) => {
                        let mut n = 0;
                        for id in ids {
                            n += dead.remove(id)?.is_some() as usize;
                        }
                        n
                    }
                    None => {
                        let n = dead.len()? as usize;
                        dead.retain(|_, _| false)?;
                        n
                    }
                }
            };
            tx.commit()?;
            inner.dead_count.fetch_sub(n, Ordering::Relaxed);
            Ok(n)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::super::testing::{by_source, event, open, take};
    use super::*;

    #[tokio::test]
    async fn dead_letters_list_redrive_and_purge() {
        let dir = tempfile::tempdir().unwrap();
        let bus = open(dir.path());
        bus.publish(by_source(vec![event("to-a"), event("to-a")]))
            .await
            .unwrap();
        for _ in 0..2 {
            let mut d = take(&bus, "default/r/a").await;
            d.attempts = 3;
            bus.settle(
                d,
                Settle::DeadLetter {
                    reason: "rejected: bad".into(),
                    keep: true,
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(bus.dead_letter_count(), 2);
        let dl = bus.dead_letters(0, 10).await.unwrap();
        assert_eq!(dl.len(), 2);
        assert_eq!(dl[0].attempts, 3);
        assert_eq!(dl[0].last_error, "rejected: bad");
        assert_eq!(bus.dead_letter(dl[0].id).await.unwrap().unwrap(), dl[0]);
        assert_eq!(bus.redrive(Some(&[dl[0].id])).await.unwrap(), 1);
        let d = take(&bus, "default/r/a").await;
        assert_eq!(d.id, dl[0].delivery_id);
        assert_eq!(d.attempts, 0);
        assert_eq!(bus.purge_dead_letters(None).await.unwrap(), 1);
        assert_eq!(bus.dead_letter_count(), 0);
        drop(bus);
        let bus = open(dir.path());
        assert_eq!(bus.dead_letter_count(), 0);
    }
}
