//! Conversational edits from outside: `previous_generation_id` sends every earlier turn back
//! to Google (user text and images, the model's parts with their signatures), as
//! google-genai's chats do; chains are the account's own, from images that still exist, and
//! at most `NB_MAX_EDIT_TURNS` long.

use base64::Engine as _;
use nanobanana::config::Config;
use serde_json::{Value, json};
use std::num::NonZeroUsize;

use crate::fake_google::signature_for;
use crate::helpers::{TestApp, assert_error, png_bytes};
use crate::{configured_on_both_backends, on_both_backends};

fn url_safe(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

impl TestApp {
    async fn image_bytes(&self, url: &str) -> Vec<u8> {
        let response = self.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap().to_vec()
    }
}

async fn a_conversation_of_three_turns_sends_each_earlier_turn_back(app: TestApp) {
    app.use_fake_gemini().await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let input = png_bytes();
    let first = app
        .generated(
            &key,
            &json!({"prompt": "a red apple", "size": "auto", "images": [base64::engine::general_purpose::STANDARD.encode(&input)]}),
        )
        .await;
    assert_eq!(first["previous_generation_id"], Value::Null);
    let second = app
        .generated(
            &key,
            &json!({"prompt": "make it green", "previous_generation_id": first["id"]}),
        )
        .await;
    assert_eq!(second["previous_generation_id"], first["id"]);
    let third = app
        .generated(
            &key,
            &json!({"prompt": "add a leaf", "aspect_ratio": "16:9", "previous_generation_id": second["id"]}),
        )
        .await;
    assert_eq!(third["previous_generation_id"], second["id"]);

    let sent = app.google_bodies().await;
    assert_eq!(sent.len(), 3);
    let last = &sent[2]["contents"];
    let roles: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .map(|content| content["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "model", "user", "model", "user"]);
    // The first turn: its text and input image, then the model's image with its signature.
    let first_text = last[0]["parts"][0]["text"].as_str().unwrap();
    assert!(first_text.starts_with("a red apple"), "{first_text}");
    assert_eq!(last[0]["parts"][1]["inlineData"]["data"], url_safe(&input));
    let first_image = app.image_bytes(first["url"].as_str().unwrap()).await;
    assert_eq!(
        last[1]["parts"][0]["inlineData"]["data"],
        url_safe(&first_image)
    );
    assert_eq!(
        last[1]["parts"][0]["thoughtSignature"],
        signature_for(first_text)
    );
    // Every turn is sent exactly as it was the first time.
    assert_eq!(last[0], sent[0]["contents"][0]);
    assert_eq!(last[2], sent[1]["contents"][2]);
    assert!(
        last[4]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("add a leaf")
    );
    assert_eq!(
        sent[2]["generationConfig"]["imageConfig"]["aspectRatio"],
        "16:9"
    );

    let stored: Value = app
        .get_with(
            &format!("/v1/generations/{}", third["id"].as_str().unwrap()),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["previous_generation_id"], second["id"]);
}

async fn the_fake_refuses_a_model_turn_without_its_signature(app: TestApp) {
    app.use_fake_gemini().await;
    let image = url_safe(&png_bytes());
    let response = app
        .client
        .post(format!(
            "{}/v1beta/models/gemini-3.1-flash-image:generateContent",
            app.google.uri()
        ))
        .json(&json!({"contents": [
            {"role": "user", "parts": [{"text": "a cat"}]},
            {"role": "model", "parts": [{"inlineData": {"data": image, "mime_type": "image/png"}}]},
            {"role": "user", "parts": [{"text": "make it blue"}]}
        ], "generationConfig": {"responseModalities": ["IMAGE"]}}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("thought_signature")
    );
}

async fn conversations_are_the_accounts_own_and_continue_from_images(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let (_, bobs_key) = app.user_with_key("bob@example.com").await;
    let adas = app.generated(&key, &json!({"prompt": "a pear"})).await;
    let continue_from = |key: String, id: Value| {
        let app = &app;
        async move {
            app.generate(
                &key,
                &json!({"prompt": "again", "previous_generation_id": id}),
            )
            .await
        }
    };
    let foreign = assert_error(
        continue_from(bobs_key.clone(), adas["id"].clone()).await,
        404,
        "generation_not_found",
    )
    .await;
    assert_eq!(foreign["error"]["field"], "previous_generation_id");
    let malformed = assert_error(
        continue_from(key.clone(), json!("gen_nope")).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(malformed["error"]["field"], "previous_generation_id");

    // A failed generation has no image to continue from.
    app.refuse_the_next_image().await;
    assert_error(
        app.generate(&key, &json!({"prompt": "refused"})).await,
        422,
        "content_rejected",
    )
    .await;
    let failed: Value = app
        .get_with("/v1/generations?status=failed", &token)
        .await
        .json()
        .await
        .unwrap();
    let failed_id = &failed["generations"][0]["id"];
    assert!(failed_id.is_string(), "{failed}");
    let refused = assert_error(
        continue_from(key.clone(), failed_id.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{refused}"
    );

    // A deleted one is gone, and so is what it was sent.
    let deleted = app
        .generated(
            &key,
            &json!({"prompt": "a plum", "images": [base64::engine::general_purpose::STANDARD.encode(png_bytes())]}),
        )
        .await;
    let id = deleted["id"].as_str().unwrap();
    let kept_inputs = || {
        walk(app.data_dir.path())
            .into_iter()
            .filter(|path| path.contains("inputs") && path.contains(id))
            .count()
    };
    assert_eq!(kept_inputs(), 1, "the input is kept to continue it");
    assert_eq!(
        app.delete_with(&format!("/v1/generations/{id}"), &token)
            .await
            .status(),
        204
    );
    assert_eq!(kept_inputs(), 0, "deleting it removes its inputs");
    let gone = assert_error(
        continue_from(key.clone(), deleted["id"].clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        gone["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{gone}"
    );
    let calls_before = app.google_requests().await;
    // The refusals called no one.
    assert_eq!(calls_before, 3);
    // Another key of the same account may continue it.
    let (_, second_key) = app.created_key(&token).await;
    assert_eq!(
        continue_from(second_key.clone(), adas["id"].clone())
            .await
            .status(),
        200
    );
}

fn at_most_two_turns(config: &mut Config) {
    config.limits.max_edit_turns = NonZeroUsize::new(2).unwrap();
}

async fn a_conversation_longer_than_allowed_is_422(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let first = app.generated(&key, &json!({"prompt": "a"})).await;
    let second = app
        .generated(
            &key,
            &json!({"prompt": "b", "previous_generation_id": first["id"]}),
        )
        .await;
    let error = assert_error(
        app.generate(
            &key,
            &json!({"prompt": "c", "previous_generation_id": second["id"]}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 turns"),
        "{error}"
    );
    assert_eq!(app.google_requests().await, 2);
}

on_both_backends!(
    a_conversation_of_three_turns_sends_each_earlier_turn_back,
    the_fake_refuses_a_model_turn_without_its_signature,
    conversations_are_the_accounts_own_and_continue_from_images,
);

configured_on_both_backends!(
    a_conversation_longer_than_allowed_is_422 => at_most_two_turns,
);

/// Every file under `root`.
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}
