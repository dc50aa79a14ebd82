//! The OpenAPI document (`/api/v1/openapi.json`) against the app's real
//! route table, both ways: a route the router knows and the document lacks
//! fails, and so does an operation the document lists that no route answers.
//! Then what every operation must say (security, error responses, path
//! parameters), and the docs page (`/api/v1/docs`): it and its files answer
//! 200 with their content types, under a policy that lets it fetch nothing
//! from elsewhere, and it names no other origin. The fuzzing of the document
//! against the server: tests/schemathesis/.

mod common;

use std::collections::BTreeSet;

use common::spawn_app;
use serde_json::Value;

async fn document(app: &common::TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("the document answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("the document is JSON")
}

/// `(METHOD, /path/{param})` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("a path item") {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_knows() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let routed: BTreeSet<(String, String)> = app
        .app
        .as_ref()
        .expect("the app runs")
        .routes()
        .iter()
        .map(|(method, path)| (method.to_string(), (*path).to_owned()))
        .collect();
    let documented = operations(&doc);
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "operations no route answers: {unrouted:?}"
    );
    // Every service is in it (the probes and the document's own routes too).
    for prefix in [
        "/api/v1/auth/",
        "/api/v1/orders",
        "/api/v1/invoices",
        "/api/v1/notifications",
        "/api/v1/audit",
        "/api/v1/analytics/",
        "/live",
        "/api/v1/docs",
    ] {
        assert!(
            documented.iter().any(|(_, p)| p.starts_with(prefix)),
            "nothing under {prefix}"
        );
    }
}

/// Follows a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} resolves"))
        }
        None => value,
    }
}

#[tokio::test]
async fn every_operation_says_who_may_call_it_and_how_it_fails() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert_eq!(
        doc.pointer("/components/securitySchemes/bearer/scheme"),
        Some(&Value::from("bearer"))
    );
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(
        error["required"],
        serde_json::json!(["status", "error"]),
        "{error}"
    );
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "VALIDATION_ERROR",
        "UNAUTHENTICATED",
        "RATE_LIMITED",
        "NOT_FOUND",
    ] {
        assert!(
            codes.as_array().unwrap().contains(&code.into()),
            "{code} in {codes}"
        );
    }
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{} {path}", method.to_uppercase());
            let security = op["security"].as_array().unwrap_or_else(|| {
                panic!("{what} says nothing of security (public routes say [])")
            });
            let responses = op["responses"].as_object().expect("responses");
            if !security.is_empty() {
                assert!(
                    responses.contains_key("401"),
                    "{what}: a user route lists 401"
                );
            }
            let admin_only = op["description"]
                .as_str()
                .is_some_and(|d| d.contains("Admin only"));
            if admin_only {
                assert!(
                    responses.contains_key("403"),
                    "{what}: admin only lists 403"
                );
            }
            if path.starts_with("/api/v1/")
                && !path.starts_with("/api/v1/docs")
                && !path.ends_with("openapi.json")
            {
                assert!(
                    responses.contains_key("429"),
                    "{what}: rate limited, lists 429"
                );
                let ok = responses
                    .iter()
                    .find(|(status, _)| status.starts_with('2'))
                    .map(|(_, r)| r)
                    .unwrap_or_else(|| panic!("{what} has a success answer"));
                assert!(
                    ok["headers"].get("ratelimit-remaining").is_some(),
                    "{what}: the quota headers"
                );
            }
            for (status, response) in responses {
                let response = resolve(&doc, response);
                assert!(
                    response["headers"].get("x-request-id").is_some(),
                    "{what} {status}: x-request-id"
                );
                if status.starts_with('4') || status == "500" || status == "504" {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{what} {status}: the error shape"
                    );
                }
            }
            // Every `{param}` of the template is a path parameter.
            let params: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            let in_template: BTreeSet<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            assert_eq!(params, in_template, "{what}: path parameters");
            checked += 1;
        }
    }
    assert!(checked >= 45, "only {checked} operations");
    // The POST routes that create take idempotency-key.
    for path in ["/api/v1/orders", "/api/v1/auth/register", "/api/v1/audit"] {
        let params = &doc["paths"][path]["post"]["parameters"];
        assert!(
            params
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["name"] == "idempotency-key")),
            "POST {path} takes idempotency-key"
        );
    }
    // Lists take page and limit 1..=100.
    let limit = doc["paths"]["/api/v1/orders"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit")
        .clone();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
}

/// Every `src="…"` and `href="…"` of a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            let end = rest.find('"').expect("a closed attribute");
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

#[tokio::test]
async fn the_docs_page_and_its_files_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(app.url("/api/v1/docs"))
        .send()
        .await
        .expect("the page answers");
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    // Scripts and requests to this origin only: whatever the scripts hold,
    // the browser fetches nothing from elsewhere.
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("http"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let refs = references(&html);
    assert!(refs.len() >= 5, "{refs:?}");
    for reference in refs {
        assert!(reference.starts_with("/api/v1/docs/"), "{reference}");
        let file = app
            .client
            .get(app.url(&reference))
            .send()
            .await
            .expect("the file answers");
        assert_eq!(file.status(), 200, "{reference}");
        let content_type = file.headers()["content-type"].to_str().unwrap().to_owned();
        let expected = if reference.ends_with(".js") {
            "text/javascript"
        } else if reference.ends_with(".css") {
            "text/css"
        } else if reference.ends_with(".png") {
            "image/png"
        } else {
            panic!("an unexpected file {reference}")
        };
        assert!(
            content_type.starts_with(expected),
            "{reference}: {content_type}"
        );
        assert!(!file.bytes().await.unwrap().is_empty(), "{reference}");
    }
    // The initializer points the page at this server's document, with no
    // validator (which would send the document away).
    let initializer = app
        .client
        .get(app.url("/api/v1/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        initializer.contains("/api/v1/openapi.json"),
        "{initializer}"
    );
    assert!(
        !initializer.contains("http://") && !initializer.contains("https://"),
        "{initializer}"
    );
    let missing = app
        .client
        .get(app.url("/api/v1/docs/no-such-file.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}
