//! The operations of a `transact` (RFC 7047 §5.2) and their results.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value as Json;
use uuid::Uuid;

use super::error::OvsdbError;
use super::schema::DatabaseSchema;
use super::value::{Atom, Value};

pub use super::row::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    LessThan,
    LessOrEqual,
    Equal,
    NotEqual,
    GreaterOrEqual,
    GreaterThan,
    Includes,
    Excludes,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::LessThan => "<",
            Function::LessOrEqual => "<=",
            Function::Equal => "==",
            Function::NotEqual => "!=",
            Function::GreaterOrEqual => ">=",
            Function::GreaterThan => ">",
            Function::Includes => "includes",
            Function::Excludes => "excludes",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub function: Function,
    pub value: Value,
}

impl Condition {
    pub fn new(column: impl Into<String>, function: Function, value: Value) -> Condition {
        Condition {
            column: column.into(),
            function,
            value,
        }
    }

    pub fn equal(column: impl Into<String>, value: Value) -> Condition {
        Condition::new(column, Function::Equal, value)
    }

    /// Matches the row with this `_uuid`.
    pub fn uuid(uuid: Uuid) -> Condition {
        Condition::equal("_uuid", Value::uuid(uuid))
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.function.as_str(), &self.value).serialize(serializer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    Insert,
    Delete,
}

impl Mutator {
    fn as_str(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Subtract => "-=",
            Mutator::Multiply => "*=",
            Mutator::Divide => "/=",
            Mutator::Modulo => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub value: Value,
}

impl Mutation {
    pub fn new(column: impl Into<String>, mutator: Mutator, value: Value) -> Mutation {
        Mutation {
            column: column.into(),
            mutator,
            value,
        }
    }

    pub fn insert(column: impl Into<String>, value: Value) -> Mutation {
        Mutation::new(column, Mutator::Insert, value)
    }

    pub fn delete(column: impl Into<String>, value: Value) -> Mutation {
        Mutation::new(column, Mutator::Delete, value)
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.column, self.mutator.as_str(), &self.value).serialize(serializer)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    Equal,
    NotEqual,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Insert {
        table: String,
        row: Row,
        uuid_name: Option<String>,
    },
    Select {
        table: String,
        conditions: Vec<Condition>,
        columns: Option<Vec<String>>,
    },
    Update {
        table: String,
        conditions: Vec<Condition>,
        row: Row,
    },
    Mutate {
        table: String,
        conditions: Vec<Condition>,
        mutations: Vec<Mutation>,
    },
    Delete {
        table: String,
        conditions: Vec<Condition>,
    },
    Wait {
        table: String,
        conditions: Vec<Condition>,
        columns: Vec<String>,
        until: WaitUntil,
        rows: Vec<Row>,
        timeout_ms: Option<u64>,
    },
    Commit {
        durable: bool,
    },
    Abort,
    Comment(String),
    Assert {
        lock: String,
    },
}

impl Operation {
    /// The table the operation reads or writes, if any.
    pub fn table(&self) -> Option<&str> {
        match self {
            Operation::Insert { table, .. }
            | Operation::Select { table, .. }
            | Operation::Update { table, .. }
            | Operation::Mutate { table, .. }
            | Operation::Delete { table, .. }
            | Operation::Wait { table, .. } => Some(table),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }
}

// Written straight to the output (RFC 7047 §5.2); no intermediate JSON tree.
impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        match self {
            Operation::Insert { table, row, uuid_name } => {
                map.serialize_entry("op", "insert")?;
                map.serialize_entry("table", table)?;
                map.serialize_entry("row", row)?;
                if let Some(name) = uuid_name {
                    map.serialize_entry("uuid-name", name)?;
                }
            }
            Operation::Select {
                table,
                conditions,
                columns,
            } => {
                map.serialize_entry("op", "select")?;
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                if let Some(columns) = columns {
                    map.serialize_entry("columns", columns)?;
                }
            }
            Operation::Update { table, conditions, row } => {
                map.serialize_entry("op", "update")?;
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                map.serialize_entry("row", row)?;
            }
            Operation::Mutate {
                table,
                conditions,
                mutations,
            } => {
                map.serialize_entry("op", "mutate")?;
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                map.serialize_entry("mutations", mutations)?;
            }
            Operation::Delete { table, conditions } => {
                map.serialize_entry("op", "delete")?;
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
            }
            Operation::Wait {
                table,
                conditions,
                columns,
                until,
                rows,
                timeout_ms,
            } => {
                map.serialize_entry("op", "wait")?;
                map.serialize_entry("table", table)?;
                map.serialize_entry("where", conditions)?;
                map.serialize_entry("columns", columns)?;
                map.serialize_entry(
                    "until",
                    match until {
                        WaitUntil::Equal => "==",
                        WaitUntil::NotEqual => "!=",
                    },
                )?;
                map.serialize_entry("rows", rows)?;
                if let Some(timeout) = timeout_ms {
                    map.serialize_entry("timeout", timeout)?;
                }
            }
            Operation::Commit { durable } => {
                map.serialize_entry("op", "commit")?;
                map.serialize_entry("durable", durable)?;
            }
            Operation::Abort => map.serialize_entry("op", "abort")?,
            Operation::Comment(text) => {
                map.serialize_entry("op", "comment")?;
                map.serialize_entry("comment", text)?;
            }
            Operation::Assert { lock } => {
                map.serialize_entry("op", "assert")?;
                map.serialize_entry("lock", lock)?;
            }
        }
        map.end()
    }
}

/// What one successful operation returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationResult {
    /// The new row's UUID, for an insert.
    pub uuid: Option<Uuid>,
    /// The rows a select found, typed by the schema when one is known.
    pub rows: Option<Vec<Row>>,
    /// How many rows an update, mutate or delete touched.
    pub count: Option<u64>,
}

