//! The floor of a generation's own work on this machine, for the benchmark: in a tight loop
//! over one upstream answer (the fake Google's, saved to a file), the least any gateway must
//! do with it — a typed, borrowing parse of the JSON, a SIMD base64 decode, and writing the
//! image to a new file in the given folder — and, for the durable commit, one small write and
//! `fsync` in that folder. Prints one JSON object of medians in milliseconds.
//!
//! `floor ANSWER.json FOLDER [ROUNDS]`

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

fn main() {
    let mut arguments = std::env::args().skip(1);
    let answer_path = arguments
        .next()
        .expect("usage: floor ANSWER.json FOLDER [ROUNDS]");
    let folder = std::path::PathBuf::from(arguments.next().expect("a folder"));
    let rounds: usize = arguments.next().map_or(200, |n| n.parse().expect("rounds"));
    let body = std::fs::read(answer_path).expect("the answer");
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
