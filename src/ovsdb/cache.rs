//! The client-side replica of the monitored tables, kept by applying `update2`/`update3`
//! table updates. Rows are typed by the schema, so a set column is always a `Value::Set`.
//!
//! Rows are shared (`Arc<Row>`) between the cache and the [`RowChange`]s it reports: an insert
//! costs one row, a modify one copy of the changed row (the old version moves into the change
//! instead of being cloned), so a switch's huge `ports` set is copied once per port insert, not
//! three times. With [`Cache::set_columns`] only the monitored columns are kept (and defaulted).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

use compact_str::CompactString;
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
    /// The row before the change, shared with whoever else still holds that version.
    pub old: Option<Arc<Row>>,
    /// The row after the change, shared with the cache.
    pub new: Option<Arc<Row>>,
}

/// A secondary index: rows of `table` by the string in `column`, or, with `key`, by the value of
/// that key in the map `column` (e.g. one `external_ids` key). Kept with every update, so a
/// lookup costs the same however many rows the table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub table: String,
    pub column: String,
    pub key: Option<String>,
    /// Where rows without the map `key` are indexed (`None`: they are not).
    pub absent: Option<String>,
    /// Rows whose indexed value is this one are left out (e.g. the daemon's own rows, most of
    /// the table, from an index of the others).
    pub except: Option<String>,
}

impl IndexSpec {
    pub fn column(table: &str, column: &str) -> IndexSpec {
        IndexSpec {
            table: table.into(),
            column: column.into(),
            key: None,
            absent: None,
            except: None,
        }
    }

    pub fn map_key(table: &str, column: &str, key: &str) -> IndexSpec {
        IndexSpec {
            table: table.into(),
            column: column.into(),
            key: Some(key.into()),
            absent: None,
            except: None,
        }
    }

    /// The rows whose map `column` does not hold `except` at `key`, by that key's value (`absent`
    /// for a row without the key): e.g. every port without the daemon's vendor mark, which
    /// [`Cache::indexed`] then lists without walking the table.
    pub fn map_key_except(table: &str, column: &str, key: &str, except: &str, absent: &str) -> IndexSpec {
        IndexSpec {
            absent: Some(absent.into()),
            except: Some(except.into()),
            ..IndexSpec::map_key(table, column, key)
        }
    }

    fn value_of<'a>(&'a self, row: &'a Row) -> Option<&'a str> {
        let value = row.get(&self.column);
        let indexed = match &self.key {
            None => value?.as_str(),
            Some(key) => match value.and_then(Value::as_map).and_then(|map| map.get_str(key)) {
                Some(atom) => atom.as_str(),
                None => self.absent.as_deref(),
            },
        };
        indexed.filter(|indexed| self.except.as_deref() != Some(*indexed))
    }
}

/// The rows holding one indexed value: one inline (a name or an owner is on one row), more in
/// a vector, so a unique index costs no allocation per row.
#[derive(Debug, Clone)]
enum Bucket {
    One(Uuid),
    Many(Vec<Uuid>),
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket::Many(Vec::new())
    }
}

impl Bucket {
    fn as_slice(&self) -> &[Uuid] {
        match self {
            Bucket::One(uuid) => std::slice::from_ref(uuid),
            Bucket::Many(uuids) => uuids,
        }
    }

    fn push(&mut self, uuid: Uuid) {
        match self {
            Bucket::Many(uuids) if uuids.is_empty() => *self = Bucket::One(uuid),
            Bucket::Many(uuids) => uuids.push(uuid),
            Bucket::One(first) => *self = Bucket::Many(vec![*first, uuid]),
        }
    }

