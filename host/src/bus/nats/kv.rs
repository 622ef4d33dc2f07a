//! Plugin state in the JetStream KV bucket `busbar-kv`, shared by every node.
//!
//! A key is `<plugin>.<key>`, each part escaped into the KV charset (see
//! [`super::names::kv_token`]). Increment and compare-and-swap read the entry
//! and write it back only if its revision is unchanged, retrying on a
//! conflict, so concurrent plugins on several nodes never lose an update.
//!
//! The [`KvBackend`] methods are synchronous because the runtime calls them
//! from inside a plugin call, which runs on tokio's blocking pool. Blocking
//! that thread on the async client (`Handle::block_on`) is what the pool is
//! for; from a runtime worker thread the call is first moved off it with
//! `block_in_place`, so it never stalls the executor.

use super::names;
use super::{BusError, store_err};
use crate::runtime::{KvBackend, KvError};
use async_nats::jetstream::{self, consumer, kv};
use bytes::Bytes;
use std::time::Duration;

/// Attempts of a revision-checked update before giving up under contention.
const MAX_CONFLICTS: usize = 64;

pub(super) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
) -> Result<kv::Store, BusError> {
    if let Ok(s) = js.get_key_value(bucket).await {
        return Ok(s);
    }
    // The stream a KV bucket is, created directly: the client's bucket creation
    // first queries account limits in a form nats-server 2.9 does not answer.
    let created = js
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.to_string()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await;
    if let Err(e) = created {
        return Err(store_err(&format!("creating the kv bucket {bucket}"), e));
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| store_err(&format!("opening the kv bucket {bucket}"), e))
}

/// The plugin kv backend on a JetStream KV bucket.
pub struct NatsKv {
    store: kv::Store,
    handle: tokio::runtime::Handle,
}

fn err(what: &str, e: impl std::fmt::Display) -> KvError {
    KvError::Store(format!("{what}: {e}"))
}

fn key(ns: &str, key: &str) -> String {
    format!("{}.{}", names::kv_token(ns), names::kv_token(key))
}

impl NatsKv {
    pub(super) fn new(store: kv::Store, handle: tokio::runtime::Handle) -> Self {
        NatsKv { store, handle }
    }

    fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.handle.block_on(f))
            }
            _ => self.handle.block_on(f),
        }
    }

    pub async fn get_async(&self, ns: &str, k: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.entry(ns, k).await?.map(|e| e.value.to_vec()))
    }

    async fn entry(&self, ns: &str, k: &str) -> Result<Option<kv::Entry>, KvError> {
        let e = self
            .store
            .entry(key(ns, k))
            .await
            .map_err(|e| err(&format!("reading {k:?} of {ns}"), e))?;
        Ok(e.filter(|e| e.operation == kv::Operation::Put))
    }

    pub async fn set_async(&self, ns: &str, k: &str, value: &[u8]) -> Result<(), KvError> {
        self.store
            .put(key(ns, k), Bytes::copy_from_slice(value))
            .await
            .map(|_| ())
            .map_err(|e| err(&format!("writing {k:?} of {ns}"), e))
    }

    pub async fn delete_async(&self, ns: &str, k: &str) -> Result<bool, KvError> {
        let existed = self.entry(ns, k).await?.is_some();
        if existed {
            self.store
                .delete(key(ns, k))
                .await
                .map_err(|e| err(&format!("deleting {k:?} of {ns}"), e))?;
        }
        Ok(existed)
    }

    /// Writes `value` if the entry is still at `revision` (`None`: absent or
    /// deleted). `Ok(false)`: someone else wrote first.
    async fn write_if(
        &self,
        ns: &str,
        k: &str,
        current: Option<&kv::Entry>,
        value: Bytes,
    ) -> Result<bool, KvError> {
        let full = key(ns, k);
        let what = format!("writing {k:?} of {ns}");
        match current {
            Some(e) => match self.store.update(&full, value, e.revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(err(&what, e)),
            },
            None => match self.store.create(&full, value).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(err(&what, e)),
            },
        }
    }

    pub async fn increment_async(&self, ns: &str, k: &str, delta: i64) -> Result<i64, KvError> {
        for _ in 0..MAX_CONFLICTS {
            let current = self.entry(ns, k).await?;
            let n = match &current {
                Some(e) => KvError::parse_counter(k, &e.value)?,
                None => 0,
            };
            let next = n.checked_add(delta).ok_or_else(|| {
                KvError::NotANumber(format!(
                    "incrementing {k:?} by {delta} overflows a 64-bit counter"
                ))
            })?;
            if self
                .write_if(ns, k, current.as_ref(), Bytes::from(next.to_string()))
                .await?
            {
                return Ok(next);
            }
        }
        Err(KvError::Store(format!(
            "incrementing {k:?} of {ns}: {MAX_CONFLICTS} concurrent writers won in a row; retry"
        )))
    }

    pub async fn compare_and_swap_async(
        &self,
        ns: &str,
        k: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        for _ in 0..MAX_CONFLICTS {
            let current = self.entry(ns, k).await?;
            if current.as_ref().map(|e| e.value.as_ref()) != expected {
                return Ok(false);
            }
            // A lost race here means the value changed under us; the next read
            // decides whether it still equals `expected`.
            if self
                .write_if(ns, k, current.as_ref(), Bytes::copy_from_slice(new))
                .await?
            {
                return Ok(true);
            }
        }
        Err(KvError::Store(format!(
            "compare-and-swap of {k:?} in {ns}: {MAX_CONFLICTS} concurrent writers won in a row; retry"
        )))
    }

    /// Reads the last entry of every key of `ns` (headers only) and keeps the
    /// live ones starting with `prefix`, sorted.
    pub async fn list_keys_async(
        &self,
        ns: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, KvError> {
        let what = format!("listing keys of {ns}");
        let ns_prefix = format!("$KV.{}.{}.", self.store.name, names::kv_token(ns));
        let mut keys = Vec::new();
        super::scan::scan(
            &self.store.stream,
            format!("{ns_prefix}>"),
            consumer::DeliverPolicy::LastPerSubject,
            true,
            Duration::from_secs(5),
            |m| {
                let deleted = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                if !deleted
                    && let Some(k) = m
                        .subject
                        .strip_prefix(ns_prefix.as_str())
                        .and_then(names::kv_untoken)
                    && k.starts_with(prefix)
                {
                    keys.push(k);
                }
                std::ops::ControlFlow::Continue(())
            },
        )
        .await
        .map_err(|e| err(&what, e))?;
        keys.sort();
        keys.truncate(limit as usize);
        Ok(keys)
    }
}

impl KvBackend for NatsKv {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.block(self.get_async(ns, key))
    }

    fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.block(self.set_async(ns, key, value))
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        self.block(self.delete_async(ns, key))
    }

    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        self.block(self.increment_async(ns, key, delta))
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.block(self.compare_and_swap_async(ns, key, expected, new))
    }

    fn list_keys(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        self.block(self.list_keys_async(ns, prefix, limit))
    }
}
