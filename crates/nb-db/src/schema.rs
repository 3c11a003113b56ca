//! The tables, as diesel sees them: one definition for both backends (see the migrations).

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
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
    }
}

diesel::table! {
    usage_daily (api_key_id, day) {
        api_key_id -> Text,
        day -> Date,
        count -> BigInt,
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

diesel::joinable!(api_keys -> users (user_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(usage_daily -> api_keys (api_key_id));
diesel::joinable!(generations -> api_keys (api_key_id));
diesel::allow_tables_to_appear_in_same_query!(users, api_keys, usage_daily, generations, sessions);

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
    }
}
