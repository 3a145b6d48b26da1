//! The OpenAPI document served at /v1/openapi.json against the router that serves it:
//! every operation of api.md is documented; every documented operation is routed (it
//! answers, where an unrouted method answers 405) and every method the document leaves
//! out of a path is not; each operation declares its path and query parameters, a
//! success response with its schema (no content for a 204, an event stream for SSE),
//! and its error statuses with the Error schema and their codes.

mod support;

use serde_json::Value;
use support::Service;

/// api.md's operations: the fixed contract.
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/admin/apps"),
    ("post", "/v1/admin/providers"),
    (
        "put",
        "/v1/admin/providers/{provider}/market-update-duration",
    ),
    ("post", "/v1/admin/devices"),
    ("post", "/v1/admin/{collection}/{id}/rotate-key"),
    ("put", "/v1/apps/{appid}/periodic-fetch"),
    ("post", "/v1/apps/{appid}/periodic-fetch/fetch-now"),
    ("get", "/v1/apps/{appid}/periodic-fetch/log"),
    ("get", "/v1/apps/{appid}/periodic-fetch/explain"),
    ("put", "/v1/providers/{provider}/form-config"),
    ("post", "/v1/forms/{form_id}/next-refresh"),
    ("put", "/v1/forms/{form_id}/data"),
    ("get", "/v1/forms/{form_id}/explain"),
    ("post", "/v1/apps/{appid}/launch"),
    ("put", "/v1/apps/{appid}/background-fetch/token"),
    ("get", "/v1/apps/{appid}/background-fetch"),
    ("post", "/v1/forms"),
    ("delete", "/v1/forms/{form_id}"),
    ("post", "/v1/forms/{form_id}/visibility"),
    ("get", "/v1/forms/{form_id}/data"),
    ("post", "/v1/device/network"),
    ("put", "/v1/device/zone"),
    ("get", "/v1/events"),
    ("get", "/v1/openapi.json"),
    ("get", "/healthz"),
];

/// Query parameters the handlers read, by operation.
const QUERIES: &[(&str, &str, &str, bool)] = &[
    (
        "get",
        "/v1/apps/{appid}/periodic-fetch/log",
        "user_id",
        true,
    ),
    (
        "get",
        "/v1/apps/{appid}/periodic-fetch/explain",
        "user_id",
        true,
    ),
    (
        "get",
        "/v1/apps/{appid}/background-fetch",
        "fetch_type",
        false,
    ),
    (
        "put",
        "/v1/providers/{provider}/form-config",
        "dry_run",
        false,
    ),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

/// Follows `#/components/schemas/NAME` references to the schema itself.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(reference) = schema["$ref"].as_str() {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the components: {reference}"));
        schema = &doc["components"]["schemas"][name];
        assert!(schema.is_object(), "dangling reference {reference}");
    }
    schema
}

/// Every `$ref` anywhere in `value` resolves.
fn check_references(doc: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if map.contains_key("$ref") {
                resolve(doc, value);
            }
            map.values().for_each(|v| check_references(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| check_references(doc, v)),
        _ => {}
    }
}

/// A concrete path for a template, with values of the documented shapes.
fn concrete(path: &str) -> String {
    path.replace("{appid}", "wx-none")
        .replace("{provider}", "prov-none")
        .replace("{form_id}", "frm_00000000000000000000")
        .replace("{collection}", "apps")
        .replace("{id}", "nobody")
}

