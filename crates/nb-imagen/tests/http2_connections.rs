//! The client against a real HTTP/2 (h2c) server that caps the streams per connection, as
//! Google's front ends do: calls past the cap go over more connections instead of waiting,
//! and a 1.5 MB image arriving in many HTTP/2 frames is read byte for byte.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use nb_domain::generation::{AllowedModels, ImageRequest};
use nb_domain::ports::ImageProvider;
use nb_imagen::{GeminiImageClient, GeminiSettings, GoogleApiKey};
use tokio::sync::Notify;

/// What the server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Woken when the calls in flight reach the number the test waits for.
    all_in: Notify,
}

/// An h2c server allowing `max_streams` streams per connection. Each call is held until
/// `hold_until` calls are in flight at once (or a second has passed), then gets `answer`.
async fn h2c_server(max_streams: u32, hold_until: usize, answer: Bytes) -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let server_seen = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            server_seen.connections.fetch_add(1, Ordering::SeqCst);
            let (seen, answer) = (server_seen.clone(), answer.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_: Request<_>| {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    async move {
                        let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.most_in_flight.fetch_max(now, Ordering::SeqCst);
                        if now >= hold_until {
                            seen.all_in.notify_waiters();
                        } else {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                seen.all_in.notified(),
                            )
                            .await;
                        }
                        seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(answer))
                                .unwrap(),
                        )
                    }
                });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http2().max_concurrent_streams(max_streams);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}"), seen)
}

fn png(len: usize) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend((0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8));
    png
}

