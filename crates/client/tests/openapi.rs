//! The client's response types against the server's own OpenAPI document: for each
//! operation, the document's success-response schema and the client type's JSON
//! schema must name the same properties and agree on which are required, at every
//! level of nesting. A difference fails with the whole list.

mod support;

use refreshd_client::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use support::Refreshd;

/// (method, path, success status, client type, its schema)
fn operations() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Value,
)> {
    macro_rules! op {
        ($method:literal, $path:literal, $status:literal, $ty:ty) => {
            (
                $method,
                $path,
                $status,
                stringify!($ty),
                response_schema::<$ty>(),
            )
        };
    }
    vec![
        op!("post", "/v1/admin/apps", "201", CreatedApp),
        op!("post", "/v1/admin/providers", "201", CreatedProvider),
        op!(
            "put",
            "/v1/admin/providers/{provider}/market-update-duration",
            "200",
            MarketUpdateDuration
        ),
        op!("post", "/v1/admin/devices", "201", CreatedDevice),
        op!(
            "post",
            "/v1/admin/{collection}/{id}/rotate-key",
            "200",
            RotatedKey
        ),
        op!(
            "post",
            "/v1/admin/providers/{provider}/rotate-signing-secret",
            "200",
            RotatedProviderSecret
        ),
        op!(
            "post",
            "/v1/admin/apps/{appid}/rotate-signing-secret",
            "200",
            RotatedAppSecret
        ),
        op!(
            "put",
            "/v1/apps/{appid}/periodic-fetch",
            "200",
            PeriodicFetch
        ),
        op!(
            "post",
            "/v1/apps/{appid}/periodic-fetch/fetch-now",
            "200",
            FetchNowReport
        ),
        op!(
            "get",
            "/v1/apps/{appid}/periodic-fetch/log",
            "200",
            FetchLog
        ),
        op!(
            "get",
            "/v1/apps/{appid}/periodic-fetch/explain",
            "200",
            FetchExplanation
        ),
        op!(
            "get",
            "/v1/apps/{appid}/background-fetch",
            "200",
            CachedData
        ),
        op!(
            "put",
            "/v1/providers/{provider}/form-config",
            "200",
            FormConfigResult
        ),
        op!("post", "/v1/forms", "201", AddedForm),
        op!("get", "/v1/forms/{form_id}/data", "200", FormData),
        op!(
            "post",
            "/v1/forms/{form_id}/next-refresh",
            "200",
            NextRefresh
        ),
        op!("get", "/v1/forms/{form_id}/explain", "200", FormExplanation),
        op!("get", "/v1/device/sync", "200", SyncResponse),
    ]
}

/// A path template with its parameter names blanked, so `{appid}` and `{app_id}`
/// compare equal.
fn template_shape(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// Follows `$ref`s (JSON pointers into `root`) to the schema they name.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> Result<&'a Value, String> {
    for _ in 0..32 {
        match schema.get("$ref").and_then(Value::as_str) {
            None => return Ok(schema),
            Some(reference) => {
                let pointer = reference
                    .strip_prefix('#')
                    .ok_or_else(|| format!("external $ref {reference} is not supported"))?;
                schema = root
                    .pointer(pointer)
                    .ok_or_else(|| format!("$ref {reference} points at nothing"))?;
            }
        }
    }
    Err("$ref chain longer than 32".into())
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type") == Some(&json!("null"))
}

fn has_type(schema: &Value, wanted: &str) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == wanted,
        Some(Value::Array(ts)) => ts.iter().any(|t| t == wanted),
        _ => false,
    }
}

/// The properties and required names an object schema allows, through `allOf`
/// (all apply), and `oneOf`/`anyOf` (any property of any branch; required only
/// when every non-null branch requires it). `None` for a schema that is not an object.
struct ObjectView {
    properties: BTreeMap<String, Value>,
    required: BTreeSet<String>,
}

fn object_view(root: &Value, schema: &Value, depth: usize) -> Result<Option<ObjectView>, String> {
    if depth > 16 {
        return Err("schema nesting deeper than 16".into());
    }
    let schema = resolve(root, schema)?;
    let mut view = ObjectView {
        properties: BTreeMap::new(),
        required: BTreeSet::new(),
    };
    let mut object_like = has_type(schema, "object") || schema.get("properties").is_some();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            view.properties.insert(name.clone(), sub.clone());
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        view.required
            .extend(required.iter().filter_map(Value::as_str).map(String::from));
    }
    for branch in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(sub) = object_view(root, branch, depth + 1)? {
            object_like = true;
            view.properties.extend(sub.properties);
            view.required.extend(sub.required);
        }
    }
    for key in ["oneOf", "anyOf"] {
        let Some(branches) = schema.get(key).and_then(Value::as_array) else {
            continue;
        };
        let mut common: Option<BTreeSet<String>> = None;
        for branch in branches {
            if is_null_schema(resolve(root, branch)?) {
                continue;
            }
            match object_view(root, branch, depth + 1)? {
                Some(sub) => {
                    object_like = true;
                    view.properties.extend(sub.properties);
                    common = Some(match common {
                        None => sub.required,
                        Some(c) => c.intersection(&sub.required).cloned().collect(),
                    });
                }
                None => common = Some(BTreeSet::new()),
            }
        }
        view.required.extend(common.unwrap_or_default());
    }
    Ok(object_like.then_some(view))
}

