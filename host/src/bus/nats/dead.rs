//! Dead letters in `BUSBAR_DLQ`: written by whichever node gave up on a
//! delivery, listed, redriven and purged from any node. A dead letter's id is
//! its stream sequence, so ids are unique cluster-wide and increase.

use super::scan::{Scanned, scan};
use super::*;
use async_nats::jetstream::consumer;
use std::ops::ControlFlow;

impl Inner {
    /// Stores one dead letter and waits for the server to confirm it.
    pub(super) async fn write_dead_letter(
        &self,
        d: &Delivery,
        reason: &str,
        msg_id: &str,
    ) -> Result<(), BusError> {
        // The real id is the stream sequence, known only once stored.
        let dl = DeadLetter::of(d, 0, reason, self.config.clock.now_ms());
        let payload = serde_json::to_vec(&dl).map_err(|e| BusError::Store(e.to_string()))?;
        let out = Outgoing {
            event: 0,
            subject: names::dlq_subject(&dl.bus),
            msg_id: msg_id.to_string(),
            headers: HeaderMap::new(),
            payload: payload.into(),
        };
        for (_, r) in self.send_all(vec![out]).await {
            r.map_err(|e| {
                BusError::Store(format!(
                    "writing the dead letter of delivery {}: {}",
                    d.id,
                    e.message()
                ))
            })?;
        }
        self.dead_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn letter(seq: u64, payload: &[u8]) -> Result<DeadLetter, BusError> {
    let mut dl: DeadLetter = serde_json::from_slice(payload)
        .map_err(|e| BusError::Store(format!("dead letter {seq} is unreadable: {e}")))?;
    dl.id = seq;
    Ok(dl)
}

pub(super) async fn list(
    inner: &Inner,
    after: u64,
    limit: usize,
) -> Result<Vec<DeadLetter>, BusError> {
    let mut out = Vec::new();
    let mut err = None;
    if limit == 0 {
        return Ok(out);
    }
    scan(
        &inner.dlq,
        format!("{}.>", names::DLQ_PREFIX),
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after.saturating_add(1),
        },
        false,
        inner.config.request_timeout,
        |m: Scanned| {
            match letter(m.seq, &m.payload) {
                Ok(dl) => out.push(dl),
                Err(e) => err = Some(e),
            }
            if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .await?;
    if let Some(e) = err {
        tracing::error!(error = %e, "skipped an unreadable dead letter");
    }
    Ok(out)
}

pub(super) async fn get(inner: &Inner, id: u64) -> Result<Option<DeadLetter>, BusError> {
    if id == 0 {
        return Ok(None);
    }
    match inner.dlq.get_raw_message(id).await {
        Ok(m) => letter(id, &m.payload).map(Some),
        Err(e)
            if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound =>
        {
            Ok(None)
        }
        Err(e) => Err(store_err(&format!("reading dead letter {id}"), e)),
    }
}

async fn selected(inner: &Inner, ids: Option<&[u64]>) -> Result<Vec<DeadLetter>, BusError> {
    match ids {
        Some(ids) => {
            let mut v = Vec::new();
            for id in ids {
                if let Some(dl) = get(inner, *id).await? {
                    v.push(dl);
                }
            }
            Ok(v)
        }
        None => list(inner, 0, usize::MAX).await,
    }
}

/// Each letter goes back to its queue with its delivery id (the plugin's
/// idempotency key) and zero attempts, then leaves the dead-letter stream.
pub(super) async fn redrive(inner: &Inner, ids: Option<&[u64]>) -> Result<usize, BusError> {
    let letters = selected(inner, ids).await?;
    let mut n = 0;
    for dl in letters {
        let payload = serde_json::to_vec(&dl.event).map_err(|e| BusError::Store(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(H_DELIVERY, dl.delivery_id.as_str());
        headers.insert(H_PLUGIN, names::token(&dl.plugin).as_str());
        let out = Outgoing {
            event: 0,
            subject: names::queue_subject(&dl.bus, &dl.rule, &dl.target),
            // Unique per dead letter: redriving the same letter twice within the
            // duplicate window (a retried call) queues it once.
            msg_id: format!("r:{}:{}", dl.id, dl.delivery_id),
            headers,
            payload: payload.into(),
        };
        for (_, r) in inner.send_all(vec![out]).await {
            r.map_err(|e| {
                BusError::Store(format!("redriving dead letter {}: {}", dl.id, e.message()))
            })?;
        }
        inner
            .queues
            .add_backlog(&crate::rules::queue_key(&dl.bus, &dl.rule, &dl.target), 1);
        if inner
            .dlq
            .delete_message(dl.id)
            .await
            .map_err(|e| store_err(&format!("removing redriven dead letter {}", dl.id), e))?
        {
            inner.dead_count.fetch_sub(1, Ordering::Relaxed);
            n += 1;
        }
    }
    Ok(n)
}

pub(super) async fn purge(inner: &Inner, ids: Option<&[u64]>) -> Result<usize, BusError> {
    match ids {
        Some(ids) => {
            let mut n = 0;
            for id in ids {
                let gone = match inner.dlq.delete_message(*id).await {
                    Ok(gone) => gone,
                    Err(e) if e.to_string().contains("no message found") => false,
                    Err(e) => return Err(store_err(&format!("deleting dead letter {id}"), e)),
                };
                if gone {
                    inner.dead_count.fetch_sub(1, Ordering::Relaxed);
                    n += 1;
                }
            }
            Ok(n)
        }
        None => {
            let r = inner
                .dlq
                .purge()
                .await
                .map_err(|e| store_err("purging the dead letters", e))?;
            inner.dead_count.store(0, Ordering::Relaxed);
            Ok(r.purged as usize)
        }
    }
}
