//! The OpenAPI document: it lists every registered route, the docs page renders from the
//! app's own assets, and real answers of the API validate against their documented schemas.

use nb_api::routes::ROUTES;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp};
use crate::on_both_backends;

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `{tail:.+}` (actix) is `{tail}` in OpenAPI.
fn openapi_path(actix_path: &str) -> String {
    let mut path = String::new();
    let mut in_pattern = false;
    for c in actix_path.chars() {
        match c {
            ':' if path.ends_with(|c: char| c.is_alphanumeric() || c == '_')
                && path.contains('{') =>
            {
                in_pattern = true
            }
            '}' => {
                in_pattern = false;
                path.push(c);
            }
            _ if in_pattern => {}
            _ => path.push(c),
        }
    }
    path
}

async fn every_registered_route_is_documented(app: TestApp) {
    let doc = document(&app).await;
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
    for (path, method) in ROUTES {
        let path = openapi_path(path);
        assert!(
            doc["paths"][&path][method].is_object(),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["access_token"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert_eq!(
        doc["paths"]["/v1/generate"]["post"]["security"],
        json!([{"api_key": []}])
    );
    assert_eq!(
        doc["paths"]["/v1/keys"]["get"]["security"],
        json!([{"access_token": []}])
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

/// What client generators trip on: every JSON route documents the 415 it answers, query
/// parameters are in the query and optional when they are, binary bodies are binary, and
/// operation ids are unique (generators name functions after them).
async fn the_document_describes_what_generators_need(app: TestApp) {
    let doc = document(&app).await;
    for (path, method) in [
        ("/v1/generate", "post"),
        ("/v1/auth/login", "post"),
        ("/v1/auth/register", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["415"].is_object(),
            "{method} {path} does not document its 415"
        );
    }
    let days = &doc["paths"]["/v1/usage"]["get"]["parameters"][0];
    assert_eq!(days["name"], "days");
    assert_eq!(days["in"], "query");
    assert_eq!(days["required"], false);
    assert_eq!(days["schema"]["type"], "integer");
    let image = &doc["paths"]["/images/{tail}"]["get"]["responses"]["200"]["content"];
    for mime in ["image/png", "image/jpeg", "image/webp"] {
        let schema = &image[mime]["schema"];
        let schema = match schema["$ref"].as_str() {
            Some(reference) => &doc["components"]["schemas"][reference.rsplit('/').next().unwrap()],
            None => schema,
        };
        assert_eq!(schema["type"], "string", "{mime}: {schema}");
        assert_eq!(schema["format"], "binary", "{mime}: {schema}");
    }
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|operations| operations.as_object().unwrap().values())
        .filter_map(|operation| operation["operationId"].as_str())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids repeat: {ids:?}");
}

async fn the_docs_page_renders_from_the_apps_own_assets(app: TestApp) {
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("://cdn") && !html.contains("unpkg.com"),
        "the page loads assets from a CDN"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let text = response.text().await.unwrap();
        assert!(text.len() > 100, "{asset} is empty");
        if asset == "swagger-initializer.js" {
            assert!(
                text.contains("/openapi.json"),
                "the page does not read /openapi.json"
            );
        }
    }
    let bare = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = bare.get(app.url("/docs")).send().await.unwrap();
    assert!(redirect.status().is_redirection());
    assert_eq!(redirect.headers()["location"], "/docs/");
}

/// Validates `body` against the schema documented for this path, method and status.
fn assert_documented(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered an undocumented {status}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} has no JSON schema"
    );
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&root).unwrap();
    if let Err(error) = validator.validate(body) {
        panic!("{method} {path} {status}: {error}\nbody: {body}");
    }
}

