//! The OpenAI-compatible routes over real sockets, in the wire shapes the official SDKs send
//! (captured from openai-python: JSON for generations; multipart with `image` for one file and
//! `image[]` for several, for edits). The SDKs themselves drive the real binary in
//! `scripts/openai_sdk_check.py`.

use base64::Engine as _;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{MODEL, TestApp, png_bytes};
use crate::on_both_backends;

const BOUNDARY: &str = "a2b4594656e4fd4a57cad39a8acb9ac8";

/// A part of a form: a text field, or a file.
enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, filename, bytes) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

impl TestApp {
    async fn openai_generate(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/images/generations"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn openai_edit(&self, key: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(self.url("/v1/images/edits"))
            .bearer_auth(key)
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// Asserts OpenAI's error envelope and returns its `error`.
async fn openai_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let body: Value = response.json().await.unwrap();
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "{body}");
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "no {field} in {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    error
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A second image, a JPEG, so the order of parts shows.
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1,
];

async fn generations_answer_urls_by_default(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .openai_generate(&key, &json!({"prompt": "a banana", "model": "gpt-image-1"}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body["output_format"], "png");
    assert_eq!(body["size"], "2x2", "the PNG's own pixel size");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert!(data[0].get("b64_json").is_none());
    assert!(
        data[0]["revised_prompt"]
            .as_str()
            .unwrap()
            .starts_with("a banana\n\n")
    );
    let image = app
        .client
        .get(data[0]["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(image.bytes().await.unwrap().as_ref(), png_bytes());
    // An OpenAI model name means the default model; no size means the model's own choice.
    let sent = &app.google_bodies().await[0];
    assert!(
        sent["generationConfig"].get("imageConfig").is_none(),
        "{sent}"
    );
    let paths = app.google.received_requests().await.unwrap();
    assert!(paths[0].url.path().contains(MODEL));
}

async fn b64_json_answers_carry_the_bytes(app: TestApp) {
    // The `b64_json` answer is written by hand (encoded straight into the body): two images, and
    // a prompt that needs escaping, must still be exactly the JSON OpenAI's answer is.
    let (_, key) = app.user_with_key("ada@example.com").await;
    let prompt = "a \"quoted\" banana\nüber \\ \u{1F34C}";
    let response = app
        .openai_generate(
            &key,
            &json!({"prompt": prompt, "response_format": "b64_json", "n": 2}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert!(body["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body["output_format"], "png");
    assert!(body["size"].as_str().unwrap().contains('x'));
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for image in data {
        assert!(image.get("url").is_none());
        assert_eq!(image.as_object().unwrap().len(), 2, "{image}");
        assert!(image["revised_prompt"].as_str().unwrap().contains(prompt));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(image["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, png_bytes());
    }
}

async fn n_images_are_n_generations_counted_as_n(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let body: Value = app
        .openai_generate(&key, &json!({"prompt": "x", "n": 3}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
    let urls: std::collections::HashSet<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|image| image["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), 3, "three images, three objects");
    assert_eq!(app.google_requests().await, 3);
    assert_eq!(app.usage(&token).await[0]["count"], 3);
    for n in [0, 11] {
        let error = openai_error(
            app.openai_generate(&key, &json!({"prompt": "x", "n": n}))
                .await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(error["param"], "n");
    }
}

async fn every_size_becomes_its_aspect_ratio(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let sizes = [
        ("256x256", "1:1"),
        ("512x512", "1:1"),
        ("1024x1024", "1:1"),
        ("1536x1024", "3:2"),
        ("1024x1536", "2:3"),
        ("1792x1024", "16:9"),
        ("1024x1792", "9:16"),
    ];
    for (size, _) in sizes {
        let response = app
            .openai_generate(&key, &json!({"prompt": "x", "size": size}))
            .await;
        assert_eq!(response.status(), 200, "{size}");
    }
    let ratios: Vec<String> = app
        .google_bodies()
        .await
        .iter()
        .map(|body| {
            body["generationConfig"]["imageConfig"]["aspectRatio"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<&str> = sizes.iter().map(|(_, ratio)| *ratio).collect();
    assert_eq!(ratios, expected);
    // Outside gpt-image-2's limits: not multiples of 16, wider than 3:1, longer than 3840.
    for size in ["1000x1000", "3840x1024", "4096x2304", "big"] {
        let error = openai_error(
            app.openai_generate(&key, &json!({"prompt": "x", "size": size}))
                .await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(error["param"], "size", "{size}");
    }
}

async fn custom_sizes_and_quality_choose_the_resolution(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    // size → quality → what Google is asked for, and the answer's quality.
    let cases = [
        (
            "3840x2160",
            None,
            json!({"aspectRatio": "16:9", "imageSize": "4K"}),
            "high",
        ),
        (
            "2560x1440",
            None,
            json!({"aspectRatio": "16:9", "imageSize": "2K"}),
            "medium",
        ),
        ("1024x768", None, json!({"aspectRatio": "4:3"}), "medium"),
        (
            "1024x1024",
            Some("low"),
            json!({"aspectRatio": "1:1", "imageSize": "512"}),
            "low",
        ),
        (
            "1024x1024",
            Some("hd"),
            json!({"aspectRatio": "1:1", "imageSize": "2K"}),
            "medium",
        ),
        (
            "1024x1024",
            Some("xhigh"),
            json!({"aspectRatio": "1:1", "imageSize": "4K"}),
            "high",
        ),
        ("auto", Some("standard"), Value::Null, "medium"),
    ];
    for (size, quality, _, answered) in &cases {
        let mut body = json!({"prompt": "x", "size": size});
        if let Some(quality) = quality {
            body["quality"] = json!(quality);
        }
        let response = app.openai_generate(&key, &body).await;
        assert_eq!(response.status(), 200, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["quality"], *answered, "{body}");
        assert_eq!(answer["background"], "opaque");
    }
    let sent: Vec<Value> = app
        .google_bodies()
        .await
        .iter()
        .map(|body| body["generationConfig"]["imageConfig"].clone())
        .collect();
    let expected: Vec<Value> = cases
        .iter()
        .map(|(_, _, config, _)| config.clone())
        .collect();
    assert_eq!(sent, expected);
    let transparent = openai_error(
        app.openai_generate(&key, &json!({"prompt": "x", "background": "transparent"}))
            .await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(transparent["param"], "background");
}

async fn usage_sums_googles_token_counts(app: TestApp) {
    app.use_fake_gemini().await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    let answer: Value = app
        .openai_generate(
            &key,
            &json!({"prompt": "a banana", "n": 2, "size": "2560x1440"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let usage = &answer["usage"];
    // Two 2K images of 3.1 Flash: 1680 output image tokens each, thinking reported apart.
    assert_eq!(usage["output_tokens"], 2 * 1680, "{answer}");
    assert_eq!(usage["output_tokens_details"]["image_tokens"], 2 * 1680);
    assert_eq!(
        usage["output_tokens_details"]["thinking_tokens"],
        2 * crate::fake_google::THINKING_TOKENS
    );
    let input = usage["input_tokens"].as_u64().unwrap();
    assert!(input > 0);
    assert_eq!(usage["input_tokens_details"]["text_tokens"], input);
    assert_eq!(usage["input_tokens_details"]["image_tokens"], 0);
    assert_eq!(
        usage["total_tokens"],
        input + 2 * 1680 + 2 * crate::fake_google::THINKING_TOKENS
    );
    assert_eq!(answer["size"], "2752x1536", "Google's 16:9 at 2K");
}

async fn every_sdk_field_is_accepted(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let everything = json!({
        "prompt": "x", "model": "dall-e-3", "n": 1, "size": "auto", "quality": "hd",
        "response_format": "url", "style": "vivid", "output_format": "webp",
        "output_compression": 80, "background": "opaque", "moderation": "low",
        "user": "user-42", "safety_identifier": "s-1", "stream": false, "partial_images": 2,
        "complexity": "high", "frame_count": 4, "frame_duration_ms": 100,
        "input_fidelity": "high", "svg": {"model": "x"}
    });
    let response = app.openai_generate(&key, &everything).await;
    assert_eq!(response.status(), 200);
    // A field the SDKs do not send is refused by name, as OpenAI refuses an unrecognized
    // argument (every JSON body here refuses unknown fields).
    let mut unknown = everything.clone();
    unknown["some_future_field"] = json!([1, 2]);
    let refused = app.openai_generate(&key, &unknown).await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["param"], "some_future_field", "{body}");
    // `vivid` is our artistic style.
    let sent = &app.google_bodies().await[0];
    let text = sent["contents"][0]["parts"][0]["text"].as_str().unwrap();
    assert!(text.contains("artistic illustration"), "{text}");
}

async fn errors_come_in_openais_envelope(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let cases = [
        (json!({}), "prompt"),
        (json!({"prompt": "x", "quality": "ultra"}), "quality"),
        (
            json!({"prompt": "x", "partial_images": 4}),
            "partial_images",
        ),
        (
            json!({"prompt": "x", "output_format": "gif"}),
            "output_format",
        ),
        (
            json!({"prompt": "x", "response_format": "html"}),
            "response_format",
        ),
        (json!({"prompt": "x", "model": "stable-diffusion"}), "model"),
        (json!({"prompt": "x", "n": "three"}), "n"),
    ];
    for (body, param) in cases {
        let error = openai_error(
            app.openai_generate(&key, &body).await,
            400,
            "validation_failed",
        )
        .await;
        assert_eq!(error["param"], param, "{body}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let bad_key = app
        .openai_generate(
            "nb_live_00000000000000000000000000000000",
            &json!({"prompt": "x"}),
        )
        .await;
    assert_eq!(bad_key.headers()["x-should-retry"], "false");
    openai_error(bad_key, 401, "invalid_api_key").await;
    let no_key = app
        .client
        .post(app.url("/v1/images/generations"))
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    openai_error(no_key, 401, "missing_credentials").await;
    assert_eq!(app.google_requests().await, 0);
}

async fn a_refused_prompt_is_a_content_policy_violation(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    Mock::given(method("POST"))
        .and(path_regex(":generateContent$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
        )
        .mount(&app.google)
        .await;
    let error = openai_error(
        app.openai_generate(&key, &json!({"prompt": "x"})).await,
        400,
        "content_policy_violation",
    )
    .await;
    assert_eq!(error["type"], "invalid_request_error");
}

async fn edits_send_the_images_in_order_after_the_text(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let png = png_bytes();
    let one = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "add a hat"),
                Part::Text("n", "1"),
                Part::Text("size", "1024x1024"),
                Part::File("image", "a.png", &png),
            ]),
        )
        .await;
    assert_eq!(one.status(), 200);
    let two = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "combine them"),
                Part::Text("input_fidelity", "high"),
                Part::File("image[]", "a.png", &png),
                Part::File("image[]", "b.jpg", JPEG),
            ]),
        )
        .await;
    assert_eq!(two.status(), 200);
    let body: Value = two.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let sent = app.google_bodies().await;
    let url_safe = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE.encode(bytes);
    let parts = |body: &Value| body["contents"][0]["parts"].as_array().unwrap().clone();
    let first = parts(&sent[0]);
    assert_eq!(first.len(), 2);
    assert!(first[0]["text"].as_str().unwrap().starts_with("add a hat"));
    assert_eq!(
        first[1]["inlineData"],
        json!({"data": url_safe(&png), "mime_type": "image/png"})
    );
    let second = parts(&sent[1]);
    assert_eq!(second.len(), 3);
    assert_eq!(second[1]["inlineData"]["data"], url_safe(&png));
    assert_eq!(
        second[2]["inlineData"],
        json!({"data": url_safe(JPEG), "mime_type": "image/jpeg"})
    );
    // No size: the model keeps the input's aspect ratio.
    assert!(sent[1]["generationConfig"].get("imageConfig").is_none());
}

async fn a_mask_is_described_to_the_model_and_sent_last(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let png = png_bytes();
    let mut mask = png.clone();
    mask.extend_from_slice(b"mask");
    let response = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "a hat"),
                Part::File("image", "a.png", &png),
                Part::File("mask", "m.png", &mask),
            ]),
        )
        .await;
    assert_eq!(response.status(), 200);
    let sent = &app.google_bodies().await[0];
    let parts = sent["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert!(parts[0]["text"].as_str().unwrap().contains("mask"));
    let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&mask);
    assert_eq!(parts[2]["inlineData"]["data"], url_safe);
}

async fn edits_check_images_by_their_bytes(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let html = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "x"),
                Part::File("image", "a.png", b"<html>not an image</html>"),
            ]),
        )
        .await;
    assert_eq!(
        openai_error(html, 400, "validation_failed").await["param"],
        "image"
    );
    let none = app
        .openai_edit(&key, form(&[Part::Text("prompt", "x")]))
        .await;
    assert_eq!(
        openai_error(none, 400, "validation_failed").await["param"],
        "image"
    );
    let png = png_bytes();
    let imagen = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "x"),
                Part::Text("model", "imagen-4.0-generate-001"),
                Part::File("image", "a.png", &png),
            ]),
        )
        .await;
    assert_eq!(
        openai_error(imagen, 400, "validation_failed").await["param"],
        "model"
    );
    assert_eq!(app.google_requests().await, 0);
}

async fn malformed_forms_are_clear_4xx(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let png = png_bytes();
    let whole = form(&[
        Part::Text("prompt", "x"),
        Part::File("image", "a.png", &png),
    ]);
    let truncated = whole[..whole.len() - 30].to_vec();
    openai_error(
        app.openai_edit(&key, truncated).await,
        400,
        "malformed_multipart",
    )
    .await;
    let no_boundary = app
        .client
        .post(app.url("/v1/images/edits"))
        .bearer_auth(&key)
        .header(CONTENT_TYPE, "multipart/form-data")
        .body(whole.clone())
        .send()
        .await
        .unwrap();
    assert!(no_boundary.status().is_client_error());
    let json = app
        .client
        .post(app.url("/v1/images/edits"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    openai_error(json, 415, "unsupported_media_type").await;
    let many: Vec<Part<'_>> = (0..10_000).map(|_| Part::Text("user", "u")).collect();
    openai_error(
        app.openai_edit(&key, form(&many)).await,
        400,
        "malformed_multipart",
    )
    .await;
    assert_eq!(app.google_requests().await, 0);
}

async fn images_over_the_limits_are_413(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    // Small limits (see the configuration below): 4 KiB an image, 6 KiB in all.
    let mut big = png_bytes();
    big.resize(5 * 1024, 0);
    let one_too_big = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "x"),
                Part::File("image", "a.png", &big),
            ]),
        )
        .await;
    openai_error(one_too_big, 413, "payload_too_large").await;
    let mut three_k = png_bytes();
    three_k.resize(3 * 1024, 0);
    let together = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "x"),
                Part::File("image[]", "a.png", &three_k),
                Part::File("image[]", "b.png", &three_k),
                Part::File("image[]", "c.png", &three_k),
            ]),
        )
        .await;
    openai_error(together, 413, "payload_too_large").await;
    // A 100 MB body is refused from its declared length, without being read.
    let huge = app
        .client
        .post(app.url("/v1/images/edits"))
        .bearer_auth(&key)
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", (100 * 1024 * 1024).to_string())
        .body(vec![0u8; 1024])
        .send()
        .await;
    match huge {
        Ok(response) => assert_eq!(response.status(), 413),
        // The server may close the connection once it has answered.
        Err(error) => assert!(error.is_request() || error.is_body(), "{error}"),
    }
    // Streamed without a declared length, it is cut off once over the bound.
    let chunks = (0..400).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
    let streamed = app
        .client
        .post(app.url("/v1/images/edits"))
        .bearer_auth(&key)
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    if let Ok(response) = streamed {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // The native route has the same limits, for images in base64.
    let native = app
        .generate(&key, &json!({"prompt": "x", "images": [b64(&big)]}))
        .await;
    assert_eq!(native.status(), 413);
    assert_eq!(app.google_requests().await, 0);
}

