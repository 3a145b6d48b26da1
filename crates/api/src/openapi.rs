//! The route table's documentation: each route is declared once as an [`Op`] (who may
//! call it, its request and query types, what it answers and with which error codes),
//! and [`Routes::add`] both routes it and writes its operation into the OpenAPI 3.1
//! document served at `/v1/openapi.json`. Schemas come from the handlers' own request
//! and response types through schemars: requests under serde's deserialize rules
//! (optional fields may be left out), responses under its serialize rules (every field
//! is present, `null` where empty).

use crate::auth;
use crate::{AppState, Callers};
use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;
use refreshd_engine::KeyKind;
use schemars::generate::{Contract, SchemaSettings};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// A schema for a type, written into a generator's definitions as needed.
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// Pattern of the ids operators choose (appid, provider, device_id, user_id), as the
/// engine checks them: 1 to 128 of `A–Z a–z 0–9 . _ -`.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";

/// Pattern of the form ids refreshd issues (`frm_` and 20 hex digits).
pub const FORM_ID_PATTERN: &str = "^frm_[0-9a-f]{20}$";

/// The name a kind of key has in the document (tags and `x-refreshd-key-kinds`).
pub fn key_kind_tag(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Operator => "operator",
        KeyKind::App => "developer",
        KeyKind::Provider => "provider",
        KeyKind::Device => "device",
    }
}

/// An id chosen by an operator: an appid, provider name, device id or user id. Read
/// from a request, a value outside [`ID_PATTERN`] is refused as `invalid_request`
/// naming its path, as the engine would refuse it.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Id(pub String);

impl TryFrom<String> for Id {
    type Error = &'static str;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let ok = (1..=128).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(Id(text))
        } else {
            Err("an id is 1 to 128 characters of A-Z a-z 0-9 . _ -")
        }
    }
}

impl JsonSchema for Id {
    fn schema_name() -> Cow<'static, str> {
        "Id".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": ID_PATTERN,
            "minLength": 1,
            "maxLength": 128,
            "description": "1 to 128 characters of A-Z a-z 0-9 . _ -",
        })
    }
}

/// An IANA time zone name (T1). The engine looks the name up in its bundled time zone
/// database and answers `invalid_zone` for one it does not know; the schema lists the
/// names of that database.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct Zone(pub String);

impl JsonSchema for Zone {
    fn schema_name() -> Cow<'static, str> {
        "Zone".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut names: Vec<String> = jiff::tz::db()
            .available()
            .map(|name| name.to_string())
            .filter(|name| jiff::tz::TimeZone::get(name).is_ok())
            .collect();
        names.sort();
        names.dedup();
        json_schema!({
            "type": "string",
            "description": "an IANA time zone name, such as \"Asia/Shanghai\" or \"UTC\"",
            "enum": names,
        })
    }
}

/// An RFC 3339 instant, as refreshd writes them (`2026-03-01T10:00:00Z`).
pub struct DateTime;

impl JsonSchema for DateTime {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "DateTime".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

/// What an operation answers when it succeeds.
enum Answer {
    /// A JSON body of the given schema.
    Json(u16, SchemaFn),
    /// The status alone, without a body.
    Empty(u16),
    /// A stream of Server-Sent Events, described in words and by the schema of one
    /// event.
    EventStream(&'static str, fn() -> Value),
}

/// What an operation reads as its body.
enum Request {
    None,
    /// A JSON body of a type the handler deserializes.
    Json(SchemaFn),
    /// A JSON document the engine reads itself (described in words and a schema).
    Document(Value),
}

/// One operation of the API, as the route table declares it.
pub(crate) struct Op {
    method: Method,
    path: &'static str,
    callers: &'static [KeyKind],
    summary: &'static str,
    description: Option<&'static str>,
    request: Request,
    query: Option<SchemaFn>,
    answer: Answer,
    errors: Vec<(u16, &'static [&'static str])>,
    parameters: Vec<Value>,
}

impl Op {
    /// `method path`, callable with a key of one of `callers`' kinds.
    pub(crate) fn new(
        method: Method,
        path: &'static str,
        callers: &'static [KeyKind],
        summary: &'static str,
    ) -> Op {
        Op {
            method,
            path,
            callers,
            summary,
            description: None,
            request: Request::None,
            query: None,
            answer: Answer::Empty(200),
            errors: Vec::new(),
            parameters: Vec::new(),
        }
    }

