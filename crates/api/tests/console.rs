//! The web console at `/ui/`: served without a key, each asset with its content type,
//! a strict Content-Security-Policy, revalidation by ETag, and `/ui` redirected.

mod support;

use support::Service;

const ASSETS: &[(&str, &str)] = &[
    ("/ui/", "text/html; charset=utf-8"),
    ("/ui/app.js", "text/javascript; charset=utf-8"),
    ("/ui/app.css", "text/css; charset=utf-8"),
    ("/ui/icon.svg", "image/svg+xml"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_key_with_its_types_and_a_strict_policy() {
    let service = Service::start("console").await;
    for (path, content_type) in ASSETS {
        // No Authorization header: the page asks for the key itself.
        let response = service
            .client
            .get(format!("{}{path}", service.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], *content_type, "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{path}");

        // The ETag answers 304 without a body; another tag gets the asset again.
        let tag = headers["etag"].to_str().unwrap().to_string();
        let again = service
            .client
            .get(format!("{}{path}", service.base))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty(), "{path}");
        let other = service
            .client
            .get(format!("{}{path}", service.base))
            .header("if-none-match", "\"0000\"")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200, "{path}");
    }

    let page = service
        .client
        .get(format!("{}/ui/", service.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<html lang=\"en\">"), "{page}");
    assert!(
        page.contains("src=\"app.js\"") && page.contains("href=\"app.css\""),
        "{page}"
    );
    // Nothing from another origin: no absolute URLs in the page.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_without_its_slash_redirects_and_unknown_assets_are_json_404s() {
    let service = Service::start("console-redirect").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/ui", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/ui/");

    let missing = client
        .get(format!("{}/ui/nothing.js", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
