//! A row: column name → value (RFC 7047 §5.1 `<row>`), kept compact because the NB cache holds
//! one per monitored row (100,000 ports and more).
//!
//! A [`Row`] is one vector of `(column, value)` pairs sorted by column name (a lookup is a binary
//! search over a handful of columns), not a `BTreeMap`, whose node has room for eleven entries
//! and whose keys are one `String` each. Column names are [`Column`]s: shared, interned strings
//! (one allocation per distinct name in the process, not one per row and column).

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::{Deref, Index};
use std::sync::{Arc, Mutex, OnceLock};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::value::Value;

/// At most this many distinct column names are interned; names beyond it (only a server sending
/// made-up columns gets there) are allocated per use, so the interner cannot grow without bound.
const INTERNED_MAX: usize = 4096;

fn interner() -> &'static Mutex<HashSet<Arc<str>>> {
    static NAMES: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A column name: an interned, shared string (16 bytes; cloning it copies no text).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Column(Arc<str>);

impl Column {
    /// The interned name `name` (the same allocation for every row that names it).
    pub fn new(name: &str) -> Column {
        let mut names = match interner().lock() {
            Ok(names) => names,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(interned) = names.get(name) {
            return Column(interned.clone());
        }
        let interned: Arc<str> = Arc::from(name);
        if names.len() < INTERNED_MAX {
            names.insert(interned.clone());
        }
        Column(interned)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for Column {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Column {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Column {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Column {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Column {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for Column {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl From<&str> for Column {
    fn from(name: &str) -> Column {
        Column::new(name)
    }
}

impl From<String> for Column {
    fn from(name: String) -> Column {
        Column::new(&name)
    }
}

impl From<&String> for Column {
    fn from(name: &String) -> Column {
        Column::new(name)
    }
}

impl Serialize for Column {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A row: `(column, value)` pairs sorted by column, each column once. The API follows
/// `BTreeMap<String, Value>`'s (what rows were before), so rows are built and read the same way.
#[derive(Clone, Default, PartialEq)]
pub struct Row(Vec<(Column, Value)>);

impl Row {
    pub fn new() -> Row {
        Row(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Row {
        Row(Vec::with_capacity(capacity))
    }

    fn position(&self, column: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(name, _)| name.as_str().cmp(column))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, column: &str) -> Option<&Value> {
        self.position(column).ok().map(|at| &self.0[at].1)
    }

    pub fn get_mut(&mut self, column: &str) -> Option<&mut Value> {
        match self.position(column) {
            Ok(at) => Some(&mut self.0[at].1),
            Err(_) => None,
        }
    }

    pub fn contains_key(&self, column: &str) -> bool {
        self.position(column).is_ok()
    }

    /// Sets `column` to `value`; returns the value it replaced.
    pub fn insert(&mut self, column: impl Into<Column>, value: Value) -> Option<Value> {
        let column = column.into();
        match self.position(&column) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (column, value));
                None
            }
        }
    }

    /// Sets `column` to `make()` unless it is already set.
    pub fn insert_if_absent(&mut self, column: &str, make: impl FnOnce() -> Value) {
        if let Err(at) = self.position(column) {
            self.0.insert(at, (Column::new(column), make()));
        }
    }

    pub fn remove(&mut self, column: &str) -> Option<Value> {
        self.position(column).ok().map(|at| self.0.remove(at).1)
    }

    /// Keeps the columns for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Value) -> bool) {
        self.0.retain_mut(|(column, value)| keep(column, value));
    }

    /// Gives back unused capacity (a cached row is built once and kept).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// The columns and their values, by column name.
    pub fn iter(&self) -> impl Iterator<Item = (&Column, &Value)> + '_ {
        self.0.iter().map(|(column, value)| (column, value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Column> + '_ {
        self.0.iter().map(|(column, _)| column)
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.0.iter().map(|(_, value)| value)
    }
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Index<&str> for Row {
    type Output = Value;
    /// Panics when the row has no such column, as `BTreeMap`'s index does.
    fn index(&self, column: &str) -> &Value {
        match self.get(column) {
            Some(value) => value,
            None => panic!("no column {column:?} in the row"),
        }
    }
}

impl<K: Into<Column>> FromIterator<(K, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(entries: I) -> Row {
        let mut row = Row::new();
        row.extend(entries);
        row
    }
}

impl<K: Into<Column>> Extend<(K, Value)> for Row {
    fn extend<I: IntoIterator<Item = (K, Value)>>(&mut self, entries: I) {
        for (column, value) in entries {
            self.insert(column, value);
        }
    }
}

impl<K: Into<Column>, const N: usize> From<[(K, Value); N]> for Row {
    fn from(entries: [(K, Value); N]) -> Row {
        entries.into_iter().collect()
    }
}

impl IntoIterator for Row {
    type Item = (Column, Value);
    type IntoIter = std::vec::IntoIter<(Column, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Row {
    type Item = (&'a Column, &'a Value);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (Column, Value)>, fn(&'a (Column, Value)) -> (&'a Column, &'a Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(column, value)| (column, value))
    }
}

impl Serialize for Row {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (column, value) in &self.0 {
            map.serialize_entry(column.as_str(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_reads_and_writes_like_a_sorted_map() {
        let mut row = Row::from([("name", Value::string("a")), ("addresses", Value::empty_set())]);
        assert_eq!(row.keys().collect::<Vec<_>>(), ["addresses", "name"]);
        assert_eq!(row["name"], Value::string("a"));
        assert_eq!(row.insert("name", Value::string("b")), Some(Value::string("a")));
        assert_eq!(row.insert("up", Value::set([true])), None);
        assert_eq!(row.keys().collect::<Vec<_>>(), ["addresses", "name", "up"]);
        row.insert_if_absent("name", || Value::string("never"));
        assert_eq!(row.get("name"), Some(&Value::string("b")));
        assert_eq!(row.remove("addresses"), Some(Value::empty_set()));
        row.retain(|column, _| column != "up");
        assert_eq!(row.len(), 1);
        assert!(!row.contains_key("up"));
        assert_eq!(serde_json::to_value(&row).unwrap(), serde_json::json!({"name": "b"}));
    }

    /// Column names are shared: every row naming a column holds the same allocation.
    #[test]
    fn column_names_are_interned() {
        let (a, b) = (Column::new("external_ids"), Column::from("external_ids".to_string()));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, "external_ids");
    }
}
