//! The model catalog from outside: sizes, ratios and resolutions as Google is asked for them,
//! what each answer and history say was made, references per model, retired models, and the
//! catalog in `GET /v1/models`. Google is the catalog-aware fake (`fake_google`).

use base64::Engine as _;
use nanobanana::config::Config;
use nanobanana::config::catalog_file::ModelEntry;
use nanobanana::config::sections::ModelNames;
use serde_json::{Value, json};

use crate::fake_google::{THINKING_TOKENS, TOKENS_PER_INPUT_IMAGE};
use crate::helpers::{TestApp, assert_error, png_bytes};
use crate::{configured_on_both_backends, on_both_backends};

const PRO: &str = "gemini-3-pro-image";
const FLASH: &str = "gemini-3.1-flash-image";

impl TestApp {
    /// The `imageConfig` of every request Google received, in order.
    async fn image_configs(&self) -> Vec<Value> {
        self.google_bodies()
            .await
            .iter()
            .map(|body| body["generationConfig"]["imageConfig"].clone())
            .collect()
    }
}

async fn sizes_become_google_shapes_and_answers_say_what_was_made(app: TestApp) {
    app.use_fake_gemini().await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    // size → (ratio, resolution, Google's pixel size)
    let table = [
        ("1024x1024", "1:1", "1K", (1024, 1024)),
        ("1536x1024", "3:2", "1K", (1264, 848)),
        ("1024x1536", "2:3", "1K", (848, 1264)),
        ("1792x1024", "16:9", "1K", (1376, 768)),
        ("2048x2048", "1:1", "2K", (2048, 2048)),
        ("2560x1440", "16:9", "2K", (2752, 1536)),
        ("3840x2160", "16:9", "4K", (5504, 3072)),
    ];
    let mut ids = Vec::new();
    for (size, ratio, resolution, (width, height)) in table {
        let body = app
            .generated(
                &key,
                &json!({"prompt": "a banana", "size": size, "model": PRO}),
            )
            .await;
        assert_eq!(body["size"], size);
        assert_eq!(body["aspect_ratio"], ratio, "{size}");
        assert_eq!(body["resolution"], resolution, "{size}");
        assert_eq!(
            (body["width"].as_u64(), body["height"].as_u64()),
            (Some(width), Some(height)),
            "{size}"
        );
        let usage = &body["usage"];
        let image_tokens = if resolution == "4K" { 2000 } else { 1120 };
        assert_eq!(usage["output_tokens"], image_tokens, "{body}");
        assert_eq!(usage["output_tokens_details"]["image_tokens"], image_tokens);
        assert_eq!(usage["thinking_tokens"], THINKING_TOKENS);
        assert_eq!(usage["input_tokens_details"]["image_tokens"], 0);
        let total = usage["input_tokens"].as_u64().unwrap() + image_tokens + THINKING_TOKENS;
        assert_eq!(usage["total_tokens"], total);
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Google got the ratio, and imageSize only when not the model's default (1K).
    let sent = app.image_configs().await;
    let expected: Vec<Value> = table
        .iter()
        .map(|(_, ratio, resolution, _)| match *resolution {
            "1K" => json!({"aspectRatio": ratio}),
            other => json!({"aspectRatio": ratio, "imageSize": other}),
        })
        .collect();
    assert_eq!(sent, expected);

    // Asked by ratio and resolution instead, on a model with 512 and 8:1.
    let banner = app
        .generated(
            &key,
            &json!({"prompt": "a banana", "aspect_ratio": "8:1", "resolution": "512", "model": "nano-banana-2"}),
        )
        .await;
    assert_eq!(banner["model"], FLASH);
    assert_eq!(
        (
            banner["size"].as_str(),
            banner["aspect_ratio"].as_str(),
            banner["resolution"].as_str()
        ),
        (Some("auto"), Some("8:1"), Some("512"))
    );
    assert_eq!(banner["usage"]["output_tokens"], 747);
    let width = banner["width"].as_u64().unwrap();
    let height = banner["height"].as_u64().unwrap();
    assert!((7..=9).contains(&(width / height)), "{width}x{height}");
    assert_eq!(
        app.image_configs().await.last().unwrap(),
        &json!({"aspectRatio": "8:1", "imageSize": "512"})
    );

    // History says the same.
    let history = app
        .get_with(&format!("/v1/generations/{}", ids[6]), &token)
        .await;
    assert_eq!(history.status(), 200);
    let stored: Value = history.json().await.unwrap();
    assert_eq!(stored["size"], "3840x2160");
    assert_eq!(
        (
            stored["aspect_ratio"].as_str(),
            stored["resolution"].as_str()
        ),
        (Some("16:9"), Some("4K"))
    );
    assert_eq!(
        (stored["width"].as_u64(), stored["height"].as_u64()),
        (Some(5504), Some(3072))
    );
    assert_eq!(
        stored["usage"]["output_tokens_details"]["image_tokens"],
        2000
    );
    assert_eq!(stored["usage"]["thinking_tokens"], THINKING_TOKENS);
}

async fn references_count_as_image_tokens_and_stop_at_the_models_limit(app: TestApp) {
    app.use_fake_gemini().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    let image = base64::engine::general_purpose::STANDARD.encode(png_bytes());
    let edit = app
        .generated(
            &key,
            &json!({"prompt": "combine them", "model": PRO, "size": "auto", "images": vec![image.clone(); 14]}),
        )
        .await;
    assert_eq!(
        edit["usage"]["input_tokens_details"]["image_tokens"],
        14 * TOKENS_PER_INPUT_IMAGE
    );
    assert_eq!(
        edit["aspect_ratio"],
        Value::Null,
        "auto: the model's choice"
    );
    let too_many = assert_error(
        app.generate(
            &key,
            &json!({"prompt": "x", "model": PRO, "images": vec![image; 15]}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(too_many["error"]["field"], "images");
    assert!(
        too_many["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 14"),
        "{too_many}"
    );
    assert_eq!(app.google_requests().await, 1, "the refusal called no one");
}

async fn a_shape_the_model_lacks_is_422_listing_what_it_has(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let refused = |body: Value, field: &'static str, listed: &'static str| {
        let app = &app;
        let key = key.clone();
        async move {
            let error =
                assert_error(app.generate(&key, &body).await, 422, "validation_failed").await;
            assert_eq!(error["error"]["field"], field, "{body}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(message.contains(listed), "{message}");
        }
    };
    refused(
        json!({"prompt": "x", "size": "1024x1024", "resolution": "2K"}),
        "size",
        "not both",
    )
    .await;
    refused(
        json!({"prompt": "x", "model": PRO, "aspect_ratio": "8:1"}),
        "aspect_ratio",
        "1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9, 21:9",
    )
    .await;
    refused(
        json!({"prompt": "x", "model": PRO, "resolution": "512"}),
        "resolution",
        "1K, 2K, 4K",
    )
    .await;
    refused(
        json!({"prompt": "x", "resolution": "4k"}),
        "resolution",
        "1K, 512, 2K, 4K",
    )
    .await;
    refused(
        json!({"prompt": "x", "size": "9000x9000"}),
        "size",
        "64 to 8192",
    )
    .await;
    assert_eq!(app.google_requests().await, 0);
}

async fn test_keys_honour_ratio_and_resolution(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .create_key(&token, Some(json!({"name": "test", "mode": "test"})))
        .await;
    let test_key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app
        .generated(
            &test_key,
            &json!({"prompt": "a banana", "size": "3840x2160"}),
        )
        .await;
    assert_eq!(
        (body["aspect_ratio"].as_str(), body["resolution"].as_str()),
        (Some("16:9"), Some("4K"))
    );
    let (width, height) = (
        body["width"].as_u64().unwrap(),
        body["height"].as_u64().unwrap(),
    );
    assert_eq!(width * 9, height * 16, "{width}x{height} is 16:9");
    assert_eq!(body["usage"], Value::Null, "no tokens were spent");
    assert_eq!(app.google_requests().await, 0);
}

async fn the_catalog_is_listed_with_each_models_facts(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let list: Value = app.get_with("/v1/models", &key).await.json().await.unwrap();
    let flash = &list["data"][0];
    assert_eq!(flash["id"], FLASH);
    assert_eq!(flash["object"], "model");
    assert_eq!(flash["aliases"], json!(["nano-banana-2"]));
    assert_eq!(flash["resolutions"], json!(["1K", "512", "2K", "4K"]));
    assert_eq!(flash["aspect_ratios"].as_array().unwrap().len(), 14);
    assert_eq!(flash["max_input_images"], 14);
    assert_eq!(
        (flash["retired"].as_bool(), flash["retired_at"].as_str()),
        (Some(false), None)
    );
    let pro: Value = app
        .get_with("/v1/models/nano-banana-pro", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (pro["id"].as_str(), pro["model"].as_str()),
        (Some("nano-banana-pro"), Some(PRO))
    );
    assert_eq!(pro["resolutions"], json!(["1K", "2K", "4K"]));
}

fn with_the_retired_nano_banana(config: &mut Config) {
    config.models.enabled = ModelNames(vec![FLASH.into(), "nano-banana".into()]);
}

async fn a_retired_model_is_410_naming_its_replacement_and_marked_in_the_list(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let error = assert_error(
        app.generate(
            &key,
            &json!({"prompt": "x", "model": "gemini-2.5-flash-image"}),
        )
        .await,
        410,
        "model_retired",
    )
    .await;
    assert_eq!(error["error"]["field"], "model");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2026-10-02") && message.contains(FLASH),
        "{message}"
    );
    let openai = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "x", "model": "nano-banana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 400);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["param"].as_str()
        ),
        (Some("model_retired"), Some("model")),
        "{body}"
    );
    assert_eq!(app.google_requests().await, 0, "refused before any call");
    let list: Value = app.get_with("/v1/models", &key).await.json().await.unwrap();
    let retired = &list["data"][1];
    assert_eq!(retired["id"], "gemini-2.5-flash-image");
    assert_eq!(
        (
            retired["retired"].as_bool(),
            retired["retired_at"].as_str(),
            retired["replaced_by"].as_str()
        ),
        (Some(true), Some("2026-10-02"), Some(FLASH))
    );
    assert_eq!(retired["max_input_images"], 3);
}

/// A catalog that claims more than Google has: Google's 400 comes back as a provider failure
/// (the fake refuses an imageSize the model lacks, as Google does).
fn with_a_catalog_that_overclaims(config: &mut Config) {
    config.models.model.push(ModelEntry {
        id: PRO.into(),
        aliases: None,
        api: None,
        aspect_ratios: None,
        resolutions: Some(vec!["1K".into(), "512".into()]),
        max_input_images: None,
        retired_at: None,
        replaced_by: None,
        fallbacks: None,
        provider: None,
        google_model: None,
        price: None,
    });
}

async fn google_refuses_an_image_size_the_model_lacks(app: TestApp) {
    app.use_fake_gemini().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .generate(
            &key,
            &json!({"prompt": "x", "model": PRO, "resolution": "512"}),
        )
        .await;
    assert_error(response, 502, "upstream_failed").await;
    assert_eq!(app.image_configs().await, [json!({"imageSize": "512"})]);
}

on_both_backends!(
    sizes_become_google_shapes_and_answers_say_what_was_made,
    references_count_as_image_tokens_and_stop_at_the_models_limit,
    a_shape_the_model_lacks_is_422_listing_what_it_has,
    test_keys_honour_ratio_and_resolution,
    the_catalog_is_listed_with_each_models_facts,
);

configured_on_both_backends!(
    a_retired_model_is_410_naming_its_replacement_and_marked_in_the_list => with_the_retired_nano_banana,
    google_refuses_an_image_size_the_model_lacks => with_a_catalog_that_overclaims,
);
