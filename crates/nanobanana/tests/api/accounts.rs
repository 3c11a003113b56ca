//! `/v1/auth/*`.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TEST_JWT_SECRET, TestApp, assert_error};
use crate::on_both_backends;

fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn register_returns_the_user_and_a_working_token(app: TestApp) {
    let response = app.register("  Ada.Lovelace@Example.COM ", PASSWORD).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["user"]["email"], "ada.lovelace@example.com");
    assert!(uuid::Uuid::parse_str(body["user"]["id"].as_str().unwrap()).is_ok());
    assert!(body["user"]["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body.get("password").is_none() && body["user"].get("password_hash").is_none());

    let token = body["access_token"].as_str().unwrap();
    let mut me: Value = app
        .get_with("/v1/auth/me", token)
        .await
        .json()
        .await
        .unwrap();
    // The user, and that they are not an operator (the console asks this, not an admin route).
    assert_eq!(me["is_admin"], false);
    // A new account's limits (none set) and usage (nothing made yet).
    assert_eq!(
        me["usage"],
        json!({"today": 0, "this_month": 0, "spend_today_usd": "0.000000", "spend_this_month_usd": "0.000000"})
    );
    assert!(me["limits"].is_object(), "{me}");
    for extra in ["is_admin", "limits", "usage"] {
        me.as_object_mut().unwrap().remove(extra);
    }
    assert_eq!(me, body["user"]);
}

async fn registering_an_email_twice_is_a_conflict_whatever_its_case(app: TestApp) {
    app.signed_up("ada@example.com").await;
    let body = assert_error(
        app.register("ADA@example.com ", PASSWORD).await,
        409,
        "email_taken",
    )
    .await;
    assert_eq!(body["error"]["field"], "email");
}

async fn invalid_emails_are_422_naming_the_field(app: TestApp) {
    for email in ["", "not-an-email", "a@", "@example.com", "a b@example.com"] {
        let body = assert_error(
            app.register(email, PASSWORD).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], "email", "{email:?}");
    }
}

async fn passwords_must_be_8_to_128_characters(app: TestApp) {
    for (index, password) in ["1234567".to_owned(), "é".repeat(129)].iter().enumerate() {
        let email = format!("short{index}@example.com");
        let body = assert_error(
            app.register(&email, password).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], "password");
    }
    assert_eq!(
        app.register("eight@example.com", "12345678").await.status(),
        201
    );
    assert_eq!(
        app.register("long@example.com", &"é".repeat(128))
            .await
            .status(),
        201
    );
}

async fn login_returns_a_token_for_the_right_password(app: TestApp) {
    app.signed_up("ada@example.com").await;
    let response = app.login(" ADA@example.com", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    let me = app
        .get_with("/v1/auth/me", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), 200);
}

async fn wrong_password_and_unknown_email_get_the_same_401(app: TestApp) {
    app.signed_up("ada@example.com").await;
    let wrong_password = assert_error(
        app.login("ada@example.com", "not the password").await,
        401,
        "invalid_credentials",
    )
    .await;
    let unknown_email = assert_error(
        app.login("bob@example.com", PASSWORD).await,
        401,
        "invalid_credentials",
    )
    .await;
    let malformed_email =
        assert_error(app.login("bob", PASSWORD).await, 401, "invalid_credentials").await;
    assert_eq!(wrong_password, unknown_email);
    assert_eq!(wrong_password, malformed_email);
}

async fn me_without_a_token_is_401_with_a_bearer_challenge(app: TestApp) {
    let response = app.client.get(app.url("/v1/auth/me")).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, 401, "missing_credentials").await;
    let basic = app
        .client
        .get(app.url("/v1/auth/me"))
        .basic_auth("ada", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_error(basic, 401, "missing_credentials").await;
}

