//! OVSDB's data model as RFC 7047 §5.1 encodes it: atoms, sets and maps, `uuid` and
//! `named-uuid`. Decoding accepts a one-element set sent as a bare atom (the server does that);
//! [`Value::normalize`] then gives every non-scalar column a `Set` so callers see one shape.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use serde_json::Value as Json;
use uuid::Uuid;

use super::error::OvsdbError;
use super::schema::ColumnType;

/// One OVSDB atom.
#[derive(Clone, Debug)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    /// A string: up to 24 bytes (port names, map keys such as `external_ids:vendor`, owner
    /// marks, addresses) held inline without an allocation, longer ones on the heap.
    String(CompactString),
    Uuid(Uuid),
    /// A `named-uuid`: a row inserted earlier in the same transaction.
    NamedUuid(String),
}

impl Atom {
    pub fn string(value: impl Into<String>) -> Atom {
        Atom::String(CompactString::from(value.into()))
    }

    pub fn named_uuid(name: impl Into<String>) -> Atom {
        Atom::NamedUuid(name.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(uuid) => Some(*uuid),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Atom::Integer(number) => Some(*number),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(flag) => Some(*flag),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Json {
        // Serializing an atom cannot fail: it has no map with non-string keys.
        serde_json::to_value(self).unwrap_or(Json::Null)
    }

    pub fn from_json(value: &Json) -> Result<Atom, OvsdbError> {
        match value {
            Json::String(text) => Ok(Atom::String(CompactString::from(text.as_str()))),
            Json::Bool(flag) => Ok(Atom::Boolean(*flag)),
            Json::Number(number) => {
                if let Some(integer) = number.as_i64() {
                    Ok(Atom::Integer(integer))
                } else if let Some(real) = number.as_f64() {
                    Ok(Atom::Real(real))
                } else {
                    Err(OvsdbError::Protocol(format!("number out of range: {number}")))
                }
            }
            Json::Array(items) => match (items.first().and_then(Json::as_str), items.get(1)) {
                (Some("uuid"), Some(Json::String(text))) if items.len() == 2 => Uuid::parse_str(text)
                    .map(Atom::Uuid)
                    .map_err(|error| OvsdbError::Protocol(format!("bad uuid {text:?}: {error}"))),
                (Some("named-uuid"), Some(Json::String(name))) if items.len() == 2 => Ok(Atom::NamedUuid(name.clone())),
                _ => Err(OvsdbError::Protocol(format!("not an OVSDB atom: {value}"))),
            },
            _ => Err(OvsdbError::Protocol(format!("not an OVSDB atom: {value}"))),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }
}

impl From<&str> for Atom {
    fn from(value: &str) -> Atom {
        Atom::String(CompactString::from(value))
    }
}

impl From<String> for Atom {
    fn from(value: String) -> Atom {
        Atom::String(CompactString::from(value))
    }
}

impl From<Uuid> for Atom {
    fn from(value: Uuid) -> Atom {
        Atom::Uuid(value)
    }
}

impl From<i64> for Atom {
    fn from(value: i64) -> Atom {
        Atom::Integer(value)
    }
}

impl From<bool> for Atom {
    fn from(value: bool) -> Atom {
        Atom::Boolean(value)
    }
}

// Reals compare by their total order so atoms can live in ordered sets and maps.
impl Ord for Atom {
    fn cmp(&self, other: &Atom) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Atom) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Atom) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Atom {}

impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(number) => number.hash(state),
            Atom::Real(number) => number.to_bits().hash(state),
            Atom::Boolean(flag) => flag.hash(state),
            Atom::String(text) => text.as_str().hash(state),
            Atom::NamedUuid(text) => text.as_str().hash(state),
            Atom::Uuid(uuid) => uuid.hash(state),
        }
    }
}

/// A set of atoms, kept as a sorted vector without duplicates: a small set (most columns hold
/// none, one or two) costs its elements and nothing else, where a `BTreeSet` node holds room for
/// eleven; a large one (a switch's `ports`) is one block, copied by one `memcpy`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtomSet(Vec<Atom>);