async fn the_native_route_edits_too(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let png = png_bytes();
    let response = app
        .generate(
            &key,
            &json!({
                "prompt": "combine",
                "size": "auto",
                "images": [format!("data:image/png;base64,{}", b64(&png)), b64(JPEG)]
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["size"], "auto");
    let sent = &app.google_bodies().await[0];
    let parts = sent["contents"][0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[2]["inlineData"]["mime_type"], "image/jpeg");
    let not_base64 = app
        .generate(&key, &json!({"prompt": "x", "images": [b64(JPEG), "%%%"]}))
        .await;
    let error = crate::helpers::assert_error(not_base64, 422, "validation_failed").await;
    assert_eq!(
        error["error"]["field"], "images[1]",
        "the field names the image"
    );
}

async fn models_are_listed_in_openais_shape(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let list: Value = app.get_with("/v1/models", &key).await.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["id"].as_str().unwrap())
        .collect();
    // The enabled models, their aliases, then OpenAI's names: each name a client may use.
    assert_eq!(
        ids,
        [
            MODEL,
            "gemini-3-pro-image",
            "nano-banana-2",
            "nano-banana-pro",
            "gpt-image-2",
            "gpt-image-1.5",
            "gpt-image-1",
            "gpt-image-1-mini",
            "chatgpt-image-latest",
            "dall-e-3",
            "dall-e-2",
        ]
    );
    assert_eq!(list["data"][0]["object"], "model");
    assert_eq!(list["data"][3]["model"], "gemini-3-pro-image");
    assert_eq!(
        list["data"][4]["model"], MODEL,
        "OpenAI's names mean the default model"
    );
    let one: Value = app
        .get_with(&format!("/v1/models/{MODEL}"), &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], MODEL);
    assert_eq!(
        app.get_with("/v1/models/gpt-image-1", &key).await.status(),
        200
    );
    openai_error(
        app.get_with("/v1/models/nope", &key).await,
        404,
        "model_not_found",
    )
    .await;
    let unknown_key = format!("nb_live_{}", "0".repeat(32));
    openai_error(
        app.get_with("/v1/models", &unknown_key).await,
        401,
        "invalid_api_key",
    )
    .await;
}