async fn invalid_expired_and_tampered_tokens_are_401(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let me: Value = app
        .get_with("/v1/auth/me", &token)
        .await
        .json()
        .await
        .unwrap();
    let sub = me["id"].as_str().unwrap();
    let secret = TEST_JWT_SECRET.as_bytes();

    let expired = sign(
        &json!({"sub": sub, "iat": now() - 7200, "exp": now() - 3600}),
        secret,
    );
    let foreign_secret = sign(
        &json!({"sub": sub, "iat": now(), "exp": now() + 3600}),
        b"another-secret-of-at-least-32-bytes!!",
    );
    let no_expiry = sign(&json!({"sub": sub, "iat": now()}), secret);
    let unknown_user = sign(
        &json!({"sub": uuid::Uuid::now_v7().to_string(), "iat": now(), "exp": now() + 3600}),
        secret,
    );
    // Same header and signature, another user's id in the payload.
    let mut parts: Vec<&str> = token.split('.').collect();
    use base64::Engine as _;
    let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        json!({"sub": uuid::Uuid::now_v7().to_string(), "iat": now(), "exp": now() + 3600})
            .to_string(),
    );
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let unsigned = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        token.split('.').nth(1).unwrap()
    );

    for bad in [
        "garbage".to_owned(),
        expired,
        foreign_secret,
        no_expiry,
        unknown_user,
        tampered,
        unsigned,
    ] {
        let response = app.get_with("/v1/auth/me", &bad).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_error(response, 401, "invalid_token").await;
    }
}

async fn an_api_key_is_not_an_access_token(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let (_, key) = app.created_key(&token).await;
    for path in ["/v1/auth/me", "/v1/keys"] {
        assert_error(app.get_with(path, &key).await, 401, "wrong_credential_type").await;
    }
}