impl AtomSet {
    pub fn new() -> AtomSet {
        AtomSet(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Atom> {
        self.0.iter()
    }

    pub fn contains(&self, atom: &Atom) -> bool {
        self.0.binary_search(atom).is_ok()
    }

    /// Adds `atom`; false when it was there already.
    pub fn insert(&mut self, atom: Atom) -> bool {
        match self.0.binary_search(&atom) {
            Ok(_) => false,
            Err(position) => {
                self.0.insert(position, atom);
                true
            }
        }
    }

    /// Removes `atom`; false when it was not there.
    pub fn remove(&mut self, atom: &Atom) -> bool {
        match self.0.binary_search(atom) {
            Ok(position) => {
                self.0.remove(position);
                true
            }
            Err(_) => false,
        }
    }

    /// Toggles every atom of `changes` (present: removed, absent: added), the `update2` set
    /// diff. A large diff (a bulk insert into a switch's ports) is merged in one pass instead of
    /// one shift of the vector per atom.
    fn toggle(&mut self, changes: AtomSet) {
        if changes.len() <= 16 {
            for atom in changes.0 {
                if !self.remove(&atom) {
                    self.insert(atom);
                }
            }
            return;
        }
        let current = std::mem::take(&mut self.0);
        let mut merged = Vec::with_capacity(current.len() + changes.len());
        let (mut left, mut right) = (current.into_iter().peekable(), changes.0.into_iter().peekable());
        loop {
            match (left.peek(), right.peek()) {
                (Some(a), Some(b)) => match a.cmp(b) {
                    Ordering::Less => merged.extend(left.next()),
                    Ordering::Greater => merged.extend(right.next()),
                    Ordering::Equal => {
                        left.next();
                        right.next();
                    }
                },
                (Some(_), None) => merged.extend(left.next()),
                (None, Some(_)) => merged.extend(right.next()),
                (None, None) => break,
            }
        }
        merged.shrink_to_fit();
        self.0 = merged;
    }
}

impl FromIterator<Atom> for AtomSet {
    fn from_iter<I: IntoIterator<Item = Atom>>(items: I) -> AtomSet {
        let mut atoms: Vec<Atom> = items.into_iter().collect();
        atoms.sort();
        atoms.dedup();
        atoms.shrink_to_fit();
        AtomSet(atoms)
    }
}

impl<const N: usize> From<[Atom; N]> for AtomSet {
    fn from(atoms: [Atom; N]) -> AtomSet {
        atoms.into_iter().collect()
    }
}

impl IntoIterator for AtomSet {
    type Item = Atom;
    type IntoIter = std::vec::IntoIter<Atom>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a AtomSet {
    type Item = &'a Atom;
    type IntoIter = std::slice::Iter<'a, Atom>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A map of atoms, kept as a vector of pairs sorted by key (keys unique): `external_ids` and
/// `options` hold a few entries each, and a `BTreeMap` node holds room for eleven.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AtomMap(Vec<(Atom, Atom)>);

impl AtomMap {
    pub fn new() -> AtomMap {
        AtomMap(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &Atom) -> Result<usize, usize> {
        self.0.binary_search_by(|(candidate, _)| candidate.cmp(key))
    }

    pub fn get(&self, key: &Atom) -> Option<&Atom> {
        self.position(key).ok().map(|position| &self.0[position].1)
    }

    /// The value of a string key, without building an atom for the key.
    pub fn get_str(&self, key: &str) -> Option<&Atom> {
        self.0
            .binary_search_by(|(candidate, _)| match candidate {
                Atom::String(text) => text.as_str().cmp(key),
                other => other.rank().cmp(&3),
            })
            .ok()
            .map(|position| &self.0[position].1)
    }

    pub fn contains_key(&self, key: &Atom) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: Atom, value: Atom) -> Option<Atom> {
        match self.position(&key) {
            Ok(position) => Some(std::mem::replace(&mut self.0[position].1, value)),
            Err(position) => {
                self.0.insert(position, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &Atom) -> Option<Atom> {
        self.position(key).ok().map(|position| self.0.remove(position).1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Atom, &Atom)> + '_ {
        self.0.iter().map(|(key, value)| (key, value))
    }

    pub fn keys(&self) -> impl Iterator<Item = &Atom> + '_ {
        self.0.iter().map(|(key, _)| key)
    }

    pub fn values(&self) -> impl Iterator<Item = &Atom> + '_ {
        self.0.iter().map(|(_, value)| value)
    }
}

/// The last value given for a key wins, as in a `BTreeMap` built from the same pairs.
impl FromIterator<(Atom, Atom)> for AtomMap {
    fn from_iter<I: IntoIterator<Item = (Atom, Atom)>>(entries: I) -> AtomMap {
        let mut pairs: Vec<(Atom, Atom)> = entries.into_iter().collect();
        // Stable: equal keys keep their order, so the last one given is last and kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(Atom, Atom)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => unique.push(pair),
            }
        }
        unique.shrink_to_fit();
        AtomMap(unique)
    }
}

impl<const N: usize> From<[(Atom, Atom); N]> for AtomMap {
    fn from(entries: [(Atom, Atom); N]) -> AtomMap {
        entries.into_iter().collect()
    }
}

impl IntoIterator for AtomMap {
    type Item = (Atom, Atom);
    type IntoIter = std::vec::IntoIter<(Atom, Atom)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// A column value: a single atom (scalar columns), a set, or a map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Atom(Atom),
    Set(AtomSet),
    Map(AtomMap),
}

impl Value {
    pub fn string(text: impl Into<String>) -> Value {
        Value::Atom(Atom::string(text))
    }

    pub fn uuid(uuid: Uuid) -> Value {
        Value::Atom(Atom::Uuid(uuid))
    }

    pub fn empty_set() -> Value {
        Value::Set(AtomSet::new())
    }

    pub fn set<I, A>(items: I) -> Value
    where
        I: IntoIterator<Item = A>,
        A: Into<Atom>,
    {
        Value::Set(items.into_iter().map(Into::into).collect())
    }

    pub fn map<I, K, V>(entries: I) -> Value
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Atom>,
        V: Into<Atom>,
    {
        Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        )
    }

    /// A string-to-string map, the shape of `external_ids`, `options` and `vips`.
    pub fn string_map<'a, I>(entries: I) -> Value
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        Value::Map(
            entries
                .into_iter()
                .map(|(key, value)| (Atom::from(key.as_str()), Atom::from(value.as_str())))
                .collect(),
        )
    }

    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }

