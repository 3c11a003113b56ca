//! Bad requests get clear JSON errors with the right status, never a 500.

use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use crate::helpers::{TestApp, assert_error};
use crate::on_both_backends;

async fn malformed_json_is_422(app: TestApp) {
    let response = app
        .client
        .post(app.url("/v1/auth/register"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"email": "ada@example.com", "password": "#)
        .send()
        .await
        .unwrap();
    assert_error(response, 422, "malformed_json").await;
}

async fn a_missing_field_is_422_naming_it(app: TestApp) {
    let response = app
        .post_json("/v1/auth/register", &json!({"email": "ada@example.com"}))
        .await;
    let body = assert_error(response, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "password");
}

async fn a_field_of_the_wrong_type_is_422(app: TestApp) {
    let response = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": ["ada"], "password": "x"}),
        )
        .await;
    assert_error(response, 422, "validation_failed").await;
}

async fn a_body_must_be_a_json_object(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    for body in [
        json!(["a banana", null, null, null]),
        json!("a banana"),
        json!(5),
    ] {
        let response = app.generate(&key, &body).await;
        let error = assert_error(response, 422, "validation_failed").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(!message.contains("GenerateRequest"), "{message}");
    }
    let nested = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": {"a": 1}, "password": "x"}),
        )
        .await;
    let error = assert_error(nested, 422, "validation_failed").await;
    assert!(!error.to_string().contains("LoginRequest"), "{error}");
    assert_eq!(app.google_requests().await, 0);
}

async fn a_body_that_is_not_json_is_415(app: TestApp) {
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .client
            .post(app.url("/v1/auth/login"))
            .body("email=a&password=b");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        assert_error(request.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
}

async fn an_oversized_body_is_413(app: TestApp) {
    let huge = "x".repeat(65 * 1024);
    let response = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": "a@example.com", "password": huge}),
        )
        .await;
    assert_error(response, 413, "payload_too_large").await;
}

async fn unknown_routes_are_json_404s(app: TestApp) {
    let response = app
        .client
        .get(app.url("/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "not_found").await;
}

async fn wrong_methods_are_json_405s(app: TestApp) {
    let response = app.client.put(app.url("/v1/keys")).send().await.unwrap();
    assert_error(response, 405, "method_not_allowed").await;
    let response = app
        .client
        .get(app.url("/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "method_not_allowed").await;
}

on_both_backends!(
    a_body_must_be_a_json_object,
    malformed_json_is_422,
    a_missing_field_is_422_naming_it,
    a_field_of_the_wrong_type_is_422,
    a_body_that_is_not_json_is_415,
    an_oversized_body_is_413,
    unknown_routes_are_json_404s,
    wrong_methods_are_json_405s,
);