/// The claims of a token this server issued.
fn claims_of(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn tokens_not_yet_valid_or_issued_in_the_future_are_401(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let issued = claims_of(&token);
    let (sub, sid) = (issued["sub"].clone(), issued["sid"].clone());
    let secret = TEST_JWT_SECRET.as_bytes();
    let with = |iat: i64, nbf: i64| {
        sign(
            &json!({"sub": sub, "sid": sid, "iat": iat, "nbf": nbf, "exp": now() + 3600}),
            secret,
        )
    };
    // The same claims, well within the leeway, are fine: the refusals below are for the times.
    assert_eq!(
        app.get_with("/v1/auth/me", &with(now() - 1, now() - 1))
            .await
            .status(),
        200
    );
    for (what, bad) in [
        (
            "not valid before an hour from now",
            with(now(), now() + 3600),
        ),
        ("issued an hour from now", with(now() + 3600, now())),
    ] {
        let response = app.get_with("/v1/auth/me", &bad).await;
        assert_eq!(response.status(), 401, "a token {what} was accepted");
    }
    let other_session = sign(
        &json!({"sub": sub, "sid": uuid::Uuid::now_v7().to_string(), "iat": now(), "nbf": now(), "exp": now() + 3600}),
        secret,
    );
    assert_error(
        app.get_with("/v1/auth/me", &other_session).await,
        401,
        "invalid_token",
    )
    .await;
}

async fn logout_ends_that_token_only(app: TestApp) {
    let laptop = app.signed_up("ada@example.com").await;
    let phone: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let phone = phone["access_token"].as_str().unwrap().to_owned();
    let logout = |token: String| {
        app.client
            .post(app.url("/v1/auth/logout"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(logout(laptop.clone()).await.unwrap().status(), 204);
    assert_error(
        app.get_with("/v1/auth/me", &laptop).await,
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(app.get_with("/v1/auth/me", &phone).await.status(), 200);
    // A second logout with the ended token is refused like any dead token.
    assert_eq!(logout(laptop).await.unwrap().status(), 401);
}

async fn a_password_change_ends_every_session(app: TestApp) {
    let laptop = app.signed_up("ada@example.com").await;
    let phone: Value = app
        .login("ada@example.com", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let phone = phone["access_token"].as_str().unwrap().to_owned();
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/v1/auth/password"))
            .bearer_auth(&laptop)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let wrong = change("not my password", "a brand new password")
        .await
        .unwrap();
    let body = assert_error(wrong, 422, "wrong_password").await;
    assert_eq!(body["error"]["field"], "current_password");
    let short = change(PASSWORD, "short").await.unwrap();
    assert_error(short, 422, "validation_failed").await;
    assert_eq!(app.get_with("/v1/auth/me", &phone).await.status(), 200);

    let changed = change(PASSWORD, "a brand new password").await.unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.headers()["cache-control"], "no-store");
    let fresh: Value = changed.json().await.unwrap();
    let fresh = fresh["access_token"].as_str().unwrap();
    for ended in [&laptop, &phone] {
        assert_error(
            app.get_with("/v1/auth/me", ended).await,
            401,
            "invalid_token",
        )
        .await;
    }
    assert_eq!(app.get_with("/v1/auth/me", fresh).await.status(), 200);
    assert_eq!(app.login("ada@example.com", PASSWORD).await.status(), 401);
    assert_eq!(
        app.login("ada@example.com", "a brand new password")
            .await
            .status(),
        200
    );
}

async fn the_bearer_scheme_is_case_insensitive(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    for header in [
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer  {token}"),
    ] {
        let response = app
            .client
            .get(app.url("/v1/auth/me"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header:?} was refused");
    }
    for header in [
        format!("Basic {token}"),
        "Bearer".to_owned(),
        format!("Bearer {token} x"),
    ] {
        let response = app
            .client
            .get(app.url("/v1/auth/me"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "missing_credentials").await;
    }
}

async fn emails_with_invisible_characters_are_refused_and_one_address_is_one_account(app: TestApp) {
    app.signed_up("alice@example.com").await;
    for hidden in ["\u{200b}alice@example.com", "ali\u{202e}ce@example.com"] {
        let body = assert_error(
            app.register(hidden, PASSWORD).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["error"]["field"], "email");
    }
    // Fullwidth letters are the same address: the same account.
    assert_error(
        app.register("ａｌｉｃｅ@example.com", PASSWORD).await,
        409,
        "email_taken",
    )
    .await;
    // An internationalised domain is one account in Unicode or in its ASCII form. (Not under
    // `.example`: that top-level domain is reserved, and refused at registration.)
    let registered: Value = app
        .register("Bob@BÜCHER.de", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(registered["user"]["email"], "bob@xn--bcher-kva.de");
    assert_eq!(
        app.login("bob@xn--bcher-kva.de", PASSWORD).await.status(),
        200
    );
}

async fn answers_that_carry_secrets_are_never_cached(app: TestApp) {
    let registered = app.register("ada@example.com", PASSWORD).await;
    assert_eq!(registered.headers()["cache-control"], "no-store");
    let token = registered.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let logged_in = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(logged_in.headers()["cache-control"], "no-store");
    let created = app.create_key(&token, Some(json!({"name": "x"}))).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    for path in ["/v1/auth/me", "/v1/keys", "/v1/usage"] {
        let response = app.get_with(path, &token).await;
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert_eq!(
            response.headers()["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'",
            "{path}"
        );
    }
}

/// The `Set-Cookie` headers of an answer, by cookie name.
fn set_cookies(response: &reqwest::Response) -> std::collections::HashMap<String, String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .map(|cookie| (cookie.split('=').next().unwrap().to_owned(), cookie))
        .collect()
}

/// `name=value` of a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

async fn browser_session(app: TestApp) {
    let registered = app
        .client
        .post(app.url("/v1/auth/register?session=cookie"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let cookies = set_cookies(&registered);
    let session = cookies["nb_session"].clone();
    let csrf = cookies["nb_csrf"].clone();
    let body: Value = registered.json().await.unwrap();
    let max_age = format!("Max-Age={}", body["expires_in"]);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure", &max_age] {
        assert!(session.contains(attribute), "{session} lacks {attribute}");
    }
    assert!(!csrf.contains("HttpOnly"), "{csrf}");
    assert!(csrf.contains("SameSite=Strict"), "{csrf}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert!(body.get("access_token").is_none(), "{body}");
    let cookie_header = format!("{}; {}", cookie_pair(&session), cookie_pair(&csrf));
    let csrf_value = cookie_pair(&csrf).split_once('=').unwrap().1.to_owned();

    // Reads need only the cookie.
    let me = app
        .client
        .get(app.url("/v1/auth/me"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // Writes need the CSRF header too, equal to the cookie.
    let create = |csrf_header: Option<String>| {
        let mut request = app
            .client
            .post(app.url("/v1/keys"))
            .header("cookie", &cookie_header)
            .json(&json!({"name": "console"}));
        if let Some(value) = csrf_header {
            request = request.header("x-csrf-token", value);
        }
        request.send()
    };
    assert_error(create(None).await.unwrap(), 403, "csrf_check_failed").await;
    assert_error(
        create(Some("0".repeat(32))).await.unwrap(),
        403,
        "csrf_check_failed",
    )
    .await;
    let created = create(Some(csrf_value.clone())).await.unwrap();
    assert_eq!(created.status(), 201);
    // API keys come only in `Authorization`: the cookie does not make a generation.
    let generate = app
        .client
        .post(app.url("/v1/generate"))
        .header("cookie", &cookie_header)
        .header("x-csrf-token", &csrf_value)
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap();
    assert_error(generate, 401, "missing_credentials").await;
    // A login may ask for a cookie too; anything else is refused by name.
    let login = app
        .client
        .post(app.url("/v1/auth/login?session=cookie"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(!set_cookies(&login)["nb_session"].contains("Secure"));
    let wrong = app
        .client
        .post(app.url("/v1/auth/login?session=header"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let body = assert_error(wrong, 422, "validation_failed").await;
    assert_eq!(body["error"]["field"], "session");
    // Logging out ends the session and removes both cookies.
    let logout = app
        .client
        .post(app.url("/v1/auth/logout"))
        .header("cookie", &cookie_header)
        .header("x-csrf-token", &csrf_value)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let removed = set_cookies(&logout);
    for name in ["nb_session", "nb_csrf"] {
        assert!(removed[name].contains("Max-Age=0"), "{}", removed[name]);
    }
    let me = app
        .client
        .get(app.url("/v1/auth/me"))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_error(me, 401, "invalid_token").await;
}

async fn the_console_is_served_under_a_strict_policy(app: TestApp) {
    let redirect = app.client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(redirect.url().path(), "/console/");
    for (path, content_type) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], content_type, "{path}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["referrer-policy"], "no-referrer");
    }
    let page = app
        .client
        .get(app.url("/console/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<script type="module" src="/console/app.js"></script>"#));
    assert!(!page.contains("<script>") && !page.contains("style="));
}

on_both_backends!(
    browser_session,
    the_console_is_served_under_a_strict_policy,
    tokens_not_yet_valid_or_issued_in_the_future_are_401,
    logout_ends_that_token_only,
    a_password_change_ends_every_session,
    the_bearer_scheme_is_case_insensitive,
    emails_with_invisible_characters_are_refused_and_one_address_is_one_account,
    answers_that_carry_secrets_are_never_cached,
    register_returns_the_user_and_a_working_token,
    registering_an_email_twice_is_a_conflict_whatever_its_case,
    invalid_emails_are_422_naming_the_field,
    passwords_must_be_8_to_128_characters,
    login_returns_a_token_for_the_right_password,
    wrong_password_and_unknown_email_get_the_same_401,
    me_without_a_token_is_401_with_a_bearer_challenge,
    invalid_expired_and_tampered_tokens_are_401,
    an_api_key_is_not_an_access_token,
);