    pub fn from_json(value: &Json) -> Result<Value, OvsdbError> {
        if let Json::Array(items) = value {
            match (items.first().and_then(Json::as_str), items.get(1)) {
                (Some("set"), Some(Json::Array(elements))) if items.len() == 2 => {
                    return elements
                        .iter()
                        .map(Atom::from_json)
                        .collect::<Result<AtomSet, _>>()
                        .map(Value::Set);
                }
                (Some("map"), Some(Json::Array(pairs))) if items.len() == 2 => {
                    let mut entries = Vec::with_capacity(pairs.len());
                    for pair in pairs {
                        match pair {
                            Json::Array(kv) if kv.len() == 2 => {
                                entries.push((Atom::from_json(&kv[0])?, Atom::from_json(&kv[1])?));
                            }
                            _ => return Err(OvsdbError::Protocol(format!("bad map pair: {pair}"))),
                        }
                    }
                    return Ok(Value::Map(entries.into_iter().collect()));
                }
                _ => {}
            }
        }
        Atom::from_json(value).map(Value::Atom)
    }

    /// Gives the value the shape its column type implies: a bare atom in a set or optional
    /// column becomes a one-element set.
    pub fn normalize(self, column_type: &ColumnType) -> Value {
        match self {
            Value::Atom(atom) if !column_type.is_scalar() && !column_type.is_map() => Value::Set(AtomSet::from([atom])),
            other => other,
        }
    }

