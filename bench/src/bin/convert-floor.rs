//! S-convert, for the benchmark: what converting a model's PNG into the format a client asked
//! for (`output_format`) costs on this machine, at 1K (1024×1024) and 4K (4096×4096). The image
//! is made here: a gradient with noise, so that it compresses like a photograph rather than a
//! flat test card (a PNG of it is ~3 MB at 1K, ~48 MB at 4K).
//!
//! For each size and target (WebP and JPEG at quality 80), the floor is the conversion itself
//! (`nb_convert::convert`, on this thread), and the measured path is the server's converter
//! (`ImageCrateConverter`: the blocking pool, at most one conversion per core). Prints one JSON
//! object of medians in milliseconds.
//!
//! `convert-floor [ROUNDS]`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bytes::Bytes;
use nb_convert::ImageCrateConverter;
use nb_domain::generation::{GeneratedImage, ImageConverter, ImageFormat, OutputEncoding};

/// A `side`×`side` RGB PNG of a gradient with noise (a fixed xorshift, so every run converts
/// the same pixels).
fn photograph_like_png(side: u32) -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 48) as u8
    };
    let pixels = image::RgbImage::from_fn(side, side, |x, y| {
        let (x, y) = ((x * 255 / side) as u8, (y * 255 / side) as u8);
        image::Rgb([
            x.saturating_add(noise()),
            y.saturating_add(noise()),
            (x / 2 + y / 2).saturating_add(noise()),
        ])
    });
    let mut png = Vec::new();
    pixels
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |n| n.parse().expect("rounds"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let converter = ImageCrateConverter::per_core();
    let mut results = Vec::new();
    for (name, side) in [("1K", 1024), ("4K", 4096)] {
        let png = photograph_like_png(side);
        let image = GeneratedImage::from_bytes(Bytes::from(png.clone())).unwrap();
        for format in [ImageFormat::Webp, ImageFormat::Jpeg] {
            let to = OutputEncoding {
                format,
                quality: 80,
                quality_asked: true,
            };
            let (mut floor, mut measured) = (Vec::new(), Vec::new());
            let mut out_bytes = 0;
            for _ in 0..rounds {
                let started = Instant::now();
                let converted = nb_convert::convert(&png, to).unwrap();
                floor.push(started.elapsed().as_secs_f64() * 1e3);
                out_bytes = converted.len();
                let started = Instant::now();
                runtime.block_on(converter.convert(&image, to)).unwrap();
                measured.push(started.elapsed().as_secs_f64() * 1e3);
            }
            results.push(format!(
                "{{\"size\": \"{name}\", \"to\": \"{}\", \"png_bytes\": {}, \"out_bytes\": {out_bytes}, \
                 \"floor_ms\": {:.2}, \"converter_ms\": {:.2}}}",
                format.extension(),
                png.len(),
                median(floor),
                median(measured)
            ));
        }
    }
    println!("[{}]", results.join(", "));
}