    /// More words about the operation.
    pub(crate) fn describe(mut self, description: &'static str) -> Op {
        self.description = Some(description);
        self
    }

    /// A parameter the handler reads itself (a header).
    pub(crate) fn parameter(mut self, parameter: Value) -> Op {
        self.parameters.push(parameter);
        self
    }

    /// The JSON body is a `T`.
    pub(crate) fn body<T: JsonSchema>(mut self) -> Op {
        self.request = Request::Json(|g| g.subschema_for::<T>());
        self
    }

    /// The body is a JSON document described by `schema`, read by the engine.
    pub(crate) fn document(mut self, schema: Value) -> Op {
        self.request = Request::Document(schema);
        self
    }

    /// The query string is read as a `T` (each of its fields is a parameter).
    pub(crate) fn query<T: JsonSchema>(mut self) -> Op {
        self.query = Some(|g| T::json_schema(g));
        self
    }

    /// Success answers `status` with a JSON `T`.
    pub(crate) fn answers<T: JsonSchema>(mut self, status: u16) -> Op {
        self.answer = Answer::Json(status, |g| g.subschema_for::<T>());
        self
    }

    /// Success answers `status` without a body (204, or a bare 200).
    pub(crate) fn empty(mut self, status: u16) -> Op {
        self.answer = Answer::Empty(status);
        self
    }

    /// Success answers a stream of Server-Sent Events, described in words and by the
    /// schema of each event.
    pub(crate) fn event_stream(mut self, description: &'static str, event: fn() -> Value) -> Op {
        self.answer = Answer::EventStream(description, event);
        self
    }

    /// The operation may answer `status` with one of `codes` (beside the errors every
    /// operation may answer, which the document adds itself).
    pub(crate) fn errors(mut self, status: u16, codes: &'static [&'static str]) -> Op {
        self.errors.push((status, codes));
        self
    }

    fn success_status(&self) -> u16 {
        match self.answer {
            Answer::Json(status, _) | Answer::Empty(status) => status,
            Answer::EventStream(..) => 200,
        }
    }

    /// Every error status the operation can answer, with its codes: its own, and those
    /// of the layers every authenticated route passes (key, rate limit, body deadline
    /// and size, store) and of the extractors (a malformed path, query or body).
    fn all_errors(&self) -> Vec<(u16, Vec<&'static str>)> {
        let mut all: Vec<(u16, Vec<&'static str>)> = vec![
            (401, vec!["unauthorized"]),
            (408, vec!["request_timeout"]),
            (413, vec!["payload_too_large"]),
            (429, vec!["rate_limited"]),
            (503, vec!["unavailable"]),
        ];
        let reads_input = self.path.contains('{')
            || self.query.is_some()
            || !matches!(self.request, Request::None);
        if reads_input {
            all.push((400, vec!["invalid_request"]));
        }
        for (status, codes) in &self.errors {
            match all.iter_mut().find(|(s, _)| s == status) {
                Some((_, known)) => {
                    for code in *codes {
                        if !known.contains(code) {
                            known.push(code);
                        }
                    }
                }
                None => all.push((*status, codes.to_vec())),
            }
        }
        all.sort_by_key(|(status, _)| *status);
        all
    }
}

/// What an error status means, in general.
fn status_meaning(status: u16) -> &'static str {
    match status {
        400 => "the request is not valid",
        401 => "no key, an unknown or revoked key, or a key of the wrong kind",
        404 => "no such object for this caller",
        408 => "the request body did not arrive in time",
        409 => "the request conflicts with the current state",
        413 => "the request body is too large",
        429 => "too many requests; retry after the Retry-After header's seconds",
        503 => "the store is unavailable; try again",
        _ => "error",
    }
}

/// The parameters a path template names, with the schemas the server holds them to.
fn path_parameter(name: &str, schemas: &mut SchemaGenerator) -> Value {
    let (schema, description) = match name {
        "appid" => (
            json!(schemas.subschema_for::<Id>()),
            "the app (a developer key sees only its own)",
        ),
        "provider" => (json!(schemas.subschema_for::<Id>()), "the widget provider"),
        "id" => (
            json!(schemas.subschema_for::<Id>()),
            "the appid, provider name or device id",
        ),
        "form_id" => (
            json!({"type": "string", "pattern": FORM_ID_PATTERN}),
            "a form id as POST /v1/forms answered it",
        ),
        "collection" => (
            json!({"type": "string", "enum": ["apps", "providers", "devices"]}),
            "which kind of principal",
        ),
        "device_id" => (json!(schemas.subschema_for::<Id>()), "the device"),
        "user_id" => (
            json!(schemas.subschema_for::<Id>()),
            "the user, as the operator named it when creating a device",
        ),
        other => panic!("the path parameter {{{other}}} is not described"),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema, "description": description})
}

