//! Extractors whose rejections use the API's error shape (api.md): JSON bodies, raw
//! bodies, path parameters and query strings. axum's own extractors answer plain text;
//! every problem here becomes `invalid_request` (or `payload_too_large`) with a
//! `details` item naming where the problem is and how to fix it.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Like `axum::Json`, but a body that is not JSON, has the wrong shape or types, or
/// unknown fields answers 400 `invalid_request` with the JSON path of the problem and a
/// hint, and one over the limit 413.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers().get(CONTENT_TYPE)) {
            return Err(ApiError::invalid_request(
                "send Content-Type: application/json",
            ));
        }
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        parse_json(&bytes).map(Body)
    }
}

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads `bytes` as a `T`; every failure names its JSON path (`$.source.url`).
///
/// serde's derived structs also accept their fields as an array (`[true]` for
/// `{"visible": true}`, `[]` for an object whose fields are all optional); the API's
/// objects are objects only, so a body with an array is read a second time through
/// [`strict::Strict`], which refuses an array where an object is expected.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = match serde_path_to_error::deserialize(&mut deserializer) {
        // Trailing characters after the document are an error too, as in axum::Json.
        Ok(value) => deserializer
            .end()
            .map(|()| value)
            .map_err(|e| ("$".to_string(), e)),
        Err(error) => Err((json_path("$", error.path()), error.into_inner())),
    };
    let parsed = match parsed {
        Ok(value) if bytes.contains(&b'[') => match serde_json::from_slice::<Value>(bytes) {
            Ok(tree) => serde_path_to_error::deserialize(strict::Strict(&tree))
                .map_err(|error| (json_path("$", error.path()), error.into_inner())),
            Err(error) => Err(("$".to_string(), error)),
        }
        .map(|_: T| value),
        other => other,
    };
    parsed.map_err(|(path, inner)| {
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let message = inner.to_string();
        let message = message.strip_suffix(&position).unwrap_or(&message);
        let detail = match inner.classify() {
            serde_json::error::Category::Data => data_problem(&path, message),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => json!({
                "path": "$",
                "code": "invalid_json",
                "message": format!("{message} (line {}, column {})", inner.line(), inner.column()),
                "hint": "send one JSON document; check quotes, commas and brackets",
            }),
            serde_json::error::Category::Io => json!({
                "path": "$", "code": "invalid_json", "message": message, "hint": "send the body again",
            }),
        };
        invalid_with_detail(detail)
    })
}

fn invalid_with_detail(detail: Value) -> ApiError {
    let summary = match (detail["path"].as_str(), detail["message"].as_str()) {
        (Some(path), Some(message)) => format!("{path}: {message}"),
        _ => "the request is not valid".to_string(),
    };
    ApiError {
        details: vec![detail],
        ..ApiError::invalid_request(summary)
    }
}

/// `$` followed by `.key` and `[index]` segments.
fn json_path(root: &str, path: &serde_path_to_error::Path) -> String {
    let mut out = root.to_string();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                out.push('.');
                out.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// A detail item for a value of the wrong type or an unknown or missing field, from
/// serde's message (whose wording serde keeps stable: "unknown field `x`, expected one
/// of `a`, `b`", "missing field `x`", "invalid type: …, expected …").
fn data_problem(path: &str, message: &str) -> Value {
    let quoted = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let names = quoted(rest);
        let field = names.first().cloned().unwrap_or_default();
        let expected: Vec<String> = names.into_iter().skip(1).collect();
        let hint = if expected.is_empty() {
            "this object takes no fields".to_string()
        } else {
            format!("expected one of: {}", expected.join(", "))
        };
        // The path already ends at the unknown key (serde_path_to_error records it).
        let suffix = format!(".{field}");
        let path = if path.ends_with(&suffix) {
            path.to_string()
        } else {
            format!("{path}{suffix}")
        };
        return json!({
            "path": path,
            "code": "unknown_field",
            "message": format!("\"{field}\" is not a field here"),
            "hint": hint,
        });
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = quoted(rest).into_iter().next().unwrap_or_default();
        return json!({
            "path": format!("{path}.{field}"),
            "code": "missing_field",
            "message": format!("\"{field}\" is required"),
            "hint": format!("add \"{field}\""),
        });
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.split(", expected ").nth(1).unwrap_or("another type");
        return json!({
            "path": path,
            "code": "wrong_type",
            "message": format!("wrong type: {rest}"),
            "hint": format!("send {expected}"),
        });
    }
    let hint = message
        .split(", expected ")
        .nth(1)
        .map(|expected| format!("send {expected}"))
        .unwrap_or_else(|| "see the request schema in /v1/openapi.json".to_string());
    json!({"path": path, "code": "invalid_value", "message": message, "hint": hint})
}