    fn remove(&mut self, uuid: &Uuid) {
        match self {
            Bucket::One(only) if only == uuid => *self = Bucket::Many(Vec::new()),
            Bucket::One(_) => {}
            Bucket::Many(uuids) => uuids.retain(|candidate| candidate != uuid),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Cache {
    tables: HashMap<String, HashMap<Uuid, Arc<Row>>>,
    /// Per table, the columns kept (the monitored ones); a table not listed keeps every column
    /// of its schema.
    columns: HashMap<String, Vec<String>>,
    specs: Vec<IndexSpec>,
    /// Per spec: indexed value (inline up to 24 bytes: a port name, an owner mark) → rows holding it.
    indexes: Vec<HashMap<CompactString, Bucket>>,
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

    /// Keeps only `columns` of each listed table (what the monitor asks for): other columns
    /// of an update are dropped and only these are filled with their defaults.
    pub fn set_columns(&mut self, columns: &[(String, Vec<String>)]) {
        self.columns = columns.iter().cloned().collect();
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
            .map_or(&[], Bucket::as_slice)
    }

    /// Every row of an index given to [`Cache::with_indexes`] (e.g. every port without the
    /// daemon's mark, see [`IndexSpec::map_key_except`]): its cost follows those rows, not the
    /// table. `None` when there is no such index.
    pub fn indexed<'a>(&'a self, spec: &IndexSpec) -> Option<impl Iterator<Item = &'a Uuid> + 'a> {
        let position = self.specs.iter().position(|candidate| candidate == spec)?;
        Some(self.indexes[position].values().flat_map(Bucket::as_slice))
    }

    fn unindex(
        specs: &[IndexSpec],
        indexes: &mut [HashMap<CompactString, Bucket>],
        table: &str,
        uuid: &Uuid,
        row: &Row,
    ) {
        for (spec, index) in specs.iter().zip(indexes.iter_mut()) {
            if spec.table != table {
                continue;
            }
            if let Some(value) = spec.value_of(row) {
                if let Some(uuids) = index.get_mut(value) {
                    uuids.remove(uuid);
                    if uuids.as_slice().is_empty() {
                        index.remove(value);
                    }
                }
            }
        }
    }

    /// [`Cache::unindex`] the old row and [`Cache::index`] the new one, per index whose value
    /// changed: a modify that leaves it alone (most do) costs no lookup in a long bucket.
    fn reindex(
        specs: &[IndexSpec],
        indexes: &mut [HashMap<CompactString, Bucket>],
        table: &str,
        uuid: &Uuid,
        old: &Row,
        new: &Row,
    ) {
        for (spec, index) in specs.iter().zip(indexes.iter_mut()) {
            if spec.table != table {
                continue;
            }
            let (before, after) = (spec.value_of(old), spec.value_of(new));
            if before == after {
                continue;
            }
            if let Some(value) = before {
                if let Some(uuids) = index.get_mut(value) {
                    uuids.remove(uuid);
                    if uuids.as_slice().is_empty() {
                        index.remove(value);
                    }
                }
            }
            if let Some(value) = after {
                index.entry(CompactString::from(value)).or_default().push(*uuid);
            }
        }
    }

    fn index(specs: &[IndexSpec], indexes: &mut [HashMap<CompactString, Bucket>], table: &str, uuid: &Uuid, row: &Row) {
        for (spec, index) in specs.iter().zip(indexes.iter_mut()) {
            if spec.table != table {
                continue;
            }
            if let Some(value) = spec.value_of(row) {
                index.entry(CompactString::from(value)).or_default().push(*uuid);
            }
        }
    }

    /// The rows of one table (empty when nothing is cached for it).
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|rows| rows.iter().map(|(uuid, row)| (uuid, &**row)))
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table).and_then(|rows| rows.get(uuid)).map(|row| &**row)
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
            self.apply_rows(schema, table, rows.iter(), &mut changes)?;
        }
        Ok(changes)
    }

    /// As [`Cache::apply_update2`], consuming the updates: each row's JSON is dropped as soon as
    /// it is in the cache, so a whole initial dump is never held twice (as JSON and as rows).
    pub fn apply_update2_owned(
        &mut self,
        schema: &DatabaseSchema,
        updates: Json,
    ) -> Result<Vec<RowChange>, OvsdbError> {
        let tables = match updates {
            Json::Object(tables) => tables,
            Json::Null => return Ok(Vec::new()),
            other => {
                return Err(OvsdbError::Protocol(format!(
                    "table updates are not an object: {other}"
                )))
            }
        };
        let mut changes = Vec::new();
        for (table, rows) in tables {
            let Json::Object(rows) = rows else {
                return Err(OvsdbError::Protocol(format!("updates of {table} are not an object")));
            };
            self.apply_rows(schema, &table, rows, &mut changes)?;
        }
        Ok(changes)
    }

    /// As [`Cache::apply_update2_owned`], reading `<table-updates2>` as the server sent them: the
    /// text is split into rows without a JSON tree of the whole, and each row is parsed only
    /// when it is applied (an initial dump of 100,000 rows is held as its text, once).
    pub fn apply_update2_unparsed(
        &mut self,
        schema: &DatabaseSchema,
        updates: &serde_json::value::RawValue,
    ) -> Result<Vec<RowChange>, OvsdbError> {
        type Rows<'a> = Vec<(&'a str, &'a serde_json::value::RawValue)>;
        // Tables and uuids borrow the text; a server escaping characters in them (none does) is
        // read the slow way.
        let tables: Option<HashMap<&str, RowsInOrder>> = match serde_json::from_str(updates.get()) {
            Ok(tables) => tables,
            Err(_) => {
                let json: Json = serde_json::from_str(updates.get())
                    .map_err(|error| OvsdbError::Protocol(format!("table updates: {error}")))?;
                return self.apply_update2_owned(schema, json);
            }
        };
        let mut changes = Vec::new();
        for (table, RowsInOrder(rows)) in tables.into_iter().flatten() {
            let rows: Rows = rows;
            let parsed = rows.into_iter().map(|(uuid, row)| {
                // Valid JSON already (a raw value is checked when it is split off).
                (uuid, serde_json::from_str::<Json>(row.get()).unwrap_or(Json::Null))
            });
            self.apply_rows(schema, table, parsed, &mut changes)?;
        }
        Ok(changes)
    }

    fn apply_rows<I, S, J>(
        &mut self,
        schema: &DatabaseSchema,
        table: &str,
        rows: I,
        changes: &mut Vec<RowChange>,
    ) -> Result<(), OvsdbError>
    where
        I: IntoIterator<Item = (S, J)>,
        S: AsRef<str>,
        J: Borrow<Json>,
    {
        let (specs, indexes) = (&self.specs, &mut self.indexes);
        let kept = self.columns.get(table);
        let cached = self.tables.entry(table.to_string()).or_default();
        for (uuid_text, update) in rows {
            let (uuid_text, update) = (AsRef::<str>::as_ref(&uuid_text), Borrow::<Json>::borrow(&update));
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
                        // Keep only schema columns (not `_version`) that are monitored, and
                        // fill the omitted defaults.
                        row.retain(|column, _| {
                            table_schema.columns.contains_key(column)
                                && kept.is_none_or(|kept| kept.iter().any(|kept| kept == column))
                        });
                        for (column, column_type) in &table_schema.columns {
                            if kept.is_none_or(|kept| kept.contains(column)) {
                                row.insert_if_absent(column, || column_type.default_value());
                            }
                        }
                    }
                    row.shrink_to_fit();
                    let row = Arc::new(row);
                    let old = cached.insert(uuid, row.clone());
                    if let Some(old) = &old {
                        Cache::unindex(specs, indexes, table, &uuid, old);
                    }
                    Cache::index(specs, indexes, table, &uuid, &row);
                    changes.push(RowChange {
                        table: table.to_string(),
                        uuid,
                        old,
                        new: Some(row),
                    });
                }
                "modify" => {
                    let diff = body
                        .as_object()
                        .ok_or_else(|| OvsdbError::Protocol(format!("modify of {table} {uuid} is not an object")))?;
                    let old = cached.remove(&uuid).unwrap_or_default();
                    let mut row = Row::clone(&old);
                    for (column, json_diff) in diff {
                        let diff_value = Value::from_json(json_diff)?;
                        // `_version` and other columns outside the schema are not kept.
                        if kept.is_some_and(|kept| !kept.contains(column)) {
                            continue;
                        }
                        if let Some(column_type) = schema.column_type(table, column) {
                            match row.get_mut(column) {
                                Some(current) => current.apply_diff(diff_value, column_type),
                                None => {
                                    row.insert(column.as_str(), diff_value.normalize(column_type));
                                }
                            }
                        }
                    }
                    // One copy of a row that may hold a huge set (a switch's ports): the old
                    // version moved out of the cache into the change.
                    let after = Arc::new(row);
                    cached.insert(uuid, after.clone());
                    Cache::reindex(specs, indexes, table, &uuid, &old, &after);
                    changes.push(RowChange {
                        table: table.to_string(),
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
                        table: table.to_string(),
                        uuid,
                        old,
                        new: None,
                    });
                }
                other => return Err(OvsdbError::Protocol(format!("unknown row update {other:?}"))),
            }
        }
        Ok(())
    }
}

