//! What operators rely on: request ids, health, metrics, abuse limits, timeouts, and riding
//! out a database outage.

use std::time::Duration;

use nb_testkit::eventually_true;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    Backend, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, TestApp, assert_error, gemini_image_answer,
    s3_settings,
};
use crate::on_both_backends;

/// How often a test looks again while it waits for a state.
const POLL: Duration = Duration::from_millis(20);
/// How long an outage test gives the service to recover, and how often it asks.
const TEN_SECONDS: Duration = Duration::from_secs(10);
const RECOVERY_POLL: Duration = Duration::from_millis(100);

async fn every_response_carries_a_request_id(app: TestApp) {
    let chosen = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "client-id_1.2:3")
        .send()
        .await
        .unwrap();
    assert_eq!(chosen.headers()["x-request-id"], "client-id_1.2:3");
    let insane = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "<b>hi</b>")
        .send()
        .await
        .unwrap();
    let replaced = insane.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(replaced).is_ok(), "{replaced}");
    for response in [
        app.client.get(app.url("/nowhere")).send().await.unwrap(),
        app.client.get(app.url("/v1/keys")).send().await.unwrap(),
        app.post_json(
            "/v1/auth/login",
            &json!({"email": "a@b.co", "password": "x"}),
        )
        .await,
    ] {
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}

async fn health_and_readiness_are_ok(app: TestApp) {
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        body["checks"],
        json!({"database": "ok", "migrations": "ok"})
    );
}

