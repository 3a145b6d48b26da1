//! Typed reading of strict JSON objects, with the JSON path of every problem.

use refreshd_rules::json::{member_path, Json};

/// A problem in a scenario file, with the JSON path it was found at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ScenarioError {
    pub path: String,
    pub message: String,
}

pub fn invalid(path: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError {
        path: path.to_string(),
        message: message.into(),
    }
}

pub type Result<T> = std::result::Result<T, ScenarioError>;

/// Reads the members of one object, tracking which were used so that unknown keys can
/// be rejected at the end.
pub struct ObjectReader<'a> {
    path: String,
    members: &'a [(String, Json)],
    used: Vec<bool>,
}

impl<'a> ObjectReader<'a> {
    pub fn new(value: &'a Json, path: &str) -> Result<Self> {
        match value {
            Json::Object(members) => Ok(ObjectReader {
                path: path.to_string(),
                members,
                used: vec![false; members.len()],
            }),
            other => Err(invalid(
                path,
                format!("expected an object, found {}", other.kind()),
            )),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k == key)
    }

    /// The member `key` and its path, marking it used.
    pub fn optional(&mut self, key: &str) -> Option<(&'a Json, String)> {
        let index = self.members.iter().position(|(k, _)| k == key)?;
        self.used[index] = true;
        Some((&self.members[index].1, member_path(&self.path, key)))
    }

    pub fn required(&mut self, key: &str) -> Result<(&'a Json, String)> {
        self.optional(key)
            .ok_or_else(|| invalid(&self.path, format!("\"{key}\" is required")))
    }

    /// Rejects any member not read.
    pub fn finish(self) -> Result<()> {
        for ((key, _), used) in self.members.iter().zip(&self.used) {
            if !used {
                return Err(invalid(
                    &member_path(&self.path, key),
                    format!("unknown key \"{key}\""),
                ));
            }
        }
        Ok(())
    }

    pub fn opt_string(&mut self, key: &str) -> Result<Option<(String, String)>> {
        self.optional(key)
            .map(|(v, p)| as_string(v, &p).map(|s| (s, p)))
            .transpose()
    }

    pub fn string(&mut self, key: &str) -> Result<(String, String)> {
        let (v, p) = self.required(key)?;
        Ok((as_string(v, &p)?, p))
    }

    pub fn opt_bool(&mut self, key: &str) -> Result<Option<bool>> {
        self.optional(key).map(|(v, p)| as_bool(v, &p)).transpose()
    }

    pub fn opt_integer(&mut self, key: &str) -> Result<Option<(i64, String)>> {
        self.optional(key)
            .map(|(v, p)| as_integer(v, &p).map(|n| (n, p)))
            .transpose()
    }

    pub fn integer(&mut self, key: &str) -> Result<(i64, String)> {
        let (v, p) = self.required(key)?;
        Ok((as_integer(v, &p)?, p))
    }
}

pub fn as_string(value: &Json, path: &str) -> Result<String> {
    match value {
        Json::String(s) => Ok(s.clone()),
        other => Err(invalid(
            path,
            format!("expected a string, found {}", other.kind()),
        )),
    }
}

pub fn as_bool(value: &Json, path: &str) -> Result<bool> {
    match value {
        Json::Bool(b) => Ok(*b),
        other => Err(invalid(
            path,
            format!("expected a boolean, found {}", other.kind()),
        )),
    }
}

pub fn as_integer(value: &Json, path: &str) -> Result<i64> {
    match value {
        Json::Integer(n) => Ok(*n),
        other => Err(invalid(
            path,
            format!("expected an integer, found {}", other.kind()),
        )),
    }
}

pub fn as_string_list(value: &Json, path: &str) -> Result<Vec<String>> {
    match value {
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| as_string(item, &format!("{path}[{i}]")))
            .collect(),
        other => Err(invalid(
            path,
            format!("expected an array of strings, found {}", other.kind()),
        )),
    }
}