fn check_operation(doc: &Value, method: &str, path: &str, op: &Value) {
    let name = format!("{} {path}", method.to_uppercase());
    assert!(op["summary"].is_string(), "{name}: no summary");
    assert!(op["operationId"].is_string(), "{name}: no operationId");
    // Path parameters: one per placeholder, required, with a schema.
    let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
    for segment in path.split('/') {
        if let Some(param) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let declared = parameters
                .iter()
                .find(|p| p["name"] == param && p["in"] == "path")
                .unwrap_or_else(|| panic!("{name}: path parameter {param} not declared"));
            assert_eq!(declared["required"], true, "{name}: {param}");
            let schema = resolve(doc, &declared["schema"]);
            assert_eq!(schema["type"], "string", "{name}: {param}");
            assert!(
                schema.get("pattern").is_some() || schema.get("enum").is_some(),
                "{name}: {param} carries the server's limits"
            );
        }
    }
    for parameter in &parameters {
        if parameter["in"] == "path" {
            let placeholder = format!("{{{}}}", parameter["name"].as_str().unwrap());
            assert!(
                path.contains(&placeholder),
                "{name}: {parameter} is not in the path"
            );
        }
    }
    // A success response, described as what the operation answers.
    let responses = op["responses"].as_object().expect("responses");
    let success: Vec<(&String, &Value)> = responses
        .iter()
        .filter(|(status, _)| status.starts_with('2'))
        .collect();
    assert_eq!(success.len(), 1, "{name}: one success status");
    let (status, response) = success[0];
    if status == "204" {
        assert!(
            response.get("content").is_none(),
            "{name}: a 204 has no body"
        );
    } else if let Some(stream) = response["content"].get("text/event-stream") {
        assert_eq!(path, "/v1/events", "{name}: only the event stream is one");
        assert!(stream["schema"].is_object(), "{name}: the events' schema");
    } else if response.get("content").is_some() {
        let schema = resolve(doc, &response["content"]["application/json"]["schema"]);
        assert!(schema.is_object(), "{name}: a JSON schema for {status}");
    } else {
        // Only the provider's data upload answers a bare 200.
        assert_eq!(
            (method, path),
            ("put", "/v1/forms/{form_id}/data"),
            "{name}: no body"
        );
    }
    // Authenticated operations: the scheme, the key kinds, and their errors.
    let open = op["security"].as_array().is_some_and(|s| s.is_empty());
    if open {
        return;
    }
    assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{name}");
    let kinds = op["x-refreshd-key-kinds"].as_array().expect("key kinds");
    assert!(!kinds.is_empty(), "{name}: key kinds");
    assert_eq!(&op["tags"], &op["x-refreshd-key-kinds"], "{name}: tags");
    for kind in kinds {
        assert!(
            ["operator", "developer", "provider", "device"].contains(&kind.as_str().unwrap()),
            "{name}: {kind}"
        );
    }
    let mut expected = vec!["401", "408", "413", "429", "503"];
    let reads_input = parameters
        .iter()
        .any(|p| p["in"] == "path" || p["in"] == "query");
    if reads_input || op.get("requestBody").is_some() {
        expected.push("400");
    }
    for status in expected {
        assert!(responses.contains_key(status), "{name}: no {status}");
    }
    for (status, response) in responses.iter().filter(|(s, _)| !s.starts_with('2')) {
        let schema = &response["content"]["application/json"]["schema"];
        assert_eq!(
            schema["$ref"], "#/components/schemas/Error",
            "{name}: {status} uses the Error schema"
        );
        let codes = response["x-error-codes"].as_array().expect("error codes");
        assert!(!codes.is_empty(), "{name}: {status} lists its codes");
        for code in codes {
            let code = code.as_str().unwrap();
            assert!(
                response["description"].as_str().unwrap().contains(code),
                "{name}: {status} describes {code}"
            );
        }
    }
    assert!(
        responses["429"]["headers"]["Retry-After"]["required"] == true,
        "{name}: 429 sends Retry-After"
    );
    // A body is a JSON object with a schema.
    if let Some(body) = op.get("requestBody") {
        let schema = resolve(doc, &body["content"]["application/json"]["schema"]);
        assert!(schema.is_object(), "{name}: request schema");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_every_routed_operation_and_only_those() {
    let svc = Service::start("openapi").await;
    let response = svc
        .client
        .get(format!("{}/v1/openapi.json", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    check_references(&doc, &doc);
    for (method, path) in CONTRACT {
        assert!(
            doc["paths"][path][method].is_object(),
            "api.md's {method} {path} is not documented"
        );
    }
    for (method, path, name, required) in QUERIES {
        let parameters = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let parameter = parameters
            .iter()
            .find(|p| p["name"] == *name && p["in"] == "query")
            .unwrap_or_else(|| panic!("{method} {path}: query {name} not declared"));
        assert_eq!(parameter["required"], *required, "{path}: {name}");
    }
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let url = format!("{}{}", svc.base, concrete(path));
            let answer = svc
                .client
                .request(method.to_uppercase().parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            let status = answer.status().as_u16();
            match item.get(*method) {
                Some(op) => {
                    operations += 1;
                    check_operation(&doc, method, path, op);
                    let open = op["security"].as_array().is_some_and(|s| s.is_empty());
                    let routed = if open { 200 } else { 401 };
                    assert_eq!(
                        status, routed,
                        "{method} {path} is documented; is it routed?"
                    );
                }
                None => assert_eq!(
                    status, 405,
                    "{method} {path} answers {status} but is not documented"
                ),
            }
        }
    }
    assert!(operations >= CONTRACT.len(), "{operations} operations");
}
