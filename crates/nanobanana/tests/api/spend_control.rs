//! Spend control over real sockets on both databases: keys with expiry, limits and usage;
//! rolling; day and month quotas (exact under concurrency, given back on failure, reset at
//! UTC midnight by the server's clock); the operator's routes (admins only), disabled
//! accounts and the audit.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{ADMIN_EMAIL, TestApp, assert_error, header};
use crate::on_both_backends;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

/// An hour from now, in whole seconds as clients usually send it.
fn in_an_hour() -> String {
    let at = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    rfc3339(at.replace_nanosecond(0).unwrap())
}

impl TestApp {
    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn patch_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.send_json(reqwest::Method::PATCH, path, token, body)
            .await
    }

    async fn post_with(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.send_json(reqwest::Method::POST, path, token, body)
            .await
    }

    /// Creates a key with `body` and returns its JSON (with `key`).
    async fn key_with(&self, token: &str, body: Value) -> Value {
        let response = self.create_key(token, Some(body)).await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    async fn prompt(&self, key: &str) -> reqwest::Response {
        self.generate(key, &json!({"prompt": "a banana"})).await
    }

    /// The admin's access token (`ADMIN_EMAIL` is in the test server's `NB_ADMIN_EMAILS`).
    async fn admin(&self) -> String {
        self.signed_up(ADMIN_EMAIL).await
    }

    async fn user_id(&self, token: &str) -> String {
        let me: Value = self
            .get_with("/v1/auth/me", token)
            .await
            .json()
            .await
            .unwrap();
        me["id"].as_str().unwrap().to_owned()
    }
}

fn seconds_header(response: &reqwest::Response, name: &str) -> u64 {
    header(response, name).unwrap().parse().unwrap()
}

/// Seconds from now to the next 00:00 UTC.
fn seconds_to_midnight(now: OffsetDateTime) -> u64 {
    let midnight = now.date().next_day().unwrap().midnight().assume_utc();
    u64::try_from((midnight - now).whole_seconds()).unwrap()
}

