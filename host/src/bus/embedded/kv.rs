//! Plugin state on redb: [`RedbKv`], the embedded [`KvBackend`], in the store's
//! own file beside its other tables (the JetStream one is `bus/nats/kv.rs`).
//!
//! The namespace is always the plugin's name, chosen by the host, so two
//! plugins never see each other's keys. Counters are stored as decimal ASCII,
//! as the WIT contract promises (`get` on a counter returns e.g. `"42"`).

use crate::runtime::{KvBackend, KvError};
use redb::{ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;

/// The only table this module touches in the shared database file.
const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_kv");

/// [`KvBackend`] on a redb database that may be shared with the rest of the
/// embedded store: it uses only the `plugin_kv` table.
pub struct RedbKv {
    db: Arc<redb::Database>,
}

fn store_err(e: impl std::fmt::Display) -> KvError {
    KvError::Store(e.to_string())
}

impl RedbKv {
    /// Uses an already open database (the embedded store's file).
    pub fn new(db: Arc<redb::Database>) -> anyhow::Result<Self> {
        // Create the table up front so readers never see "table does not exist".
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        Ok(RedbKv { db })
    }

    /// Opens (or creates) a database file of its own.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = redb::Database::create(path)
            .map_err(|e| anyhow::anyhow!("cannot open the kv database {}: {e}", path.display()))?;
        RedbKv::new(Arc::new(db))
    }

    /// Runs `f` in one write transaction and commits when it returns `Ok`.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut redb::Table<(&str, &str), &[u8]>) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        let txn = self.db.begin_write().map_err(store_err)?;
        let out = {
            let mut table = txn.open_table(TABLE).map_err(store_err)?;
            f(&mut table)?
        };
        txn.commit().map_err(store_err)?;
        Ok(out)
    }
}

impl KvBackend for RedbKv {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(TABLE).map_err(store_err)?;
        Ok(table
            .get((ns, key))
            .map_err(store_err)?
            .map(|v| v.value().to_vec()))
    }

    fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.write(|t| {
            t.insert((ns, key), value).map_err(store_err)?;
            Ok(())
        })
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, KvError> {
        self.write(|t| Ok(t.remove((ns, key)).map_err(store_err)?.is_some()))
    }

    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        self.write(|t| {
            let current = match t.get((ns, key)).map_err(store_err)? {
                Some(v) => KvError::parse_counter(key, v.value())?,
                None => 0,
            };
            let next = current.checked_add(delta).ok_or_else(|| {
                KvError::NotANumber(format!(
                    "incrementing {key:?} by {delta} overflows a 64-bit counter"
                ))
            })?;
            t.insert((ns, key), next.to_string().as_bytes())
                .map_err(store_err)?;
            Ok(next)
        })
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.write(|t| {
            let matches = {
                let current = t.get((ns, key)).map_err(store_err)?;
                current.as_ref().map(|v| v.value()) == expected
            };
            if matches {
                t.insert((ns, key), new).map_err(store_err)?;
            }
            Ok(matches)
        })
    }

    fn list_keys(&self, ns: &str, prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        let txn = self.db.begin_read().map_err(store_err)?;
        let table = txn.open_table(TABLE).map_err(store_err)?;
        let mut keys = Vec::new();
        // Tuple keys sort by namespace, then key, so the matches are one contiguous run.
        for entry in table.range((ns, prefix)..).map_err(store_err)? {
            if keys.len() >= limit as usize {
                break;
            }
            let (k, _) = entry.map_err(store_err)?;
            let (entry_ns, key) = k.value();
            if entry_ns != ns || !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> (tempfile::TempDir, RedbKv) {
        let dir = tempfile::tempdir().unwrap();
        let kv = RedbKv::open(&dir.path().join("kv.redb")).unwrap();
        (dir, kv)
    }

    #[test]
    fn namespaces_are_separate() {
        let (_d, kv) = kv();
        kv.set("a", "k", b"1").unwrap();
        assert_eq!(kv.get("a", "k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.get("b", "k").unwrap(), None);
        assert!(!kv.delete("b", "k").unwrap());
        assert!(kv.delete("a", "k").unwrap());
        assert_eq!(kv.get("a", "k").unwrap(), None);
    }

    #[test]
    fn counters_are_decimal_text() {
        let (_d, kv) = kv();
        assert_eq!(kv.increment("p", "n", 5).unwrap(), 5);
        assert_eq!(kv.increment("p", "n", -7).unwrap(), -2);
        assert_eq!(kv.get("p", "n").unwrap().as_deref(), Some(&b"-2"[..]));
        kv.set("p", "s", b"hello").unwrap();
        let err = kv.increment("p", "s", 1).unwrap_err();
        assert!(
            matches!(&err, KvError::NotANumber(m) if m.contains("\"s\"")),
            "{err}"
        );
        kv.set("p", "max", i64::MAX.to_string().as_bytes()).unwrap();
        assert!(matches!(
            kv.increment("p", "max", 1),
            Err(KvError::NotANumber(_))
        ));
    }

    #[test]
    fn compare_and_swap_checks_the_current_value() {
        let (_d, kv) = kv();
        assert!(kv.compare_and_swap("p", "k", None, b"1").unwrap());
        assert!(!kv.compare_and_swap("p", "k", None, b"2").unwrap());
        assert!(!kv.compare_and_swap("p", "k", Some(b"0"), b"2").unwrap());
        assert!(kv.compare_and_swap("p", "k", Some(b"1"), b"2").unwrap());
        assert_eq!(kv.get("p", "k").unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn list_keys_by_prefix_stays_in_namespace() {
        let (_d, kv) = kv();
        for k in ["user:2", "user:1", "order:1", "user:3"] {
            kv.set("p", k, b"x").unwrap();
        }
        kv.set("q", "user:0", b"x").unwrap();
        kv.set("pp", "user:9", b"x").unwrap();
        assert_eq!(
            kv.list_keys("p", "user:", 10).unwrap(),
            ["user:1", "user:2", "user:3"]
        );
        assert_eq!(kv.list_keys("p", "user:", 2).unwrap(), ["user:1", "user:2"]);
        assert_eq!(kv.list_keys("p", "", 10).unwrap().len(), 4);
        assert!(kv.list_keys("p", "zzz", 10).unwrap().is_empty());
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        RedbKv::open(&path).unwrap().increment("p", "n", 3).unwrap();
        assert_eq!(
            RedbKv::open(&path).unwrap().increment("p", "n", 1).unwrap(),
            4
        );
    }
}
