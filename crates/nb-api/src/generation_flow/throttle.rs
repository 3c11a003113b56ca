//! The per-minute limits of a generating request: its work runs only when the caller is
//! within them, and its answer carries the key's standing either way.

use actix_web::HttpResponse;
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::rate_limit::ThrottleError;

use crate::error::ApiError;
use crate::headers::insert_rate_limit;
use crate::state::AppState;

/// Runs `work` when the caller is within its rate limits; either way the answer carries the
/// key's `x-ratelimit-*` headers, and errors are rendered by `render` (each API its own way).
pub async fn throttled(
    state: &AppState,
    caller: AuthenticatedApiKey,
    render: impl Fn(ApiError) -> HttpResponse,
    work: impl Future<Output = Result<HttpResponse, ApiError>>,
) -> HttpResponse {
    let standing = state.throttle.generation(&caller).await;
    let key_standing = match &standing {
        Ok(decision) | Err(ThrottleError::Limited { decision, .. }) => Some(*decision),
        Err(ThrottleError::Limiter(_)) => None,
    };
    let mut response = match standing {
        Err(refused) => render(ApiError::from(refused)),
        Ok(_) => work.await.unwrap_or_else(render),
    };
    if let Some(decision) = key_standing {
        insert_rate_limit(response.headers_mut(), &decision);
    }
    response
}