async fn keys_carry_expiry_limits_and_usage(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let expires_at = in_an_hour();
    let created = app
        .key_with(
            &token,
            json!({"name": "ci", "expires_at": expires_at, "limits": {"per_minute": 30, "per_day": 100, "per_month": 1000}}),
        )
        .await;
    assert_eq!(
        OffsetDateTime::parse(created["expires_at"].as_str().unwrap(), &Rfc3339).unwrap(),
        OffsetDateTime::parse(&expires_at, &Rfc3339).unwrap()
    );
    assert_eq!(
        created["limits"],
        json!({"per_minute": 30, "per_day": 100, "per_month": 1000, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    assert_eq!(
        created["usage"],
        json!({"today": 0, "this_month": 0, "spend_today_usd": "0.000000", "spend_this_month_usd": "0.000000"})
    );
    assert_eq!(created["rolled_from"], Value::Null);
    let key = created["key"].as_str().unwrap();
    let id = created["id"].as_str().unwrap();
    for _ in 0..2 {
        assert_eq!(app.prompt(key).await.status(), 200);
    }

    let read: Value = app
        .get_with(&format!("/v1/keys/{id}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        read["usage"],
        json!({"today": 2, "this_month": 2, "spend_today_usd": "0.134400", "spend_this_month_usd": "0.134400"})
    );
    assert_eq!(read["limits"], created["limits"]);
    assert!(read.get("key").is_none(), "the full key is shown once only");
    let listed = app.list_keys(&token).await;
    assert_eq!(listed[0]["usage"], read["usage"]);
    assert_eq!(listed[0]["expires_at"], read["expires_at"]);

    // A key without limits shows nulls, and no quota headers on its answers.
    let plain = app.key_with(&token, json!({})).await;
    assert_eq!(
        plain["limits"],
        json!({"per_minute": null, "per_day": null, "per_month": null, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    assert_eq!(plain["expires_at"], Value::Null);
    let answer = app.prompt(plain["key"].as_str().unwrap()).await;
    assert_eq!(header(&answer, "x-quota-limit"), None);
}

async fn bad_expiries_and_limits_are_422_naming_the_field(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let past = rfc3339(OffsetDateTime::now_utc() - Duration::from_secs(60));
    for (body, field) in [
        (json!({"expires_at": past}), "expires_at"),
        (json!({"limits": {"per_day": 0}}), "limits.per_day"),
        (json!({"limits": {"per_month": -5}}), "limits.per_month"),
        (json!({"limits": {"per_minute": 0}}), "limits.per_minute"),
        (
            json!({"limits": {"per_minute": 5_000_000_000_i64}}),
            "limits.per_minute",
        ),
    ] {
        let response = app.create_key(&token, Some(body.clone())).await;
        let error = assert_error(response, 422, "validation_failed").await;
        assert_eq!(error["error"]["field"], field, "{body}");
    }
    for body in [
        json!({"expires_at": "tomorrow"}),
        json!({"limits": {"per_hour": 5}}),
        json!({"limits": {"per_day": "many"}}),
    ] {
        let response = app.create_key(&token, Some(body)).await;
        assert_eq!(response.status(), 422);
    }
    assert!(app.list_keys(&token).await.is_empty(), "nothing was stored");
}

async fn only_the_owner_reads_changes_or_rolls_a_key(app: TestApp) {
    let ada = app.signed_up("ada@example.com").await;
    let bob = app.signed_up("bob@example.com").await;
    let created = app.key_with(&ada, json!({"name": "ada's"})).await;
    let path = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    assert_error(app.get_with(&path, &bob).await, 404, "key_not_found").await;
    let rename = json!({"name": "bob's now"});
    assert_error(
        app.patch_json(&path, &bob, &rename).await,
        404,
        "key_not_found",
    )
    .await;
    let roll = format!("{path}/roll");
    assert_error(
        app.post_with(&roll, &bob, &json!({})).await,
        404,
        "key_not_found",
    )
    .await;
    for missing in [
        "/v1/keys/not-a-uuid",
        "/v1/keys/0193a6d0-0000-7000-8000-000000000000",
    ] {
        assert_error(app.get_with(missing, &ada).await, 404, "key_not_found").await;
    }
    let mine: Value = app.get_with(&path, &ada).await.json().await.unwrap();
    assert_eq!(mine["name"], "ada's");
    assert_eq!(
        app.list_keys(&ada).await.len(),
        1,
        "bob's roll made nothing"
    );
}

async fn patch_keeps_what_it_leaves_out_and_clears_nulls(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .key_with(
            &token,
            json!({"name": "ci", "expires_at": in_an_hour(), "limits": {"per_day": 5, "per_month": 50}}),
        )
        .await;
    let path = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    let response = app
        .patch_json(
            &path,
            &token,
            &json!({"limits": {"per_day": null, "per_minute": 9}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let changed: Value = response.json().await.unwrap();
    assert_eq!(changed["name"], "ci");
    assert_eq!(changed["expires_at"], created["expires_at"]);
    assert_eq!(
        changed["limits"],
        json!({"per_minute": 9, "per_day": null, "per_month": 50, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    let cleared: Value = app
        .patch_json(
            &path,
            &token,
            &json!({"expires_at": null, "name": "renamed"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["expires_at"], Value::Null);
    assert_eq!(cleared["name"], "renamed");
    assert_eq!(cleared["limits"], changed["limits"]);
    let past = rfc3339(OffsetDateTime::now_utc() - Duration::from_secs(1));
    let error = assert_error(
        app.patch_json(&path, &token, &json!({"expires_at": past}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error["error"]["field"], "expires_at");
    let error = assert_error(
        app.patch_json(&path, &token, &json!({"limits": {"per_day": 0}}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error["error"]["field"], "limits.per_day");
    assert_error(
        app.patch_json(&path, &token, &json!({"colour": "red"}))
            .await,
        422,
        "validation_failed",
    )
    .await;
}

/// A key used once is in the verified-key cache; a change made afterwards must still hold
/// at once on this instance.
async fn changes_take_effect_through_the_cache(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app.key_with(&token, json!({})).await;
    let key = created["key"].as_str().unwrap();
    let path = format!("/v1/keys/{}", created["id"].as_str().unwrap());
    assert_eq!(app.prompt(key).await.status(), 200);

    // A day quota set after one image was made: one more is allowed.
    let limited = app
        .patch_json(&path, &token, &json!({"limits": {"per_day": 2}}))
        .await;
    assert_eq!(limited.status(), 200);
    let second = app.prompt(key).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-quota-remaining").as_deref(), Some("0"));
    assert_error(app.prompt(key).await, 429, "quota_exceeded").await;

    // Lifting it lets the key through again; a per-minute limit of 1 then holds.
    app.patch_json(
        &path,
        &token,
        &json!({"limits": {"per_day": null, "per_minute": 1}}),
    )
    .await;
    assert_eq!(app.prompt(key).await.status(), 200);
    assert_error(app.prompt(key).await, 429, "rate_limited").await;

    // A revocation through the cache.
    let other = app.key_with(&token, json!({})).await;
    let other_key = other["key"].as_str().unwrap();
    assert_eq!(app.prompt(other_key).await.status(), 200);
    let other_path = format!("/v1/keys/{}", other["id"].as_str().unwrap());
    assert_eq!(app.delete_with(&other_path, &token).await.status(), 204);
    assert_error(app.prompt(other_key).await, 401, "invalid_api_key").await;

    // An expiry set on a cached key holds once it passes.
    app.patch_json(&path, &token, &json!({"limits": {"per_minute": null}}))
        .await;
    let soon = rfc3339(OffsetDateTime::now_utc() + Duration::from_secs(120));
    app.patch_json(&path, &token, &json!({"expires_at": soon}))
        .await;
    assert_eq!(app.prompt(key).await.status(), 200);
    app.clock
        .set(OffsetDateTime::now_utc() + Duration::from_secs(121));
    assert_error(app.prompt(key).await, 401, "key_expired").await;
}

async fn an_expired_key_is_401_key_expired(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .key_with(&token, json!({"expires_at": in_an_hour()}))
        .await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.prompt(key).await.status(), 200);
    app.clock
        .set(OffsetDateTime::now_utc() + Duration::from_secs(3601));
    let body = assert_error(app.prompt(key).await, 401, "key_expired").await;
    assert!(!body.to_string().contains(key));
    let openai = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(key)
        .json(&json!({"prompt": "a banana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 401);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["code"], "key_expired");
    let models = app.get_with("/v1/models", key).await;
    assert_eq!(models.status(), 401);
}

async fn rolling_with_a_grace_keeps_both_keys_until_it_ends(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let old = app
        .key_with(&token, json!({"name": "prod", "limits": {"per_day": 100}}))
        .await;
    let old_key = old["key"].as_str().unwrap();
    assert_eq!(app.prompt(old_key).await.status(), 200);
    let roll = format!("/v1/keys/{}/roll", old["id"].as_str().unwrap());
    let response = app
        .post_with(&roll, &token, &json!({"grace_seconds": 3600}))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    let new: Value = response.json().await.unwrap();
    let new_key = new["key"].as_str().unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(new["name"], "prod");
    assert_eq!(new["limits"], old["limits"]);
    assert_eq!(new["rolled_from"], old["id"]);
    assert_eq!(new["expires_at"], Value::Null);
    let listed = app.list_keys(&token).await;
    let old_listed = listed.iter().find(|k| k["id"] == old["id"]).unwrap();
    let old_expiry =
        OffsetDateTime::parse(old_listed["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let expected = OffsetDateTime::now_utc() + Duration::from_secs(3600);
    assert!((old_expiry - expected).abs() < time::Duration::seconds(30));

    // Both work during the grace; only the new one after it.
    assert_eq!(app.prompt(old_key).await.status(), 200);
    assert_eq!(app.prompt(new_key).await.status(), 200);
    app.clock
        .set(OffsetDateTime::now_utc() + Duration::from_secs(3601));
    assert_error(app.prompt(old_key).await, 401, "key_expired").await;
    assert_eq!(app.prompt(new_key).await.status(), 200);
}

async fn rolling_without_a_grace_ends_the_old_key_at_once(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let old = app.key_with(&token, json!({"name": "prod"})).await;
    let old_key = old["key"].as_str().unwrap();
    assert_eq!(app.prompt(old_key).await.status(), 200);
    let roll = format!("/v1/keys/{}/roll", old["id"].as_str().unwrap());
    for bad in [
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": "soon"}),
    ] {
        assert_eq!(app.post_with(&roll, &token, &bad).await.status(), 422);
    }
    let too_long = app
        .post_with(&roll, &token, &json!({"grace_seconds": 400 * 86_400}))
        .await;
    let error = assert_error(too_long, 422, "validation_failed").await;
    assert_eq!(error["error"]["field"], "grace_seconds");
    let new: Value = app
        .post_with(&roll, &token, &json!({"grace_seconds": 0}))
        .await
        .json()
        .await
        .unwrap();
    assert_error(app.prompt(old_key).await, 401, "key_expired").await;
    assert_eq!(app.prompt(new["key"].as_str().unwrap()).await.status(), 200);
    // A revoked key cannot be rolled.
    let new_path = format!("/v1/keys/{}", new["id"].as_str().unwrap());
    app.delete_with(&new_path, &token).await;
    assert_error(
        app.post_with(&format!("{new_path}/roll"), &token, &json!({}))
            .await,
        404,
        "key_not_found",
    )
    .await;
}

async fn a_day_quota_of_10_holds_under_50_concurrent_requests(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .key_with(&token, json!({"limits": {"per_day": 10}}))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let sent_at = OffsetDateTime::now_utc();
    let requests = (0..50).map(|_| {
        let client = app.client.clone();
        let url = app.url("/v1/generate");
        let key = key.clone();
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"prompt": "a banana"}))
                .send()
                .await
                .unwrap()
        }
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut succeeded = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => succeeded += 1,
            429 => {
                let wait = seconds_header(&response, "retry-after");
                let bound = seconds_to_midnight(sent_at) + 1;
                assert!(wait >= 1 && wait <= bound, "{wait} {bound}");
                assert_eq!(header(&response, "x-quota-remaining").as_deref(), Some("0"));
                assert_eq!(header(&response, "x-quota-scope").as_deref(), Some("key"));
                assert_eq!(header(&response, "x-quota-period").as_deref(), Some("day"));
                assert_error(response, 429, "quota_exceeded").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(succeeded, 10);
    assert_eq!(
        app.google_requests().await,
        10,
        "no upstream call past the quota"
    );
    let usage = app.usage(&token).await;
    assert_eq!(usage[0]["count"], 10);
}

async fn failed_generations_give_their_quota_back(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .key_with(&token, json!({"limits": {"per_day": 2}}))
        .await;
    let key = created["key"].as_str().unwrap();
    Mock::given(method("POST"))
        .and(body_string_contains("refuse me"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
        )
        .mount(&app.google)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("break me"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.google)
        .await;
    for _ in 0..3 {
        let refused = app.generate(key, &json!({"prompt": "refuse me"})).await;
        assert_error(refused, 422, "content_rejected").await;
        let broken = app.generate(key, &json!({"prompt": "break me"})).await;
        assert_error(broken, 502, "upstream_failed").await;
    }
    let first = app.prompt(key).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-quota-remaining").as_deref(), Some("1"));
    assert_eq!(app.prompt(key).await.status(), 200);
    assert_error(app.prompt(key).await, 429, "quota_exceeded").await;
}

async fn quotas_reset_at_utc_midnight(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .key_with(&token, json!({"limits": {"per_day": 1, "per_month": 100}}))
        .await;
    let key = created["key"].as_str().unwrap();
    let today = OffsetDateTime::now_utc().date();
    let before_midnight =
        today.next_day().unwrap().midnight().assume_utc() - Duration::from_secs(30);
    app.clock.set(before_midnight);
    let made = app.prompt(key).await;
    assert_eq!(made.status(), 200);
    assert_eq!(header(&made, "x-quota-limit").as_deref(), Some("1"));
    assert_eq!(header(&made, "x-quota-remaining").as_deref(), Some("0"));
    assert_eq!(header(&made, "x-quota-period").as_deref(), Some("day"));
    let reset = seconds_header(&made, "x-quota-reset");
    assert!((28..=31).contains(&reset), "{reset}");
    let refused = app.prompt(key).await;
    let wait = seconds_header(&refused, "retry-after");
    assert!((28..=31).contains(&wait), "{wait}");
    assert_error(refused, 429, "quota_exceeded").await;

    app.clock
        .set(today.next_day().unwrap().midnight().assume_utc() + Duration::from_secs(5));
    let next_day = app.prompt(key).await;
    assert_eq!(next_day.status(), 200);
    assert_eq!(header(&next_day, "x-quota-remaining").as_deref(), Some("0"));
}

async fn each_of_n_images_counts(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let created = app
        .key_with(&token, json!({"limits": {"per_day": 3}}))
        .await;
    let key = created["key"].as_str().unwrap();
    let two = json!({"prompt": "a banana", "n": 2});
    let first = app.post_with("/v1/images/generations", key, &two).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-quota-remaining").as_deref(), Some("1"));
    let refused = app.post_with("/v1/images/generations", key, &two).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "x-should-retry").as_deref(), Some("false"));
    assert!(header(&refused, "retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert_eq!(body["error"]["type"], "insufficient_quota");
    let one = json!({"prompt": "a banana", "n": 1});
    assert_eq!(
        app.post_with("/v1/images/generations", key, &one)
            .await
            .status(),
        200
    );
    assert_eq!(app.google_requests().await, 3);
    let read: Value = app
        .get_with(
            &format!("/v1/keys/{}", created["id"].as_str().unwrap()),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["usage"]["today"], 3);
}

async fn only_admins_reach_the_admin_routes(app: TestApp) {
    let admin = app.admin().await;
    let ada = app.signed_up("ada@example.com").await;
    let ada_id = app.user_id(&ada).await;
    let (_, ada_key) = app.created_key(&ada).await;
    let routes = [
        (reqwest::Method::GET, "/v1/admin/users".to_owned()),
        (reqwest::Method::PATCH, format!("/v1/admin/users/{ada_id}")),
        (
            reqwest::Method::PATCH,
            "/v1/admin/users/not-a-uuid".to_owned(),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/admin/users/{ada_id}/keys"),
        ),
        (reqwest::Method::GET, "/v1/admin/audit".to_owned()),
    ];
    let change = json!({"disabled": true});
    for (method, path) in &routes {
        let response = app.send_json(method.clone(), path, &ada, &change).await;
        assert_error(response, 403, "admin_only").await;
        let anonymous = app
            .client
            .request(method.clone(), app.url(path))
            .json(&change)
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{method} {path}");
        let with_key = app.send_json(method.clone(), path, &ada_key, &change).await;
        assert_eq!(with_key.status(), 401, "an API key is not an access token");
    }
    // Nothing happened: ada still works, and the audit is empty.
    assert_eq!(app.get_with("/v1/auth/me", &ada).await.status(), 200);
    let audit: Value = app
        .get_with("/v1/admin/audit", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"], json!([]));
    assert_eq!(app.get_with("/v1/admin/users", &admin).await.status(), 200);
}

async fn admins_see_accounts_usage_and_key_prefixes(app: TestApp) {
    let admin = app.admin().await;
    let ada = app.signed_up("ada@example.com").await;
    let ada_id = app.user_id(&ada).await;
    let created = app.key_with(&ada, json!({"name": "laptop"})).await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.prompt(key).await.status(), 200);

    let response = app.get_with("/v1/admin/users?limit=1", &admin).await;
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    let newest = &page["users"][0];
    assert_eq!(newest["email"], "ada@example.com");
    assert_eq!(newest["id"], ada_id.as_str());
    assert_eq!(
        newest["usage"],
        json!({"today": 1, "this_month": 1, "spend_today_usd": "0.067200", "spend_this_month_usd": "0.067200"})
    );
    assert_eq!(newest["disabled"], false);
    assert_eq!(
        newest["limits"],
        json!({"per_day": null, "per_month": null, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get_with(&format!("/v1/admin/users?cursor={cursor}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["users"][0]["email"], ADMIN_EMAIL);
    assert_eq!(rest["next_cursor"], Value::Null);

    let response = app
        .get_with(&format!("/v1/admin/users/{ada_id}/keys"), &admin)
        .await;
    let text = response.text().await.unwrap();
    assert!(!text.contains(key), "a full key was shown");
    let keys: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys["keys"][0]["prefix"], &key[..12]);
    assert_eq!(keys["keys"][0]["name"], "laptop");
    assert!(keys["keys"][0].get("key_hash").is_none());
    let hashes = app.db.stored_key_hashes_and_prefixes().await;
    assert!(hashes.iter().all(|(hash, _)| !text.contains(hash.as_str())));
    let unknown = "/v1/admin/users/0193a6d0-0000-7000-8000-000000000000/keys";
    assert_error(app.get_with(unknown, &admin).await, 404, "user_not_found").await;
}

async fn a_disabled_account_is_refused_and_audited(app: TestApp) {
    let admin = app.admin().await;
    let admin_id = app.user_id(&admin).await;
    let ada = app.signed_up("ada@example.com").await;
    let ada_id = app.user_id(&ada).await;
    let (_, key) = app.created_key(&ada).await;
    // Used once: the key is in the verified-key cache when the account is disabled.
    assert_eq!(app.prompt(&key).await.status(), 200);
    let path = format!("/v1/admin/users/{ada_id}");
    let response = app
        .patch_json(&path, &admin, &json!({"disabled": true}))
        .await;
    assert_eq!(response.status(), 200);
    let settings: Value = response.json().await.unwrap();
    assert_eq!(
        settings,
        json!({"limits": {"per_day": null, "per_month": null, "budget_usd_per_day": null, "budget_usd_per_month": null}, "disabled": true})
    );

    assert_error(
        app.get_with("/v1/auth/me", &ada).await,
        403,
        "account_disabled",
    )
    .await;
    assert_error(
        app.get_with("/v1/keys", &ada).await,
        403,
        "account_disabled",
    )
    .await;
    assert_error(app.prompt(&key).await, 403, "account_disabled").await;
    assert_error(
        app.login("ada@example.com", crate::helpers::PASSWORD).await,
        403,
        "account_disabled",
    )
    .await;
    // A wrong password still says only that.
    assert_error(
        app.login("ada@example.com", "wrong password").await,
        401,
        "invalid_credentials",
    )
    .await;

    let enabled = app
        .patch_json(&path, &admin, &json!({"disabled": false}))
        .await;
    assert_eq!(enabled.status(), 200);
    assert_eq!(app.prompt(&key).await.status(), 200);
    assert_eq!(
        app.login("ada@example.com", crate::helpers::PASSWORD)
            .await
            .status(),
        200
    );

    let audit: Value = app
        .get_with("/v1/admin/audit", &admin)
        .await
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["action"], "account.update");
    assert_eq!(entries[0]["actor_id"], admin_id.as_str());
    assert_eq!(entries[0]["target_id"], ada_id.as_str());
    assert_eq!(entries[0]["before"]["disabled"], true);
    assert_eq!(entries[0]["after"]["disabled"], false);
    assert_eq!(entries[1]["before"]["disabled"], false);
    assert_eq!(entries[1]["after"]["disabled"], true);
    assert!(OffsetDateTime::parse(entries[0]["at"].as_str().unwrap(), &Rfc3339).is_ok());

    // An admin cannot lock themselves out; unknown accounts are 404 and write no audit.
    let own = format!("/v1/admin/users/{admin_id}");
    let error = assert_error(
        app.patch_json(&own, &admin, &json!({"disabled": true}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error["error"]["field"], "disabled");
    let unknown = "/v1/admin/users/0193a6d0-0000-7000-8000-000000000000";
    assert_error(
        app.patch_json(unknown, &admin, &json!({"disabled": true}))
            .await,
        404,
        "user_not_found",
    )
    .await;
    let audit: Value = app
        .get_with("/v1/admin/audit", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
}

async fn an_accounts_quota_counts_every_key(app: TestApp) {
    let admin = app.admin().await;
    let ada = app.signed_up("ada@example.com").await;
    let ada_id = app.user_id(&ada).await;
    let (_, laptop) = app.created_key(&ada).await;
    let (_, server) = app.created_key(&ada).await;
    assert_eq!(app.prompt(&laptop).await.status(), 200);
    let path = format!("/v1/admin/users/{ada_id}");
    let response = app
        .patch_json(&path, &admin, &json!({"limits": {"per_day": 3}}))
        .await;
    assert_eq!(response.status(), 200);
    // One made before the limit counts.
    assert_eq!(app.prompt(&server).await.status(), 200);
    let last = app.prompt(&laptop).await;
    assert_eq!(last.status(), 200);
    assert_eq!(header(&last, "x-quota-scope").as_deref(), Some("account"));
    assert_eq!(header(&last, "x-quota-remaining").as_deref(), Some("0"));
    let refused = app.prompt(&server).await;
    assert_eq!(
        header(&refused, "x-quota-scope").as_deref(),
        Some("account")
    );
    assert_error(refused, 429, "quota_exceeded").await;
    let error = assert_error(
        app.patch_json(&path, &admin, &json!({"limits": {"per_month": 0}}))
            .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(error["error"]["field"], "limits.per_month");
    let lifted: Value = app
        .patch_json(&path, &admin, &json!({"limits": {"per_day": null}}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(lifted["limits"]["per_day"], Value::Null);
    assert_eq!(app.prompt(&server).await.status(), 200);
}

on_both_backends!(
    keys_carry_expiry_limits_and_usage,
    bad_expiries_and_limits_are_422_naming_the_field,
    only_the_owner_reads_changes_or_rolls_a_key,
    patch_keeps_what_it_leaves_out_and_clears_nulls,
    changes_take_effect_through_the_cache,
    an_expired_key_is_401_key_expired,
    rolling_with_a_grace_keeps_both_keys_until_it_ends,
    rolling_without_a_grace_ends_the_old_key_at_once,
    a_day_quota_of_10_holds_under_50_concurrent_requests,
    failed_generations_give_their_quota_back,
    quotas_reset_at_utc_midnight,
    each_of_n_images_counts,
    only_admins_reach_the_admin_routes,
    admins_see_accounts_usage_and_key_prefixes,
    a_disabled_account_is_refused_and_audited,
    an_accounts_quota_counts_every_key,
);

async fn new_keys_and_accounts_get_the_server_defaults(app: TestApp) {
    let admin = app.admin().await;
    let ada = app.signed_up("ada@example.com").await;
    let ada_id = app.user_id(&ada).await;
    let defaulted = app.key_with(&ada, json!({})).await;
    assert_eq!(
        defaulted["limits"],
        json!({"per_minute": null, "per_day": 2, "per_month": 20, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    let own = app.key_with(&ada, json!({"limits": {"per_day": 1}})).await;
    assert_eq!(
        own["limits"],
        json!({"per_minute": null, "per_day": 1, "per_month": 20, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    let users: Value = app
        .get_with("/v1/admin/users", &admin)
        .await
        .json()
        .await
        .unwrap();
    let ada_entry = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["id"] == ada_id.as_str())
        .unwrap();
    assert_eq!(
        ada_entry["limits"],
        json!({"per_day": 3, "per_month": null, "budget_usd_per_day": null, "budget_usd_per_month": null})
    );
    // The account's 3 a day over both keys: 2 on one, 1 on the other, then none.
    let (first, second) = (
        defaulted["key"].as_str().unwrap(),
        own["key"].as_str().unwrap(),
    );
    assert_eq!(app.prompt(first).await.status(), 200);
    assert_eq!(app.prompt(first).await.status(), 200);
    let key_refused = app.prompt(first).await;
    assert_eq!(
        header(&key_refused, "x-quota-scope").as_deref(),
        Some("key")
    );
    assert_error(key_refused, 429, "quota_exceeded").await;
    assert_eq!(app.prompt(second).await.status(), 200);
    let over = app.prompt(second).await;
    assert_error(over, 429, "quota_exceeded").await;
}

crate::configured_on_both_backends!(
    new_keys_and_accounts_get_the_server_defaults => |config: &mut nanobanana::config::Config| {
        config.limits.default_key_per_day = nb_domain::quota::QuotaLimit::new(2);
        config.limits.default_key_per_month = nb_domain::quota::QuotaLimit::new(20);
        config.limits.default_account_per_day = nb_domain::quota::QuotaLimit::new(3);
        config.limits.default_account_per_month = None;
    },
);
