//! API rules and buses in the KV bucket `busbar-rules`, and the watch that
//! keeps every node's rule set in step with it: a rule put through node A is
//! routed by node B as soon as B's watch sees the entry.
//!
//! Keys: `rule.<bus>.<name>` and `bus.<name>`, parts escaped into the KV charset.

use super::names::{kv_token, kv_untoken};
use super::*;
use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::mpsc;

pub(super) fn rule_key(bus: &str, name: &str) -> String {
    format!("rule.{}.{}", kv_token(bus), kv_token(name))
}

pub(super) fn bus_key(name: &str) -> String {
    format!("bus.{}", kv_token(name))
}

pub(super) async fn put_rule(store: &kv::Store, rule: &Rule) -> Result<(), BusError> {
    let bytes = serde_json::to_vec(rule).map_err(|e| BusError::Store(e.to_string()))?;
    store
        .put(rule_key(&rule.bus, &rule.name), bytes.into())
        .await
        .map(|_| ())
        .map_err(|e| store_err(&format!("storing rule {}", rule.name), e))
}

pub(super) async fn put_bus(store: &kv::Store, bus: &BusInfo) -> Result<(), BusError> {
    let bytes = serde_json::to_vec(bus).map_err(|e| BusError::Store(e.to_string()))?;
    store
        .put(bus_key(&bus.name), bytes.into())
        .await
        .map(|_| ())
        .map_err(|e| store_err(&format!("storing bus {}", bus.name), e))
}

pub(super) async fn delete(store: &kv::Store, key: &str) -> Result<bool, BusError> {
    let existed = store
        .entry(key)
        .await
        .map_err(|e| store_err(&format!("reading {key}"), e))?
        .is_some_and(|e| e.operation == kv::Operation::Put);
    if existed {
        store
            .delete(key)
            .await
            .map_err(|e| store_err(&format!("deleting {key}"), e))?;
    }
    Ok(existed)
}

/// Every live value under `<kind>.`.
pub(super) async fn list<T: serde::de::DeserializeOwned>(
    store: &kv::Store,
    kind: &str,
) -> Result<Vec<T>, BusError> {
    let mut keys = store
        .keys()
        .await
        .map_err(|e| store_err("listing the rules bucket", e))?;
    let prefix = format!("{kind}.");
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| store_err("listing the rules bucket", e))?;
        if !k.starts_with(&prefix) {
            continue;
        }
        if let Some(v) = store
            .get(&k)
            .await
            .map_err(|e| store_err(&format!("reading {k}"), e))?
        {
            match serde_json::from_slice(&v) {
                Ok(t) => out.push(t),
                Err(e) => {
                    tracing::error!(key = %k, error = %e, "skipping an unreadable stored rule or bus")
                }
            }
        }
    }
    Ok(out)
}

fn change_of(entry: &kv::Entry) -> Option<StoredChange> {
    let mut parts = entry.key.split('.');
    let kind = parts.next()?;
    let put = entry.operation == kv::Operation::Put;
    match kind {
        "rule" => {
            let bus = kv_untoken(parts.next()?)?;
            let name = kv_untoken(parts.next()?)?;
            if put {
                serde_json::from_slice(&entry.value)
                    .ok()
                    .map(StoredChange::Rule)
            } else {
                Some(StoredChange::RuleDeleted { bus, name })
            }
        }
        "bus" => {
            let name = kv_untoken(parts.next()?)?;
            if put {
                serde_json::from_slice(&entry.value)
                    .ok()
                    .map(StoredChange::Bus)
            } else {
                Some(StoredChange::BusDeleted(name))
            }
        }
        _ => None,
    }
}

/// Streams the current entries, then every change, until the bus closes. The
/// watch is restarted after an error (a NATS restart) from the current
/// entries again; applying an entry twice is harmless.
pub(super) async fn watch(
    store: &kv::Store,
    mut closed: tokio::sync::watch::Receiver<bool>,
) -> Result<mpsc::Receiver<StoredChange>, BusError> {
    let first = store
        .watch_with_history(">")
        .await
        .map_err(|e| store_err("watching the rules bucket", e))?;
    let (tx, rx) = mpsc::channel(1024);
    let store = store.clone();
    tokio::spawn(async move {
        let mut watch = Some(first);
        loop {
            if let Some(mut w) = watch.take() {
                loop {
                    let next = tokio::select! {
                        n = w.next() => n,
                        _ = closed.changed() => return,
                    };
                    match next {
                        Some(Ok(entry)) => {
                            if let Some(c) = change_of(&entry)
                                && tx.send(c).await.is_err()
                            {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "rules watch interrupted; restarting it");
                            break;
                        }
                        None => break,
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = closed.changed() => return,
            }
            match store.watch_with_history(">").await {
                Ok(w) => watch = Some(w),
                Err(e) => tracing::debug!(error = %e, "rules watch not restarted yet"),
            }
        }
    });
    Ok(rx)
}