async fn real_answers_match_their_documented_schemas(app: TestApp) {
    let doc = document(&app).await;
    let mut checked = 0;
    let mut check = async |path: &str, method: &str, response: reqwest::Response| -> Value {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_documented(&doc, path, method, status, &body);
        checked += 1;
        body
    };
    let registered = check(
        "/v1/auth/register",
        "post",
        app.register("ada@example.com", PASSWORD).await,
    )
    .await;
    let token = registered["access_token"].as_str().unwrap().to_owned();
    check(
        "/v1/auth/register",
        "post",
        app.register("ada@example.com", PASSWORD).await,
    )
    .await;
    check(
        "/v1/auth/register",
        "post",
        app.register("not-an-email", PASSWORD).await,
    )
    .await;
    check(
        "/v1/auth/login",
        "post",
        app.login("ada@example.com", PASSWORD).await,
    )
    .await;
    check(
        "/v1/auth/login",
        "post",
        app.login("ada@example.com", "wrong password").await,
    )
    .await;
    check(
        "/v1/auth/me",
        "get",
        app.get_with("/v1/auth/me", &token).await,
    )
    .await;
    check(
        "/v1/auth/me",
        "get",
        app.get_with("/v1/auth/me", "nope").await,
    )
    .await;
    let created = check(
        "/v1/keys",
        "post",
        app.create_key(&token, Some(json!({"name": "docs"}))).await,
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    check(
        "/v1/keys",
        "post",
        app.create_key(&token, Some(json!({"name": "x".repeat(101)})))
            .await,
    )
    .await;
    check("/v1/keys", "get", app.get_with("/v1/keys", &token).await).await;
    check(
        "/v1/generate",
        "post",
        app.generate(&key, &json!({"prompt": "a banana"})).await,
    )
    .await;
    // A dry run's answer is documented too.
    let dry_run = app
        .client
        .post(app.url("/v1/generate?dry_run=true"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap();
    let estimate = check("/v1/generate", "post", dry_run).await;
    assert_eq!(estimate["dry_run"], true);
    check(
        "/v1/generate",
        "post",
        app.generate(&key, &json!({"prompt": "x", "size": "1x1"}))
            .await,
    )
    .await;
    check(
        "/v1/generate",
        "post",
        app.generate("nb_live_nope", &json!({"prompt": "x"})).await,
    )
    .await;
    check("/v1/usage", "get", app.get_with("/v1/usage", &token).await).await;
    check(
        "/v1/usage",
        "get",
        app.get_with("/v1/usage?days=0", &token).await,
    )
    .await;
    check(
        "/v1/usage",
        "get",
        app.get_with("/v1/usage?group_by=model,mode", &token).await,
    )
    .await;
    let idempotent = |idempotency_key: &'static str, prompt: &'static str| {
        app.client
            .post(app.url("/v1/generate"))
            .bearer_auth(&key)
            .header("Idempotency-Key", idempotency_key)
            .json(&json!({ "prompt": prompt }))
            .send()
    };
    for (idempotency_key, prompt) in [("k-1", "a"), ("k-1", "a"), ("k-1", "b"), ("", "a")] {
        check(
            "/v1/generate",
            "post",
            idempotent(idempotency_key, prompt).await.unwrap(),
        )
        .await;
    }
    let history = check(
        "/v1/generations",
        "get",
        app.get_with("/v1/generations?limit=1", &token).await,
    )
    .await;
    check(
        "/v1/generations",
        "get",
        app.get_with("/v1/generations?status=nope", &key).await,
    )
    .await;
    let generation = format!(
        "/v1/generations/{}",
        history["generations"][0]["id"].as_str().unwrap()
    );
    check(
        "/v1/generations/{generation_id}",
        "get",
        app.get_with(&generation, &key).await,
    )
    .await;
    assert_eq!(app.delete_with(&generation, &key).await.status(), 204);
    check(
        "/v1/generations/{generation_id}",
        "get",
        app.get_with(&generation, &token).await,
    )
    .await;
    check(
        "/v1/generations/{generation_id}",
        "delete",
        app.delete_with("/v1/generations/gen_nope", &token).await,
    )
    .await;
    let unknown = format!("/v1/keys/{}", uuid::Uuid::now_v7());
    check(
        "/v1/keys/{key_id}",
        "delete",
        app.delete_with(&unknown, &token).await,
    )
    .await;
    check(
        "/healthz",
        "get",
        app.client.get(app.url("/healthz")).send().await.unwrap(),
    )
    .await;
    check(
        "/readyz",
        "get",
        app.client.get(app.url("/readyz")).send().await.unwrap(),
    )
    .await;
    check(
        "/images/{tail}",
        "get",
        app.client
            .get(app.url("/images/2026/01/01/none.png"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Spend control: a key's own routes, quotas, and the operator's routes.
    let limited = check(
        "/v1/keys",
        "post",
        app.create_key(
            &token,
            Some(json!({"name": "limited", "limits": {"per_day": 1}})),
        )
        .await,
    )
    .await;
    let limited_key = limited["key"].as_str().unwrap().to_owned();
    let limited_path = format!("/v1/keys/{}", limited["id"].as_str().unwrap());
    check(
        "/v1/keys/{key_id}",
        "get",
        app.get_with(&limited_path, &token).await,
    )
    .await;
    check(
        "/v1/keys/{key_id}",
        "get",
        app.get_with(&unknown, &token).await,
    )
    .await;
    for change in [
        json!({"name": "renamed"}),
        json!({"limits": {"per_day": 0}}),
    ] {
        let response = app
            .client
            .patch(app.url(&limited_path))
            .bearer_auth(&token)
            .json(&change)
            .send()
            .await
            .unwrap();
        check("/v1/keys/{key_id}", "patch", response).await;
    }
    check(
        "/v1/generate",
        "post",
        app.generate(&limited_key, &json!({"prompt": "a banana"}))
            .await,
    )
    .await;
    check(
        "/v1/generate",
        "post",
        app.generate(&limited_key, &json!({"prompt": "a banana"}))
            .await,
    )
    .await;
    let roll = |grace: i64| {
        app.client
            .post(app.url(&format!("{limited_path}/roll")))
            .bearer_auth(&token)
            .json(&json!({"grace_seconds": grace}))
            .send()
    };
    check("/v1/keys/{key_id}/roll", "post", roll(-1).await.unwrap()).await;
    check("/v1/keys/{key_id}/roll", "post", roll(0).await.unwrap()).await;
    check(
        "/v1/generate",
        "post",
        app.generate(&limited_key, &json!({"prompt": "a banana"}))
            .await,
    )
    .await;
    check(
        "/v1/admin/users",
        "get",
        app.get_with("/v1/admin/users", &token).await,
    )
    .await;
    let admin = app.signed_up(crate::helpers::ADMIN_EMAIL).await;
    let users = check(
        "/v1/admin/users",
        "get",
        app.get_with("/v1/admin/users", &admin).await,
    )
    .await;
    let ada_id = users["users"][1]["id"].as_str().unwrap().to_owned();
    let account = format!("/v1/admin/users/{ada_id}");
    let response = app
        .client
        .patch(app.url(&account))
        .bearer_auth(&admin)
        .json(&json!({"limits": {"per_month": 10}, "disabled": true}))
        .send()
        .await
        .unwrap();
    check("/v1/admin/users/{user_id}", "patch", response).await;
    check("/v1/keys", "get", app.get_with("/v1/keys", &token).await).await;
    check(
        "/v1/admin/users/{user_id}/keys",
        "get",
        app.get_with(&format!("{account}/keys"), &admin).await,
    )
    .await;
    check(
        "/v1/admin/audit",
        "get",
        app.get_with("/v1/admin/audit", &admin).await,
    )
    .await;
    assert_eq!(checked, 46);
}

on_both_backends!(
    the_document_describes_what_generators_need,
    every_registered_route_is_documented,
    the_docs_page_renders_from_the_apps_own_assets,
    real_answers_match_their_documented_schemas,
);

#[test]
fn actix_patterns_become_openapi_paths() {
    assert_eq!(openapi_path("/images/{tail:.+}"), "/images/{tail}");
    assert_eq!(openapi_path("/v1/keys/{key_id}"), "/v1/keys/{key_id}");
}