/// One table's row updates in the order sent, each row's text borrowed from the reply.
struct RowsInOrder<'a>(Vec<(&'a str, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RowsInOrder<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RowsInOrder<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an object of row updates by uuid")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut rows = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    rows.push(entry);
                }
                Ok(RowsInOrder(rows))
            }
        }
        deserializer.deserialize_map(Visit)
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

    #[test]
    fn only_the_set_columns_are_kept_and_defaulted() {
        let schema = schema();
        let mut cache = Cache::new();
        cache.set_columns(&[("A".to_string(), vec!["name".to_string(), "ids".to_string()])]);
        let uuid = Uuid::new_v4();
        let id = uuid.to_string();
        cache
            .apply_update2(
                &schema,
                &json!({"A": {id.clone(): {"insert": {"name": "a", "tags": "x"}}}}),
            )
            .unwrap();
        let row = cache.row("A", &uuid).unwrap();
        assert_eq!(row.keys().collect::<Vec<_>>(), ["ids", "name"]);
        assert_eq!(row["ids"], Value::Map(Default::default()));
        let changes = cache
            .apply_update2(&schema, &json!({"A": {id: {"modify": {"tags": "y", "name": "b"}}}}))
            .unwrap();
        assert!(!cache.row("A", &uuid).unwrap().contains_key("tags"));
        assert_eq!(changes[0].new.as_ref().unwrap()["name"], Value::string("b"));
    }

    /// An index that leaves one value out holds every other row once (those without the key
    /// under `absent`); `indexed` lists them, and follows updates both ways.
    #[test]
    fn rows_without_a_value_are_found_through_the_index() {
        let schema = schema();
        let spec = IndexSpec::map_key_except("A", "ids", "vendor", "us", "");
        let mut cache = Cache::with_indexes(vec![spec.clone()]);
        let (ours, bare, theirs) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        cache
            .apply_update2(
                &schema,
                &json!({"A": {
                    ours.to_string(): {"insert": {"name": "a", "ids": ["map", [["vendor", "us"]]]}},
                    bare.to_string(): {"insert": {"name": "b"}},
                    theirs.to_string(): {"insert": {"name": "c", "ids": ["map", [["vendor", "them"]]]}}
                }}),
            )
            .unwrap();
        let others = |cache: &Cache| {
            let mut found: Vec<Uuid> = cache.indexed(&spec).unwrap().copied().collect();
            found.sort();
            found
        };
        let mut expected = vec![bare, theirs];
        expected.sort();
        assert_eq!(others(&cache), expected);
        assert_eq!(cache.find(&spec, ""), [bare]);
        assert!(cache.find(&spec, "us").is_empty());
        // The bare row gains the mark: it leaves the index; ours loses it: it joins.
        cache
            .apply_update2(
                &schema,
                &json!({"A": {
                    bare.to_string(): {"modify": {"ids": ["map", [["vendor", "us"]]]}},
                    ours.to_string(): {"modify": {"name": "a2", "ids": ["map", [["vendor", "us"]]]}}
                }}),
            )
            .unwrap();
        let mut expected = vec![ours, theirs];
        expected.sort();
        assert_eq!(others(&cache), expected);
        // A modify that leaves the indexed value alone keeps the row where it was, once.
        cache
            .apply_update2(&schema, &json!({"A": {theirs.to_string(): {"modify": {"name": "c2"}}}}))
            .unwrap();
        assert_eq!(cache.find(&spec, "them"), [theirs]);
        cache
            .apply_update2(&schema, &json!({"A": {theirs.to_string(): {"delete": null}}}))
            .unwrap();
        assert_eq!(others(&cache), [ours]);
        assert!(cache.indexed(&IndexSpec::column("A", "name")).is_none());
    }

    /// A value on one row is held inline, on more in a vector; both ways agree with the rows.
    #[test]
    fn an_index_follows_one_and_many_rows_per_value() {
        let schema = schema();
        let spec = IndexSpec::column("A", "name");
        let mut cache = Cache::with_indexes(vec![spec.clone()]);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let insert = |uuid: Uuid| json!({"A": {uuid.to_string(): {"insert": {"name": "x"}}}});
        cache.apply_update2(&schema, &insert(a)).unwrap();
        assert_eq!(cache.find(&spec, "x"), [a]);
        cache.apply_update2(&schema, &insert(b)).unwrap();
        assert_eq!(cache.find(&spec, "x"), [a, b]);
        cache
            .apply_update2(&schema, &json!({"A": {a.to_string(): {"modify": {"name": "y"}}}}))
            .unwrap();
        assert_eq!((cache.find(&spec, "x"), cache.find(&spec, "y")), (&[b][..], &[a][..]));
        cache
            .apply_update2(&schema, &json!({"A": {b.to_string(): {"delete": null}}}))
            .unwrap();
        assert!(cache.find(&spec, "x").is_empty());
        assert_eq!(cache.indexed(&spec).unwrap().collect::<Vec<_>>(), [&a]);
    }

    #[test]
    fn a_change_shares_its_rows_with_the_cache() {
        let schema = schema();
        let mut cache = Cache::new();
        let uuid = Uuid::new_v4();
        let id = uuid.to_string();
        let inserted = cache
            .apply_update2(&schema, &json!({"A": {id.clone(): {"insert": {"name": "a"}}}}))
            .unwrap();
        let modified = cache
            .apply_update2(&schema, &json!({"A": {id: {"modify": {"name": "b"}}}}))
            .unwrap();
        // The modify's old row is the very row the insert reported (moved, not copied), and its
        // new row is the one the cache now holds.
        assert!(Arc::ptr_eq(
            inserted[0].new.as_ref().unwrap(),
            modified[0].old.as_ref().unwrap()
        ));
        let cached: *const Row = cache.row("A", &uuid).unwrap();
        assert!(std::ptr::eq(cached, &**modified[0].new.as_ref().unwrap()));
    }

    #[test]
    fn owned_and_borrowed_updates_agree() {
        let schema = schema();
        let id = Uuid::new_v4().to_string();
        let updates = [
            json!({"A": {id.clone(): {"insert": {"name": "a", "tags": ["set", ["x", "y"]]}}}}),
            json!({"A": {id.clone(): {"modify": {"tags": "x", "ids": ["map", [["k", "v"]]]}}}}),
            json!({"A": {id.clone(): {"delete": null}}}),
            json!(null),
        ];
        let (mut borrowed, mut owned, mut unparsed) = (Cache::new(), Cache::new(), Cache::new());
        for update in updates {
            let expected = borrowed.apply_update2(&schema, &update).unwrap();
            let text = serde_json::value::to_raw_value(&update).unwrap();
            assert_eq!(unparsed.apply_update2_unparsed(&schema, &text).unwrap(), expected);
            assert_eq!(owned.apply_update2_owned(&schema, update).unwrap(), expected);
            assert_eq!(
                owned.rows("A").collect::<Vec<_>>(),
                borrowed.rows("A").collect::<Vec<_>>()
            );
            assert_eq!(
                unparsed.rows("A").collect::<Vec<_>>(),
                borrowed.rows("A").collect::<Vec<_>>()
            );
        }
        // Escaped characters in a table name or uuid (no server sends them) are read too.
        let id = Uuid::new_v4();
        let escaped = serde_json::value::RawValue::from_string(format!(
            r#"{{"\u0041": {{"{id}": {{"insert": {{"name": "e"}}}}}}}}"#
        ))
        .unwrap();
        assert_eq!(unparsed.apply_update2_unparsed(&schema, &escaped).unwrap().len(), 1);
        assert_eq!(unparsed.row("A", &id).unwrap()["name"], Value::string("e"));
        let bad = serde_json::value::RawValue::from_string("[1]".to_string()).unwrap();
        assert!(unparsed.apply_update2_unparsed(&schema, &bad).is_err());
        assert!(owned.apply_update2_owned(&schema, json!([1])).is_err());
        assert!(owned.apply_update2_owned(&schema, json!({"A": 1})).is_err());
    }
}