/// The item schema of an array schema (also inside a nullable `anyOf`/`oneOf`).
fn array_items<'a>(root: &'a Value, schema: &'a Value) -> Result<Option<&'a Value>, String> {
    let schema = resolve(root, schema)?;
    if has_type(schema, "array") {
        return Ok(schema.get("items"));
    }
    for key in ["oneOf", "anyOf"] {
        for branch in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(items) = array_items(root, branch)? {
                return Ok(Some(items));
            }
        }
    }
    Ok(None)
}

/// Compares the client's schema with the document's at `path`; pushes differences.
fn compare(
    path: &str,
    client_root: &Value,
    client: &Value,
    doc_root: &Value,
    doc: &Value,
    diffs: &mut Vec<String>,
    depth: usize,
) {
    if depth > 12 {
        return;
    }
    let views =
        object_view(client_root, client, 0).and_then(|c| Ok((c, object_view(doc_root, doc, 0)?)));
    let (client_view, doc_view) = match views {
        Ok(views) => views,
        Err(why) => {
            diffs.push(format!("{path}: cannot read a schema: {why}"));
            return;
        }
    };
    match (client_view, doc_view) {
        (Some(c), Some(d)) => {
            let c_names: BTreeSet<&String> = c.properties.keys().collect();
            let d_names: BTreeSet<&String> = d.properties.keys().collect();
            for name in c_names.difference(&d_names) {
                diffs.push(format!(
                    "{path}.{name}: read by the client, missing from the document"
                ));
            }
            for name in d_names.difference(&c_names) {
                diffs.push(format!(
                    "{path}.{name}: in the document, unknown to the client"
                ));
            }
            for name in d.required.difference(&c.required) {
                if c.properties.contains_key(name) {
                    diffs.push(format!(
                        "{path}.{name}: required in the document, optional in the client"
                    ));
                }
            }
            for name in c.required.difference(&d.required) {
                if d.properties.contains_key(name) {
                    diffs.push(format!(
                        "{path}.{name}: required by the client, optional in the document"
                    ));
                }
            }
            for name in c_names.intersection(&d_names) {
                compare(
                    &format!("{path}.{name}"),
                    client_root,
                    &c.properties[*name],
                    doc_root,
                    &d.properties[*name],
                    diffs,
                    depth + 1,
                );
            }
        }
        (Some(c), None) => diffs.push(format!(
            "{path}: the client reads an object with {:?}; the document describes no object here",
            c.properties.keys().collect::<Vec<_>>()
        )),
        // The client takes any value (or a scalar) where the document has an object:
        // nothing the client reads can be missing.
        (None, Some(_)) => {}
        (None, None) => {
            let items =
                array_items(client_root, client).and_then(|c| Ok((c, array_items(doc_root, doc)?)));
            match items {
                Ok((Some(c), Some(d))) => compare(
                    &format!("{path}[]"),
                    client_root,
                    c,
                    doc_root,
                    d,
                    diffs,
                    depth + 1,
                ),
                Ok((Some(_), None)) if object_view(doc_root, doc, 0).ok().flatten().is_none() => {
                    let d = resolve(doc_root, doc).unwrap_or(doc);
                    if d.as_object().is_some_and(|o| !o.is_empty()) && !has_type(d, "array") {
                        diffs.push(format!(
                            "{path}: an array in the client, not in the document"
                        ));
                    }
                }
                Ok(_) => {}
                Err(why) => diffs.push(format!("{path}: cannot read a schema: {why}")),
            }
        }
    }
}

/// Every difference between the client's types and the document, as lines.
fn differences(doc: &Value) -> Vec<String> {
    let mut diffs = Vec::new();
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (method, path, status, type_name, client_schema) in operations() {
        let label = format!("{} {path} {status} ({type_name})", method.to_uppercase());
        let documented = paths
            .iter()
            .find(|(p, _)| template_shape(p) == template_shape(path))
            .and_then(|(_, item)| item.get(method));
        let Some(operation) = documented else {
            diffs.push(format!("{label}: operation missing from the document"));
            continue;
        };
        // `application/json`, possibly with parameters such as a charset.
        let schema = operation
            .pointer(&format!("/responses/{status}/content"))
            .and_then(Value::as_object)
            .and_then(|content| {
                content.iter().find(|(media, _)| {
                    media.split(';').next().map(str::trim) == Some("application/json")
                })
            })
            .and_then(|(_, media)| media.get("schema"));
        let Some(schema) = schema else {
            diffs.push(format!(
                "{label}: the document has no application/json schema for {status}"
            ));
            continue;
        };
        let mut local = Vec::new();
        compare(
            "$",
            &client_schema,
            &client_schema,
            doc,
            schema,
            &mut local,
            0,
        );
        diffs.extend(local.into_iter().map(|d| format!("{label}: {d}")));
    }
    diffs
}

