//! A strict JSON reader for configuration and scenario files.
//!
//! `serde_json::Value` keeps the last of two equal keys without a word, and its numbers
//! lose whether `1.0` was written as a float. Configs and scenarios must reject both
//! (F4a, section S), so they are parsed into [`Json`], which keeps object members in file
//! order, reports a duplicate key with its path, and remembers how a number was written.
//! Parsing is done by serde_json's tokenizer through a visitor, so no JSON grammar is
//! written by hand here.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A parsed JSON value with members in file order.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer written without fraction or exponent that fits in 64 bits.
    Integer(i64),
    /// Any other number: a fraction, an exponent, or an integer beyond 64 bits.
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Compact JSON text that reads back as the same tree: a `Float` keeps its fraction
/// or exponent (so `1.0` stays a float), strings are escaped by serde_json.
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Integer(i) => write!(f, "{i}"),
            Json::Float(x) => write!(f, "{x:?}"),
            Json::String(text) => write_string(f, text),
            Json::Array(items) => {
                f.write_str("[")?;
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Object(members) => {
                f.write_str("{")?;
                for (n, (key, value)) in members.iter().enumerate() {
                    if n > 0 {
                        f.write_str(",")?;
                    }
                    write_string(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str(&serde_json::to_string(text).map_err(|_| fmt::Error)?)
}

impl Json {
    /// The JSON type's name, for error messages ("expected a string, found an integer").
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Integer(_) => "an integer",
            Json::Float(_) => "a non-integer number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// The member `key` of an object (`None` for other kinds or a missing key).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Why a document could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("{path}: duplicate key \"{key}\"")]
    DuplicateKey { path: String, key: String },
    #[error("not valid JSON: {0}")]
    Syntax(String),
}

/// Parses `text` strictly: duplicate keys anywhere are an error naming their path.
pub fn parse(text: &str) -> Result<Json, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut duplicate = None;
    let value = JsonSeed {
        path: "$".to_string(),
        duplicate: &mut duplicate,
    }
    .deserialize(&mut deserializer);
    if let Some(err) = duplicate {
        return Err(err);
    }
    let value = value.map_err(|e| JsonError::Syntax(e.to_string()))?;
    deserializer
        .end()
        .map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Appends an object member to a JSON path, quoting keys that are not plain identifiers.
pub fn member_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("{parent}.{key}")
    } else {
        format!("{parent}[{}]", serde_json::Value::String(key.to_string()))
    }
}

/// Appends an array index to a JSON path.
pub fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

struct JsonSeed<'a> {
    path: String,
    duplicate: &'a mut Option<JsonError>,
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Json;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Integer(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(i64::try_from(v).map_or(Json::Float(v as f64), Json::Integer))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = JsonSeed {
                path: index_path(&self.path, items.len()),
                duplicate: &mut *self.duplicate,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Json::Array(items)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        // Keys seen so far, by hash: a scenario's object of 65,535 forms is checked in
        // linear time, not by comparing each key with every earlier one.
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = member_path(&self.path, &key);
            if !seen.insert(key.clone()) && self.duplicate.is_none() {
                *self.duplicate = Some(JsonError::DuplicateKey {
                    path: self.path.clone(),
                    key: key.clone(),
                });
            }
            let value = map.next_value_seed(JsonSeed {
                path,
                duplicate: &mut *self.duplicate,
            })?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_text_reads_back_as_the_same_tree() {
        let text = r#"{"a":[1,1.0,1e300,-0.5,"x\"\u00e9",true,null],"b":{}}"#;
        let tree = parse(text).unwrap();
        assert_eq!(parse(&tree.to_string()).unwrap(), tree);
    }

    #[test]
    fn keeps_integer_and_float_apart() {
        let v = parse(r#"{"a": 1, "b": 1.0, "c": 1e2, "d": 99999999999999999999}"#).unwrap();
        assert_eq!(v.get("a"), Some(&Json::Integer(1)));
        assert!(matches!(v.get("b"), Some(Json::Float(_))));
        assert!(matches!(v.get("c"), Some(Json::Float(_))));
        assert!(matches!(v.get("d"), Some(Json::Float(_))));
    }

    #[test]
    fn duplicate_key_names_its_path() {
        let err = parse(r#"{"forms": [{"name": "a", "name": "b"}]}"#).unwrap_err();
        assert_eq!(
            err,
            JsonError::DuplicateKey {
                path: "$.forms[0]".into(),
                key: "name".into()
            }
        );
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        assert!(matches!(parse("{} x"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse(""), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn odd_keys_are_quoted_in_paths() {
        assert_eq!(member_path("$", "forms"), "$.forms");
        assert_eq!(member_path("$", "a b"), "$[\"a b\"]");
        assert_eq!(member_path("$", "0x"), "$[\"0x\"]");
    }
}
