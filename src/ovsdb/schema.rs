//! Database schemas as `get_schema` returns them (RFC 7047 §3.2), and the check that a server's
//! schema has every table and column the daemon depends on.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::error::OvsdbError;
use super::value::{Atom, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    fn parse(name: &str) -> Result<AtomicType, OvsdbError> {
        match name {
            "integer" => Ok(AtomicType::Integer),
            "real" => Ok(AtomicType::Real),
            "boolean" => Ok(AtomicType::Boolean),
            "string" => Ok(AtomicType::String),
            "uuid" => Ok(AtomicType::Uuid),
            other => Err(OvsdbError::Protocol(format!("unknown atomic type {other:?}"))),
        }
    }
}

/// A column's type: key (and value, for maps) with the element count bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    pub key: AtomicType,
    pub value: Option<AtomicType>,
    pub min: u64,
    /// `u64::MAX` for "unlimited".
    pub max: u64,
}

impl ColumnType {
    pub fn string() -> ColumnType {
        ColumnType {
            key: AtomicType::String,
            value: None,
            min: 1,
            max: 1,
        }
    }

    pub fn set_of_strings() -> ColumnType {
        ColumnType {
            key: AtomicType::String,
            value: None,
            min: 0,
            max: u64::MAX,
        }
    }

    pub fn string_map() -> ColumnType {
        ColumnType {
            key: AtomicType::String,
            value: Some(AtomicType::String),
            min: 0,
            max: u64::MAX,
        }
    }

    /// Exactly one atom: replaced whole in `update2` diffs.
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == 1
    }

    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// The value a column has when a row omits it: update2 `initial` and `insert` leave out
    /// columns that hold their default.
    pub fn default_value(&self) -> Value {
        if self.is_map() {
            return Value::Map(Default::default());
        }
        if self.min == 0 {
            return Value::Set(Default::default());
        }
        let atom = match self.key {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(Default::default()),
            AtomicType::Uuid => Atom::Uuid(uuid::Uuid::nil()),
        };
        if self.is_scalar() {
            Value::Atom(atom)
        } else {
            Value::Set(std::iter::once(atom).collect())
        }
    }

    fn parse(json: &Json) -> Result<ColumnType, OvsdbError> {
        match json {
            Json::String(name) => Ok(ColumnType {
                key: AtomicType::parse(name)?,
                value: None,
                min: 1,
                max: 1,
            }),
            Json::Object(fields) => {
                let key = fields
                    .get("key")
                    .ok_or_else(|| OvsdbError::Protocol("column type without key".into()))
                    .and_then(parse_base_type)?;
                let value = fields.get("value").map(parse_base_type).transpose()?;
                let min = fields.get("min").and_then(Json::as_u64).unwrap_or(1);
                let max = match fields.get("max") {
                    None => 1,
                    Some(Json::String(text)) if text == "unlimited" => u64::MAX,
                    Some(other) => other
                        .as_u64()
                        .ok_or_else(|| OvsdbError::Protocol(format!("bad max {other}")))?,
                };
                Ok(ColumnType { key, value, min, max })
            }
            other => Err(OvsdbError::Protocol(format!("bad column type {other}"))),
        }
    }
}

fn parse_base_type(json: &Json) -> Result<AtomicType, OvsdbError> {
    match json {
        Json::String(name) => AtomicType::parse(name),
        Json::Object(fields) => match fields.get("type") {
            Some(Json::String(name)) => AtomicType::parse(name),
            _ => Err(OvsdbError::Protocol(format!("base type without type: {json}"))),
        },
        _ => Err(OvsdbError::Protocol(format!("bad base type {json}"))),
    }
}

#[derive(Debug, Clone)]
pub struct TableSchema {
    pub columns: HashMap<String, ColumnType>,
    /// Rows of a non-root table that nobody references are deleted at commit.
    pub is_root: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub tables: HashMap<String, TableSchema>,
}

impl DatabaseSchema {
    pub fn parse(json: &Json) -> Result<DatabaseSchema, OvsdbError> {
        let name = json
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| OvsdbError::Protocol("schema without name".into()))?
            .to_string();
        let version = json.get("version").and_then(Json::as_str).unwrap_or("").to_string();
        let mut tables = HashMap::new();
        let table_objects = json
            .get("tables")
            .and_then(Json::as_object)
            .ok_or_else(|| OvsdbError::Protocol("schema without tables".into()))?;
        for (table_name, table_json) in table_objects {
            let mut columns = HashMap::new();
            if let Some(column_objects) = table_json.get("columns").and_then(Json::as_object) {
                for (column_name, column_json) in column_objects {
                    let type_json = column_json.get("type").ok_or_else(|| {
                        OvsdbError::Protocol(format!("column {table_name}.{column_name} has no type"))
                    })?;
                    columns.insert(column_name.clone(), ColumnType::parse(type_json)?);
                }
            }
            let is_root = table_json.get("isRoot").and_then(Json::as_bool).unwrap_or(false);
            tables.insert(table_name.clone(), TableSchema { columns, is_root });
        }
        Ok(DatabaseSchema { name, version, tables })
    }

    /// The type of `table.column`; `_uuid` and `_version` are implicit uuid columns.
    pub fn column_type(&self, table: &str, column: &str) -> Option<&ColumnType> {
        self.tables.get(table).and_then(|schema| schema.columns.get(column))
    }

    /// Checks that every table and column the caller depends on exists, naming the first missing one.
    pub fn require(&self, required: &[(&str, &[&str])]) -> Result<(), OvsdbError> {
        for (table, columns) in required {
            let table_schema = self.tables.get(*table).ok_or_else(|| {
                OvsdbError::SchemaMismatch(format!(
                    "database {} (schema version {}) has no table {table}",
                    self.name, self.version
                ))
            })?;
            for column in *columns {
                if !table_schema.columns.contains_key(*column) {
                    return Err(OvsdbError::SchemaMismatch(format!(
                        "table {table} of database {} (schema version {}) has no column {column}",
                        self.name, self.version
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::parse(&json!({
            "name": "T", "version": "1.0.0",
            "tables": {
                "A": {"isRoot": true, "columns": {
                    "name": {"type": "string"},
                    "tags": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                    "opt": {"type": {"key": {"type": "string"}, "min": 0, "max": 1}},
                    "ids": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}}
                }}
            }
        }))
        .unwrap()
    }

    #[test]
    fn parses_column_types() {
        let schema = schema();
        assert!(schema.column_type("A", "name").unwrap().is_scalar());
        assert!(!schema.column_type("A", "opt").unwrap().is_scalar());
        assert!(schema.column_type("A", "ids").unwrap().is_map());
        assert_eq!(schema.column_type("A", "tags").unwrap().max, u64::MAX);
    }

    #[test]
    fn missing_table_or_column_is_named() {
        let schema = schema();
        let error = schema.require(&[("A", &["name", "virtual"])]).unwrap_err().to_string();
        assert!(error.contains("no column virtual"), "{error}");
        assert!(error.contains("table A"), "{error}");
        let error = schema.require(&[("B", &[])]).unwrap_err().to_string();
        assert!(error.contains("no table B"), "{error}");
    }
}