/// Turns a `transact` reply into one result per operation, or the first error: RFC 7047 §4.1.3
/// puts an `error` object at the failed index, and a commit-time failure as an extra element.
pub fn parse_transact_reply(
    operations: &[Operation],
    reply: &Json,
    schema: Option<&DatabaseSchema>,
) -> Result<Vec<OperationResult>, OvsdbError> {
    let elements = reply
        .as_array()
        .ok_or_else(|| OvsdbError::Protocol(format!("transact reply is not an array: {reply}")))?;
    for (index, element) in elements.iter().enumerate() {
        if let Some(error) = element.get("error").and_then(Json::as_str) {
            return Err(OvsdbError::Transaction(super::error::TransactionError {
                index,
                error: error.to_string(),
                details: element.get("details").and_then(Json::as_str).map(str::to_string),
            }));
        }
    }
    if elements.len() < operations.len() {
        return Err(OvsdbError::Protocol(format!(
            "transact reply has {} results for {} operations",
            elements.len(),
            operations.len()
        )));
    }
    let mut results = Vec::with_capacity(operations.len());
    for (operation, element) in operations.iter().zip(elements) {
        let mut result = OperationResult::default();
        if let Some(uuid) = element.get("uuid") {
            result.uuid = Atom::from_json(uuid)?.as_uuid();
        }
        if let Some(count) = element.get("count") {
            result.count = count.as_u64();
        }
        if let Some(Json::Array(rows)) = element.get("rows") {
            let table = operation.table().unwrap_or_default();
            let mut typed_rows = Vec::with_capacity(rows.len());
            for row in rows {
                typed_rows.push(decode_row(table, row, schema)?);
            }
            result.rows = Some(typed_rows);
        }
        results.push(result);
    }
    Ok(results)
}

/// Decodes a row object, normalizing each column to the shape its schema type implies.
pub fn decode_row(table: &str, row: &Json, schema: Option<&DatabaseSchema>) -> Result<Row, OvsdbError> {
    let object = row
        .as_object()
        .ok_or_else(|| OvsdbError::Protocol(format!("row of {table} is not an object")))?;
    let mut decoded = Row::with_capacity(object.len());
    for (column, json_value) in object {
        let value = Value::from_json(json_value)?;
        let value = match schema.and_then(|schema| schema.column_type(table, column)) {
            Some(column_type) => value.normalize(column_type),
            None => value,
        };
        decoded.insert(column.as_str(), value);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn insert_carries_uuid_name() {
        let op = Operation::Insert {
            table: "T".into(),
            row: Row::from([("name".to_string(), Value::string("x"))]),
            uuid_name: Some("row0".into()),
        };
        assert_eq!(
            op.to_json(),
            json!({"op":"insert","table":"T","row":{"name":"x"},"uuid-name":"row0"})
        );
    }

    #[test]
    fn error_at_index_is_reported_with_details() {
        let ops = vec![Operation::Comment("a".into()), Operation::Abort];
        let reply = json!([{}, {"error": "aborted", "details": "aborted by request"}]);
        match parse_transact_reply(&ops, &reply, None) {
            Err(OvsdbError::Transaction(error)) => {
                assert_eq!(error.index, 1);
                assert_eq!(error.error, "aborted");
                assert_eq!(error.details.as_deref(), Some("aborted by request"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn commit_failure_is_the_extra_element() {
        let ops = vec![Operation::Comment("a".into())];
        let reply = json!([{}, {"error": "constraint violation", "details": "dup"}]);
        match parse_transact_reply(&ops, &reply, None) {
            Err(OvsdbError::Transaction(error)) => assert_eq!(error.index, 1),
            other => panic!("unexpected {other:?}"),
        }
    }
}