/// Reads an integer field. JSON does not tell `5` from `5.0`, and JSON Schema's
/// `integer` (as in /v1/openapi.json) counts both as the integer 5, so a number with no
/// fractional part is accepted; `5.5`, numbers beyond i64 and other types are not.
pub fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(IntegerVisitor)
}

/// Like [`integer`], for a field that may be `null`.
pub fn optional_integer<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    struct OptionalVisitor;
    impl<'de> serde::de::Visitor<'de> for OptionalVisitor {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            integer(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptionalVisitor)
}

struct IntegerVisitor;

impl serde::de::Visitor<'_> for IntegerVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i64, E> {
        // 2^63 is the first f64 past i64::MAX.
        if v.fract() == 0.0 && v >= -(2f64.powi(63)) && v < 2f64.powi(63) {
            Ok(v as i64)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
        }
    }
}

/// The body's bytes, with the router's limit (1 MiB) answered as 413 in the API's shape.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) => Err(bytes_rejection(rejection)),
        }
    }
}

fn bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!(
            "request bodies are limited to {} bytes (1 MiB)",
            crate::MAX_REQUEST_BYTES
        ))
    } else {
        ApiError::invalid_request(format!(
            "the body could not be read: {}",
            rejection.body_text()
        ))
    }
}

/// Like `axum::extract::Path`: a parameter that is not valid UTF-8 (or of the wrong
/// type) answers 400 `invalid_request`.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                tracing::error!(error = %rejection.body_text(), "a route's path parameters do not match its handler");
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the route is misconfigured",
                ))
            }
            Err(rejection) => Err(invalid_with_detail(json!({
                "path": "path",
                "code": "invalid_path",
                "message": rejection.body_text(),
                "hint": "path segments must be percent-encoded UTF-8",
            }))),
        }
    }
}

/// Like `axum::extract::Query`, with each problem named by its parameter
/// (`query.user_id`).
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| {
                let path = json_path("query", error.path());
                let message = error.into_inner().to_string();
                let mut detail = data_problem(&path, &message);
                if detail["code"] == "missing_field" {
                    detail["hint"] = json!(format!(
                        "add ?{}=… to the URL",
                        detail["path"]
                            .as_str()
                            .unwrap_or_default()
                            .trim_start_matches("query.")
                    ));
                }
                invalid_with_detail(detail)
            })
    }
}

/// A deserializer over a parsed JSON tree that gives a struct only an object (serde_json
/// also gives it an array) and otherwise reads the tree as serde_json would.
mod strict {
    use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
    use serde::forward_to_deserialize_any;
    use serde_json::{Error, Value};

