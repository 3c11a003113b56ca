//! A fast local fake of Google's `:generateContent` (v1beta and v1) for the benchmark: every
//! call waits the set latency, then answers a real PNG of the set size, base64 in the JSON the
//! API returns. `POST /control {"latency_ms": 2000, "image_bytes": 1500000}` changes both.
//!
//! `cargo run --release -p nb-http --example fake-google -- 127.0.0.1:9100`

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine as _;
use serde::Deserialize;

#[derive(Deserialize)]
struct Control {
    latency_ms: u64,
    image_bytes: usize,
}

struct Answer {
    latency: Duration,
    body: web::Bytes,
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
    let png = png_of_size(image_bytes);
    let data = base64::engine::general_purpose::STANDARD.encode(&png);
    let body = serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": data}}]}, "finishReason": "STOP", "index": 0}],
        "modelVersion": "fake"});
    Answer {
        latency: Duration::from_millis(latency_ms),
        body: serde_json::to_vec(&body).unwrap().into(),
    }
}

async fn generate(current: web::Data<RwLock<Arc<Answer>>>) -> HttpResponse {
    let answer = current.read().unwrap().clone();
    if !answer.latency.is_zero() {
        tokio::time::sleep(answer.latency).await;
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .body(answer.body.clone())
}

async fn control(
    current: web::Data<RwLock<Arc<Answer>>>,
    body: web::Json<Control>,
) -> HttpResponse {
    *current.write().unwrap() = Arc::new(answer(body.latency_ms, body.image_bytes));
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let current = web::Data::new(RwLock::new(Arc::new(answer(0, 2048))));
    HttpServer::new(move || {
        App::new()
            .app_data(current.clone())
            .app_data(web::JsonConfig::default().limit(1 << 20))
            .route("/control", web::post().to(control))
            .route(
                "/{version}/models/{model}:generateContent",
                web::post().to(generate),
            )
    })
    .backlog(16_384)
    .max_connections(100_000)
    // HTTP/1.1 and h2c (HTTP/2 with prior knowledge) on the same port.
    .bind_auto_h2c(address)?
    .run()
    .await
}
