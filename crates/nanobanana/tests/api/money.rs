//! Money over real sockets on both databases: what each image cost on answers, in history
//! and in usage (sums exact), budgets on keys and accounts (exact under concurrency, shared
//! by two instances, reset at UTC midnight and on the 1st by the server's clock), and dry
//! runs that never reach Google.
//!
//! The fake Google answers without `usageMetadata`, so an image costs its model's per-image
//! price: $0.0672 for a 1K image of 3.1 Flash, $0.24 for a 4K one of 3 Pro.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::{ADMIN_EMAIL, TestApp, assert_error, header, test_config};
use crate::on_both_backends;

impl TestApp {
    async fn key_with_limits(&self, token: &str, limits: Value) -> String {
        let response = self
            .create_key(token, Some(json!({"limits": limits})))
            .await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        created["key"].as_str().unwrap().to_owned()
    }

    async fn banana(&self, key: &str) -> reqwest::Response {
        self.generate(key, &json!({"prompt": "a banana"})).await
    }

    /// `method path` with `credential` (a key or an access token), `body` as JSON and any
    /// extra `headers`.
    async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(credential)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn post_as(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.send_as(reqwest::Method::POST, path, key, body, &[])
            .await
    }
}

/// Micro-dollars of a 6-decimal string.
fn micros(usd: &Value) -> i64 {
    let text = usd
        .as_str()
        .unwrap_or_else(|| panic!("{usd} is not a string"));
    let (whole, fraction) = text.split_once('.').unwrap();
    assert_eq!(fraction.len(), 6, "{text}");
    whole.parse::<i64>().unwrap() * 1_000_000 + fraction.parse::<i64>().unwrap()
}