/// Routes with their documentation, collected together.
pub(crate) struct Routes {
    router: Router<AppState>,
    paths: Map<String, Value>,
    requests: SchemaGenerator,
    responses: SchemaGenerator,
    callers: Callers,
}

impl Routes {
    pub(crate) fn new() -> Routes {
        let generator = |contract| {
            let mut settings = SchemaSettings::draft2020_12();
            settings.definitions_path = "#/components/schemas/".into();
            settings.contract = contract;
            settings.into_generator()
        };
        Routes {
            router: Router::new(),
            paths: Map::new(),
            requests: generator(Contract::Deserialize),
            responses: generator(Contract::Serialize),
            callers: Callers::default(),
        }
    }

    /// Routes `op` to `handler` and documents it.
    pub(crate) fn add(mut self, op: Op, handler: MethodRouter<AppState>) -> Routes {
        self.document(&op);
        self.router = self.router.route(op.path, handler);
        self
    }

    /// Documents another method of a path whose handler `add` already routed (one
    /// `MethodRouter` serves every method of a path).
    pub(crate) fn also(mut self, op: Op) -> Routes {
        self.document(&op);
        self
    }

    fn document(&mut self, op: &Op) {
        self.callers.add(op.path, op.method.clone(), op.callers);
        let kinds: Vec<&str> = op.callers.iter().copied().map(key_kind_tag).collect();
        let caller = auth::needs_message(op.callers);
        let caller = caller.trim_start_matches("this endpoint needs ");
        let mut description = format!("Caller: {caller}.");
        if let Some(more) = op.description {
            description = format!("{more}\n\n{description}");
        }
        let mut parameters: Vec<Value> = Vec::new();
        for segment in op.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                parameters.push(path_parameter(name, &mut self.requests));
            }
        }
        if let Some(query) = op.query {
            parameters.extend(query_parameters(query(&mut self.requests)));
        }
        parameters.extend(op.parameters.iter().cloned());
        let mut responses = Map::new();
        let success = op.success_status().to_string();
        responses.insert(
            success,
            match &op.answer {
                Answer::Json(_, schema) => json!({
                    "description": "success",
                    "content": {"application/json": {"schema": schema(&mut self.responses)}}
                }),
                Answer::Empty(204) => json!({"description": "done; no content"}),
                Answer::Empty(_) => json!({"description": "done; the body is empty"}),
                Answer::EventStream(events, event) => json!({
                    "description": events,
                    "content": {"text/event-stream": {"schema": event()}}
                }),
            },
        );
        for (status, codes) in op.all_errors() {
            let listed: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            let mut response = json!({
                "description": format!("{}; error codes: {}", status_meaning(status), listed.join(", ")),
                "x-error-codes": codes,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            });
            if status == 429 {
                response["headers"] = json!({"Retry-After": {
                    "description": "seconds to wait before trying again",
                    "required": true,
                    "schema": {"type": "integer", "minimum": 1}
                }});
            }
            responses.insert(status.to_string(), response);
        }
        let mut operation = json!({
            "operationId": operation_id(&op.method, op.path),
            "summary": op.summary,
            "description": description,
            "tags": kinds,
            "security": [{"bearer": []}],
            "x-refreshd-key-kinds": kinds,
            "parameters": parameters,
            "responses": responses,
        });
        match &op.request {
            Request::None => {}
            Request::Json(schema) => {
                operation["requestBody"] = json!({"required": true, "content": {
                    "application/json": {"schema": schema(&mut self.requests)}
                }});
            }
            Request::Document(schema) => {
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": schema}}});
            }
        }
        let entry = self
            .paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method.as_str().to_lowercase()] = operation;
    }

    /// The router of the authenticated routes, who may call what, and the whole
    /// document: these routes, the two open ones (`/healthz`, this document), the
    /// security scheme and every schema referred to.
    pub(crate) fn finish_document(mut self) -> (Router<AppState>, Callers, Value) {
        let health = self.responses.subschema_for::<crate::Health>();
        let error = self.responses.subschema_for::<crate::error::ErrorBody>();
        assert_eq!(
            error.get("$ref"),
            Some(&json!("#/components/schemas/Error")),
            "operations refer to the Error schema by that name"
        );
        let mut paths = std::mem::take(&mut self.paths);
        paths.insert(
            "/healthz".into(),
            json!({"get": {
                "operationId": "get_healthz",
                "summary": "Whether the store is reachable",
                "description": "No key needed. `now` is the service's clock (warped under --time-warp).",
                "security": [],
                "responses": {
                    "200": {"description": "healthy", "content": {"application/json": {"schema": health}}},
                    "503": {"description": "the store is unreachable", "content": {"application/json": {"schema": health}}}
                }
            }}),
        );
        paths.insert(
            "/v1/openapi.json".into(),
            json!({"get": {
                "operationId": "get_openapi_json",
                "summary": "This document (OpenAPI 3.1)",
                "description": "No key needed.",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}),
        );
        let mut schemas: Map<String, Value> = Map::new();
        for generator in [&self.requests, &self.responses] {
            for (name, schema) in generator.definitions() {
                if let Some(known) = schemas.get(name) {
                    assert_eq!(known, schema, "two different schemas are named {name}");
                }
                schemas.insert(name.clone(), schema.clone());
            }
        }
        let tags: Vec<Value> = [KeyKind::Operator, KeyKind::App, KeyKind::Provider, KeyKind::Device]
            .into_iter()
            .map(|kind| json!({"name": key_kind_tag(kind), "description": format!("Operations callable with {}", auth::key_kind_name(kind))}))
            .collect();
        let document = json!({
            "openapi": "3.1.0",
            "info": {
                "title": "refreshd",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "refreshd decides when widget and mini-program data on devices is refreshed, and whether it may be. Every operation but /healthz and this document needs `Authorization: Bearer <key>`; the key's prefix names its kind, and each operation lists the kinds it accepts in `x-refreshd-key-kinds` (and as tags). Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`; each error response lists its codes in `x-error-codes`.",
            },
            "tags": tags,
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: rfdo_ operator, rfda_ app developer, rfdp_ widget provider, rfdd_ device. It is checked before the body is read; a key of a kind the operation does not accept answers 401."
                }},
                "schemas": schemas,
            }
        });
        (self.router, self.callers, document)
    }
}

