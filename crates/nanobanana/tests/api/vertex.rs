//! Vertex AI against faithful fakes: a token endpoint that checks the service account's JWT
//! (RS256 signature against the test key's public half, `iss`, `aud`, `scope`, `exp`) as
//! Google's does, and Vertex's `:generateContent` at the project's URL with the bearer token;
//! a token fetched once for many calls and again near its expiry; a chain from Vertex AI to the
//! Gemini API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{Backend, TestApp, gemini_image_answer};

const VERTEX_MODEL: &str = "gemini-3-pro-image@vertex";
const PROJECT: &str = "test-project";
const CLIENT_EMAIL: &str = "nanobanana-test@test-project.iam.gserviceaccount.com";
const PUBLIC_KEY: &str = include_str!("../fixtures/vertex-test-service-account.pub.pem");
const KEY_FILE: &str = include_str!("../fixtures/vertex-test-service-account.json");
const GENERATE_PATH: &str = "/v1/projects/test-project/locations/global/publishers/google/models/gemini-3-pro-image:generateContent";

/// Google's token endpoint: a JWT-bearer grant whose assertion verifies gets a token.
struct TokenEndpoint {
    audience: String,
    issued: Arc<AtomicUsize>,
    expires_in: u64,
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = String::from_utf8_lossy(&request.body).into_owned();
        let field = |name: &str| {
            form.split('&')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .to_owned()
        };
        if field("grant_type") != "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"error": "unsupported_grant_type"}));
        }
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[&self.audience]);
        validation.set_issuer(&[CLIENT_EMAIL]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap();
        let Ok(verified) = jsonwebtoken::decode::<Value>(&field("assertion"), &key, &validation)
        else {
            return ResponseTemplate::new(400).set_body_json(
                json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
            );
        };
        let claims = verified.claims;
        let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        if claims["scope"] != "https://www.googleapis.com/auth/cloud-platform"
            || lifetime > 3600
            || verified.header.kid.as_deref() != Some("0123456789abcdef0123456789abcdef01234567")
        {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_scope"}));
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("ya29.test-token-{n}"), "expires_in": self.expires_in, "token_type": "Bearer"}))
    }
}

struct Vertex {
    app: TestApp,
    fake: MockServer,
    issued: Arc<AtomicUsize>,
}

/// A server whose catalog offers 3 Pro on Vertex AI as `gemini-3-pro-image@vertex` (falling
/// back to 3 Pro on the Gemini API), its tokens living `expires_in` seconds.
async fn vertex(expires_in: u64) -> Vertex {
    let fake = MockServer::start().await;
    let issued = Arc::new(AtomicUsize::new(0));
    let token_uri = format!("{}/token", fake.uri());
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(TokenEndpoint {
            audience: token_uri.clone(),
            issued: issued.clone(),
            expires_in,
        })
        .mount(&fake)
        .await;
    let mut key: Value = serde_json::from_str(KEY_FILE).unwrap();
    key["token_uri"] = json!(token_uri);
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), key.to_string()).unwrap();
    let (_kept, key_path) = key_file.keep().unwrap();
    let base = fake.uri();
    let app = TestApp::spawn_with(Backend::Sqlite, move |config| {
        config.upstream.max_retries = 0;
        config.vertex = nb_imagen::VertexSettings {
            project: Some(PROJECT.into()),
            location: "global".into(),
            credentials_file: Some(key_path),
            base_url: Some(base),
        };
        config.models.enabled.0.push(VERTEX_MODEL.into());
        config
            .models
            .model
            .push(nanobanana::config::catalog_file::ModelEntry {
                id: VERTEX_MODEL.into(),
                aliases: None,
                api: None,
                aspect_ratios: Some(vec!["1:1".into(), "16:9".into()]),
                resolutions: Some(vec!["1K".into(), "2K".into(), "4K".into()]),
                max_input_images: Some(14),
                retired_at: None,
                replaced_by: None,
                fallbacks: Some(vec!["gemini-3-pro-image".into()]),
                provider: Some("vertex".into()),
                google_model: Some("gemini-3-pro-image".into()),
                price: None,
            });
    })
    .await;
    Vertex { app, fake, issued }
}