on_both_backends!(
    generations_answer_urls_by_default,
    b64_json_answers_carry_the_bytes,
    n_images_are_n_generations_counted_as_n,
    every_size_becomes_its_aspect_ratio,
    custom_sizes_and_quality_choose_the_resolution,
    usage_sums_googles_token_counts,
    streams_one_completed_event_per_image,
    output_format_converts_the_image,
    a_stream_the_client_leaves_is_still_made_and_counted,
    stream_errors_before_the_start_are_json_and_after_it_events,
    every_sdk_field_is_accepted,
    errors_come_in_openais_envelope,
    a_refused_prompt_is_a_content_policy_violation,
    edits_send_the_images_in_order_after_the_text,
    a_mask_is_described_to_the_model_and_sent_last,
    edits_check_images_by_their_bytes,
    malformed_forms_are_clear_4xx,
    the_native_route_edits_too,
    models_are_listed_in_openais_shape,
);

crate::configured_on_both_backends!(
    images_over_the_limits_are_413 => |config| {
        config.models.max_input_images = std::num::NonZeroUsize::new(16).unwrap();
        config.models.max_input_image_bytes = std::num::NonZeroUsize::new(4 * 1024).unwrap();
        config.models.max_input_images_total_bytes =
            std::num::NonZeroUsize::new(6 * 1024).unwrap();
    },
);