    /// Applies an `update2` "modify" diff (ovsdb-server(5), "monitor_cond"): a scalar is replaced;
    /// a set diff toggles each element (present: removed, absent: added); a map diff removes a key
    /// whose value is the same, replaces a key whose value differs, and adds a new key.
    pub fn apply_diff(&mut self, diff: Value, column_type: &ColumnType) {
        if column_type.is_scalar() {
            *self = diff;
            return;
        }
        match (self, diff.normalize(column_type)) {
            (Value::Set(current), Value::Set(changes)) => current.toggle(changes),
            (Value::Map(current), Value::Map(changes)) => {
                for (key, value) in changes {
                    match current.get(&key) {
                        Some(existing) if *existing == value => {
                            current.remove(&key);
                        }
                        _ => {
                            current.insert(key, value);
                        }
                    }
                }
            }
            (slot, replacement) => *slot = replacement,
        }
    }

    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Atom(atom) => Some(atom),
            Value::Set(items) if items.len() == 1 => items.iter().next(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_atom().and_then(Atom::as_str)
    }

    pub fn as_map(&self) -> Option<&AtomMap> {
        match self {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }
}

// The wire encoding (RFC 7047 §5.1), written straight to the output: encoding a large
// transaction builds no intermediate JSON tree.
impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(number) => serializer.serialize_i64(*number),
            Atom::Real(number) => serializer.serialize_f64(*number),
            Atom::Boolean(flag) => serializer.serialize_bool(*flag),
            Atom::String(text) => serializer.serialize_str(text),
            Atom::Uuid(uuid) => {
                let mut buffer = uuid::Uuid::encode_buffer();
                ("uuid", &*uuid.hyphenated().encode_lower(&mut buffer)).serialize(serializer)
            }
            Atom::NamedUuid(name) => ("named-uuid", name).serialize(serializer),
        }
    }
}

/// A map's entries as `[[key, value], ...]`.
struct Pairs<'a>(&'a AtomMap);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sequence = serializer.serialize_seq(Some(self.0.len()))?;
        for pair in self.0.iter() {
            sequence.serialize_element(&pair)?;
        }
        sequence.end()
    }
}

impl Serialize for AtomSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sequence = serializer.serialize_seq(Some(self.len()))?;
        for atom in self.iter() {
            sequence.serialize_element(atom)?;
        }
        sequence.end()
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Atom(atom) => atom.serialize(serializer),
            Value::Set(items) => ("set", items).serialize(serializer),
            Value::Map(entries) => ("map", Pairs(entries)).serialize(serializer),
        }
    }
}

