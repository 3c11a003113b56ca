//! The tables, as diesel sees them: one definition for both backends (see the migrations).

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        per_day -> Nullable<BigInt>,
        per_month -> Nullable<BigInt>,
        disabled -> Bool,
        budget_per_day_nano_usd -> Nullable<BigInt>,
        budget_per_month_nano_usd -> Nullable<BigInt>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Nullable<Text>,
        key_hash -> Text,
        prefix -> Text,
        is_active -> Bool,
        last_used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        per_minute -> Nullable<Integer>,
        per_day -> Nullable<BigInt>,
        per_month -> Nullable<BigInt>,
        rolled_from -> Nullable<Text>,
        mode -> Text,
        budget_per_day_nano_usd -> Nullable<BigInt>,
        budget_per_month_nano_usd -> Nullable<BigInt>,
    }
}

diesel::table! {
    quota_counters (subject_kind, subject_id, period, starts_on) {
        subject_kind -> Text,
        subject_id -> Text,
        period -> Text,
        starts_on -> Date,
        count -> BigInt,
        cost_nano_usd -> BigInt,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Text,
        actor_id -> Text,
        action -> Text,
        target_id -> Text,
        before -> Text,
        after -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    usage_daily (api_key_id, day) {
        api_key_id -> Text,
        day -> Date,
        count -> BigInt,
        cost_nano_usd -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    admin_bindings (email) {
        email -> Text,
        user_id -> Text,
        bound_at -> Timestamp,
    }
}

diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(usage_daily -> api_keys (api_key_id));
diesel::joinable!(generations -> api_keys (api_key_id));
diesel::joinable!(idempotency_keys -> api_keys (api_key_id));
diesel::table! {
    generation_jobs (id) {
        id -> Text,
        user_id -> Text,
        api_key_id -> Text,
        mode -> Text,
        quota_applies -> Bool,
        request -> Text,
        reservation -> Nullable<Text>,
        state -> Text,
        attempts -> Integer,
        last_error_code -> Nullable<Text>,
        run_after -> Timestamp,
        lease_token -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        user_id -> Text,
        url -> Text,
        description -> Nullable<Text>,
        on_succeeded -> Bool,
        on_failed -> Bool,
        on_canceled -> Bool,
        status -> Text,
        secret -> Binary,
        previous_secret -> Nullable<Binary>,
        previous_secret_expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (endpoint_id, generation_id) {
        endpoint_id -> Text,
        generation_id -> Text,
        event -> Text,
        occurred_at -> Timestamp,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_token -> Nullable<Text>,
        body -> Nullable<Binary>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Text,
        endpoint_id -> Text,
        generation_id -> Text,
        event -> Text,
        attempt -> Integer,
        attempted_at -> Timestamp,
        status_code -> Nullable<Integer>,
        error -> Nullable<Text>,
        duration_ms -> BigInt,
    }
}

diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::allow_tables_to_appear_in_same_query!(
    webhook_endpoints,
    webhook_deliveries,
    webhook_attempts,
    generation_jobs,
    users,
    api_keys,
    usage_daily,
    generations,
    sessions,
    quota_counters,
    audit_log,
    idempotency_keys,
);

diesel::table! {
    generations (id) {
        id -> Text,
        user_id -> Text,
        api_key_id -> Text,
        prompt -> Text,
        size -> Text,
        style -> Text,
        model -> Text,
        status -> Text,
        error_code -> Nullable<Text>,
        object_key -> Nullable<Text>,
        url -> Nullable<Text>,
        mime_type -> Nullable<Text>,
        byte_size -> Nullable<BigInt>,
        latency_ms -> BigInt,
        created_at -> Timestamp,
        mode -> Text,
        deleted_at -> Nullable<Timestamp>,
        aspect_ratio -> Nullable<Text>,
        resolution -> Nullable<Text>,
        width -> Nullable<Integer>,
        height -> Nullable<Integer>,
        input_tokens -> Nullable<BigInt>,
        input_text_tokens -> Nullable<BigInt>,
        input_image_tokens -> Nullable<BigInt>,
        output_tokens -> Nullable<BigInt>,
        output_image_tokens -> Nullable<BigInt>,
        output_text_tokens -> Nullable<BigInt>,
        thinking_tokens -> Nullable<BigInt>,
        total_tokens -> Nullable<BigInt>,
        previous_generation_id -> Nullable<Text>,
        turn -> Nullable<Text>,
        cost_nano_usd -> BigInt,
    }
}

diesel::table! {
    idempotency_keys (api_key_id, key) {
        api_key_id -> Text,
        key -> Text,
        fingerprint -> Text,
        state -> Text,
        lease -> Text,
        status -> Nullable<Integer>,
        content_type -> Nullable<Text>,
        body -> Nullable<Binary>,
        created_at -> Timestamp,
        locked_until -> Timestamp,
        expires_at -> Timestamp,
    }
}
