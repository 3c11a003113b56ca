//! A fast local fake of Google's `:generateContent` (v1beta and v1) for the benchmark: every
//! call waits the set latency, then answers a real PNG of the set size, base64 in the JSON the
//! API returns. `POST /control {"latency_ms": 2000, "image_bytes": 1500000}` changes both.
//!
//! It knows the model catalog as Google does: a model the built-in catalog lacks is a 404, an
//! `imageSize` or `aspectRatio` the model lacks a 400 `INVALID_ARGUMENT`, and `usageMetadata`
//! counts the output image tokens of the model at the resolution asked. (The image's size is
//! the one set, in bytes, not Google's pixel size: the benchmark measures payloads. With
//! `--google-pixels` the image is instead a flat PNG of Google's pixel size for the ratio and
//! resolution asked, as the browser test needs.) `GET /last-request` answers what the last
//! `:generateContent` call sent: its model, `contents` roles, inline images and `imageConfig`.
//!
//! It speaks HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on one port, and like Google's
//! front ends it caps the streams one HTTP/2 connection may have open at once (100 unless
//! `--max-streams N` says otherwise): a client with a single connection cannot have more
//! calls in flight than that.
//!
//! `cargo run --release -p nb-bench --bin fake-google -- 127.0.0.1:9100 [--max-streams N]
//! [--google-pixels]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use nb_domain::generation::{AspectRatio, ModelCatalog, Resolution};
use serde::Deserialize;

/// Google's front ends advertise this many concurrent streams per HTTP/2 connection.
const DEFAULT_MAX_STREAMS: u32 = 100;

#[derive(Deserialize)]
struct Control {
    latency_ms: u64,
    image_bytes: usize,
}

struct Answer {
    latency: Duration,
    image_bytes: usize,
    /// The answer's JSON up to the end of the image part, and its closing with the usage.
    image_json: Bytes,
}

/// The part of a request this fake reads.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GenerateRequest {
    generation_config: GenerationConfig,
    contents: Vec<Content>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Content {
    role: String,
    parts: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct GenerationConfig {
    image_config: ImageConfig,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ImageConfig {
    aspect_ratio: Option<String>,
    image_size: Option<String>,
}

fn invalid_argument(message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}});
    respond(
        StatusCode::BAD_REQUEST,
        "application/json",
        serde_json::to_vec(&body).unwrap().into(),
    )
}

/// A valid PNG of about `size` bytes: RGB noise (incompressible) in stored deflate blocks.
fn png_of_size(size: usize) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        png.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        png.extend(&body);
        png.extend(crc32(&body).to_be_bytes());
    }
    let side = ((size.saturating_sub(100) / 3) as f64).sqrt().max(1.0) as u32;
    let mut noise = 0x2545_F491_4F6C_DD1Du64;
    let mut next_byte = move || {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        noise as u8
    };
    let row_bytes = side as usize * 3;
    let raw: Vec<u8> = (0..side)
        // Each row: filter type 0 (none), then RGB noise.
        .flat_map(|_| {
            std::iter::once(0).chain((0..row_bytes).map(|_| next_byte()).collect::<Vec<_>>())
        })
        .collect();
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (index, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(index + 1 == blocks.len()));
        zlib.extend((block.len() as u16).to_le_bytes());
        zlib.extend((!(block.len() as u16)).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend(side.to_be_bytes());
    header.extend(side.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn answer(latency_ms: u64, image_bytes: usize) -> Answer {
    answer_with(Duration::from_millis(latency_ms), &png_of_size(image_bytes))
}

/// An answer carrying `png`, after `latency`.
fn answer_with(latency: Duration, png: &[u8]) -> Answer {
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    let image_json = format!(
        r#"{{"candidates": [{{"content": {{"role": "model", "parts": [{{"inlineData": {{"mimeType": "image/png", "data": "{data}"}}}}]}}, "finishReason": "STOP", "index": 0}}], "modelVersion": "fake""#
    );
    Answer {
        latency,
        image_bytes: png.len(),
        image_json: image_json.into(),
    }
}

/// The whole answer: the image, then the usage for `model` at `resolution`.
fn with_usage(answer: &Answer, model: &str, resolution: Resolution) -> Bytes {
    let output = nb_testkit::google_facts::output_image_tokens(model, resolution);
    let usage = format!(
        r#", "usageMetadata": {{"promptTokenCount": 12, "promptTokensDetails": [{{"modality": "TEXT", "tokenCount": 12}}], "candidatesTokenCount": {output}, "candidatesTokensDetails": [{{"modality": "IMAGE", "tokenCount": {output}}}], "totalTokenCount": {}}}}}"#,
        12 + output
    );
    let mut body = Vec::with_capacity(answer.image_json.len() + usage.len());
    body.extend_from_slice(&answer.image_json);
    body.extend_from_slice(usage.as_bytes());
    body.into()
}

type Current = Arc<RwLock<Arc<Answer>>>;

/// How the fake is run, and what it saw last.
struct Fake {
    current: Current,
    google_pixels: bool,
    last_request: RwLock<serde_json::Value>,
}

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body))
        .unwrap()
}

