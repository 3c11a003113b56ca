//! The second security pass (issue 21): what an outside probe found, each closed and kept
//! closed. Storage-touching rules run on both databases.

use std::collections::HashMap;

use nb_domain::accounts::{EmailAddress, NewUser, PasswordHash, User, UserId};
use nb_domain::ports::{AdminRepository, UserRepository};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, PASSWORD, TestApp, assert_error};
use crate::{configured_on_both_backends, on_both_backends};

/// The `Set-Cookie` headers of an answer, by cookie name.
fn set_cookies(response: &reqwest::Response) -> HashMap<String, String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .map(|cookie| (cookie.split('=').next().unwrap().to_owned(), cookie))
        .collect()
}

/// `name=value` of a `Set-Cookie` header, and the value alone.
fn cookie_pair(set_cookie: &str) -> (&str, &str) {
    let pair = set_cookie.split(';').next().unwrap();
    (pair, pair.split_once('=').unwrap().1)
}

/// A console session: the `Cookie` header to send, and its CSRF token.
async fn console_session(app: &TestApp, path: &str, email: &str) -> (String, String, Value) {
    let response = app
        .client
        .post(app.url(path))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let cookies = set_cookies(&response);
    let (session, _) = cookie_pair(&cookies["nb_session"]);
    let (csrf_pair, csrf) = cookie_pair(&cookies["nb_csrf"]);
    let header = format!("{session}; {csrf_pair}");
    let csrf = csrf.to_owned();
    (header, csrf, response.json().await.unwrap())
}

/// Every route the OpenAPI document says takes an API key, with its path parameters filled.
async fn routes_taking_a_key(app: &TestApp, generation_id: &str) -> Vec<(String, String)> {
    let document: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let takes_a_key = operation["security"].as_array().is_some_and(|schemes| {
                schemes.iter().any(|scheme| scheme.get("api_key").is_some())
            });
            if takes_a_key {
                let path = path
                    .replace("{generation_id}", generation_id)
                    .replace("{model}", "gemini-3.1-flash-image");
                routes.push((method.to_uppercase(), path));
            }
        }
    }
    routes
}

/// An API key in the session cookie is refused on every route that takes a key — with or
/// without a CSRF header — and nothing is done.
async fn api_keys_are_never_taken_from_a_cookie(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let made = app.generated(&key, &json!({"prompt": "a banana"})).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let routes = routes_taking_a_key(&app, &id).await;
    assert!(routes.len() >= 8, "{routes:?}");
    let calls_before = app.google_requests().await;
    for (method, path) in routes {
        let request = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .header("cookie", format!("nb_session={key}; nb_csrf=x"))
            .header("x-csrf-token", "x")
            .json(&json!({"prompt": "through a cookie"}));
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        let code = body["error"]["code"].as_str().unwrap().to_owned();
        assert!(
            ["wrong_credential_type", "missing_credentials"].contains(&code.as_str()),
            "{method} {path}: {body}"
        );
    }
    assert_eq!(app.google_requests().await, calls_before);
    let still_there = app.get_with(&format!("/v1/generations/{id}"), &token).await;
    assert_eq!(still_there.status(), 200);
    assert_eq!(
        still_there.json::<Value>().await.unwrap()["status"],
        "succeeded"
    );
}