impl From<Atom> for Value {
    fn from(atom: Atom) -> Value {
        Value::Atom(atom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovsdb::schema::ColumnType;
    use serde_json::json;

    #[test]
    fn atoms_round_trip_through_json() {
        let uuid = Uuid::new_v4();
        for atom in [
            Atom::Integer(-5),
            Atom::Real(1.5),
            Atom::Boolean(true),
            Atom::string("a \"quoted\" {brace}"),
            Atom::Uuid(uuid),
            Atom::named_uuid("row_1"),
        ] {
            assert_eq!(Atom::from_json(&atom.to_json()).unwrap(), atom);
        }
        assert_eq!(
            Atom::Uuid(uuid).to_json(),
            serde_json::json!(["uuid", uuid.to_string()])
        );
        assert_eq!(Atom::named_uuid("x").to_json(), json!(["named-uuid", "x"]));
    }

    #[test]
    fn sets_and_maps_encode_as_rfc7047_says() {
        let set = Value::set(["b", "a"]);
        assert_eq!(set.to_json(), json!(["set", ["a", "b"]]));
        let map = Value::map([("k", "v")]);
        assert_eq!(map.to_json(), json!(["map", [["k", "v"]]]));
        assert_eq!(Value::from_json(&json!(["set", []])).unwrap(), Value::empty_set());
        assert_eq!(Value::from_json(&json!(["map", [["k", "v"]]])).unwrap(), map);
    }

    #[test]
    fn a_bare_atom_in_a_set_column_becomes_a_one_element_set() {
        let set_type = ColumnType::set_of_strings();
        let value = Value::from_json(&json!("x")).unwrap().normalize(&set_type);
        assert_eq!(value, Value::set(["x"]));
    }

    #[test]
    fn set_diff_toggles_elements() {
        let set_type = ColumnType::set_of_strings();
        let mut value = Value::set(["a", "b"]);
        value.apply_diff(Value::set(["b", "c"]), &set_type);
        assert_eq!(value, Value::set(["a", "c"]));
        value.apply_diff(Value::string("a"), &set_type);
        assert_eq!(value, Value::set(["c"]));
    }

    #[test]
    fn map_diff_adds_replaces_and_removes() {
        let map_type = ColumnType::string_map();
        let mut value = Value::map([("keep", "1"), ("drop", "2"), ("change", "3")]);
        value.apply_diff(Value::map([("drop", "2"), ("change", "4"), ("new", "5")]), &map_type);
        assert_eq!(value, Value::map([("keep", "1"), ("change", "4"), ("new", "5")]));
    }

    /// A large set diff is merged in one pass; the result is the per-element toggle's.
    #[test]
    fn a_large_set_diff_is_the_same_toggle_as_a_small_one() {
        let set_type = ColumnType::set_of_strings();
        let current = Value::set((0..100).map(|n| format!("p{n:03}")));
        // 40 changes: 20 present (removed), 20 absent (added), given unsorted.
        let changes: Vec<String> = (0..20)
            .map(|n| format!("p{:03}", n * 5))
            .chain((0..20).map(|n| format!("q{n:03}")))
            .rev()
            .collect();
        let mut merged = current.clone();
        merged.apply_diff(Value::set(changes.clone()), &set_type);
        let mut one_by_one = current;
        for change in changes {
            one_by_one.apply_diff(Value::set([change]), &set_type);
        }
        assert_eq!(merged, one_by_one);
        let Value::Set(items) = &merged else {
            panic!("not a set")
        };
        assert_eq!(items.len(), 100);
        assert!(
            items.iter().zip(items.iter().skip(1)).all(|(a, b)| a < b),
            "sorted, unique"
        );
        assert!(!items.contains(&Atom::string("p005")) && items.contains(&Atom::string("q019")));
    }

    /// Sets and maps are sorted vectors: built from any order (the last value of a repeated key
    /// wins, as in a `BTreeMap`), looked up by binary search, a string key without an atom.
    #[test]
    fn sets_and_maps_are_sorted_and_unique() {
        let set: AtomSet = [Atom::string("b"), Atom::string("a"), Atom::string("b")].into();
        assert_eq!(set.iter().collect::<Vec<_>>(), [&Atom::string("a"), &Atom::string("b")]);
        let map: AtomMap = [
            (Atom::string("k"), Atom::string("1")),
            (Atom::Integer(7), Atom::string("int")),
            (Atom::string("a"), Atom::string("2")),
            (Atom::string("k"), Atom::string("3")),
        ]
        .into();
        assert_eq!(map.len(), 3);
        assert_eq!(map.get_str("k"), Some(&Atom::string("3")));
        assert_eq!(map.get(&Atom::string("a")), Some(&Atom::string("2")));
        assert_eq!(map.get_str("missing"), None);
        assert_eq!(map.get(&Atom::Integer(7)), Some(&Atom::string("int")));
        assert_eq!(
            Value::Map(map).to_json(),
            json!(["map", [[7, "int"], ["a", "2"], ["k", "3"]]])
        );
    }

    #[test]
    fn scalar_diff_replaces() {
        let mut value = Value::string("old");
        value.apply_diff(Value::string("new"), &ColumnType::string());
        assert_eq!(value, Value::string("new"));
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        for bad in [
            json!(null),
            json!({}),
            json!(["uuid", "nope"]),
            json!(["map", [["k"]]]),
            json!(["set"]),
        ] {
            assert!(Value::from_json(&bad).is_err(), "{bad} should be refused");
        }
    }
}
