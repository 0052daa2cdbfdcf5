//! The client-side replica of the monitored tables, kept by applying `update2`/`update3`
//! table updates. Rows are typed by the schema, so a set column is always a `Value::Set`.

use std::collections::HashMap;

use serde_json::Value as Json;
use uuid::Uuid;

use super::error::OvsdbError;
use super::operation::{decode_row, Row};
use super::schema::DatabaseSchema;
use super::value::Value;

/// One row that changed: `old` is absent for an insert, `new` for a delete.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    pub table: String,
    pub uuid: Uuid,
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// A secondary index: rows of `table` by the string in `column`, or, with `key`, by the value of
/// that key in the map `column` (e.g. one `external_ids` key). Kept with every update, so a
/// lookup costs the same however many rows the table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub table: String,
    pub column: String,
    pub key: Option<String>,
}

impl IndexSpec {
    pub fn column(table: &str, column: &str) -> IndexSpec {
        IndexSpec {
            table: table.into(),
            column: column.into(),
            key: None,
        }
    }

    pub fn map_key(table: &str, column: &str, key: &str) -> IndexSpec {
        IndexSpec {
            table: table.into(),
            column: column.into(),
            key: Some(key.into()),
        }
    }

    fn value_of<'a>(&self, row: &'a Row) -> Option<&'a str> {
        let value = row.get(&self.column)?;
        match &self.key {
            None => value.as_str(),
            Some(key) => value
                .as_map()?
                .get(&super::value::Atom::String(key.clone()))
                .and_then(|atom| atom.as_str()),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Cache {
    tables: HashMap<String, HashMap<Uuid, Row>>,
    specs: Vec<IndexSpec>,
    /// Per spec: indexed value → rows holding it.
    indexes: Vec<HashMap<String, Vec<Uuid>>>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    pub fn with_indexes(specs: Vec<IndexSpec>) -> Cache {
        Cache {
            indexes: vec![HashMap::new(); specs.len()],
            specs,
            ..Cache::default()
        }
    }

    pub fn clear(&mut self) {
        self.tables.clear();
        for index in &mut self.indexes {
            index.clear();
        }
    }

    /// The rows whose indexed value is `value`, by an index given to [`Cache::with_indexes`]
    /// (none when there is no such index).
    pub fn find(&self, spec: &IndexSpec, value: &str) -> &[Uuid] {
        self.specs
            .iter()
            .position(|candidate| candidate == spec)
            .and_then(|position| self.indexes[position].get(value))
            .map_or(&[], Vec::as_slice)
    }

    fn unindex(specs: &[IndexSpec], indexes: &mut [HashMap<String, Vec<Uuid>>], table: &str, uuid: &Uuid, row: &Row) {
        for (spec, index) in specs.iter().zip(indexes.iter_mut()) {
            if spec.table != table {
                continue;
            }
            if let Some(value) = spec.value_of(row) {
                if let Some(uuids) = index.get_mut(value) {
                    uuids.retain(|candidate| candidate != uuid);
                    if uuids.is_empty() {
                        index.remove(value);
                    }
                }
            }
        }
    }

    fn index(specs: &[IndexSpec], indexes: &mut [HashMap<String, Vec<Uuid>>], table: &str, uuid: &Uuid, row: &Row) {
        for (spec, index) in specs.iter().zip(indexes.iter_mut()) {
            if spec.table != table {
                continue;
            }
            if let Some(value) = spec.value_of(row) {
                index.entry(value.to_string()).or_default().push(*uuid);
            }
        }
    }

    /// The rows of one table (empty when nothing is cached for it).
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables.get(table).into_iter().flat_map(|rows| rows.iter())
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table).and_then(|rows| rows.get(uuid))
    }

    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, HashMap::len)
    }

    pub fn tables(&self) -> impl Iterator<Item = &String> {
        self.tables.keys()
    }

    /// Applies `<table-updates2>` and returns what changed.
    pub fn apply_update2(&mut self, schema: &DatabaseSchema, updates: &Json) -> Result<Vec<RowChange>, OvsdbError> {
        let Some(tables) = updates.as_object() else {
            if updates.is_null() {
                return Ok(Vec::new());
            }
            return Err(OvsdbError::Protocol(format!(
                "table updates are not an object: {updates}"
            )));
        };
        let mut changes = Vec::new();
        for (table, rows) in tables {
            let rows = rows
                .as_object()
                .ok_or_else(|| OvsdbError::Protocol(format!("updates of {table} are not an object")))?;
            let (specs, indexes) = (&self.specs, &mut self.indexes);
            let cached = self.tables.entry(table.clone()).or_default();
            for (uuid_text, update) in rows {
                let uuid = Uuid::parse_str(uuid_text)
                    .map_err(|error| OvsdbError::Protocol(format!("bad row uuid {uuid_text:?}: {error}")))?;
                let (kind, body) = update
                    .as_object()
                    .and_then(|object| object.iter().next())
                    .ok_or_else(|| OvsdbError::Protocol(format!("empty row update for {table} {uuid}")))?;
                match kind.as_str() {
                    "initial" | "insert" => {
                        let mut row = decode_row(table, body, Some(schema))?;
                        if let Some(table_schema) = schema.tables.get(table) {
                            // Keep only schema columns (not `_version`), and fill the omitted defaults.
                            row.retain(|column, _| table_schema.columns.contains_key(column));
                            for (column, column_type) in &table_schema.columns {
                                row.entry(column.clone()).or_insert_with(|| column_type.default_value());
                            }
                        }
                        let old = cached.insert(uuid, row.clone());
                        if let Some(old) = &old {
                            Cache::unindex(specs, indexes, table, &uuid, old);
                        }
                        Cache::index(specs, indexes, table, &uuid, &row);
                        changes.push(RowChange {
                            table: table.clone(),
                            uuid,
                            old,
                            new: Some(row),
                        });
                    }
                    "modify" => {
                        let diff = body.as_object().ok_or_else(|| {
                            OvsdbError::Protocol(format!("modify of {table} {uuid} is not an object"))
                        })?;
                        let row = cached.entry(uuid).or_default();
                        let old = row.clone();
                        for (column, json_diff) in diff {
                            let diff_value = Value::from_json(json_diff)?;
                            // `_version` and other columns outside the schema are not kept.
                            if let Some(column_type) = schema.column_type(table, column) {
                                match row.get_mut(column) {
                                    Some(current) => current.apply_diff(diff_value, column_type),
                                    None => {
                                        row.insert(column.clone(), diff_value.normalize(column_type));
                                    }
                                }
                            }
                        }
                        let after = row.clone();
                        // `old` and `after` are the change's own copies: no further clone of a
                        // row that may hold a huge set (a switch's ports).
                        Cache::unindex(specs, indexes, table, &uuid, &old);
                        Cache::index(specs, indexes, table, &uuid, &after);
                        changes.push(RowChange {
                            table: table.clone(),
                            uuid,
                            old: Some(old),
                            new: Some(after),
                        });
                    }
                    "delete" => {
                        let old = cached.remove(&uuid);
                        if let Some(old) = &old {
                            Cache::unindex(specs, indexes, table, &uuid, old);
                        }
                        changes.push(RowChange {
                            table: table.clone(),
                            uuid,
                            old,
                            new: None,
                        });
                    }
                    other => return Err(OvsdbError::Protocol(format!("unknown row update {other:?}"))),
                }
            }
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::parse(&json!({"name": "T", "tables": {"A": {"columns": {
            "name": {"type": "string"},
            "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
            "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
        }}}}))
        .unwrap()
    }

    #[test]
    fn insert_modify_delete() {
        let schema = schema();
        let mut cache = Cache::new();
        let uuid = Uuid::new_v4();
        let id = uuid.to_string();
        cache
            .apply_update2(
                &schema,
                &json!({"A": {id.clone(): {"insert": {"name": "a", "tags": "x", "ids": ["map", [["k", "v"]]]}}}}),
            )
            .unwrap();
        assert_eq!(cache.row("A", &uuid).unwrap()["tags"], Value::set(["x"]));
        let changes = cache
            .apply_update2(&schema, &json!({"A": {id.clone(): {"modify": {"tags": ["set", ["x", "y"]], "ids": ["map", [["k", "v"], ["n", "m"]]]}}}}))
            .unwrap();
        let row = cache.row("A", &uuid).unwrap();
        assert_eq!(row["tags"], Value::set(["y"]));
        assert_eq!(row["ids"], Value::map([("n", "m")]));
        assert_eq!(changes[0].old.as_ref().unwrap()["tags"], Value::set(["x"]));
        cache
            .apply_update2(&schema, &json!({"A": {id: {"delete": null}}}))
            .unwrap();
        assert_eq!(cache.len("A"), 0);
    }
}
