//! `GET /v1/models` and `GET /v1/models/{model}`: the models clients may ask for, in
//! OpenAI's shapes.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::credentials::ApiKeyCaller;
use crate::openai::error::{OpenAiErrorBody, render};
use crate::state::AppState;

/// OpenAI's `Model`.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelObject {
    id: String,
    object: &'static str,
    /// Not known for Google's models: 0.
    created: i64,
    owned_by: &'static str,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

fn model_object(id: &str) -> ModelObject {
    ModelObject {
        id: id.to_owned(),
        object: "model",
        created: 0,
        owned_by: "google",
    }
}

/// The models clients may ask for (`NB_IMAGE_MODELS`), the default first.
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("api_key" = [])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = OpenAiErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = OpenAiErrorBody),
    ))]
pub(crate) async fn list_models(
    state: web::Data<AppState>,
    caller: Result<ApiKeyCaller, ApiError>,
) -> HttpResponse {
    if let Err(error) = caller {
        return render(error);
    }
    HttpResponse::Ok().json(ModelList {
        object: "list",
        data: state
            .generations
            .models()
            .iter()
            .map(|model| model_object(model.as_str()))
            .collect(),
    })
}

/// One model: one of `NB_IMAGE_MODELS`, or an OpenAI name this server answers to.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "openai", security(("api_key" = [])),
    params(("model" = String, Path, description = "A model id")),
    responses(
        (status = 200, description = "The model", body = ModelObject),
        (status = 401, description = "Missing, invalid or revoked API key, or an expired one (`key_expired`)", body = OpenAiErrorBody),
        (status = 403, description = "The account is disabled (`account_disabled`)", body = OpenAiErrorBody),
        (status = 404, description = "No such model (`model_not_found`)", body = OpenAiErrorBody),
    ))]
pub(crate) async fn get_model(
    state: web::Data<AppState>,
    caller: Result<ApiKeyCaller, ApiError>,
    model: web::Path<String>,
) -> HttpResponse {
    if let Err(error) = caller {
        return render(error);
    }
    let known = state
        .openai_models
        .resolve(Some(model.as_str()), state.generations.models())
        .is_ok();
    if known {
        HttpResponse::Ok().json(model_object(&model))
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