impl Vertex {
    async fn answers_images(&self) {
        Mock::given(method("POST"))
            .and(path(GENERATE_PATH))
            .and(header("authorization", "Bearer ya29.test-token-1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(gemini_image_answer()))
            .mount(&self.fake)
            .await;
        Mock::given(method("POST"))
            .and(path(GENERATE_PATH))
            .and(header("authorization", "Bearer ya29.test-token-2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(gemini_image_answer()))
            .mount(&self.fake)
            .await;
    }

    async fn generate_calls(&self) -> Vec<Request> {
        self.fake
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|request| request.url.path() == GENERATE_PATH)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_models_are_called_with_a_service_accounts_token_fetched_once() {
    let vertex = vertex(3600).await;
    vertex.answers_images().await;
    let (_, key) = vertex.app.user_with_key("ada@example.com").await;
    for _ in 0..3 {
        let made = vertex
            .app
            .generated(&key, &json!({"prompt": "a banana", "model": VERTEX_MODEL, "aspect_ratio": "16:9", "resolution": "2K"}))
            .await;
        assert_eq!(made["model"], VERTEX_MODEL, "{made}");
    }
    assert_eq!(
        vertex.issued.load(Ordering::SeqCst),
        1,
        "one token for many calls"
    );
    let calls = vertex.generate_calls().await;
    assert_eq!(calls.len(), 3);
    // The body is the Gemini API's: the same generateContent request.
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(
        body["generationConfig"]["imageConfig"]["aspectRatio"],
        "16:9"
    );
    assert_eq!(body["generationConfig"]["imageConfig"]["imageSize"], "2K");
    assert!(calls[0].headers.get("x-goog-api-key").is_none());
    assert!(
        body["generationConfig"]["imageConfig"]
            .get("imageOutputOptions")
            .is_none()
    );
    // A format asked for is asked of Vertex AI, as google-genai sends it in Vertex mode.
    let jpeg = vertex
        .app
        .generated(
            &key,
            &json!({"prompt": "a banana", "model": VERTEX_MODEL, "output_format": "jpeg", "output_compression": 80}),
        )
        .await;
    assert_eq!(jpeg["mime_type"], "image/jpeg");
    let calls = vertex.generate_calls().await;
    let body: Value = serde_json::from_slice(&calls[3].body).unwrap();
    let wire: Value =
        serde_json::from_str(include_str!("../wire/vertex_generate_content_request.json")).unwrap();
    assert_eq!(
        body["generationConfig"]["imageConfig"]["imageOutputOptions"],
        wire["body"]["generationConfig"]["imageConfig"]["imageOutputOptions"]
    );
    assert_eq!(
        body["generationConfig"]["responseModalities"],
        wire["body"]["generationConfig"]["responseModalities"]
    );
    // Nothing went to the Gemini API.
    assert_eq!(vertex.app.google_requests().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_fetched_again_near_its_expiry() {
    // 226 s: refreshed 225 s before it expires, so fresh for one second.
    let vertex = vertex(226).await;
    vertex.answers_images().await;
    let (_, key) = vertex.app.user_with_key("ada@example.com").await;
    let ask = json!({"prompt": "a banana", "model": VERTEX_MODEL});
    vertex.app.generated(&key, &ask).await;
    vertex.app.generated(&key, &ask).await;
    assert_eq!(vertex.issued.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    vertex.app.generated(&key, &ask).await;
    assert_eq!(vertex.issued.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_goes_from_vertex_to_the_gemini_api() {
    let vertex = vertex(3600).await;
    Mock::given(method("POST"))
        .and(path(GENERATE_PATH))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {
            "code": 429, "message": "Quota exceeded for aiplatform.googleapis.com.",
            "status": "RESOURCE_EXHAUSTED"}})))
        .mount(&vertex.fake)
        .await;
    let (_, key) = vertex.app.user_with_key("ada@example.com").await;
    let made = vertex
        .app
        .generated(&key, &json!({"prompt": "a banana", "model": VERTEX_MODEL}))
        .await;
    assert_eq!(made["model"], "gemini-3-pro-image", "{made}");
    assert_eq!(made["requested_model"], VERTEX_MODEL);
    assert_eq!(vertex.generate_calls().await.len(), 1);
    assert_eq!(vertex.app.google_requests().await, 1);
}