/// Every test in this process shares one metrics recorder, so this test counts only series
/// whose labels are its own: a route and a model named after this app alone.
async fn metrics_count_requests_generations_and_usage(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let generated = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(generated.status(), 200);
    // This app's only model, unique to it (see its configuration below).
    let answer = generated.json::<Value>().await.unwrap();
    let model = answer["model"].as_str().unwrap().to_owned();
    let cost: f64 = answer["cost_usd"].as_str().unwrap().parse().unwrap();
    assert!(cost > 0.0, "{answer}");
    assert!(model.starts_with("gemini-metrics-"), "{model}");
    for n in [1, 2] {
        let echo = app.url(&format!("/test/{}/echo/{n}", app.app_id));
        assert_eq!(app.client.get(echo).send().await.unwrap().status(), 204);
    }
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let route = format!("/test/{}/echo/{{n}}", app.app_id);
    for expected in [
        // Route patterns, never raw paths: both requests are one series.
        format!(r#"http_requests_total{{method="GET",route="{route}",status="204"}} 2"#),
        format!(r#"http_request_duration_seconds_count{{method="GET",route="{route}"}} 2"#),
        format!(r#"generations_total{{model="{model}",outcome="succeeded"}} 1"#),
        format!(r#"upstream_request_duration_seconds_count{{model="{model}",outcome="ok"}} 1"#),
        "usage_counted_total".to_owned(),
        "gateway_overhead_seconds_bucket{le=\"0.001\"}".to_owned(),
        // The overhead split into the commit and the rest, on the same fine buckets.
        "gateway_commit_seconds_bucket{le=\"0.00005\"}".to_owned(),
        "gateway_overhead_excluding_commit_seconds_bucket{le=\"0.00005\"}".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected} in:\n{text}");
    }
    let raw_path = format!("/test/{}/echo/1", app.app_id);
    assert!(!text.contains(&raw_path), "a raw path became a label");
    // What the image cost, as a float counter of dollars by model.
    assert!(
        text.contains("# TYPE nanobanana_cost_usd_total counter"),
        "{text}"
    );
    let series = format!(r#"nanobanana_cost_usd_total{{model="{model}"}} "#);
    let counted: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .unwrap_or_else(|| panic!("missing {series} in:\n{text}"))
        .parse()
        .unwrap();
    assert!((counted - cost).abs() < 1e-6, "{counted} != {cost}");
}

/// HEAD is GET without the body, on every GET route (load balancers and link checkers use
/// it); a route without GET still answers 405 naming HEAD.
async fn head_is_answered_on_every_get_route(app: TestApp) {
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/", "/metrics"] {
        let get = app.client.get(app.url(path)).send().await.unwrap();
        let head = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
        assert!(
            head.bytes().await.unwrap().is_empty(),
            "HEAD {path} sent a body"
        );
    }
    let token = app.signed_up("ada@example.com").await;
    let keys = app
        .client
        .head(app.url("/v1/keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), 200);
    let post_only = app
        .client
        .head(app.url("/v1/auth/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(post_only.status(), 405);
}

async fn metrics_need_the_token_when_one_is_set(app: TestApp) {
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_error(anonymous, 401, "invalid_metrics_token").await;
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-please")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
}

async fn bodies_over_the_configured_limit_are_413(app: TestApp) {
    let response = app
        .post_json(
            "/v1/auth/login",
            &json!({"email": "ada@example.com", "password": "x".repeat(3000)}),
        )
        .await;
    assert_error(response, 413, "payload_too_large").await;
    // A generation may carry images: its body may be larger by the images' allowance (once
    // encoded), and no more.
    let (_, key) = app.user_with_key("ada@example.com").await;
    let allowed = nb_domain::generation::InputImageLimits::default().max_total_bytes;
    let over = "x".repeat(2048 + allowed.div_ceil(3) * 4 + 1);
    let response = app.generate(&key, &json!({"prompt": over})).await;
    assert_error(response, 413, "payload_too_large").await;
    assert_eq!(app.google_requests().await, 0);
}

async fn slow_clients_are_cut_off(app: TestApp) {
    // Half a request head, then silence.
    let outcome = app
        .raw_exchange(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(3),
        )
        .await;
    // The server closed the connection (with a 408) before our 3 s read timeout
    // (actix's own default is 5 s).
    assert!(outcome.0, "the server kept the connection open");
    assert!(
        outcome.1.is_empty() || outcome.1.starts_with("HTTP/1.1 408"),
        "{}",
        outcome.1
    );
}

async fn idle_connections_are_closed(app: TestApp) {
    // Shorter than actix's own 5 s default, so only the configured 1 s passes.
    let (closed, _) = app.raw_exchange(b"", Duration::from_secs(3)).await;
    assert!(
        closed,
        "a connection that never sent a request was kept open"
    );
}

async fn idle_keep_alive_connections_are_closed(app: TestApp) {
    // Longer than the configured 1 s keep-alive, far shorter than the 75 s default.
    let outcome = app
        .raw_exchange(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(4),
        )
        .await;
    assert!(outcome.1.starts_with("HTTP/1.1 200"), "{}", outcome.1);
    assert!(
        outcome.0,
        "an idle keep-alive connection was kept open past NB_KEEP_ALIVE_SECONDS"
    );
}

async fn logins_are_limited_per_ip(app: TestApp) {
    for attempt in 0..3 {
        let response = app
            .login(&format!("user{attempt}@example.com"), "whatever1")
            .await;
        assert_eq!(response.status(), 401);
    }
    let response = app.login("user9@example.com", "whatever1").await;
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1);
    assert_error(response, 429, "too_many_attempts").await;
    // Registration shares the limit.
    assert_eq!(
        app.register("new@example.com", "long enough")
            .await
            .status(),
        429
    );
}

/// A login from `address` (through the one trusted proxy, which appends it).
async fn login_from(app: &TestApp, address: &str, email: &str, password: &str) -> u16 {
    app.client
        .post(app.url("/v1/auth/login"))
        .header("x-forwarded-for", format!("203.0.113.250, {address}"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Wrong passwords from one network spend that network's allowance for the email, not the
/// owner's: the owner, elsewhere, still logs in.
async fn an_attacker_elsewhere_cannot_lock_the_owner_out(app: TestApp) {
    app.signed_up("ada@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(login_from(&app, "198.51.100.66", "ada@example.com", "guess").await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429]);
    for _ in 0..3 {
        assert_eq!(
            login_from(
                &app,
                "192.0.2.10",
                "ADA@example.com",
                crate::helpers::PASSWORD
            )
            .await,
            200
        );
    }
}

/// Across many networks, one email still has a ceiling.
async fn one_email_has_a_ceiling_across_networks(app: TestApp) {
    let statuses: Vec<u16> =
        futures_util::future::join_all(
            (1..=6).map(|n| {
                let app = &app;
                async move {
                    login_from(app, &format!("198.51.100.{n}"), "ada@example.com", "guess").await
                }
            }),
        )
        .await;
    assert_eq!(
        statuses.iter().filter(|status| **status == 429).count(),
        2,
        "{statuses:?}"
    );
}

/// Behind one proxy, the address is the right-most `X-Forwarded-For` entry: what the client
/// writes to the left changes nothing. IPv6 clients are counted per /64.
async fn the_client_address_is_what_the_trusted_proxy_saw(app: TestApp) {
    let login = |forwarded: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/auth/login"))
                .header("x-forwarded-for", forwarded)
                .json(&json!({"email": "someone@example.com", "password": "x"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let mut spoofed = Vec::new();
    for n in 0..3 {
        spoofed.push(login(format!("10.9.9.{n}, 198.51.100.7")).await);
    }
    assert_eq!(
        spoofed,
        [401, 401, 429],
        "a spoofed left-hand entry escaped the limit"
    );
    let mut v6 = Vec::new();
    for host in [
        "2001:db8:aa:1::1",
        "2001:db8:aa:1:ffff::2",
        "2001:db8:aa:1::3",
    ] {
        v6.push(login(host.to_owned()).await);
    }
    assert_eq!(
        v6,
        [401, 401, 429],
        "addresses of one /64 were counted apart"
    );
}

async fn generations_are_limited_per_key_with_headers_on_every_answer(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let first = app.generate(&key, &json!({"prompt": "x"})).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert!(
        first.headers()["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 60
    );
    let invalid = app.generate(&key, &json!({"prompt": ""})).await;
    assert_eq!(invalid.headers()["x-ratelimit-remaining"], "0");
    assert_error(invalid, 422, "validation_failed").await;
    let limited = app.generate(&key, &json!({"prompt": "x"})).await;
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_error(limited, 429, "rate_limited").await;
    // Another key of the same user has its own allowance...
    let (_, other) = app.created_key(&token).await;
    assert_eq!(
        app.generate(&other, &json!({"prompt": "x"})).await.status(),
        200
    );
    // ...within the account's: three generation requests a minute over all its keys.
    let (_, third) = app.created_key(&token).await;
    let over = app.generate(&third, &json!({"prompt": "x"})).await;
    assert_eq!(over.headers()["x-ratelimit-limit"], "2");
    let body = assert_error(over, 429, "rate_limited").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("account")
    );
    assert_eq!(app.google_requests().await, 2);
}

/// A body that stops arriving is cut off: 408, and the connection is closed.
async fn a_body_that_stops_arriving_is_cut_off(app: TestApp) {
    let (closed, answer) = app
        .raw_exchange(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            Duration::from_secs(5),
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed, "the connection was kept open");
}

/// A body that keeps trickling in (a byte every 300 ms, never a pause long enough for the
/// idle timeout) is cut off at the overall deadline: 408, and the connection is closed.
async fn a_body_that_trickles_is_cut_off_at_the_deadline(app: TestApp) {
    use std::io::{Read, Write};
    let address = app.address.trim_start_matches("http://").to_owned();
    let (closed, answer) = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .write_all(
                b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{",
            )
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let trickle = std::thread::spawn(move || {
            for _ in 0..34 {
                std::thread::sleep(Duration::from_millis(300));
                if writer.write_all(b" ").is_err() {
                    return;
                }
            }
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        trickle.join().unwrap();
        (read.is_ok(), String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed, "the connection was kept open");
}

/// Whatever methods and paths clients send, `/metrics` keeps a bounded set of labels.
async fn metrics_stay_bounded_whatever_clients_send(app: TestApp) {
    let before = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for n in 0..50 {
        let method = format!("X{}{}", "Q".repeat(200), n);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let path = format!("/random/{}/{n}", "p".repeat(200));
        app.client
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
    }
    let after = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !after.contains("QQQQ") && !after.contains("pppp"),
        "client input became a label"
    );
    assert!(
        after.len() < before.len() + 4_000,
        "metrics grew by {} bytes",
        after.len() - before.len()
    );
}

/// The API docs page may run its own scripts, and nothing else; no page may frame it.
async fn the_docs_page_has_a_content_security_policy(app: TestApp) {
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(!policy.contains("unsafe-eval"), "{policy}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
}

async fn cross_origin_calls_need_an_allowed_origin(app: TestApp) {
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/v1/generate"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    let answer = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

async fn without_allowed_origins_there_is_no_cors(app: TestApp) {
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/generate"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(
        !preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_error(preflight, 405, "method_not_allowed").await;
}

async fn generations_over_the_upstream_cap_queue_then_get_503(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-3.1-flash-image:generateContent",
        ))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(gemini_image_answer())
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&app.google)
        .await;
    let app = std::sync::Arc::new(app);
    let first = tokio::spawn({
        let (app, key) = (app.clone(), key.clone());
        async move {
            app.generate(&key, &json!({"prompt": "first"}))
                .await
                .status()
        }
    });
    eventually_true(
        "Google gets the first call",
        Duration::from_secs(10),
        POLL,
        || async { app.google_requests().await > 0 },
    )
    .await;
    let second = app.generate(&key, &json!({"prompt": "second"})).await;
    assert_eq!(second.headers()["retry-after"], "1");
    assert_error(second, 503, "upstream_busy").await;
    assert_eq!(first.await.unwrap(), 200);
}

on_both_backends!(
    every_response_carries_a_request_id,
    health_and_readiness_are_ok,
    head_is_answered_on_every_get_route,
    metrics_stay_bounded_whatever_clients_send,
    the_docs_page_has_a_content_security_policy,
    without_allowed_origins_there_is_no_cors,
);

crate::configured_on_both_backends!(
    metrics_need_the_token_when_one_is_set => |config| {
        config.security.metrics_token = Some(secrecy::SecretString::from("scrape-me-please"));
    },
    bodies_over_the_configured_limit_are_413 => |config| config.server.max_body_bytes = 2048,
    slow_clients_are_cut_off => |config| config.server.client_request_timeout = Duration::from_secs(1),
    idle_connections_are_closed => |config| config.server.client_request_timeout = Duration::from_secs(1),
    idle_keep_alive_connections_are_closed => |config| config.server.keep_alive = Duration::from_secs(1),
    metrics_count_requests_generations_and_usage => |config| {
        let unique = format!("gemini-metrics-{}", uuid::Uuid::new_v4().simple());
        config.models.model.push(nanobanana::config::catalog_file::ModelEntry {
            id: unique.clone(),
            aliases: None,
            api: None,
            aspect_ratios: Some(vec!["1:1".into()]),
            resolutions: Some(vec!["1K".into()]),
            max_input_images: Some(14),
            retired_at: None,
            replaced_by: None,
            fallbacks: None,
            provider: None,
            google_model: None,
            // Priced, so that its images' cost shows in the metrics.
            price: Some(nanobanana::config::catalog_file::PriceEntry {
                input_text: Some(0.5),
                input_image: Some(0.5),
                output_image: Some(60.0),
                output_text: Some(3.0),
                batch_discount: None,
                per_image: Some([("1K".to_owned(), 0.0672)].into()),
            }),
        });
        config.models.enabled = nanobanana::config::sections::ModelNames(vec![unique]);
    },
    logins_are_limited_per_ip => |config| config.limits.auth_attempts_per_minute_per_ip = std::num::NonZeroU32::new(3).unwrap(),
    an_attacker_elsewhere_cannot_lock_the_owner_out => |config| {
        config.limits.auth_attempts_per_minute_per_email_and_ip = std::num::NonZeroU32::new(3).unwrap();
        config.limits.auth_attempts_per_minute_per_email = std::num::NonZeroU32::new(10).unwrap();
        config.server.trust_forwarded_for = true;
    },
    one_email_has_a_ceiling_across_networks => |config| {
        config.limits.auth_attempts_per_minute_per_email = std::num::NonZeroU32::new(4).unwrap();
        config.server.trust_forwarded_for = true;
    },
    the_client_address_is_what_the_trusted_proxy_saw => |config| {
        config.limits.auth_attempts_per_minute_per_ip = std::num::NonZeroU32::new(2).unwrap();
        config.server.trust_forwarded_for = true;
    },
    generations_are_limited_per_key_with_headers_on_every_answer => |config| {
        config.limits.generations_per_minute_per_key = std::num::NonZeroU32::new(2).unwrap();
        config.limits.generations_per_minute_per_account = std::num::NonZeroU32::new(3).unwrap();
    },
    a_body_that_stops_arriving_is_cut_off => |config| {
        config.server.client_body_timeout = Duration::from_secs(1);
    },
    a_body_that_trickles_is_cut_off_at_the_deadline => |config| {
        config.server.client_body_timeout = Duration::from_secs(5);
        config.server.client_body_deadline = Duration::from_secs(1);
    },
    cross_origin_calls_need_an_allowed_origin => |config| {
        config.server.cors_origins = vec![nb_api::settings::CorsOrigin::try_from("https://app.example.com".to_owned()).unwrap()];
    },
    generations_over_the_upstream_cap_queue_then_get_503 => |config| {
        config.limits.upstream_concurrency = std::num::NonZeroUsize::new(1).unwrap();
        config.limits.upstream_queue_timeout = Duration::from_millis(500);
    },
);

/// Stops the database under a running server, then starts it again: requests get 503
/// `database_unavailable` (never 500), `/readyz` says which check failed, and the service
/// recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_the_service_recovers() {
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(nb_db::testing::EphemeralPostgres::start)
            .await
            .unwrap(),
    );
    let db = nb_db::testing::TestDatabase::postgres_on(cluster.url.clone()).await;
    let app = TestApp::spawn_on(db, |config| {
        config.database.acquire_timeout = Duration::from_secs(2);
    })
    .await;
    let token = app.signed_up("ada@example.com").await;
    assert_eq!(app.get_with("/v1/keys", &token).await.status(), 200);

    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    for _ in 0..3 {
        assert_error(
            app.get_with("/v1/keys", &token).await,
            503,
            "database_unavailable",
        )
        .await;
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "unreachable");
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let starting = cluster.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap();
    eventually_true(
        "the service recovers after the database came back",
        TEN_SECONDS,
        RECOVERY_POLL,
        || async { app.get_with("/v1/keys", &token).await.status() == 200 },
    )
    .await;
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// A TCP proxy the test controls: while frozen, it holds every byte either way (connections
/// stay open, nothing answers), as a database host that hangs; while holding commits, it
/// holds what a client sends from its first `COMMIT` on, as a database that hangs just as a
/// transaction commits.
struct FreezableProxy {
    address: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    holding_commits: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// PostgreSQL's simple-query message for `COMMIT` (how diesel-async commits).
const COMMIT_MESSAGE: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

impl FreezableProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let holding_commits = std::sync::Arc::new(AtomicBool::new(false));
        let (gate, commit_gate) = (frozen.clone(), holding_commits.clone());
        let never = std::sync::Arc::new(AtomicBool::new(false));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (gate, commit_gate, never) = (gate.clone(), commit_gate.clone(), never.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(Self::pump(
                        client_read,
                        server_write,
                        gate.clone(),
                        commit_gate,
                    ));
                    tokio::spawn(Self::pump(server_read, client_write, gate, never));
                });
            }
        });
        Self {
            address,
            frozen,
            holding_commits,
        }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
        holding_commits: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let Ok(read) = from.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            let commits = buffer[..read]
                .windows(COMMIT_MESSAGE.len())
                .any(|window| window == COMMIT_MESSAGE);
            while frozen.load(SeqCst) || (commits && holding_commits.load(SeqCst)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen
            .store(frozen, std::sync::atomic::Ordering::SeqCst);
    }

    fn hold_commits(&self, holding: bool) {
        self.holding_commits
            .store(holding, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An app on a PostgreSQL reached through a [`FreezableProxy`], with a call bound of 4 s.
async fn app_behind_proxy() -> (TestApp, FreezableProxy) {
    let mut db = nb_db::testing::TestDatabase::postgres().await;
    let nb_db::DatabaseUrl::Postgres(direct) = &db.url else {
        unreachable!("a PostgreSQL test database");
    };
    let mut url = reqwest::Url::parse(direct).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
        .parse()
        .unwrap();
    let proxy = FreezableProxy::start(upstream).await;
    url.set_port(Some(proxy.address.port())).unwrap();
    let proxied = nb_db::DatabaseUrl::parse(url.as_str()).unwrap();
    let options = nb_db::PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
    };
    db.database = nb_db::Database::connect(&proxied, options).await.unwrap();
    let app = TestApp::spawn_on(db, |config| {
        crate::helpers::use_pool(config, options);
        config.database.url = Some(proxied.clone());
    })
    .await;
    (app, proxy)
}

/// A database host that hangs (connections open, nothing answers): every request gets a
/// 503 within the documented bound (the pool's acquire timeout plus the statement timeout),
/// `/readyz` says "not ready" within 2 s, and the service recovers by itself once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_is_503_within_the_bound_and_the_service_recovers() {
    let (app, proxy) = app_behind_proxy().await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    assert_eq!(
        app.generate(&key, &json!({"prompt": "before"}))
            .await
            .status(),
        200
    );

    proxy.freeze(true);
    let bound = Duration::from_secs(4) + Duration::from_secs(2); // the bound, plus slack
    let started = std::time::Instant::now();
    let bodies: Vec<Value> = (0..6)
        .map(|n| json!({"prompt": format!("during {n}")}))
        .collect();
    let generations = bodies.iter().map(|body| app.generate(&key, body));
    let listings = (0..3).map(|_| app.get_with("/v1/keys", &token));
    let (generations, listings) = tokio::join!(
        futures_util::future::join_all(generations),
        futures_util::future::join_all(listings)
    );
    assert!(started.elapsed() < bound, "waited {:?}", started.elapsed());
    for response in generations.into_iter().chain(listings) {
        assert_error(response, 503, "database_unavailable").await;
    }
    let asked = std::time::Instant::now();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(ready.status(), 503);

    proxy.freeze(false);
    eventually_true(
        "the service recovers once the database answers",
        TEN_SECONDS,
        RECOVERY_POLL,
        || async {
            let after = app.generate(&key, &json!({"prompt": "after"})).await;
            after.status() == 200
        },
    )
    .await;
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Usage is what the clients were told succeeded: before and after.
    assert_eq!(app.usage(&token).await[0]["count"], 2);
}

/// A database that hangs just as a generation's transaction commits, and answers once its
/// client was told 503: the commit lands late, and the generation is taken back (its row, its
/// usage), so that usage is still what the clients were told succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_lands_after_its_client_was_answered_503_is_taken_back() {
    let (app, proxy) = app_behind_proxy().await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let before = app.generate(&key, &json!({"prompt": "before"})).await;
    assert_eq!(before.status(), 200);

    proxy.hold_commits(true);
    let held = app.generate(&key, &json!({"prompt": "held"})).await;
    assert_error(held, 503, "database_unavailable").await;
    proxy.hold_commits(false);

    eventually_true(
        "the late commit is taken back",
        TEN_SECONDS,
        RECOVERY_POLL,
        || async {
            let listed: Value = app.get_json("/v1/generations", &token).await;
            let prompts: Vec<&str> = listed["generations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|generation| generation["prompt"].as_str().unwrap())
                .collect();
            prompts == ["before"]
        },
    )
    .await;
    assert_eq!(app.usage(&token).await[0]["count"], 1);
    let after = app.generate(&key, &json!({"prompt": "after"})).await;
    assert_eq!(after.status(), 200);
    assert_eq!(app.usage(&token).await[0]["count"], 2);
}

/// An S3 store that fails on purpose under a load of concurrent generations (answering 503,
/// 500, closing connections, or hanging): every answer is a 503 `storage_unavailable` with
/// `Retry-After`, within the bound (two attempts of the store's request timeout, a second
/// apart); nothing is stored or counted for them, and the service recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_is_503_and_the_service_recovers() {
    use nb_storage::testing::{S3TestServer, StoreFault};
    let s3 = S3TestServer::start(S3_ACCESS_KEY, S3_SECRET_KEY, &[S3_BUCKET]).await;
    let mut settings = s3_settings(&s3);
    settings.request_timeout = Duration::from_millis(500);
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        crate::helpers::store_in_s3(config, settings);
    })
    .await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let mut succeeded = 0;
    assert_eq!(
        app.generate(&key, &json!({"prompt": "before"}))
            .await
            .status(),
        200
    );
    succeeded += 1;

    for fault in [
        StoreFault::Status(503),
        StoreFault::Status(500),
        StoreFault::CloseConnections,
        StoreFault::Hang,
    ] {
        s3.set_fault(fault);
        let started = std::time::Instant::now();
        let bodies: Vec<Value> = (0..6)
            .map(|n| json!({"prompt": format!("during {fault:?} {n}")}))
            .collect();
        let answers =
            futures_util::future::join_all(bodies.iter().map(|body| app.generate(&key, body)))
                .await;
        // 2 × 0.5 s + 1 s between the attempts, plus slack.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{fault:?}: waited {:?}",
            started.elapsed()
        );
        for response in answers {
            assert_eq!(response.headers()["retry-after"], "5");
            assert_error(response, 503, "storage_unavailable").await;
        }
        s3.set_fault(StoreFault::None);
        assert_eq!(stored_objects(&s3.root()), succeeded, "{fault:?}");
        let response = app.generate(&key, &json!({"prompt": "after"})).await;
        assert_eq!(response.status(), 200, "{fault:?}: did not recover");
        succeeded += 1;
    }
    // Usage is what the clients were told succeeded; failures are in the history as such.
    assert_eq!(app.usage(&token).await[0]["count"], succeeded);
    let history: Value = app
        .get_with("/v1/generations?status=failed&limit=100", &token)
        .await
        .json()
        .await
        .unwrap();
    let failed = history["generations"].as_array().unwrap();
    assert_eq!(failed.len(), 24, "{history}");
    assert!(
        failed
            .iter()
            .all(|generation| generation["error_code"] == "storage_unavailable"),
        "{history}"
    );
}

/// How many images the S3 test server holds (s3s-fs keeps each object as a file under its
/// bucket's folder, beside files of its own).
fn stored_objects(root: &std::path::Path) -> usize {
    stored_files(root)
        .iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "png"))
        .count()
}

/// Local storage on a full disk: 507 `storage_full` (OpenAI route: the same status, and
/// `x-should-retry: false`), no partial file, nothing counted; once there is room again, it
/// works. The disk is a 2 MiB tmpfs the test mounts: it needs root (CI runs as root), and
/// fails saying so where it cannot mount one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_and_leaves_nothing_behind() {
    let disk = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(disk.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        mounted,
        "cannot mount a tmpfs at {}: this test needs root (CI runs as root)",
        disk.path().display()
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.path().to_owned());
    let root = disk.path().to_owned();
    let app = TestApp::spawn_with(Backend::Postgres, |config| {
        config.data_dir = root.clone();
        config.storage.backend = Some(nanobanana::config::sections::StorageBackend::Local);
    })
    .await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    assert_eq!(
        app.generate(&key, &json!({"prompt": "fits"}))
            .await
            .status(),
        200
    );
    // Fill what is left of the disk.
    let filler = root.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut file, &block).is_ok() {}
    drop(file);
    let files_before = stored_files(&root.join("images"));

    let bodies: Vec<Value> = (0..4)
        .map(|n| json!({"prompt": format!("full {n}")}))
        .collect();
    let answers =
        futures_util::future::join_all(bodies.iter().map(|body| app.generate(&key, body))).await;
    for response in answers {
        assert_error(response, 507, "storage_full").await;
    }
    let openai = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "full, through the OpenAI route"}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 507);
    assert_eq!(openai.headers()["x-should-retry"], "false");
    // No partial file anywhere under the images folder, hidden ones included.
    assert_eq!(stored_files(&root.join("images")), files_before);

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        app.generate(&key, &json!({"prompt": "room again"}))
            .await
            .status(),
        200
    );
    assert_eq!(app.usage(&token).await[0]["count"], 2);
}

