//! API rules and buses: JSON records in the `rules` table (by "bus/name") and
//! the `buses` table (by name), each write its own small transaction. This node
//! is the only writer, so `watch_rules` keeps the trait's default: nothing to report.

use super::*;
use redb::ReadableTable;

/// Both tables: a JSON record by name.
type Records = TableDefinition<'static, &'static str, &'static [u8]>;

pub(super) async fn put_rule(store: &EmbeddedBus, rule: &Rule) -> Result<(), BusError> {
    put(
        store,
        RULES,
        format!("{}/{}", rule.bus, rule.name),
        to_json(rule)?,
    )
    .await
}

pub(super) async fn delete_rule(
    store: &EmbeddedBus,
    bus: &str,
    name: &str,
) -> Result<bool, BusError> {
    delete(store, RULES, format!("{bus}/{name}")).await
}

pub(super) async fn rules(store: &EmbeddedBus) -> Result<Vec<Rule>, BusError> {
    list(store, RULES).await
}

pub(super) async fn put_bus(store: &EmbeddedBus, bus: &BusInfo) -> Result<(), BusError> {
    put(store, BUSES, bus.name.clone(), to_json(bus)?).await
}

pub(super) async fn delete_bus(store: &EmbeddedBus, name: &str) -> Result<bool, BusError> {
    delete(store, BUSES, name.to_string()).await
}

pub(super) async fn buses(store: &EmbeddedBus) -> Result<Vec<BusInfo>, BusError> {
    list(store, BUSES).await
}

async fn put(
    store: &EmbeddedBus,
    table: Records,
    key: String,
    bytes: Vec<u8>,
) -> Result<(), BusError> {
    store
        .blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            tx.open_table(table)?
                .insert(key.as_str(), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
}

/// True when the record existed.
async fn delete(store: &EmbeddedBus, table: Records, key: String) -> Result<bool, BusError> {
    store
        .blocking(move |inner| {
            let tx = inner.db.begin_write()?;
            let existed = tx.open_table(table)?.remove(key.as_str())?.is_some();
            tx.commit()?;
            Ok(existed)
        })
        .await
}

async fn list<T>(store: &EmbeddedBus, table: Records) -> Result<Vec<T>, BusError>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    store
        .blocking(move |inner| {
            let rx = inner.db.begin_read()?;
            let t = rx.open_table(table)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(json(row?.1.value())?);
            }
            Ok(out)
        })
        .await
}