fn answer_with(image: &[u8]) -> Bytes {
    let data = base64::engine::general_purpose::STANDARD.encode(image);
    let body = serde_json::json!({"candidates": [{"content": {"role": "model", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": data}}]}, "finishReason": "STOP"}]});
    serde_json::to_vec(&body).unwrap().into()
}

fn client(base_url: String, streams_per_connection: usize) -> Arc<GeminiImageClient> {
    let mut settings = GeminiSettings::new(GoogleApiKey::new("AIzaSy-test".into()));
    settings.base_url = base_url;
    settings.http2_prior_knowledge = true;
    settings.streams_per_connection = streams_per_connection;
    settings.max_retries = 0;
    Arc::new(GeminiImageClient::new(settings).unwrap())
}

fn request() -> ImageRequest {
    ImageRequest {
        model: AllowedModels::new(["gemini-3.1-flash-image".to_owned()])
            .unwrap()
            .default_model()
            .clone(),
        text: "a banana".into(),
        aspect_ratio: None,
        image_size: None,
        images: Vec::new(),
        history: Vec::new(),
        output: None,
        may_spool: false,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn calls_past_a_connections_stream_cap_go_over_more_connections() {
    let image = png(1000);
    let (base_url, seen) = h2c_server(2, 6, answer_with(&image)).await;
    let client = client(base_url, 2);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.generate(&request()).await })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await
                .unwrap()
                .unwrap()
                .image
                .in_memory()
                .unwrap()
                .bytes()
                .as_ref(),
            image
        );
    }
    // With one connection, the server's cap of 2 streams would have held the other 4 back.
    assert_eq!(seen.most_in_flight.load(Ordering::SeqCst), 6);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_large_image_in_many_frames_is_read_byte_for_byte() {
    // 1.5 MB of image: ~2 MB of base64 in ~125 HTTP/2 DATA frames of 16 KB.
    let image = png(1_500_000);
    let (base_url, _) = h2c_server(100, 1, answer_with(&image)).await;
    let client = client(base_url, 100);
    for _ in 0..3 {
        let generated = client.generate(&request()).await.unwrap();
        assert_eq!(
            generated.image.in_memory().unwrap().bytes().len(),
            image.len()
        );
        assert!(
            generated.image.in_memory().unwrap().bytes().as_ref() == image,
            "the bytes differ"
        );
    }
}

fn spooling_client(base_url: String, folder: &std::path::Path) -> GeminiImageClient {
    let mut settings = GeminiSettings::new(GoogleApiKey::new("AIzaSy-test".into()));
    settings.base_url = base_url;
    settings.http2_prior_knowledge = true;
    settings.max_retries = 0;
    GeminiImageClient::new(settings)
        .unwrap()
        .with_spool(nb_imagen::SpoolFolder::new(folder).unwrap())
}

fn files_in(folder: &std::path::Path) -> usize {
    std::fs::read_dir(folder).unwrap().count()
}

/// A large image goes from the answer to a spool file a piece at a time, byte for byte; the
/// file is gone when the image is dropped. A request that needs the image whole (converted,
/// or answered) gets it in memory, and an answer that is no image leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_image_is_spooled_to_a_file_and_the_file_goes_with_it() {
    let image = png(nb_imagen::SPOOL_AFTER_BYTES + 5 * nb_imagen::SPOOL_PIECE_BYTES / 2);
    let (base_url, _) = h2c_server(100, 1, answer_with(&image)).await;
    let folder = tempfile::tempdir().unwrap();
    let client = spooling_client(base_url, folder.path());
    let mut spooled = request();
    spooled.may_spool = true;
    let provided = client.generate(&spooled).await.unwrap();
    let nb_domain::generation::ImageData::Spooled(file) = &provided.image else {
        panic!("held in memory: {:?}", provided.image);
    };
    assert_eq!(file.len(), image.len() as u64);
    assert_eq!(file.format(), nb_domain::generation::ImageFormat::Png);
    assert_eq!(std::fs::read(file.file().path()).unwrap(), image);
    assert_eq!(files_in(folder.path()), 1);
    drop(provided);
    assert_eq!(
        files_in(folder.path()),
        0,
        "the spool file outlived its image"
    );

    let whole = client.generate(&request()).await.unwrap();
    assert_eq!(whole.image.in_memory().unwrap().bytes().as_ref(), image);
    assert_eq!(files_in(folder.path()), 0);
}

/// An image of a 1K size (up to `SPOOL_AFTER_BYTES`) is held in memory even when it may be
/// spooled: a file would cost a write and a read for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_image_is_held_in_memory() {
    let image = png(nb_imagen::SPOOL_AFTER_BYTES - 100);
    let (base_url, _) = h2c_server(100, 1, answer_with(&image)).await;
    let folder = tempfile::tempdir().unwrap();
    let mut spooled = request();
    spooled.may_spool = true;
    let provided = spooling_client(base_url, folder.path())
        .generate(&spooled)
        .await
        .unwrap();
    assert_eq!(provided.image.in_memory().unwrap().bytes().as_ref(), image);
    assert_eq!(files_in(folder.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_no_image_leaves_no_spool_file() {
    let not_an_image = vec![0u8; 2 * nb_imagen::SPOOL_AFTER_BYTES];
    let (base_url, _) = h2c_server(100, 1, answer_with(&not_an_image)).await;
    let folder = tempfile::tempdir().unwrap();
    let client = spooling_client(base_url, folder.path());
    let mut spooled = request();
    spooled.may_spool = true;
    assert!(client.generate(&spooled).await.is_err());
    assert_eq!(files_in(folder.path()), 0);
}

/// A disk that fills up while an image is spooled: the call fails, and nothing is left in
/// the spool folder. Needs a small tmpfs, which the test mounts (root; CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_while_spooling_fails_the_call_and_leaves_nothing() {
    let disk = nb_testkit::small_disk::SmallDisk::mount(3 * nb_imagen::SPOOL_AFTER_BYTES / 2)
        .expect("cannot mount a tmpfs: this test needs root (CI runs as root)");
    let image = png(3 * nb_imagen::SPOOL_AFTER_BYTES);
    let (base_url, _) = h2c_server(100, 1, answer_with(&image)).await;
    let client = spooling_client(base_url, disk.path());
    let mut spooled = request();
    spooled.may_spool = true;
    assert!(client.generate(&spooled).await.is_err());
    assert_eq!(files_in(disk.path()), 0);
    // Room again (a smaller image): it works.
    let small = png(nb_imagen::SPOOL_AFTER_BYTES + 10);
    let (base_url, _) = h2c_server(100, 1, answer_with(&small)).await;
    let provided = spooling_client(base_url, disk.path())
        .generate(&spooled)
        .await
        .unwrap();
    assert!(
        matches!(provided.image, nb_domain::generation::ImageData::Spooled(_)),
        "held in memory"
    );
    assert_eq!(provided.image.len(), small.len() as u64);
}
