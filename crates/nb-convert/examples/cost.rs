//! What one conversion costs, per output format, for a 1K and a 4K image (a gradient with
//! noise: about as compressible as a photo). `cargo run --release -p nb-convert --example cost`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::Cursor;
use std::time::Instant;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use nb_domain::generation::{ImageFormat, OutputEncoding};

fn photo_like(side: u32) -> Vec<u8> {
    let mut noise = 0x2545_F491_4F6C_DD1Du64;
    let image = image::RgbImage::from_fn(side, side, |x, y| {
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let grain = (noise % 24) as u32;
        image::Rgb([
            ((x * 255 / side + grain) % 256) as u8,
            ((y * 255 / side + grain) % 256) as u8,
            (((x + y) * 127 / side + grain) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    PngEncoder::new(Cursor::new(&mut out))
        .write_image(image.as_raw(), side, side, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn main() {
    for (label, side) in [("1K", 1024), ("4K", 4096)] {
        let png = photo_like(side);
        println!(
            "{label} ({side}x{side}), source PNG {} KB",
            png.len() / 1024
        );
        for (name, format, quality) in [
            ("jpeg q85", ImageFormat::Jpeg, 85),
            ("webp q80", ImageFormat::Webp, 80),
            ("png", ImageFormat::Png, 100),
        ] {
            let to = OutputEncoding {
                format,
                quality,
                quality_asked: true,
            };
            let runs = if side > 2000 { 3 } else { 10 };
            let started = Instant::now();
            let mut size = 0;
            for _ in 0..runs {
                size = nb_convert::convert(&png, to).unwrap().len();
            }
            let each = started.elapsed() / runs;
            println!(
                "  → {name}: {:.0} ms, {} KB",
                each.as_secs_f64() * 1e3,
                size / 1024
            );
        }
    }
}