/// Every file under `folder`, at any depth, hidden ones included.
fn stored_files(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(folder) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(stored_files(&path));
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// PostgreSQL stopped (fast) under a load of concurrent generations, then started again:
/// every answer is a 200 or the documented 503 `database_unavailable`, none waits past the
/// bound, the service recovers by itself, and usage equals the successes clients saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_mid_load_keeps_usage_exact() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cluster = Arc::new(
        tokio::task::spawn_blocking(nb_db::testing::EphemeralPostgres::start)
            .await
            .unwrap(),
    );
    let db = nb_db::testing::TestDatabase::postgres_on(cluster.url.clone()).await;
    let options = nb_db::PoolOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(2),
        statement_timeout: Duration::from_secs(2),
    };
    let app = Arc::new(
        TestApp::spawn_on(db, |config| {
            crate::helpers::use_pool(config, options);
            config.limits.generations_per_minute_per_key =
                std::num::NonZeroU32::new(1_000_000).unwrap();
            config.limits.generations_per_minute_per_account =
                std::num::NonZeroU32::new(1_000_000).unwrap();
        })
        .await,
    );
    let (token, key) = app.user_with_key("ada@example.com").await;
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (app, key, running) = (app.clone(), key.clone(), running.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut n = 0;
                while running.load(Ordering::SeqCst) {
                    n += 1;
                    let body = json!({"prompt": format!("client {client}, request {n}")});
                    let asked = std::time::Instant::now();
                    let response = app.generate(&key, &body).await;
                    let status = response.status().as_u16();
                    let answer: Value = response.json().await.unwrap();
                    answers.push((status, answer, asked.elapsed()));
                }
                answers
            })
        })
        .collect();
    // Half a second of load before the stop, and three seconds of outage: durations of the
    // scenario, not waits for a state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starting = cluster.clone();
    tokio::task::spawn_blocking(move || starting.start_again())
        .await
        .unwrap();
    // Load goes on until the service is back, and a little longer.
    eventually_true(
        "ready again after the database came back",
        TEN_SECONDS,
        RECOVERY_POLL,
        || async {
            let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
            ready.status() == 200
        },
    )
    .await;
    // Load for half a second more (a duration of load, not a wait for a state).
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::SeqCst);
    let mut succeeded = 0;
    let mut refused = 0;
    for client in clients {
        for (status, answer, took) in client.await.unwrap() {
            // The acquire and statement bounds (2 + 2 s), with slack for a loaded machine.
            assert!(took < Duration::from_secs(6), "an answer took {took:?}");
            match status {
                200 => succeeded += 1,
                503 => {
                    assert_eq!(answer["error"]["code"], "database_unavailable", "{answer}");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {answer}"),
            }
        }
    }
    assert!(succeeded > 0 && refused > 0, "{succeeded} / {refused}");
    // After the load: one more success on the recovered service.
    assert_eq!(
        app.generate(&key, &json!({"prompt": "after"}))
            .await
            .status(),
        200
    );
    assert_eq!(app.usage(&token).await[0]["count"], succeeded + 1);
}