async fn handle(
    fake: Arc<Fake>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let is_post = request.method() == Method::POST;
    // The request body is read whole, as Google does before answering.
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()));
    };
    if is_post && path == "/control" {
        let Ok(control) = serde_json::from_slice::<Control>(&body) else {
            return Ok(respond(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()));
        };
        *fake.current.write().unwrap() = Arc::new(answer(control.latency_ms, control.image_bytes));
        return Ok(respond(StatusCode::NO_CONTENT, "text/plain", Bytes::new()));
    }
    if path == "/last-request" {
        let seen = serde_json::to_vec(&*fake.last_request.read().unwrap()).unwrap();
        return Ok(respond(StatusCode::OK, "application/json", seen.into()));
    }
    let generates = path.split('/').nth(2) == Some("models") && path.ends_with(":generateContent");
    if !(is_post && generates) {
        return Ok(respond(StatusCode::NOT_FOUND, "text/plain", Bytes::new()));
    }
    // The model as Google names it, and what the catalog says it can make.
    let model = path
        .rsplit('/')
        .next()
        .and_then(|last| last.strip_suffix(":generateContent"))
        .unwrap_or_default()
        .to_owned();
    static CATALOG: std::sync::LazyLock<ModelCatalog> =
        std::sync::LazyLock::new(ModelCatalog::built_in);
    let Some(spec) = CATALOG.find(&model).filter(|spec| spec.id == model) else {
        let body = serde_json::json!({"error": {"code": 404, "message": format!("models/{model} is not found"), "status": "NOT_FOUND"}});
        return Ok(respond(
            StatusCode::NOT_FOUND,
            "application/json",
            serde_json::to_vec(&body).unwrap().into(),
        ));
    };
    let asked: GenerateRequest = serde_json::from_slice(&body).unwrap_or_default();
    let config = asked.generation_config.image_config;
    let resolution = match config.image_size.as_deref() {
        None => Resolution::K1,
        Some(raw) => match Resolution::parse(raw)
            .ok()
            .filter(|r| spec.resolutions.contains(r))
        {
            Some(resolution) => resolution,
            None => return Ok(invalid_argument(&format!("Unsupported image size: {raw}"))),
        },
    };
    if let Some(raw) = config.aspect_ratio.as_deref()
        && !AspectRatio::parse(raw).is_ok_and(|ratio| spec.aspect_ratios.contains(&ratio))
    {
        return Ok(invalid_argument(&format!(
            "Unsupported aspect ratio: {raw}"
        )));
    }
    let mut answer = fake.current.read().unwrap().clone();
    if fake.google_pixels {
        *fake.last_request.write().unwrap() = serde_json::json!({
            "model": spec.id,
            "roles": asked.contents.iter().map(|content| content.role.as_str()).collect::<Vec<_>>(),
            "inline_images": asked.contents.iter()
                .flat_map(|content| &content.parts)
                .filter(|part| part.get("inlineData").is_some())
                .count(),
            "aspect_ratio": config.aspect_ratio,
            "image_size": config.image_size,
        });
        let ratio = config.aspect_ratio.as_deref().unwrap_or("1:1");
        let (width, height) = nb_testkit::google_facts::google_pixel_size(ratio, resolution);
        answer = Arc::new(answer_with(
            answer.latency,
            &nb_testkit::google_facts::flat_png(width, height),
        ));
    }
    if !answer.latency.is_zero() {
        tokio::time::sleep(answer.latency).await;
    }
    debug_assert!(answer.image_bytes > 0);
    Ok(respond(
        StatusCode::OK,
        "application/json",
        with_usage(&answer, &spec.id, resolution),
    ))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let mut address = "127.0.0.1:9100".to_owned();
    let mut max_streams = DEFAULT_MAX_STREAMS;
    let mut google_pixels = false;
    while let Some(argument) = arguments.next() {
        if argument == "--google-pixels" {
            google_pixels = true;
        } else if argument == "--max-streams" {
            max_streams = arguments
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--max-streams N");
        } else {
            address = argument;
        }
    }
    let fake = Arc::new(Fake {
        current: Arc::new(RwLock::new(Arc::new(answer(0, 2048)))),
        google_pixels,
        last_request: RwLock::new(serde_json::Value::Null),
    });
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address.parse().expect("an address like 127.0.0.1:9100"))?;
    let listener = socket.listen(16_384)?;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let fake = fake.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(fake.clone(), request));
            let mut connection = ConnectionBuilder::new(TokioExecutor::new());
            connection.http2().max_concurrent_streams(max_streams);
            let _ = connection
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
