//! `stream: true` on the OpenAI image routes: a `text/event-stream` answer with OpenAI's events,
//! as the official SDKs parse them. The work runs in its own task: it goes on (and the images
//! are stored, recorded and counted: they were paid for) when the client goes away.
//!
//! - A refusal before any work (a quota, the key stopping being usable, a conversation that
//!   cannot be continued) is the usual JSON error: the stream starts only once the images are
//!   reserved.
//! - Then one `image_generation.completed` (`image_edit.completed`) event per image, as each
//!   is made, with `b64_json`, `created_at`, `size`, `quality`, `background`, `output_format`
//!   and that image's `usage`, plus (ours, beside OpenAI's fields) `cost_usd`: what it cost,
//!   since a stream's headers are sent before any image, and so carry no `x-nb-cost-usd`.
//!   Google makes no partial images: none are sent, whatever `partial_images` asks.
//! - When no image could be made, one `error` event with OpenAI's error object.
//! - A comment line every 15 s keeps proxies from closing an idle stream.

use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header;
use bytes::Bytes;
use nb_domain::api_keys::AuthenticatedApiKey;
use nb_domain::generation::{BatchEvent, Generation, GenerationRequest, Generations, ImageCount};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use nb_domain::generation::Standings;

use crate::body_budget::BodyReservation;
use crate::error::ApiError;
use crate::generation_flow::outcome::record_outcomes;
use crate::headers::insert_standings;
use crate::openai::answer::{OpenAiUsage, image_bytes, output_format};
use crate::openai::error::{OpenAiError, render};

/// How often an idle stream gets a comment line.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Which route streams: its events' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Generation,
    Edit,
}

impl StreamKind {
    fn completed(self) -> &'static str {
        match self {
            Self::Generation => "image_generation.completed",
            Self::Edit => "image_edit.completed",
        }
    }
}

/// Runs the batch and answers with its events (or with the error that refused it).
pub(crate) async fn respond_streaming(
    generations: Arc<dyn Generations>,
    caller: AuthenticatedApiKey,
    request: GenerationRequest,
    count: ImageCount,
    kind: StreamKind,
    held_body: Option<BodyReservation>,
) -> HttpResponse {
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let recorded = request.clone();
    let work = tokio::spawn(async move {
        let batch = generations
            .generate_images_streamed(caller, request, count, events)
            .await;
        // The request's images are no longer held: its share of the body budget goes back.
        drop(held_body);
        // Counted whether or not anyone still listens.
        let outcome = record_outcomes(&recorded, batch.result);
        (outcome, batch.standings)
    });
    match received.recv().await {
        Some(BatchEvent::Started(standings)) => {
            let mut response = HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .insert_header(("x-accel-buffering", "no"))
                .streaming(events_of(received, work, kind));
            insert_standings(response.headers_mut(), &standings);
            response
        }
        _ => refused(work).await,
    }
}

/// The batch's task: what it came to (counted in the metrics), and the tightest quota.
type Work = JoinHandle<(Result<Vec<Generation>, ApiError>, Standings)>;

/// The batch was refused before any work: its error, as JSON.
async fn refused(work: Work) -> HttpResponse {
    match work.await {
        Ok((Err(error), standings)) => {
            let mut response = render(error);
            insert_standings(response.headers_mut(), &standings);
            response
        }
        Ok((Ok(_), _)) => render(ApiError::internal(
            "a streamed batch ended without starting",
        )),
        Err(crashed) => render(ApiError::internal(crashed)),
    }
}

struct Streaming {
    received: UnboundedReceiver<BatchEvent>,
    work: Option<Work>,
    keep_alive: tokio::time::Interval,
    kind: StreamKind,
}

fn events_of(
    received: UnboundedReceiver<BatchEvent>,
    work: Work,
    kind: StreamKind,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let state = Streaming {
        received,
        work: Some(work),
        keep_alive,
        kind,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        // Ended: the batch's last word was said.
        state.work.as_ref()?;
        tokio::select! {
            event = state.received.recv() => match event {
                Some(BatchEvent::Made(generation)) => {
                    let event = completed(state.kind, &generation);
                    Some((Ok(event), state))
                }
                Some(BatchEvent::Started(_)) => Some((Ok(Bytes::new()), state)),
                None => {
                    // The batch is over: an error event when it made nothing (a batch is an
                    // error only then).
                    let work = state.work.take()?;
                    let failure = match work.await {
                        Ok((Err(error), _)) => Some(error),
                        Ok(_) => None,
                        Err(crashed) => Some(ApiError::internal(crashed)),
                    };
                    failure.map(|error| (Ok(error_event(error)), state))
                }
            },
            _ = state.keep_alive.tick() => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), state)),
        }
    })
}

/// One server-sent event.
fn event(name: &str, data: &serde_json::Value) -> Bytes {
    let mut bytes = format!("event: {name}\ndata: ").into_bytes();
    let _ = serde_json::to_writer(&mut bytes, data);
    bytes.extend_from_slice(b"\n\n");
    Bytes::from(bytes)
}

fn completed(kind: StreamKind, generation: &Generation) -> Bytes {
    let size = generation.dimensions.map_or_else(
        || "auto".to_owned(),
        |(width, height)| format!("{width}x{height}"),
    );
    let data = serde_json::json!({
        "type": kind.completed(),
        "b64_json": base64_simd::STANDARD.encode_to_string(image_bytes(generation)),
        "created_at": generation.created_at.unix_timestamp(),
        "size": size,
        "quality": generation.shape.quality_label(&generation.model),
        "background": "opaque",
        "output_format": output_format(generation.image.format()),
        "usage": OpenAiUsage::of([generation]),
        "cost_usd": generation.cost.to_string(),
    });
    event(kind.completed(), &data)
}

fn error_event(error: ApiError) -> Bytes {
    event("error", &OpenAiError(error).event_data())
}
