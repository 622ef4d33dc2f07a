//! Plugin state: the [`KvBackend`] trait the `kv` import is served from, and
//! its errors. The stores live with the bus backends: `RedbKv` in
//! `bus/embedded/kv.rs`, `NatsKv` in `bus/nats/kv.rs`.
//!
//! The namespace is always the plugin's name, chosen by the host, so two
//! plugins never see each other's keys. Counters are stored as decimal ASCII,
//! as the WIT contract promises (`get` on a counter returns e.g. `"42"`).

/// Why a kv operation failed; mirrors the WIT `kv-error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("not a number: {0}")]
    NotANumber(String),
    #[error("store error: {0}")]
    Store(String),
}

impl KvError {
    /// Parses a counter as every backend stores it (decimal text); `key` names it
    /// in the error.
    pub fn parse_counter(key: &str, bytes: &[u8]) -> Result<i64, KvError> {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                KvError::NotANumber(format!("the value under {key:?} is not a decimal integer"))
            })
    }
}

/// A durable key-value store partitioned by namespace (the plugin name).
pub trait KvBackend: Send + Sync + 'static {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// True when the key existed.
    fn delete(&self, ns: &str, key: &str) -> Result<bool, KvError>;
    /// Atomically adds `delta` (a missing key counts as 0) and returns the new value.
    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Sets `new` only if the current value equals `expected` (`None`: absent).
    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError>;
    /// Keys of `ns` starting with `prefix`, in byte order, at most `limit`.
    fn list_keys(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvError>;
}
