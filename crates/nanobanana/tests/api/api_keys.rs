//! `/v1/keys` and the API-key extractor, with the acceptance cases of the key routes by name.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{API_KEY_PROBE, TestApp, assert_error};
use crate::on_both_backends;

fn is_key_format(key: &str) -> bool {
    key.len() == 40
        && key.starts_with("nb_live_")
        && key[8..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn test_create_key_success(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let response = app
        .create_key(&token, Some(json!({"name": "  laptop  "})))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let key = body["key"].as_str().unwrap();
    assert!(is_key_format(key), "{key}");
    assert_eq!(body["name"], "laptop");
    assert_eq!(body["prefix"], &key[..12]);
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    assert!(body["created_at"].is_string());

    let listed = app.list_keys(&token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], body["id"]);
    assert_eq!(listed[0]["is_active"], true);
    assert_eq!(listed[0]["last_used_at"], Value::Null);
}

async fn a_key_can_be_created_without_a_body_or_name(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let no_body: Value = app.create_key(&token, None).await.json().await.unwrap();
    assert_eq!(no_body["name"], Value::Null);
    let empty_object: Value = app
        .create_key(&token, Some(json!({})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty_object["name"], Value::Null);
    assert_eq!(app.list_keys(&token).await.len(), 2);
}

async fn bad_key_names_are_422_and_store_nothing(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let long = app
        .create_key(&token, Some(json!({"name": "x".repeat(101)})))
        .await;
    let body = assert_error(long, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "name");
    assert_error(
        app.create_key(&token, Some(json!({"name": 5}))).await,
        422,
        "validation_failed",
    )
    .await;
    for hidden in ["\u{202e}gpj.exe", "zero\u{200b}width", "tab\tbed"] {
        let response = app.create_key(&token, Some(json!({"name": hidden}))).await;
        let body = assert_error(response, 422, "validation_failed").await;
        assert_eq!(body["error"]["field"], "name", "{hidden:?}");
    }
    assert!(app.list_keys(&token).await.is_empty());
}

async fn keys_are_listed_a_page_at_a_time(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(app.created_key(&token).await.0);
    }
    made.reverse(); // newest first
    let page = |query: String| {
        let (app, token) = (&app, &token);
        async move {
            let response = app.get_with(&format!("/v1/keys?{query}"), token).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let ids = |body: &Value| -> Vec<String> {
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page("limit=2".into()).await;
    assert_eq!(ids(&first), made[..2]);
    // A key made between two reads does not shift the next page.
    app.created_key(&token).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = page(format!("limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&second), made[2..4]);
    let cursor = second["next_cursor"].as_str().unwrap();
    let third = page(format!("limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&third), made[4..]);
    assert_eq!(third["next_cursor"], Value::Null);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=nope", "cursor"),
    ] {
        let body = assert_error(
            app.get_with(&format!("/v1/keys?{query}"), &token).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], field, "{query}");
    }
}

async fn an_account_holds_a_bounded_number_of_active_keys(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (first, _) = app.created_key(&token).await;
    app.created_key(&token).await;
    let refused = app.create_key(&token, Some(json!({"name": "third"}))).await;
    assert_error(refused, 409, "key_limit_reached").await;
    assert_eq!(app.list_keys(&token).await.len(), 2);
    assert_eq!(
        app.delete_with(&format!("/v1/keys/{first}"), &token)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.create_key(&token, Some(json!({"name": "third"})))
            .await
            .status(),
        201
    );
}

async fn test_create_key_unauthorized(app: TestApp) {
    let response = app.client.post(app.url("/v1/keys")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, 401, "missing_credentials").await;
    assert_error(
        app.create_key("not-a-token", None).await,
        401,
        "invalid_token",
    )
    .await;
    assert!(app.db.stored_key_hashes_and_prefixes().await.is_empty());
}

async fn test_list_keys_empty(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let body: Value = app.get_with("/v1/keys", &token).await.json().await.unwrap();
    assert_eq!(body, json!({"keys": [], "next_cursor": null}));
}

async fn test_list_keys_returns_prefix_not_full_key(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, key) = app.created_key(&token).await;
    let response = app.get_with("/v1/keys", &token).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains(&key), "the full key was listed");
    let body: Value = serde_json::from_str(&text).unwrap();
    let listed = &body["keys"][0];
    assert_eq!(listed["prefix"], &key[..12]);
    let mut fields: Vec<&str> = listed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "is_active",
            "last_used_at",
            "limits",
            "mode",
            "name",
            "prefix",
            "rolled_from",
            "usage"
        ]
    );
}

async fn keys_are_listed_newest_first_and_only_to_their_owner(app: TestApp) {
    let ada = app.signed_up("ada@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let (first, _) = app.created_key(&ada).await;
    let (second, _) = app.created_key(&ada).await;
    let (bobs, _) = app.created_key(&bob).await;
    let ids: Vec<Value> = app
        .list_keys(&ada)
        .await
        .iter()
        .map(|key| key["id"].clone())
        .collect();
    assert_eq!(ids, [json!(second), json!(first)]);
    let bob_ids: Vec<Value> = app
        .list_keys(&bob)
        .await
        .iter()
        .map(|key| key["id"].clone())
        .collect();
    assert_eq!(bob_ids, [json!(bobs)]);
}

async fn test_delete_key_success(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (id, _) = app.created_key(&token).await;
    let response = app.delete_with(&format!("/v1/keys/{id}"), &token).await;
    assert_eq!(response.status(), 204);
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(app.list_keys(&token).await[0]["is_active"], false);
    // Revoking again is still a success.
    assert_eq!(
        app.delete_with(&format!("/v1/keys/{id}"), &token)
            .await
            .status(),
        204
    );
}

async fn test_delete_key_not_owner(app: TestApp) {
    let ada = app.signed_up("ada@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let (adas_key, _) = app.created_key(&ada).await;
    assert_error(
        app.delete_with(&format!("/v1/keys/{adas_key}"), &bob).await,
        404,
        "key_not_found",
    )
    .await;
    assert_eq!(app.list_keys(&ada).await[0]["is_active"], true);
}

async fn unknown_and_malformed_key_ids_are_404(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let unknown = format!("/v1/keys/{}", uuid::Uuid::now_v7());
    assert_error(
        app.delete_with(&unknown, &token).await,
        404,
        "key_not_found",
    )
    .await;
    for malformed in ["not-a-uuid", "1", "%27%3B--"] {
        let path = format!("/v1/keys/{malformed}");
        assert_error(app.delete_with(&path, &token).await, 404, "key_not_found").await;
    }
}

async fn test_key_format(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, first) = app.created_key(&token).await;
    let (_, second) = app.created_key(&token).await;
    assert!(is_key_format(&first), "{first}");
    assert!(is_key_format(&second), "{second}");
    assert_ne!(first, second);
}

async fn only_the_hash_and_prefix_of_a_key_are_stored(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, key) = app.created_key(&token).await;
    let stored = app.db.stored_key_hashes_and_prefixes().await;
    let expected_hash = hex::encode(Sha256::digest(key.as_bytes()));
    assert_eq!(stored, [(expected_hash, key[..12].to_owned())]);
}

async fn the_full_key_never_appears_in_a_later_response(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (id, key) = app.created_key(&token).await;
    let mut later = vec![
        app.get_with("/v1/keys", &token).await,
        app.get_with("/v1/auth/me", &token).await,
        app.login("ada@example.com", crate::helpers::PASSWORD).await,
        app.get_with(API_KEY_PROBE, &key).await,
        app.create_key(&token, None).await,
        app.delete_with(&format!("/v1/keys/{id}"), &token).await,
        app.get_with(API_KEY_PROBE, &key).await,
        app.get_with("/v1/keys", &token).await,
    ];
    for response in later.drain(..) {
        let headers = format!("{:?}", response.headers());
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(&key) && !headers.contains(&key),
            "leaked in {text}"
        );
    }
}

async fn an_active_key_authenticates_and_stamps_last_used(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let me: Value = app
        .get_with("/v1/auth/me", &token)
        .await
        .json()
        .await
        .unwrap();
    let (id, key) = app.created_key(&token).await;
    let response = app.get_with(API_KEY_PROBE, &key).await;
    assert_eq!(response.status(), 200);
    let caller: Value = response.json().await.unwrap();
    assert_eq!(caller, json!({"key_id": id, "user_id": me["id"]}));
    assert!(app.list_keys(&token).await[0]["last_used_at"].is_string());
}

async fn revoked_unknown_and_malformed_keys_are_401(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (id, key) = app.created_key(&token).await;
    app.delete_with(&format!("/v1/keys/{id}"), &token).await;
    let unknown = format!("nb_live_{}", "0".repeat(32));
    for bad in [
        key.as_str(),
        unknown.as_str(),
        "nb_live_short",
        "nb_live_ZZZZ",
    ] {
        let response = app.get_with(API_KEY_PROBE, bad).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_error(response, 401, "invalid_api_key").await;
    }
    let missing = app.client.get(app.url(API_KEY_PROBE)).send().await.unwrap();
    assert_error(missing, 401, "missing_credentials").await;
}

async fn an_access_token_is_not_an_api_key(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    assert_error(
        app.get_with(API_KEY_PROBE, &token).await,
        401,
        "wrong_credential_type",
    )
    .await;
}

crate::configured_on_both_backends!(
    an_account_holds_a_bounded_number_of_active_keys => |config| {
        config.limits.max_active_keys_per_account = std::num::NonZeroU32::new(2).unwrap();
    },
);

on_both_backends!(
    keys_are_listed_a_page_at_a_time,
    test_create_key_success,
    a_key_can_be_created_without_a_body_or_name,
    bad_key_names_are_422_and_store_nothing,
    test_create_key_unauthorized,
    test_list_keys_empty,
    test_list_keys_returns_prefix_not_full_key,
    keys_are_listed_newest_first_and_only_to_their_owner,
    test_delete_key_success,
    test_delete_key_not_owner,
    unknown_and_malformed_key_ids_are_404,
    test_key_format,
    only_the_hash_and_prefix_of_a_key_are_stored,
    the_full_key_never_appears_in_a_later_response,
    an_active_key_authenticates_and_stamps_last_used,
    revoked_unknown_and_malformed_keys_are_401,
    an_access_token_is_not_an_api_key,
);