/// The events of a `text/event-stream` answer: `(event, data)`, comments left out.
async fn events(response: reqwest::Response) -> Vec<(String, Value)> {
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            (name, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

async fn streams_one_completed_event_per_image(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .openai_generate(
            &key,
            &json!({"prompt": "a banana", "n": 2, "stream": true, "partial_images": 2}),
        )
        .await;
    let received = events(response).await;
    assert_eq!(received.len(), 2, "no partial images: Google makes none");
    for (name, data) in &received {
        assert_eq!(name, "image_generation.completed");
        assert_eq!(data["type"], "image_generation.completed");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data["b64_json"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes, png_bytes());
        assert!(data["created_at"].as_i64().unwrap() > 1_700_000_000);
        assert_eq!(
            (data["size"].as_str(), data["output_format"].as_str()),
            (Some("2x2"), Some("png"))
        );
        assert_eq!(
            (data["quality"].as_str(), data["background"].as_str()),
            (Some("medium"), Some("opaque"))
        );
        assert!(data["usage"]["input_tokens"].is_u64(), "{data}");
        // What it cost: the stream's headers went out before it was made.
        assert_eq!(data["cost_usd"], "0.067200", "{data}");
    }
    // Both were recorded and counted.
    assert_eq!(app.usage(&token).await[0]["count"], 2);
    assert_eq!(app.google_requests().await, 2);

    // An edit streams image_edit events.
    let edit = app
        .openai_edit(
            &key,
            form(&[
                Part::Text("prompt", "a hat"),
                Part::Text("stream", "true"),
                Part::File("image", "a.png", &png_bytes()),
            ]),
        )
        .await;
    let received = events(edit).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, "image_edit.completed");
    assert_eq!(received[0].1["type"], "image_edit.completed");
}

async fn stream_errors_before_the_start_are_json_and_after_it_events(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created: Value = app
        .create_key(
            &token,
            Some(json!({"name": "one a day", "limits": {"per_day": 1}})),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    // The model refuses after the stream started: an error event the SDKs raise.
    app.refuse_the_next_image().await;
    let refused = events(
        app.openai_generate(&key, &json!({"prompt": "x", "stream": true}))
            .await,
    )
    .await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, "error");
    assert_eq!(refused[0].1["type"], "error");
    assert_eq!(refused[0].1["error"]["code"], "content_policy_violation");
    // The day's one image: made, then the quota refuses before any stream starts.
    assert_eq!(
        app.openai_generate(&key, &json!({"prompt": "x", "stream": true}))
            .await
            .status(),
        200
    );
    let over = openai_error(
        app.openai_generate(&key, &json!({"prompt": "x", "stream": true}))
            .await,
        429,
        "quota_exceeded",
    )
    .await;
    assert_eq!(over["type"], "insufficient_quota");
    // A stream cannot be replayed: no Idempotency-Key with it.
    let (_, other_key) = app.created_key(&token).await;
    let keyed = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&other_key)
        .header("Idempotency-Key", "order-1")
        .json(&json!({"prompt": "x", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        openai_error(keyed, 400, "validation_failed").await["param"],
        "stream"
    );
}

async fn output_format_converts_the_image(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let answer: Value = app
        .openai_generate(
            &key,
            &json!({"prompt": "x", "output_format": "webp", "output_compression": 60, "response_format": "b64_json"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["output_format"], "webp", "{answer}");
    assert_eq!(answer["size"], "2x2", "the same pixels");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(answer["data"][0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert!(bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP");
    // The native route too; the stored image is the converted one.
    let native = app
        .generated(
            &key,
            &json!({"prompt": "x", "output_format": "jpeg", "output_compression": 50}),
        )
        .await;
    assert_eq!(native["mime_type"], "image/jpeg");
    let url = native["url"].as_str().unwrap();
    assert!(url.ends_with(".jpg"), "{url}");
    let stored = app.client.get(url).send().await.unwrap();
    assert_eq!(stored.headers()["content-type"], "image/jpeg");
    let bad = openai_error(
        app.openai_generate(&key, &json!({"prompt": "x", "output_compression": 101}))
            .await,
        400,
        "validation_failed",
    )
    .await;
    assert_eq!(bad["param"], "output_compression");
}

async fn a_stream_the_client_leaves_is_still_made_and_counted(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_json(crate::helpers::gemini_image_answer())
                .set_delay(std::time::Duration::from_millis(500)),
        )
        .with_priority(1)
        .mount(&app.google)
        .await;
    // The headers come once the work started; the client then goes away.
    let response = app
        .openai_generate(&key, &json!({"prompt": "x", "stream": true}))
        .await;
    assert_eq!(response.status(), 200);
    drop(response);
    nb_testkit::eventually_true(
        "the image is made and counted after the client left",
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(100),
        || async {
            let usage = app.usage(&token).await;
            usage.first().is_some_and(|row| row["count"] == 1)
        },
    )
    .await;
}

/// A PNG of `width`×`height` pixels of noise (it does not compress): about 3 bytes a pixel.
fn noisy_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let pixels: Vec<u8> = (0..width as usize * height as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}

/// Images past the spool threshold (2 MiB) go to a spool file as they arrive; those the answer
/// carries (`b64_json`, streams) or that are converted are read back whole under the memory
/// budget — here a budget smaller than one image, which is then held alone. Every answer has
/// the image byte for byte, and no spool file is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_images_the_answer_needs_whole_are_read_back_from_their_spool_file() {
    let app = TestApp::spawn_with(crate::helpers::Backend::Sqlite, |config| {
        config.limits.max_image_bytes_in_flight = std::num::NonZeroU64::new(1024 * 1024).unwrap();
    })
    .await;
    let (_, key) = app.user_with_key("ada@example.com").await;
    let large = noisy_png(1100, 1100);
    assert!(large.len() > 3 * 1024 * 1024, "{}", large.len());
    let answer = json!({"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeType": "image/png", "data": base64::engine::general_purpose::STANDARD.encode(&large)}}]}, "finishReason": "STOP", "index": 0}], "modelVersion": MODEL});
    Mock::given(method("POST"))
        .and(path_regex(":generateContent$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .with_priority(1)
        .mount(&app.google)
        .await;
    let decode = |b64: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap()
    };

    let answered = app
        .openai_generate(
            &key,
            &json!({"prompt": "noise", "response_format": "b64_json", "n": 2}),
        )
        .await;
    assert_eq!(answered.status(), 200);
    let body: Value = answered.json().await.unwrap();
    for image in body["data"].as_array().unwrap() {
        assert!(decode(&image["b64_json"]) == large, "b64_json");
    }

    let streamed = app
        .openai_generate(&key, &json!({"prompt": "noise", "stream": true}))
        .await;
    let received = events(streamed).await;
    assert_eq!(received.len(), 1);
    assert!(decode(&received[0].1["b64_json"]) == large, "stream");

    let converted = app
        .openai_generate(
            &key,
            &json!({"prompt": "noise", "response_format": "b64_json", "output_format": "jpeg"}),
        )
        .await;
    assert_eq!(converted.status(), 200);
    let body: Value = converted.json().await.unwrap();
    assert!(decode(&body["data"][0]["b64_json"]).starts_with(b"\xff\xd8\xff"));

    let linked = app.openai_generate(&key, &json!({"prompt": "noise"})).await;
    let body: Value = linked.json().await.unwrap();
    let url = body["data"][0]["url"].as_str().unwrap();
    let stored = app
        .client
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(stored.as_ref() == large, "stored");

    let spool = app.data_dir.path().join(".spool");
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}