    pub struct Strict<'a>(pub &'a Value);

    fn unexpected(value: &Value) -> Unexpected<'_> {
        match value {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(n) => match n.as_f64() {
                Some(f) => Unexpected::Float(f),
                None => Unexpected::Other("number"),
            },
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }

    impl<'de> de::Deserializer<'de> for Strict<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_unit(),
                Value::Bool(b) => visitor.visit_bool(*b),
                Value::Number(n) => {
                    if let Some(u) = n.as_u64() {
                        visitor.visit_u64(u)
                    } else if let Some(i) = n.as_i64() {
                        visitor.visit_i64(i)
                    } else {
                        visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                    }
                }
                Value::String(s) => visitor.visit_str(s),
                Value::Array(items) => visitor.visit_seq(Seq(items.iter())),
                Value::Object(map) => visitor.visit_map(Fields(map.iter(), None)),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_none(),
                _ => visitor.visit_some(self),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(map) => visitor.visit_map(Fields(map.iter(), None)),
                other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
            }
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                Value::String(variant) => visitor.visit_enum(variant.as_str().into_deserializer()),
                Value::Object(map) if map.len() == 1 => {
                    let (variant, value) = map.iter().next().expect("one entry");
                    visitor.visit_enum(Variant(variant, value))
                }
                other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
            }
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
        }
    }

    struct Seq<'a>(std::slice::Iter<'a, Value>);

    impl<'de> de::SeqAccess<'de> for Seq<'_> {
        type Error = Error;

        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            self.0
                .next()
                .map(|item| seed.deserialize(Strict(item)))
                .transpose()
        }
    }

    struct Fields<'a>(serde_json::map::Iter<'a>, Option<&'a Value>);

    impl<'de> de::MapAccess<'de> for Fields<'_> {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.0.next() {
                Some((key, value)) => {
                    self.1 = Some(value);
                    seed.deserialize(key.as_str().into_deserializer()).map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let value = self.1.take().unwrap_or(&Value::Null);
            seed.deserialize(Strict(value))
        }
    }

    struct Variant<'a>(&'a String, &'a Value);

    impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
        type Error = Error;
        type Variant = Strict<'a>;

        fn variant_seed<V: DeserializeSeed<'de>>(
            self,
            seed: V,
        ) -> Result<(V::Value, Strict<'a>), Error> {
            let variant = seed.deserialize(self.0.as_str().into_deserializer())?;
            Ok((variant, Strict(self.1)))
        }
    }

    impl<'de> de::VariantAccess<'de> for Strict<'_> {
        type Error = Error;

        fn unit_variant(self) -> Result<(), Error> {
            match self.0 {
                Value::Null => Ok(()),
                other => Err(de::Error::invalid_type(unexpected(other), &"unit variant")),
            }
        }

        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
            seed.deserialize(self)
        }

        fn tuple_variant<V: Visitor<'de>>(
            self,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_seq(self, visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_struct(self, "", fields, visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        enabled: bool,
        source: Inner,
        #[serde(default)]
        list: Vec<u8>,
    }

    fn detail(body: &str) -> Value {
        let error = parse_json::<Outer>(body.as_bytes()).unwrap_err();
        assert_eq!(error.code, "invalid_request");
        error.details[0].clone()
    }

    #[derive(Deserialize, Debug)]
    struct Numbers {
        #[serde(deserialize_with = "integer")]
        n: i64,
        #[serde(default, deserialize_with = "optional_integer")]
        m: Option<i64>,
    }

    #[test]
    fn objects_are_objects_and_never_arrays() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Optional {
            #[serde(default)]
            n: Option<i64>,
        }
        assert!(parse_json::<Optional>(b"{}").is_ok());
        let error = parse_json::<Optional>(b"[]").unwrap_err();
        assert_eq!(error.details[0]["path"], "$");
        assert_eq!(error.details[0]["code"], "wrong_type");
        let d = detail(r#"{"enabled": true, "source": ["x"]}"#);
        assert_eq!(
            (d["path"].as_str(), d["code"].as_str()),
            (Some("$.source"), Some("wrong_type"))
        );
        let d = detail(r#"[true, {"url": "x"}]"#);
        assert_eq!(d["code"], "wrong_type");
        let read =
            parse_json::<Outer>(br#"{"enabled": true, "source": {"url": "[x]"}, "list": [1, 2]}"#)
                .unwrap();
        assert_eq!(read.list, vec![1, 2]);
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let read = |body: &str| parse_json::<Numbers>(body.as_bytes()).map(|v| (v.n, v.m));
        assert_eq!(read(r#"{"n": 5}"#).unwrap(), (5, None));
        assert_eq!(read(r#"{"n": 5.0, "m": -3.0}"#).unwrap(), (5, Some(-3)));
        assert_eq!(read(r#"{"n": 1e3, "m": null}"#).unwrap(), (1000, None));
        for bad in [
            r#"{"n": 5.5}"#,
            r#"{"n": "5"}"#,
            r#"{"n": 1e19}"#,
            r#"{"n": 18446744073709551615}"#,
            r#"{"n": 1, "m": 0.5}"#,
        ] {
            let error = read(bad).unwrap_err();
            assert_eq!(error.code, "invalid_request", "{bad}");
        }
    }

    #[test]
    fn unknown_fields_name_their_path_and_the_expected_fields() {
        let d = detail(r#"{"enabled": true, "source": {"url": "x", "ulr": "y"}}"#);
        assert_eq!(d["path"], "$.source.ulr");
        assert_eq!(d["code"], "unknown_field");
        assert_eq!(d["hint"], "expected one of: url");
        let d = detail(r#"{"enabled": true, "sorce": {}}"#);
        assert_eq!(d["path"], "$.sorce");
        assert_eq!(d["hint"], "expected one of: enabled, source, list");
    }

    #[test]
    fn wrong_types_and_missing_fields_name_their_path() {
        let d = detail(r#"{"enabled": "yes", "source": {"url": "x"}}"#);
        assert_eq!(
            (d["path"].as_str(), d["code"].as_str()),
            (Some("$.enabled"), Some("wrong_type"))
        );
        assert_eq!(d["hint"], "send a boolean");
        let d = detail(r#"{"enabled": true, "source": {"url": "x"}, "list": [1, "2"]}"#);
        assert_eq!(d["path"], "$.list[1]");
        let d = detail(r#"{"enabled": true, "source": {}}"#);
        assert_eq!(
            (d["path"].as_str(), d["code"].as_str()),
            (Some("$.source.url"), Some("missing_field"))
        );
        let d = detail(r#"{"enabled": tru"#);
        assert_eq!(d["code"], "invalid_json");
        let d = detail(r#"{"enabled": true, "source": {"url": "x"}} x"#);
        assert_eq!(d["code"], "invalid_json");
    }
}