async fn costs_show_on_answers_history_and_usage_and_sum_exactly(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let live = app.key_with_limits(&token, json!({})).await;
    let response = app.banana(&live).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-nb-cost-usd").as_deref(),
        Some("0.067200")
    );
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["cost_usd"], "0.067200");
    // A 4K image of 3 Pro costs more; two OpenAI images cost twice one.
    let pro = app
        .generated(
            &live,
            &json!({"prompt": "a banana", "model": "gemini-3-pro-image", "resolution": "4K"}),
        )
        .await;
    assert_eq!(pro["cost_usd"], "0.240000");
    let openai = app
        .post_as(
            "/v1/images/generations",
            &live,
            &json!({"prompt": "a banana", "n": 2}),
        )
        .await;
    assert_eq!(openai.status(), 200);
    assert_eq!(
        header(&openai, "x-nb-cost-usd").as_deref(),
        Some("0.134400")
    );
    // A test key's images cost nothing and are reported apart by mode.
    let test_key = app
        .create_key(&token, Some(json!({"mode": "test"})))
        .await
        .json::<Value>()
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let free = app
        .generated(&test_key, &json!({"prompt": "a banana"}))
        .await;
    assert_eq!(free["cost_usd"], "0.000000");

    let history: Value = app.get_json("/v1/generations", &token).await;
    let costs: Vec<i64> = history["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|generation| micros(&generation["cost_usd"]))
        .collect();
    assert_eq!(costs.len(), 5);
    let spent: i64 = costs.iter().sum();
    assert_eq!(spent, 67_200 + 240_000 + 2 * 67_200);
    for group_by in ["day", "key", "model", "mode", "day,key,model,mode"] {
        let usage: Value = app
            .get_json(&format!("/v1/usage?group_by={group_by}"), &token)
            .await;
        let rows = usage["usage"].as_array().unwrap();
        let total: i64 = rows.iter().map(|row| micros(&row["cost_usd"])).sum();
        assert_eq!(total, spent, "group_by={group_by}: {usage}");
    }
    let by_mode: Value = app.get_json("/v1/usage?group_by=mode", &token).await;
    let test_row = by_mode["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["mode"] == "test")
        .unwrap()
        .clone();
    assert_eq!(
        (test_row["count"].clone(), test_row["cost_usd"].clone()),
        (json!(1), json!("0.000000"))
    );
    // Each key's spend, today and this month.
    let keys = app.list_keys(&token).await;
    let live_key = keys.iter().find(|key| key["mode"] == "live").unwrap();
    assert_eq!(live_key["usage"]["spend_today_usd"], "0.441600");
    assert_eq!(live_key["usage"]["spend_this_month_usd"], "0.441600");
}

async fn a_day_budget_holds_exactly_under_50_concurrent_requests(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    // Ten images of $0.0672: a JSON number and a decimal string are both amounts.
    let key = app
        .key_with_limits(
            &token,
            json!({"budget_usd_per_day": "0.672", "budget_usd_per_month": 50}),
        )
        .await;
    let keys = app.list_keys(&token).await;
    assert_eq!(keys[0]["limits"]["budget_usd_per_day"], "0.672000");
    assert_eq!(keys[0]["limits"]["budget_usd_per_month"], "50.000000");
    let requests = (0..50).map(|_| app.banana(&key));
    let mut succeeded = 0;
    for response in futures_util::future::join_all(requests).await {
        match response.status().as_u16() {
            200 => succeeded += 1,
            429 => {
                assert!(header(&response, "retry-after").is_some());
                assert_eq!(
                    header(&response, "x-budget-limit").as_deref(),
                    Some("0.672000")
                );
                assert_eq!(
                    header(&response, "x-budget-remaining").as_deref(),
                    Some("0.000000")
                );
                assert_eq!(header(&response, "x-budget-scope").as_deref(), Some("key"));
                assert_eq!(header(&response, "x-budget-period").as_deref(), Some("day"));
                assert_error(response, 429, "budget_exceeded").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(succeeded, 10);
    assert_eq!(
        app.google_requests().await,
        10,
        "no upstream call past the budget"
    );
    let keys = app.list_keys(&token).await;
    assert_eq!(keys[0]["usage"]["spend_today_usd"], "0.672000");
    // The OpenAI surface: OpenAI's type for a spent budget, and no retry.
    let openai = app
        .post_as(
            "/v1/images/generations",
            &key,
            &json!({"prompt": "a banana"}),
        )
        .await;
    assert_eq!(openai.status(), 429);
    assert_eq!(header(&openai, "x-should-retry").as_deref(), Some("false"));
    assert_eq!(header(&openai, "x-budget-scope").as_deref(), Some("key"));
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    // Raising the budget lets one more through; clearing it lifts it.
    let id = keys[0]["id"].as_str().unwrap();
    let raised = app
        .send_as(
            reqwest::Method::PATCH,
            &format!("/v1/keys/{id}"),
            &token,
            &json!({"limits": {"budget_usd_per_day": 0.7392}}),
            &[],
        )
        .await;
    assert_eq!(raised.status(), 200);
    assert_eq!(app.banana(&key).await.status(), 200);
    assert_error(app.banana(&key).await, 429, "budget_exceeded").await;
    let cleared: Value = app
        .send_as(
            reqwest::Method::PATCH,
            &format!("/v1/keys/{id}"),
            &token,
            &json!({"limits": {"budget_usd_per_day": null}}),
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cleared["limits"]["budget_usd_per_day"], Value::Null);
    assert_eq!(app.banana(&key).await.status(), 200);
    // Amounts that are not amounts are 422 naming the field.
    for bad in [
        json!("-1"),
        json!("ten"),
        json!(-0.5),
        json!("0.0000000001"),
    ] {
        let refused = app
            .create_key(
                &token,
                Some(json!({"limits": {"budget_usd_per_month": bad}})),
            )
            .await;
        let body = assert_error(refused, 422, "validation_failed").await;
        assert_eq!(
            body["error"]["field"], "limits.budget_usd_per_month",
            "{bad}"
        );
    }
}

async fn budgets_reset_at_utc_midnight_and_on_the_first(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let key = app
        .key_with_limits(
            &token,
            json!({"budget_usd_per_day": "0.0672", "budget_usd_per_month": "0.1344"}),
        )
        .await;
    let first_of_next_month = {
        let today = OffsetDateTime::now_utc().date();
        let (year, month) = match today.month() {
            time::Month::December => (today.year() + 1, time::Month::January),
            month => (today.year(), month.next()),
        };
        time::Date::from_calendar_date(year, month, 1).unwrap()
    };
    let last_day = first_of_next_month.previous_day().unwrap();
    let day_before = last_day.previous_day().unwrap();
    app.clock
        .set(day_before.midnight().assume_utc() + Duration::from_secs(12 * 3600));
    assert_eq!(app.banana(&key).await.status(), 200);
    let day = app.banana(&key).await;
    assert_eq!(header(&day, "x-budget-period").as_deref(), Some("day"));
    assert_eq!(header(&day, "retry-after").as_deref(), Some("43200"));
    assert_error(day, 429, "budget_exceeded").await;
    // The next UTC day the day budget starts afresh; the month's is now spent too.
    app.clock
        .set(last_day.midnight().assume_utc() + Duration::from_secs(5));
    let made = app.banana(&key).await;
    assert_eq!(made.status(), 200);
    assert_eq!(
        header(&made, "x-budget-remaining").as_deref(),
        Some("0.000000")
    );
    let month = app.banana(&key).await;
    assert_eq!(header(&month, "x-budget-period").as_deref(), Some("month"));
    assert_error(month, 429, "budget_exceeded").await;
    // On the 1st both start afresh.
    app.clock
        .set(first_of_next_month.midnight().assume_utc() + Duration::from_secs(5));
    assert_eq!(app.banana(&key).await.status(), 200);
}

async fn an_accounts_budget_is_set_by_admins_and_shown_with_its_spend(app: TestApp) {
    let admin = app.signed_up(ADMIN_EMAIL).await;
    let token = app.signed_up("ada@example.com").await;
    let first = app.key_with_limits(&token, json!({})).await;
    let second = app.key_with_limits(&token, json!({})).await;
    let me: Value = app.get_json("/v1/auth/me", &token).await;
    let ada_id = me["id"].as_str().unwrap().to_owned();
    let set: Value = app
        .send_as(
            reqwest::Method::PATCH,
            &format!("/v1/admin/users/{ada_id}"),
            &admin,
            &json!({"limits": {"budget_usd_per_month": "0.1344"}}),
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(set["limits"]["budget_usd_per_month"], "0.134400");
    assert_eq!(app.banana(&first).await.status(), 200);
    assert_eq!(app.banana(&second).await.status(), 200);
    let over = app.banana(&first).await;
    assert_eq!(header(&over, "x-budget-scope").as_deref(), Some("account"));
    assert_eq!(header(&over, "x-budget-period").as_deref(), Some("month"));
    assert_error(over, 429, "budget_exceeded").await;
    let users: Value = app.get_json("/v1/admin/users", &admin).await;
    let ada = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["id"] == ada_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ada["spend_today_usd"], "0.134400");
    assert_eq!(ada["spend_this_month_usd"], "0.134400");
    assert_eq!(ada["limits"]["budget_usd_per_month"], "0.134400");
    // The account's owner sees the same in /v1/auth/me (the console's Usage page shows it).
    let me: Value = app.get_json("/v1/auth/me", &token).await;
    assert_eq!(me["limits"]["budget_usd_per_month"], "0.134400", "{me}");
    assert_eq!(me["limits"]["per_day"], Value::Null, "{me}");
    assert_eq!(me["usage"]["today"], 2, "{me}");
    assert_eq!(me["usage"]["this_month"], 2, "{me}");
    assert_eq!(me["usage"]["spend_this_month_usd"], "0.134400", "{me}");
}

async fn a_dry_run_estimates_and_checks_without_calling_google(app: TestApp) {
    let token = app.signed_up("ada@example.com").await;
    let key = app
        .key_with_limits(&token, json!({"budget_usd_per_day": "0.2"}))
        .await;
    let estimate = app.post_as("/v1/generate?dry_run=true", &key, &json!({"prompt": "a banana", "model": "nano-banana-pro", "resolution": "4K", "aspect_ratio": "16:9"})).await;
    // $0.24 would pass the $0.20 budget: refused as the real request would be.
    assert_error(estimate, 429, "budget_exceeded").await;
    let estimate: Value = app.post_as("/v1/generate?dry_run=true", &key, &json!({"prompt": "a banana", "model": "nano-banana-pro", "resolution": "2K", "aspect_ratio": "16:9"})).await
        .json()
        .await
        .unwrap();
    assert_eq!(
        estimate,
        json!({"dry_run": true, "estimated_cost_usd": "0.134400", "model": "gemini-3-pro-image", "resolution": "2K", "aspect_ratio": "16:9", "images": 1})
    );
    let openai = app
        .send_as(
            reqwest::Method::POST,
            "/v1/images/generations",
            &key,
            &json!({"prompt": "a banana", "n": 2}),
            &[("x-nb-dry-run", "true")],
        )
        .await;
    assert_eq!(openai.status(), 200);
    let openai: Value = openai.json().await.unwrap();
    assert_eq!(
        (
            openai["estimated_cost_usd"].clone(),
            openai["images"].clone()
        ),
        (json!("0.134400"), json!(2))
    );
    // Invalid requests are refused as they would be.
    let bad = app
        .post_as(
            "/v1/generate?dry_run=true",
            &key,
            &json!({"prompt": "a banana", "resolution": "8K"}),
        )
        .await;
    assert_error(bad, 422, "validation_failed").await;
    let unclear = app
        .post_as(
            "/v1/generate?dry_run=maybe",
            &key,
            &json!({"prompt": "a banana"}),
        )
        .await;
    assert_error(unclear, 422, "validation_failed").await;
    assert_eq!(
        app.google_requests().await,
        0,
        "a dry run never calls Google"
    );
    // Nothing was reserved or spent.
    let keys = app.list_keys(&token).await;
    assert_eq!(keys[0]["usage"]["spend_today_usd"], "0.000000");
    assert_eq!(app.banana(&key).await.status(), 200);
    assert_eq!(app.banana(&key).await.status(), 200);
    assert_error(app.banana(&key).await, 429, "budget_exceeded").await;
}

on_both_backends!(
    costs_show_on_answers_history_and_usage_and_sum_exactly,
    a_day_budget_holds_exactly_under_50_concurrent_requests,
    budgets_reset_at_utc_midnight_and_on_the_first,
    an_accounts_budget_is_set_by_admins_and_shown_with_its_spend,
    a_dry_run_estimates_and_checks_without_calling_google,
);

/// Two instances on one PostgreSQL database share a budget: 10 of 40 requests spread over
/// both are served, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_budget() {
    let app = TestApp::spawn(crate::helpers::Backend::Postgres).await;
    let data_dir = tempfile::tempdir().unwrap();
    let config = test_config(data_dir.path().to_owned(), &app.db, &app.google);
    let listener = nanobanana::startup::bind("127.0.0.1:0").unwrap();
    let second = format!("http://{}", listener.local_addr().unwrap());
    let wired = nanobanana::startup::wire_with_clock(
        &config,
        app.db.database.clone(),
        listener.local_addr().unwrap(),
        std::sync::Arc::new(crate::helpers::ShiftedClock::default()),
    )
    .unwrap();
    tokio::spawn(nb_api::serve(listener, wired.state, |_| {}).unwrap());

    let token = app.signed_up("ada@example.com").await;
    let key = app
        .key_with_limits(&token, json!({"budget_usd_per_day": "0.672"}))
        .await;
    let requests = (0..40).map(|n| {
        let base = if n % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        let (client, key) = (app.client.clone(), key.clone());
        async move {
            client
                .post(format!("{base}/v1/generate"))
                .bearer_auth(key)
                .json(&json!({"prompt": "a banana"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 10);
    assert!(
        statuses.iter().all(|status| [200, 429].contains(status)),
        "{statuses:?}"
    );
    let keys = app.list_keys(&token).await;
    assert_eq!(keys[0]["usage"]["spend_today_usd"], "0.672000");
}

/// Google's `usageMetadata` with every kind of token: the cost is the formula's, to the
/// nano-dollar, and the operator's catalog file prices change it.
async fn a_cost_is_computed_from_what_google_counted_at_the_catalogs_prices(app: TestApp) {
    use wiremock::matchers::{body_string_contains, method};
    use wiremock::{Mock, ResponseTemplate};
    let mut answer = crate::helpers::gemini_image_answer();
    answer["usageMetadata"] = json!({
        "promptTokenCount": 1290,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}, {"modality": "IMAGE", "tokenCount": 1280}],
        "candidatesTokenCount": 1125,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1120}, {"modality": "TEXT", "tokenCount": 5}],
        "thoughtsTokenCount": 200,
        "totalTokenCount": 2615
    });
    Mock::given(method("POST"))
        .and(body_string_contains("counted"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&app.google)
        .await;
    let (token, key) = app.user_with_key("ada@example.com").await;
    let made = app.generated(&key, &json!({"prompt": "counted"})).await;
    // The operator's prices (see the configuration below), in micro-dollars per token:
    // text in 1, image in 2, image out 100, text out and thinking 4:
    // 10 + 2560 + 112000 + 20 + 800 = 115390.
    assert_eq!(made["cost_usd"], "0.115390", "{made}");
    assert_eq!(made["usage"]["thinking_tokens"], 200);
    let history = app.get_json("/v1/generations", &token).await;
    assert_eq!(history["generations"][0]["cost_usd"], "0.115390");
    // Without usage: the file's per-image price at the resolution asked.
    let plain = app
        .generated(&key, &json!({"prompt": "plain", "resolution": "2K"}))
        .await;
    assert_eq!(plain["cost_usd"], "0.150000");
    let dry = app
        .post_as(
            "/v1/generate?dry_run=true",
            &key,
            &json!({"prompt": "plain", "resolution": "4K"}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(dry["estimated_cost_usd"], "0.200000");
}

crate::configured_on_both_backends!(
    a_cost_is_computed_from_what_google_counted_at_the_catalogs_prices => |config: &mut nanobanana::config::Config| {
        config.models.model.push(nanobanana::config::catalog_file::ModelEntry {
            id: crate::helpers::MODEL.to_owned(),
            aliases: None,
            api: None,
            aspect_ratios: None,
            resolutions: None,
            max_input_images: None,
            retired_at: None,
            replaced_by: None,
            fallbacks: None,
            provider: None,
            google_model: None,
            price: Some(nanobanana::config::catalog_file::PriceEntry {
                input_text: Some(1.0),
                input_image: Some(2.0),
                output_image: Some(100.0),
                output_text: Some(4.0),
                batch_discount: None,
                per_image: Some(
                    [("1K".to_owned(), 0.1), ("2K".to_owned(), 0.15), ("4K".to_owned(), 0.2)].into(),
                ),
            }),
        });
    },
    new_keys_and_accounts_get_the_default_budgets => |config: &mut nanobanana::config::Config| {
        let dollars = |raw: &str| {
            Some(nanobanana::config::sections::Dollars(
                nb_domain::money::Usd::parse(raw).unwrap(),
            ))
        };
        config.limits.default_key_budget_usd_per_day = dollars("0.0672");
        config.limits.default_account_budget_usd_per_month = dollars("0.1344");
    },

);

/// The operator's default budgets: a new live key without its own gets the key default, a new
/// account the account default, and both are enforced.
async fn new_keys_and_accounts_get_the_default_budgets(app: TestApp) {
    let admin = app.signed_up(ADMIN_EMAIL).await;
    let token = app.signed_up("ada@example.com").await;
    let defaulted = app.key_with_limits(&token, json!({})).await;
    let own = app
        .key_with_limits(&token, json!({"budget_usd_per_day": 1}))
        .await;
    let keys = app.list_keys(&token).await;
    let limits_of = |key: &str| {
        keys.iter()
            .find(|listed| key.starts_with(listed["prefix"].as_str().unwrap()))
            .unwrap()["limits"]
            .clone()
    };
    assert_eq!(limits_of(&defaulted)["budget_usd_per_day"], "0.067200");
    assert_eq!(limits_of(&own)["budget_usd_per_day"], "1.000000");
    let users = app.get_json("/v1/admin/users", &admin).await;
    let ada = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["email"] == "ada@example.com")
        .unwrap()
        .clone();
    assert_eq!(ada["limits"]["budget_usd_per_month"], "0.134400");
    // One image on the defaulted key spends its day; the account's month takes one more.
    assert_eq!(app.banana(&defaulted).await.status(), 200);
    let key_spent = app.banana(&defaulted).await;
    assert_eq!(header(&key_spent, "x-budget-scope").as_deref(), Some("key"));
    assert_error(key_spent, 429, "budget_exceeded").await;
    assert_eq!(app.banana(&own).await.status(), 200);
    let account_spent = app.banana(&own).await;
    assert_eq!(
        header(&account_spent, "x-budget-scope").as_deref(),
        Some("account")
    );
    assert_error(account_spent, 429, "budget_exceeded").await;
}
