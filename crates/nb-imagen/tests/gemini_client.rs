//! The client against a local fake of Google's API (wiremock), for every documented answer
//! and failure shape. Request bodies are compared with the ones the official SDKs sent
//! (`tests/wire/`).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use base64::Engine as _;
use nb_domain::generation::{
    AllowedModels, AspectRatio, ImageFormat, ImageRequest, InputImage, ProviderError, Resolution,
};
use nb_domain::ports::ImageProvider;
use nb_imagen::{GeminiImageClient, GeminiSettings, GoogleApiKey};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "AIzaSy-test-google-key";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR fake png body";
const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F'];

fn wire(name: &str) -> Value {
    let path = format!("{}/tests/wire/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn client(server: &MockServer) -> GeminiImageClient {
    let mut settings = GeminiSettings::new(GoogleApiKey::new(KEY.into()));
    settings.base_url = server.uri();
    settings.initial_backoff = Duration::from_millis(10);
    settings.attempt_timeout = Duration::from_secs(5);
    settings.deadline = Duration::from_secs(10);
    GeminiImageClient::new(settings).unwrap()
}

fn request(model: &str, aspect_ratio: &'static str) -> ImageRequest {
    let model = AllowedModels::new([model.to_owned()])
        .unwrap()
        .default_model()
        .clone();
    ImageRequest {
        model,
        text: "a banana".into(),
        aspect_ratio: Some(AspectRatio::parse(aspect_ratio).unwrap()),
        image_size: None,
        images: Vec::new(),
        history: Vec::new(),
        output: None,
        may_spool: false,
    }
}

const GEMINI_PATH: &str = "/v1beta/models/gemini-3.1-flash-image:generateContent";
const IMAGEN_PATH: &str = "/v1beta/models/imagen-4.0-generate-001:predict";

fn image_answer(mime: &str, data: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"inlineData": {"mimeType": mime, "data": data}}]}, "finishReason": "STOP", "index": 0}]})
}

async fn gemini_answers(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(response)
        .mount(server)
        .await;
}

async fn generate(
    server: &MockServer,
) -> Result<nb_domain::generation::GeneratedImage, ProviderError> {
    client(server)
        .generate(&request("gemini-3.1-flash-image", "16:9"))
        .await
        .map(|provided| provided.image.in_memory().unwrap().clone())
}

fn google_error(code: u16, status: &str, details: Value) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(
        json!({"error": {"code": code, "message": format!("{status} happened"), "status": status, "details": details}}),
    )
}

