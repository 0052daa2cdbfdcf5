//! The object walker: a YAML mapping and its path, so every error names the field it is about.

use std::collections::HashMap;

use serde_norway::{Mapping, Value};

use super::kinds::label_map;
use super::FieldError;

/// How a YAML value is named in messages.
pub(super) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A mapping of a manifest and its path, so every error names the field it is about.
pub(super) struct Object<'a> {
    map: &'a Mapping,
    /// `""` for the document itself, else e.g. `spec` or `spec.ports[0]`.
    path: String,
}

impl<'a> Object<'a> {
    pub(super) fn root(value: &'a Value) -> Result<Object<'a>, FieldError> {
        match value {
            Value::Mapping(map) => Ok(Object {
                map,
                path: String::new(),
            }),
            other => Err(FieldError::new(
                "(document)",
                format!(
                    "must be a mapping with apiVersion, kind, metadata and spec, not {}",
                    describe(other)
                ),
            )),
        }
    }

    pub(super) fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; an explicit `null` counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    pub(super) fn object(&self, key: &str) -> Result<Option<Object<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Mapping(map)) => Ok(Some(Object {
                map,
                path: self.path(key),
            })),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a mapping, not {}", describe(other)),
            )),
        }
    }

    pub(super) fn required_object(&self, key: &str) -> Result<Object<'a>, FieldError> {
        self.object(key)?
            .ok_or_else(|| FieldError::new(self.path(key), "is required"))
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a string, not {} (quote it)", describe(other)),
            )),
        }
    }

    pub(super) fn required_string(&self, key: &str) -> Result<String, FieldError> {
        match self.string(key)? {
            Some(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            _ => Err(FieldError::new(self.path(key), "is required")),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, FieldError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::String(text) => Ok(text.trim().to_string()),
                    other => Err(FieldError::new(
                        format!("{}[{index}]", self.path(key)),
                        format!("must be a string, not {}", describe(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a list, not {}", describe(other)),
            )),
        }
    }

    pub(super) fn string_map(&self, key: &str) -> Result<HashMap<String, String>, FieldError> {
        match self.get(key) {
            None => Ok(HashMap::new()),
            Some(Value::Mapping(map)) => label_map(map, &self.path(key)),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a mapping, not {}", describe(other)),
            )),
        }
    }

    /// A list of mappings, e.g. `ports`.
    pub(super) fn objects(&self, key: &str) -> Result<Vec<Object<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    let path = format!("{}[{index}]", self.path(key));
                    match item {
                        Value::Mapping(map) => Ok(Object { map, path }),
                        other => Err(FieldError::new(
                            path,
                            format!("must be a mapping, not {}", describe(other)),
                        )),
                    }
                })
                .collect(),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be a list, not {}", describe(other)),
            )),
        }
    }

    pub(super) fn integer(&self, key: &str) -> Result<Option<i64>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_i64()
                .map(Some)
                .ok_or_else(|| FieldError::new(self.path(key), format!("{number} is not an integer"))),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be an integer, not {}", describe(other)),
            )),
        }
    }

    pub(super) fn boolean(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(FieldError::new(
                self.path(key),
                format!("must be true or false, not {}", describe(other)),
            )),
        }
    }
}
