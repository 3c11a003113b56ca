//! `GET /v1/models` and `GET /v1/models/{model}`: the models clients may ask for, in
//! OpenAI's shapes.

use actix_web::{HttpResponse, web};
use nb_domain::generation::ImageModel;
use serde::Serialize;
use time::Date;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::credentials::Caller;
use crate::openai::error::{OpenAiErrorBody, render};
use crate::openai::model_map::OPENAI_MODEL_NAMES;
use crate::state::AppState;

/// OpenAI's `Model`, with what the model catalog says the model can do.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelObject {
    id: String,
    object: &'static str,
    /// Not known for Google's models: 0.
    created: i64,
    owned_by: &'static str,
    /// Google's id for the model this name means (the same as `id` unless `id` is an alias
    /// or an OpenAI name).
    model: String,
    /// Other names clients may use.
    aliases: Vec<String>,
    /// `gemini` (`:generateContent`) or `imagen` (`:predict`).
    api: &'static str,
    #[schema(example = json!(["1:1", "16:9"]))]
    aspect_ratios: Vec<String>,
    /// The first is the default.
    #[schema(example = json!(["1K", "2K", "4K"]))]
    resolutions: Vec<&'static str>,
    /// Reference images one request may carry; 0: the model cannot edit.
    max_input_images: usize,
    /// From this day (UTC) on, requests are refused with `model_retired`.
    #[schema(value_type = Option<String>, example = "2026-10-02")]
    retired_at: Option<String>,
    /// Named in that refusal.
    replaced_by: Option<String>,
    /// Whether `retired_at` has come.
    retired: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

fn model_object(id: &str, model: &ImageModel, today: Date) -> ModelObject {
    let spec = model.spec();
    ModelObject {
        id: id.to_owned(),
        object: "model",
        created: 0,
        owned_by: "google",
        model: spec.id.clone(),
        aliases: spec.aliases.clone(),
        api: spec.api.as_str(),
        aspect_ratios: spec.aspect_ratios.iter().map(ToString::to_string).collect(),
        resolutions: spec.resolutions.iter().map(|r| r.as_str()).collect(),
        max_input_images: spec.max_input_images,
        retired_at: spec.retired_at.map(|day| day.to_string()),
        replaced_by: spec.replaced_by.clone(),
        retired: spec.is_retired_on(today),
    }
}

/// The models clients may ask for (`NB_IMAGE_MODELS`), the default first, with what each can
/// make. An API key, an access token or the console's session.
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("access_token" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = OpenAiErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = OpenAiErrorBody),
    ))]
pub(crate) async fn list_models(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
) -> HttpResponse {
    if let Err(error) = caller {
        return render(error);
    }
    let today = state.generations.now().date();
    let models = state.generations.models();
    // The enabled models first (the default first), then each of their aliases, then the
    // OpenAI names this server answers to: each name a client may use is its own entry.
    let mut data: Vec<ModelObject> = models
        .iter()
        .map(|model| model_object(model.as_str(), model, today))
        .collect();
    for model in models.iter() {
        for alias in &model.spec().aliases {
            data.push(model_object(alias, model, today));
        }
    }
    let openai_names = OPENAI_MODEL_NAMES
        .iter()
        .copied()
        .chain(state.openai_models.names());
    for name in openai_names {
        if data.iter().any(|entry| entry.id == name) {
            continue;
        }
        if let Ok(model) = state.openai_models.resolve(Some(name), models) {
            data.push(model_object(name, &model, today));
        }
    }
    HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    })
}

/// One model: one of `NB_IMAGE_MODELS`, or an OpenAI name this server answers to.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai", security(("access_token" = []), ("api_key" = [])),
    params(("model" = String, Path, description = "A model id")),
    responses(
        (status = 200, description = "The model", body = ModelObject),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = OpenAiErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = OpenAiErrorBody),
    ))]
pub(crate) async fn get_model(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    model: web::Path<String>,
) -> HttpResponse {
    if let Err(error) = caller {
        return render(error);
    }
    let known = state
        .openai_models
        .resolve(Some(model.as_str()), state.generations.models());
    if let Ok(known) = known {
        let today = state.generations.now().date();
        HttpResponse::Ok().json(model_object(&model, &known, today))
    } else {
        render(
            ApiError::not_found(
                "model_not_found",
                format!(
                    "The model {:?} does not exist on this server.",
                    model.as_str()
                ),
            )
            .with_field(Some("model".into())),
        )
    }
}
