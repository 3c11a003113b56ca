//! The floor of a generation's own work on this machine, for the benchmark: in a tight loop
//! over one upstream answer (the fake Google's, saved to a file), the least any gateway must
//! do with it — a typed, borrowing parse of the JSON, a SIMD base64 decode, and writing the
//! image to a new file in the given folder — and, for the durable commit, one small write and
//! `fsync` in that folder. Prints one JSON object of medians in milliseconds.
//!
//! With `--s3 ENDPOINT ACCESS_KEY SECRET_KEY BUCKET`, the floor of S3 storage instead: the same
//! parse and decode, then the S3 adapter's own upload to that server, one at a time; reported as the process's CPU time per image (the
//! server's own time is not the gateway's).
//!
//! `floor ANSWER.json FOLDER [ROUNDS] [--s3 ENDPOINT ACCESS_KEY SECRET_KEY BUCKET]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::Instant;

use serde::Deserialize;

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    candidates: Vec<Candidate<'a>>,
}

#[derive(Deserialize)]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Content<'a>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "inlineData", borrow)]
    inline_data: Option<InlineData<'a>>,
}

#[derive(Deserialize)]
struct InlineData<'a> {
    data: &'a str,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn milliseconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The image in the answer: the typed, borrowing parse and the SIMD decode.
fn parse_and_decode(body: &[u8]) -> Vec<u8> {
    let answer: Answer<'_> = serde_json::from_slice(body).expect("an answer");
    let data = answer.candidates[0].content.parts[0]
        .inline_data
        .as_ref()
        .expect("an image part")
        .data;
    base64_simd::STANDARD.decode_to_vec(data).expect("base64")
}

/// This process's CPU time so far (user + system), in milliseconds.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks * 10.0
}

/// The S3 floor: parse, decode and the S3 adapter's own upload (`S3Storage::put`: rust-s3,
/// SigV4-signed, path style, and the image's URL), `rounds` times, on one thread.
fn s3_floor(body: &[u8], rounds: usize, endpoint: &str, access: &str, secret: &str, bucket: &str) {
    use nb_domain::generation::{GeneratedImage, GenerationId, ObjectKey};
    use nb_domain::ports::ObjectStorage as _;

    let storage = nb_storage::S3Storage::new(nb_storage::S3Settings {
        account_id: None,
        endpoint: Some(endpoint.to_owned()),
        region: "auto".into(),
        access_key: access.to_owned(),
        secret_key: nb_storage::S3Secret::new(secret.to_owned()),
        bucket: bucket.to_owned(),
        public_url: None,
        presign_expiry: std::time::Duration::from_secs(3600),
        request_timeout: std::time::Duration::from_secs(30),
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let put = |image: Vec<u8>| {
        let image = GeneratedImage::from_bytes(image.into()).unwrap();
        let key = ObjectKey::for_generation(
            GenerationId(uuid::Uuid::now_v7()),
            time::OffsetDateTime::now_utc(),
            image.format(),
        );
        let storage = &storage;
        async move { storage.put(&key, &image).await.unwrap() }
    };
    runtime.block_on(async {
        // One upload first: opening the connection is not per image.
        put(parse_and_decode(body)).await;
        let (mut upload, started_cpu) = (Vec::new(), cpu_ms());
        let mut image_bytes = 0;
        for _ in 0..rounds {
            let image = parse_and_decode(body);
            image_bytes = image.len();
            let started = Instant::now();
            put(image).await;
            upload.push(milliseconds(started));
        }
        let cpu_per_image = (cpu_ms() - started_cpu) / rounds as f64;
        println!(
            "{{\"answer_bytes\": {}, \"image_bytes\": {image_bytes}, \"upload_ms\": {:.4}, \
             \"cpu_ms_per_image\": {cpu_per_image:.4}}}",
            body.len(),
            median(upload)
        );
    });
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let (arguments, s3) = match arguments.iter().position(|a| a == "--s3") {
        Some(at) => (arguments[..at].to_vec(), Some(arguments[at + 1..].to_vec())),
        None => (arguments, None),
    };
    let mut arguments = arguments.into_iter();
    let answer_path = arguments
        .next()
        .expect("usage: floor ANSWER.json FOLDER [ROUNDS] [--s3 ENDPOINT ACCESS SECRET BUCKET]");
    let folder = std::path::PathBuf::from(arguments.next().expect("a folder"));
    let rounds: usize = arguments.next().map_or(200, |n| n.parse().expect("rounds"));
    let body = std::fs::read(answer_path).expect("the answer");
    if let Some(s3) = s3 {
        let [endpoint, access, secret, bucket] = s3.as_slice() else {
            panic!("--s3 ENDPOINT ACCESS_KEY SECRET_KEY BUCKET");
        };
        s3_floor(&body, rounds, endpoint, access, secret, bucket);
        return;
    }
    std::fs::create_dir_all(&folder).expect("the folder");
    let (mut parse, mut decode, mut write) = (Vec::new(), Vec::new(), Vec::new());
    let mut image_bytes = 0;
    for round in 0..rounds {
        let started = Instant::now();
        let answer: Answer<'_> = serde_json::from_slice(&body).expect("an answer");
        let data = answer.candidates[0].content.parts[0]
            .inline_data
            .as_ref()
            .expect("an image part")
            .data;
        parse.push(milliseconds(started));
        let started = Instant::now();
        let image = base64_simd::STANDARD.decode_to_vec(data).expect("base64");
        decode.push(milliseconds(started));
        image_bytes = image.len();
        let started = Instant::now();
        std::fs::write(folder.join(format!("floor-{round}.png")), &image).expect("write");
        write.push(milliseconds(started));
    }
    let mut fsync = Vec::new();
    for round in 0..50 {
        let started = Instant::now();
        let mut file = std::fs::File::create(folder.join(format!("fsync-{round}"))).unwrap();
        file.write_all(&[0u8; 4096]).unwrap();
        file.sync_data().unwrap();
        fsync.push(milliseconds(started));
    }
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("floor-") || name.starts_with("fsync-") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (parse, decode, write) = (median(parse), median(decode), median(write));
    println!(
        "{{\"answer_bytes\": {}, \"image_bytes\": {image_bytes}, \"parse_ms\": {parse:.4}, \
         \"decode_ms\": {decode:.4}, \"write_ms\": {write:.4}, \"total_ms\": {:.4}, \
         \"fsync_ms\": {:.4}}}",
        body.len(),
        parse + decode + write,
        median(fsync)
    );
}