/// A password change made with the console's cookie renews the cookies and answers without a
/// token (the page's scripts never see one); the old cookie is ended; a bearer session still
/// gets its new token in the body.
async fn a_password_change_on_a_console_session_renews_its_cookies(app: TestApp) {
    let (cookie, csrf, _) =
        console_session(&app, "/v1/auth/register?session=cookie", "ada@example.com").await;
    let changed = app
        .client
        .post(app.url("/v1/auth/password"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"current_password": PASSWORD, "new_password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.headers()["cache-control"], "no-store");
    let renewed = set_cookies(&changed);
    let body: Value = changed.json().await.unwrap();
    assert!(body.get("access_token").is_none(), "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    let (session, _) = cookie_pair(&renewed["nb_session"]);
    let (csrf_pair, new_csrf) = cookie_pair(&renewed["nb_csrf"]);
    assert!(renewed["nb_session"].contains("HttpOnly"));
    assert_ne!(new_csrf, csrf, "the CSRF token is the new session's");
    let me = |cookie: String| {
        app.client
            .get(app.url("/v1/auth/me"))
            .header("cookie", cookie)
            .send()
    };
    assert_error(me(cookie.clone()).await.unwrap(), 401, "invalid_token").await;
    assert_eq!(
        me(format!("{session}; {csrf_pair}"))
            .await
            .unwrap()
            .status(),
        200
    );
    // A bearer session keeps today's answer: the new token in the body, no cookie.
    let token = app.signed_up("bob@example.com").await;
    let bearer = app
        .client
        .post(app.url("/v1/auth/password"))
        .bearer_auth(&token)
        .json(&json!({"current_password": PASSWORD, "new_password": "another new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    assert!(set_cookies(&bearer).is_empty());
    assert!(bearer.json::<Value>().await.unwrap()["access_token"].is_string());
}

/// The CSRF token is bound to its session: someone who plants their own session's token (as
/// cookie and header both) next to the victim's session cookie is refused; the victim's own
/// token works.
async fn a_csrf_token_is_bound_to_its_session(app: TestApp) {
    let (victim, victims_csrf, _) =
        console_session(&app, "/v1/auth/register?session=cookie", "ada@example.com").await;
    let (_, attackers_csrf, _) =
        console_session(&app, "/v1/auth/register?session=cookie", "eve@example.com").await;
    let victim_session = victim.split(';').next().unwrap().to_owned();
    let create = |cookie: String, csrf: String| {
        app.client
            .post(app.url("/v1/keys"))
            .header("cookie", cookie)
            .header("x-csrf-token", csrf)
            .json(&json!({"name": "planted"}))
            .send()
    };
    let planted = create(
        format!("{victim_session}; nb_csrf={attackers_csrf}"),
        attackers_csrf.clone(),
    )
    .await
    .unwrap();
    assert_error(planted, 403, "csrf_check_failed").await;
    let own = create(victim.clone(), victims_csrf).await.unwrap();
    assert_eq!(own.status(), 201);
}

async fn user_id(app: &TestApp, token: &str) -> UserId {
    let me = app.get_json("/v1/auth/me", token).await;
    UserId(uuid::Uuid::parse_str(me["id"].as_str().unwrap()).unwrap())
}

async fn delete_account(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .delete(app.url("/v1/auth/me"))
        .bearer_auth(token)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap()
}

/// An admin cannot erase their own account through the API (it would free the email for
/// whoever registers it next); the answer says what to do instead, and nothing is erased.
async fn an_admin_cannot_erase_their_own_account(app: TestApp) {
    let token = app.signed_up(ADMIN_EMAIL).await;
    let refused = delete_account(&app, &token).await;
    let body = assert_error(refused, 403, "admin_cannot_erase").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NB_ADMIN_EMAILS"),
        "{body}"
    );
    assert_eq!(app.get_with("/v1/auth/me", &token).await.status(), 200);
    assert_eq!(app.get_with("/v1/admin/users", &token).await.status(), 200);
}

/// What `/v1/auth/me` says of the user's admin rights.
async fn is_admin(app: &TestApp, token: &str) -> bool {
    app.get_json("/v1/auth/me", token).await["is_admin"]
        .as_bool()
        .unwrap()
}

/// Admin rights stay with the first account that held the email: once it is gone (erased
/// behind the API's back, as an operator could), a new registration of the same email is
/// refused the admin routes, until the operator releases the email.
async fn admin_rights_stay_with_the_first_account_that_held_the_email(app: TestApp) {
    let first = app.signed_up(ADMIN_EMAIL).await;
    assert!(is_admin(&app, &first).await);
    assert_eq!(app.get_with("/v1/admin/users", &first).await.status(), 200);
    let first_id = user_id(&app, &first).await;
    let tombstone = EmailAddress::tombstone(first_id, uuid::Uuid::now_v7());
    app.db
        .database
        .erase_user(first_id, &tombstone, time::OffsetDateTime::now_utc())
        .await
        .unwrap()
        .unwrap();
    let newcomer = app.signed_up(ADMIN_EMAIL).await;
    assert!(
        !is_admin(&app, &newcomer).await,
        "/v1/auth/me says what the routes do"
    );
    let refused = app.get_with("/v1/admin/users", &newcomer).await;
    assert_error(refused, 403, "admin_only").await;
    let email = EmailAddress::parse(ADMIN_EMAIL).unwrap();
    assert!(app.db.database.release_admin_email(&email).await.unwrap());
    assert_eq!(
        app.get_with("/v1/admin/users", &newcomer).await.status(),
        200
    );
}

/// Tombstones live under `.invalid`, which no one can register; and even an address
/// registered there before that rule cannot stand in the way of an erasure.
async fn erasure_cannot_be_blocked_by_a_squatted_tombstone(app: TestApp) {
    let victim = app.signed_up("ada@example.com").await;
    let victim_id = user_id(&app, &victim).await;
    let squatted = format!("deleted-{victim_id}@deleted.invalid");
    let refused = app.register(&squatted, PASSWORD).await;
    let body = assert_error(refused, 422, "reserved_domain").await;
    assert_eq!(body["error"]["field"], "email");
    // As a registration before the rule would have left it.
    app.db
        .database
        .insert_user(&NewUser {
            user: User {
                id: UserId(uuid::Uuid::now_v7()),
                email: EmailAddress::from_trusted(squatted),
                created_at: time::OffsetDateTime::now_utc(),
                disabled: false,
            },
            password_hash: PasswordHash::new("$2b$04$squatter".into()),
            limits: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(delete_account(&app, &victim).await.status(), 204);
    assert_error(
        app.get_with("/v1/auth/me", &victim).await,
        401,
        "invalid_token",
    )
    .await;
}

/// Registration refuses the reserved top-level domains, quoted local parts, and names
/// that mix scripts; `example.com` stays allowed.
async fn registration_refuses_addresses_no_one_should_hold(app: TestApp) {
    for (email, code) in [
        ("someone@site.test", "reserved_domain"),
        ("someone@demo.example", "reserved_domain"),
        ("someone@my.localhost", "reserved_domain"),
        ("\"<b>x</b>\"@example.com", "validation_failed"),
        ("\u{430}da@example.com", "validation_failed"),
        ("ada@ex\u{430}mple.com", "validation_failed"),
    ] {
        let response = app.register(email, PASSWORD).await;
        let body = assert_error(response, 422, code).await;
        assert_eq!(body["error"]["field"], "email", "{email}");
    }
    assert_eq!(
        app.register("ada@example.org", PASSWORD).await.status(),
        201
    );
}

/// An email that looks the same as an admin's (a dotless ı for the i) is refused; the
/// admin's own registers.
async fn look_alikes_of_an_admin_email_are_refused(app: TestApp) {
    let response = app.register("adm\u{131}n@example.com", PASSWORD).await;
    let body = assert_error(response, 422, "email_confusable").await;
    assert_eq!(body["error"]["field"], "email");
    assert_eq!(
        app.register("admin@example.com", PASSWORD).await.status(),
        201
    );
}

async fn roll(app: &TestApp, token: &str, key_id: &str, grace: u64) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/keys/{key_id}/roll")))
        .bearer_auth(token)
        .json(&json!({"grace_seconds": grace}))
        .send()
        .await
        .unwrap()
}

/// With the account at its cap, rolling with a grace is refused (the old key is active
/// through its grace); without one the successor takes its place. A key is rolled once. Its
/// successor starts with what it spent of its day quota.
async fn rolling_counts_against_the_active_key_cap(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let created = app
            .create_key(
                &token,
                Some(json!({"name": format!("k{n}"), "limits": {"per_day": 5}})),
            )
            .await;
        assert_eq!(created.status(), 201);
        let body: Value = created.json().await.unwrap();
        ids.push((
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        ));
    }
    let (first_id, first_key) = &ids[0];
    for _ in 0..2 {
        assert_eq!(
            app.generate(first_key, &json!({"prompt": "x"}))
                .await
                .status(),
            200
        );
    }
    for _ in 0..3 {
        assert_error(
            roll(&app, &token, first_id, 3600).await,
            409,
            "key_limit_reached",
        )
        .await;
    }
    assert_eq!(app.list_keys(&token).await.len(), 3);
    // Without a grace the old key ends at once: room for its successor.
    let rolled = roll(&app, &token, first_id, 0).await;
    assert_eq!(rolled.status(), 201);
    let successor: Value = rolled.json().await.unwrap();
    let successor_key = successor["key"].as_str().unwrap().to_owned();
    assert_error(
        roll(&app, &token, first_id, 0).await,
        409,
        "key_already_rolled",
    )
    .await;
    // It had spent 2 of its 5 a day: its successor has 3 left.
    for _ in 0..3 {
        assert_eq!(
            app.generate(&successor_key, &json!({"prompt": "x"}))
                .await
                .status(),
            200
        );
    }
    assert_error(
        app.generate(&successor_key, &json!({"prompt": "x"})).await,
        429,
        "quota_exceeded",
    )
    .await;
    let usable = app
        .list_keys(&token)
        .await
        .iter()
        .filter(|key| key["is_active"] == true && key["expires_at"].is_null())
        .count();
    assert_eq!(usable, 3);
}

/// An expired key cannot be rolled.
async fn an_expired_key_cannot_be_rolled(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let created = app
        .create_key(&token, Some(json!({"name": "soon", "expires_at": soon})))
        .await;
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    let (id, key) = (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    );
    nb_testkit::eventually_true(
        "the key expires",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(100),
        || async { app.generate(&key, &json!({"prompt": "x"})).await.status() == 401 },
    )
    .await;
    assert_error(roll(&app, &token, &id, 3600).await, 409, "key_expired").await;
    assert_eq!(app.list_keys(&token).await.len(), 1);
}

/// Every JSON body refuses a field it does not know, naming it (422; the OpenAI surface:
/// 400 with `param`, as OpenAI answers an unrecognized argument).
async fn unknown_fields_are_refused_on_every_json_body(app: TestApp) {
    let (token, key) = app.user_with_key("ada@example.com").await;
    let (_, key_id) = {
        let keys = app.list_keys(&token).await;
        ((), keys[0]["id"].as_str().unwrap().to_owned())
    };
    let with_token = |method: &str, path: String, body: Value| {
        app.client
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let cases = [
        (
            app.post_json(
                "/v1/auth/register",
                &json!({"email": "bob@example.com", "password": PASSWORD, "admin": true}),
            )
            .await,
            "admin",
        ),
        (
            app.post_json(
                "/v1/auth/login",
                &json!({"email": "ada@example.com", "password": PASSWORD, "remember": true}),
            )
            .await,
            "remember",
        ),
        (
            with_token(
                "POST",
                "/v1/auth/password".into(),
                json!({"current_password": PASSWORD, "new_password": "another password", "force": 1}),
            )
            .await
            .unwrap(),
            "force",
        ),
        (
            with_token("POST", "/v1/keys".into(), json!({"name": "x", "scopes": ["all"]}))
                .await
                .unwrap(),
            "scopes",
        ),
        (
            with_token(
                "POST",
                format!("/v1/keys/{key_id}/roll"),
                json!({"grace_seconds": 0, "keep": true}),
            )
            .await
            .unwrap(),
            "keep",
        ),
        (
            with_token("DELETE", "/v1/auth/me".into(), json!({"password": PASSWORD, "why": "x"}))
                .await
                .unwrap(),
            "why",
        ),
        (
            app.generate(&key, &json!({"prompt": "a banana", "seed": 7})).await,
            "seed",
        ),
    ];
    for (response, field) in cases {
        let body = assert_error(response, 422, "validation_failed").await;
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let openai = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "a banana", "seed": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 400);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["param"], "seed", "{body}");
    assert_eq!(app.google_requests().await, 0);
}

/// Two `Idempotency-Key` headers are a 400, not a guess at which one counts.
async fn two_idempotency_keys_are_refused(app: TestApp) {
    let (_, key) = app.user_with_key("ada@example.com").await;
    let response = app
        .client
        .post(app.url("/v1/generate"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "first")
        .header("Idempotency-Key", "second")
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, "invalid_idempotency_key").await;
    assert_eq!(body["error"]["field"], "Idempotency-Key");
    assert_eq!(app.google_requests().await, 0);
}

/// The head of a request whose body is never sent, on a raw connection: what the server
/// answers before reading a byte of the body (or nothing, if it waits for the body).
async fn answer_to_head_alone(app: &TestApp, head: String) -> String {
    use std::io::{Read, Write};
    let address = app.address.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = vec![0; 4096];
        let read = stream.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..read]).into_owned()
    })
    .await
    .unwrap()
}

/// An image of `size` bytes (a PNG signature, then filler: enough for the format check).
fn image_of(size: usize) -> Vec<u8> {
    let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
    image.resize(size, 7);
    image
}

/// With 2 MiB of bodies allowed in flight, a 1.1 MB generation waiting on Google holds half:
/// a second large body (native or OpenAI) is refused with 503 `server_busy` and
/// `Retry-After` from its head alone, before a byte of it is sent; small requests still
/// pass; once the first is answered, the same large request is served.
async fn large_bodies_over_the_budget_are_refused_before_they_are_read(app: TestApp) {
    use base64::Engine as _;
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, ResponseTemplate};
    let (_, key) = app.user_with_key("ada@example.com").await;
    Mock::given(method("POST"))
        .and(path_regex(r":generateContent$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(crate::helpers::gemini_image_answer())
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&app.google)
        .await;
    let image = base64::engine::general_purpose::STANDARD.encode(image_of(800_000));
    let large = json!({"prompt": "edit this", "images": [image]});
    let app = std::sync::Arc::new(app);
    let first = tokio::spawn({
        let (app, key, large) = (app.clone(), key.clone(), large.clone());
        async move { app.generate(&key, &large).await.status() }
    });
    nb_testkit::eventually_true(
        "Google gets the first generation",
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || async { app.google_requests().await > 0 },
    )
    .await;

    let host = app.address.trim_start_matches("http://").to_owned();
    for (path, content_type, code) in [
        (
            "/v1/generate",
            "application/json",
            "\"code\":\"server_busy\"",
        ),
        (
            "/v1/images/edits",
            "multipart/form-data; boundary=b",
            "\"code\":\"server_busy\"",
        ),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: {content_type}\r\nContent-Length: 1200000\r\n\r\n"
        );
        let answer = answer_to_head_alone(&app, head).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{path}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("\r\nretry-after: 2\r\n"),
            "{path}: {answer}"
        );
        assert!(answer.contains(code), "{path}: {answer}");
    }
    // A prompt alone is not counted: it is served while the budget is spent.
    let small = app.generate(&key, &json!({"prompt": "a banana"})).await;
    assert_eq!(small.status(), 200);

    assert_eq!(first.await.unwrap(), 200);
    let again = app.generate(&key, &large).await;
    assert_eq!(again.status(), 200, "the budget was given back");
}