/// `put_apps_appid_periodic_fetch` for `PUT /v1/apps/{appid}/periodic-fetch`.
fn operation_id(method: &Method, path: &str) -> String {
    let mut id = method.as_str().to_lowercase();
    for segment in path.split('/').filter(|s| !s.is_empty() && *s != "v1") {
        id.push('_');
        id.push_str(
            &segment
                .trim_start_matches('{')
                .trim_end_matches('}')
                .replace('-', "_"),
        );
    }
    id
}

/// One query parameter per property of a query type's object schema.
fn query_parameters(schema: Schema) -> Vec<Value> {
    let schema = schema.to_value();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        panic!("a query type is an object with properties: {schema}");
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"))
                .unwrap_or(Value::Null);
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(text) = description.as_str() {
                parameter["description"] = json!(text);
            }
            parameter
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_engines_rule() {
        for ok in ["wx1", "a.b_c-D", &"x".repeat(128)] {
            assert!(Id::try_from(ok.to_string()).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a/b", &"x".repeat(129)] {
            assert!(Id::try_from(bad.to_string()).is_err(), "{bad}");
        }
        let pattern = ID_PATTERN;
        assert!(pattern.starts_with('^') && pattern.ends_with('$'));
    }

    #[test]
    fn zones_in_the_schema_are_zones_the_engine_knows() {
        let schema = Zone::json_schema(&mut SchemaGenerator::default()).to_value();
        let names = schema["enum"].as_array().unwrap();
        assert!(names.len() > 300, "{}", names.len());
        for name in ["UTC", "Asia/Shanghai", "America/New_York"] {
            assert!(names.contains(&json!(name)), "{name}");
        }
    }

    #[test]
    fn operation_ids_are_words_of_the_path() {
        assert_eq!(
            operation_id(&Method::PUT, "/v1/apps/{appid}/periodic-fetch"),
            "put_apps_appid_periodic_fetch"
        );
    }
}