#[tokio::test]
async fn generate_content_sends_the_sdk_body_path_and_key_and_reads_the_image() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", KEY))
        .and(header("content-type", "application/json"))
        .and(body_json(wire("gemini_generate_content_request.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(wire("gemini_generate_content_response.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let image = generate(&server).await.unwrap();
    assert_eq!(image.format(), ImageFormat::Png);
    let captured = wire("gemini_generate_content_response.json");
    let data = captured["candidates"][0]["content"]["parts"][0]["inlineData"]["data"]
        .as_str()
        .unwrap();
    assert_eq!(
        image.bytes().as_ref(),
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    );
}

/// Images to edit go after the text, in order, byte for byte, as the SDK sends them.
#[tokio::test]
async fn input_images_go_after_the_text_as_the_sdk_sends_them() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(body_json(wire(
            "gemini_generate_content_request_with_images.json",
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(wire("gemini_generate_content_response.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    // The bytes the SDK was given for the captured request.
    let first = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR first";
    let second = b"\xff\xd8\xff\xe0\x00\x10JFIF second?";
    let images = [&first[..], &second[..]]
        .map(|bytes| InputImage::from_bytes(bytes::Bytes::copy_from_slice(bytes)).unwrap());
    let mut edit = request("gemini-3.1-flash-image", "3:2");
    edit.text = "put the banana on the table".into();
    edit.images = images.to_vec();
    assert!(client(&server).generate(&edit).await.is_ok());
}

#[tokio::test]
async fn an_automatic_size_sends_no_image_config() {
    let server = MockServer::start().await;
    let mut expected = wire("gemini_generate_content_request.json");
    expected["generationConfig"]
        .as_object_mut()
        .unwrap()
        .remove("imageConfig");
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(body_json(expected))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(wire("gemini_generate_content_response.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut auto = request("gemini-3.1-flash-image", "1:1");
    auto.aspect_ratio = None;
    assert!(client(&server).generate(&auto).await.is_ok());
}

/// A resolution other than the model's default is sent as `imageConfig.imageSize`, byte for
/// byte the body google-genai sends (captured by `wire/capture_image_size.py`).
#[tokio::test]
async fn a_resolution_is_sent_as_image_size_like_the_sdk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-3-pro-image:generateContent"))
        .and(body_json(wire("gemini_generate_content_request_4k.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(wire("gemini_generate_content_response.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut wide = request("gemini-3-pro-image", "16:9");
    wide.image_size = Some(Resolution::K4);
    assert!(client(&server).generate(&wide).await.is_ok());
}

#[tokio::test]
async fn imagen_cannot_edit_and_is_not_called() {
    let server = MockServer::start().await;
    let mut edit = request("imagen-4.0-generate-001", "1:1");
    edit.images = vec![InputImage::from_bytes(bytes::Bytes::from_static(PNG)).unwrap()];
    let result = client(&server).generate(&edit).await;
    assert!(
        matches!(
            result,
            Err(ProviderError::Unsupported { field: "model", .. })
        ),
        "{result:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn imagen_models_use_predict_with_the_sdk_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(IMAGEN_PATH))
        .and(header("x-goog-api-key", KEY))
        .and(body_json(wire("imagen_predict_request.json")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(wire("imagen_predict_response.json")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let image = client(&server)
        .generate(&request("imagen-4.0-generate-001", "16:9"))
        .await
        .unwrap()
        .image;
    assert_eq!(image.format(), ImageFormat::Png);
}

#[tokio::test]
async fn imagen_refuses_aspect_ratios_it_lacks_without_a_call() {
    let server = MockServer::start().await;
    let result = client(&server)
        .generate(&request("imagen-4.0-generate-001", "3:2"))
        .await;
    assert!(
        matches!(
            result,
            Err(ProviderError::Unsupported { field: "size", .. })
        ),
        "{result:?}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn snake_case_thoughts_jpeg_and_url_safe_base64_are_handled() {
    let server = MockServer::start().await;
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(JPEG);
    let answer = json!({"candidates": [{"content": {"parts": [
        {"text": "thinking", "thought": true},
        {"inline_data": {"mime_type": "image/png", "data": b64(PNG)}, "thought": true},
        {"inline_data": {"mime_type": "image/jpeg", "data": url_safe}}
    ]}, "finish_reason": "STOP"}]});
    gemini_answers(&server, ResponseTemplate::new(200).set_body_json(answer)).await;
    let image = generate(&server).await.unwrap();
    // The real format is sniffed from the bytes, whatever the field said.
    assert_eq!(image.format(), ImageFormat::Jpeg);
    assert_eq!(image.bytes().as_ref(), JPEG);
}

#[tokio::test]
async fn a_mislabelled_image_gets_its_real_mime_type() {
    let server = MockServer::start().await;
    gemini_answers(
        &server,
        ResponseTemplate::new(200).set_body_json(image_answer("image/png", &b64(JPEG))),
    )
    .await;
    assert_eq!(generate(&server).await.unwrap().format(), ImageFormat::Jpeg);
}

async fn rejection_reason(server: &MockServer) -> String {
    match generate(server).await {
        Err(ProviderError::ContentRejected { reason }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_blocked_prompt_is_rejected_with_its_reason() {
    let server = MockServer::start().await;
    let answer =
        json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {}});
    gemini_answers(&server, ResponseTemplate::new(200).set_body_json(answer)).await;
    assert!(
        rejection_reason(&server)
            .await
            .contains("PROHIBITED_CONTENT")
    );
}

#[tokio::test]
async fn an_image_safety_stop_is_rejected_with_its_reason() {
    let server = MockServer::start().await;
    let answer = json!({"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_SAFETY", "index": 0}]});
    gemini_answers(&server, ResponseTemplate::new(200).set_body_json(answer)).await;
    assert!(rejection_reason(&server).await.contains("IMAGE_SAFETY"));
}

#[tokio::test]
async fn a_text_only_answer_is_rejected_quoting_the_model() {
    let server = MockServer::start().await;
    let answer = json!({"candidates": [{"content": {"parts": [{"text": "I can't draw that."}]}, "finishReason": "STOP"}]});
    gemini_answers(&server, ResponseTemplate::new(200).set_body_json(answer)).await;
    assert!(
        rejection_reason(&server)
            .await
            .contains("I can't draw that.")
    );
}

#[tokio::test]
async fn an_answer_with_no_candidates_is_rejected() {
    let server = MockServer::start().await;
    gemini_answers(&server, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    rejection_reason(&server).await;
}

#[tokio::test]
async fn imagen_filtered_and_empty_answers_are_rejected() {
    for (answer, expected) in [
        (
            json!({"predictions": [{"raiFilteredReason": "Filtered: people"}]}),
            "people",
        ),
        (json!({"predictions": []}), "filtered"),
        (json!({}), "filtered"),
    ] {
        let server = MockServer::start().await;
        Mock::given(path(IMAGEN_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
        match client(&server)
            .generate(&request("imagen-4.0-generate-001", "1:1"))
            .await
        {
            Err(ProviderError::ContentRejected { reason }) => {
                assert!(reason.contains(expected), "{reason}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn imagen_blocked_prompts_400_are_rejections_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(IMAGEN_PATH))
        .respond_with(google_error(400, "INVALID_ARGUMENT", json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let result = client(&server)
        .generate(&request("imagen-4.0-generate-001", "1:1"))
        .await;
    match result {
        // Google's own message (see `google_error`) stays in the log.
        Err(ProviderError::ContentRejected { reason }) => {
            assert_eq!(reason, "the provider refused the prompt (INVALID_ARGUMENT)");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_invalid_api_key_is_a_credentials_error_not_retried() {
    let server = MockServer::start().await;
    let details = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]);
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(400, "INVALID_ARGUMENT", details))
        .expect(1)
        .mount(&server)
        .await;
    assert!(matches!(
        generate(&server).await,
        Err(ProviderError::CredentialsRejected)
    ));
}

#[tokio::test]
async fn permission_denied_is_a_credentials_error_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(403, "PERMISSION_DENIED", json!([])))
        .expect(1)
        .mount(&server)
        .await;
    assert!(matches!(
        generate(&server).await,
        Err(ProviderError::CredentialsRejected)
    ));
}

#[tokio::test]
async fn other_400s_are_refusals_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(400, "INVALID_ARGUMENT", json!([])))
        .expect(1)
        .mount(&server)
        .await;
    let refused = generate(&server).await;
    assert!(
        matches!(refused, Err(ProviderError::Refused { status: 400 })),
        "{refused:?}"
    );
    // Answered like any upstream failure, but neither retried by a job nor a fallback.
    let error = refused.unwrap_err();
    assert_eq!(error.code(), "upstream_failed");
    assert!(!error.falls_back());
}

#[tokio::test]
async fn an_unknown_model_is_named_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(404, "NOT_FOUND", json!([])))
        .expect(1)
        .mount(&server)
        .await;
    match generate(&server).await {
        Err(ProviderError::ModelNotFound { model }) => assert_eq!(model, "gemini-3.1-flash-image"),
        other => panic!("{other:?}"),
    }
}

fn rate_limited(delay: &str) -> ResponseTemplate {
    google_error(
        429,
        "RESOURCE_EXHAUSTED",
        json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]),
    )
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_info_delay() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(rate_limited("0.200s"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    gemini_answers(
        &server,
        ResponseTemplate::new(200).set_body_json(image_answer("image/png", &b64(PNG))),
    )
    .await;
    let started = std::time::Instant::now();
    assert!(generate(&server).await.is_ok());
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // Structural, not a speed check: the client must have waited out the provider's delay.
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn persistent_429s_give_up_after_two_retries_with_the_delay() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(rate_limited("0.05s"))
        .expect(3)
        .mount(&server)
        .await;
    match generate(&server).await {
        Err(ProviderError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_millis(50)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_retry_delay_beyond_the_deadline_is_not_waited_for() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(rate_limited("30s"))
        .expect(1)
        .mount(&server)
        .await;
    match generate(&server).await {
        Err(ProviderError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(503, "UNAVAILABLE", json!([])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(500, "INTERNAL", json!([])))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    gemini_answers(
        &server,
        ResponseTemplate::new(200).set_body_json(image_answer("image/png", &b64(PNG))),
    )
    .await;
    assert!(generate(&server).await.is_ok());
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_fail_after_three_attempts() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(500, "INTERNAL", json!([])))
        .expect(3)
        .mount(&server)
        .await;
    assert!(matches!(
        generate(&server).await,
        Err(ProviderError::Upstream(_))
    ));
}

#[tokio::test]
async fn upstream_deadline_exceeded_is_a_timeout_after_retries() {
    let server = MockServer::start().await;
    Mock::given(path(GEMINI_PATH))
        .respond_with(google_error(504, "DEADLINE_EXCEEDED", json!([])))
        .expect(3)
        .mount(&server)
        .await;
    assert!(matches!(
        generate(&server).await,
        Err(ProviderError::Timeout)
    ));
}

#[tokio::test]
async fn html_and_truncated_answers_are_upstream_failures() {
    for response in [
        ResponseTemplate::new(502).set_body_string("<html><body>Bad Gateway</body></html>"),
        ResponseTemplate::new(200).set_body_string("<html>proxy login</html>"),
        ResponseTemplate::new(200).set_body_string(r#"{"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "iVBO"#),
    ] {
        let server = MockServer::start().await;
        gemini_answers(&server, response).await;
        let result = generate(&server).await;
        assert!(matches!(result, Err(ProviderError::Upstream(_))), "{result:?}");
    }
}

#[tokio::test]
async fn data_that_is_not_an_image_is_an_upstream_failure() {
    let server = MockServer::start().await;
    gemini_answers(
        &server,
        ResponseTemplate::new(200).set_body_json(image_answer("image/png", &b64(b"hello"))),
    )
    .await;
    assert!(matches!(
        generate(&server).await,
        Err(ProviderError::Upstream(_))
    ));
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_then_an_upstream_failure() {
    // A provider that accepts each connection and closes it before answering: every attempt
    // fails to get an answer, and each is counted.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let mut settings = GeminiSettings::new(GoogleApiKey::new(KEY.into()));
    settings.base_url = format!("http://{address}");
    settings.initial_backoff = Duration::from_millis(5);
    settings.max_retries = 2;
    let result = GeminiImageClient::new(settings)
        .unwrap()
        .generate(&request("gemini-3.1-flash-image", "1:1"))
        .await;
    assert!(
        matches!(result, Err(ProviderError::Upstream(_))),
        "{result:?}"
    );
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
}

#[tokio::test]
async fn a_slow_attempt_times_out() {
    let server = MockServer::start().await;
    gemini_answers(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(image_answer("image/png", &b64(PNG)))
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    let mut settings = GeminiSettings::new(GoogleApiKey::new(KEY.into()));
    settings.base_url = server.uri();
    settings.attempt_timeout = Duration::from_millis(200);
    let result = GeminiImageClient::new(settings)
        .unwrap()
        .generate(&request("gemini-3.1-flash-image", "1:1"))
        .await;
    assert!(matches!(result, Err(ProviderError::Timeout)), "{result:?}");
}

#[tokio::test]
async fn an_answer_cut_short_by_the_connection_is_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let answer = image_answer("image/png", &b64(PNG)).to_string();
    tokio::spawn(async move {
        for attempt in 0..2 {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            // The first answer breaks off half-way; the second is whole.
            let sent = if attempt == 0 {
                &answer[..answer.len() / 2]
            } else {
                &answer[..]
            };
            socket.write_all(sent.as_bytes()).await.unwrap();
        }
    });
    let mut settings = GeminiSettings::new(GoogleApiKey::new(KEY.into()));
    settings.base_url = format!("http://{address}");
    settings.initial_backoff = Duration::from_millis(5);
    let image = GeminiImageClient::new(settings)
        .unwrap()
        .generate(&request("gemini-3.1-flash-image", "1:1"))
        .await
        .unwrap()
        .image;
    assert_eq!(image.in_memory().unwrap().bytes().as_ref(), PNG);
}

#[tokio::test]
async fn prior_knowledge_speaks_http2_from_the_first_byte() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let first_bytes = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).await.unwrap();
        preface
    });
    let mut settings = GeminiSettings::new(GoogleApiKey::new(KEY.into()));
    settings.base_url = format!("http://{address}");
    settings.http2_prior_knowledge = true;
    settings.attempt_timeout = Duration::from_millis(500);
    settings.max_retries = 0;
    let client = GeminiImageClient::new(settings).unwrap();
    let _ = client
        .generate(&request("gemini-3.1-flash-image", "1:1"))
        .await;
    assert_eq!(
        &first_bytes.await.unwrap(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    );
}

#[tokio::test]
async fn the_key_never_appears_in_debug_output() {
    let server = MockServer::start().await;
    let shown = format!("{:?}", client(&server));
    assert!(!shown.contains(KEY), "{shown}");
}