configured_on_both_backends!(
    large_bodies_over_the_budget_are_refused_before_they_are_read => |config| {
        config.models.max_input_image_bytes = std::num::NonZeroUsize::new(1 << 20).unwrap();
        config.models.max_input_images_total_bytes = std::num::NonZeroUsize::new(1 << 20).unwrap();
        config.server.max_body_bytes_in_flight = 2 << 20;
    },
    rolling_counts_against_the_active_key_cap => |config| {
        config.limits.max_active_keys_per_account = std::num::NonZeroU32::new(3).unwrap();
    },
    look_alikes_of_an_admin_email_are_refused => |config| {
        config.security.admin_emails = nanobanana::config::sections::AdminEmailList(
            nb_domain::admin::AdminEmails::new(vec![
                EmailAddress::parse("admin@example.com").unwrap(),
            ]),
        );
    },
);

on_both_backends!(
    an_admin_cannot_erase_their_own_account,
    admin_rights_stay_with_the_first_account_that_held_the_email,
    erasure_cannot_be_blocked_by_a_squatted_tombstone,
    registration_refuses_addresses_no_one_should_hold,
    an_expired_key_cannot_be_rolled,
    unknown_fields_are_refused_on_every_json_body,
    two_idempotency_keys_are_refused,
    api_keys_are_never_taken_from_a_cookie,
    a_password_change_on_a_console_session_renews_its_cookies,
    a_csrf_token_is_bound_to_its_session,
);
