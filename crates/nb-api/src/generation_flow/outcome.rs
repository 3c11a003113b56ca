//! What every generating route does with the result: count it in the metrics, and time it
//! (`Server-Timing`, the gateway-overhead histogram).

use std::time::Duration;

use actix_web::{HttpMessage, HttpRequest};
use nb_domain::generation::{GenerateError, Generation, GenerationRequest};

use crate::error::ApiError;
use crate::middleware::request_context::RequestStarted;

/// Counts each image made (and a failure) in the metrics; the error as an `ApiError`.
pub fn record_outcomes(
    request: &GenerationRequest,
    result: Result<Vec<Generation>, GenerateError>,
) -> Result<Vec<Generation>, ApiError> {
    let model = request.model.as_str();
    match result {
        Ok(generations) => {
            for generation in &generations {
                crate::metrics::record_generation(model, "succeeded");
                crate::metrics::record_cost(model, generation.cost);
            }
            Ok(generations)
        }
        Err(error) => {
            let error = ApiError::from(error);
            crate::metrics::record_generation(model, error.code());
            Err(error)
        }
    }
}

/// `Server-Timing` of a generation (milliseconds; `total` from the request's arrival), and
/// the gateway overhead metric.
pub fn server_timing(request: &HttpRequest, generation: &Generation) -> (&'static str, String) {
    let started = request
        .extensions()
        .get::<RequestStarted>()
        .map(|started| started.0);
    let total = started.map_or(Duration::ZERO, |started| started.elapsed());
    let timings = generation.timings;
    crate::metrics::record_gateway_overhead(
        total.saturating_sub(timings.upstream),
        timings.database,
    );
    let milliseconds = |duration: Duration| duration.as_secs_f64() * 1e3;
    let value = format!(
        "upstream;dur={:.1}, storage;dur={:.1}, db;dur={:.1}, total;dur={:.1}",
        milliseconds(timings.upstream),
        milliseconds(timings.storage),
        milliseconds(timings.database),
        milliseconds(total),
    );
    ("server-timing", value)
}
