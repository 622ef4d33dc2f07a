//! `busbar:plugin/kv`: the plugin's private store. The namespace is the
//! plugin name, taken from the host side, never from the guest.

use super::State;
use super::bindings::busbar::plugin::kv::{Host, KvError};
use crate::runtime::kv::KvError as BackendError;

/// Limits on what one plugin can put in the store per key.
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// `list-keys` returns at most this many keys whatever `limit` asks for.
pub const MAX_LIST: u32 = 1000;

fn convert(e: BackendError) -> KvError {
    match e {
        BackendError::TooLarge(m) => KvError::TooLarge(m),
        BackendError::NotANumber(m) => KvError::NotANumber(m),
        BackendError::Store(m) => KvError::Store(m),
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::TooLarge(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::TooLarge(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

impl Host for State {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_key(&key)?;
        self.host.kv.get(&self.host.name, &key).map_err(convert)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        check_key(&key)?;
        check_value(&value)?;
        self.host
            .kv
            .set(&self.host.name, &key, &value)
            .map_err(convert)
    }

    fn delete(&mut self, key: String) -> Result<bool, KvError> {
        check_key(&key)?;
        self.host.kv.delete(&self.host.name, &key).map_err(convert)
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, KvError> {
        check_key(&key)?;
        self.host
            .kv
            .increment(&self.host.name, &key, delta)
            .map_err(convert)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, KvError> {
        check_key(&key)?;
        check_value(&new)?;
        self.host
            .kv
            .compare_and_swap(&self.host.name, &key, expected.as_deref(), &new)
            .map_err(convert)
    }

    fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, KvError> {
        check_key(&prefix)?;
        self.host
            .kv
            .list_keys(&self.host.name, &prefix, limit.min(MAX_LIST))
            .map_err(convert)
    }
}