#[tokio::test]
async fn client_types_match_the_servers_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = Refreshd::start(dir.path(), 0).await;
    let doc = server.openapi().await;
    server.stop().await;
    let diffs = differences(&doc);
    assert!(
        diffs.is_empty(),
        "{} difference(s) between the client's response types and /v1/openapi.json:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// The checker itself: it finds what differs, through `$ref`s, nullable wrappers,
/// arrays and nesting, and accepts a faithful document.
#[test]
fn the_checker_finds_differences_and_accepts_a_match() {
    fn doc_with(sync_schema: Value, components: Value) -> Value {
        json!({"paths": {"/v1/device/sync": {"get": {"responses": {"200": {"content": {"application/json": {"schema": sync_schema}}}}}}},
               "components": {"schemas": components}})
    }
    let only_sync = |diffs: Vec<String>| -> Vec<String> {
        diffs
            .into_iter()
            .filter(|d| d.starts_with("GET /v1/device/sync"))
            .collect()
    };
    // A faithful document: the client's own schema, moved under components.
    let client = response_schema::<SyncResponse>();
    let mut components = client.get("$defs").cloned().unwrap_or(json!({}));
    let mut top = client.clone();
    top.as_object_mut().unwrap().remove("$defs");
    components["SyncResponse"] = top;
    let text = serde_json::to_string(&components)
        .unwrap()
        .replace("#/$defs/", "#/components/schemas/");
    let components: Value = serde_json::from_str(&text).unwrap();
    let faithful = doc_with(
        json!({"$ref": "#/components/schemas/SyncResponse"}),
        components.clone(),
    );
    assert_eq!(only_sync(differences(&faithful)), Vec::<String>::new());

    // Break it: drop a nested property, make a required one optional, add one.
    let mut broken = components.clone();
    let form = broken["SyncForm"].as_object_mut().unwrap();
    form["properties"]
        .as_object_mut()
        .unwrap()
        .remove("form_name");
    form["properties"]["extra"] = json!({"type": "string"});
    broken["SyncResponse"]["required"] = json!(["cursor", "apps", "forms", "removed_forms"]);
    let diffs = only_sync(differences(&doc_with(
        json!({"$ref": "#/components/schemas/SyncResponse"}),
        broken,
    )));
    let expected = [
        "$.forms[].form_name: read by the client, missing from the document",
        "$.forms[].extra: in the document, unknown to the client",
        "$.reset: required by the client, optional in the document",
    ];
    for e in expected {
        assert!(
            diffs.iter().any(|d| d.ends_with(e)),
            "missing {e:?} in {diffs:#?}"
        );
    }
    assert_eq!(diffs.len(), expected.len(), "{diffs:#?}");

    // One object per kind of key, as an untagged enum documents it: `id` is required
    // in every branch, each key in one only, so all are optional to the client.
    let rotate = json!({"paths": {"/v1/admin/{collection}/{id}/rotate-key": {"post": {"responses": {"200": {"content": {"application/json; charset=utf-8": {"schema": {"anyOf": [
        {"type": "object", "properties": {"id": {"type": "string"}, "developer_key": {"type": "string"}}, "required": ["id", "developer_key"]},
        {"type": "object", "properties": {"id": {"type": "string"}, "provider_key": {"type": "string"}}, "required": ["id", "provider_key"]},
        {"$ref": "#/components/schemas/DeviceKey"}
    ]}}}}}}}}, "components": {"schemas": {"DeviceKey": {"type": "object", "properties": {"id": {"type": "string"}, "device_key": {"type": "string"}}, "required": ["id", "device_key"]}}}});
    let rotate_diffs: Vec<String> = differences(&rotate)
        .into_iter()
        .filter(|d| d.contains("rotate-key"))
        .collect();
    assert_eq!(rotate_diffs, Vec::<String>::new());

    // No schema at all is a difference too.
    let bare = json!({"paths": {"/v1/device/sync": {"get": {"responses": {"200": {"description": "ok"}}}}}});
    assert_eq!(
        only_sync(differences(&bare)),
        vec!["GET /v1/device/sync 200 (SyncResponse): the document has no application/json schema for 200"]
    );
}
