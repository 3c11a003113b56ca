//! What Google counts and makes, for the fakes of Google (the API tests', the benchmark's and
//! the browser test's): the output image tokens of each model at each resolution, from Google's
//! price list, and the pixel size of each ratio at each resolution (see docs/models.md).

use nb_domain::generation::{AspectRatio, Resolution};

/// Output image tokens of one image of `model` at `resolution`.
pub fn output_image_tokens(model: &str, resolution: Resolution) -> u64 {
    match (model, resolution) {
        ("gemini-3.1-flash-image", Resolution::Px512) => 747,
        ("gemini-3.1-flash-image", Resolution::K2) => 1680,
        ("gemini-3.1-flash-image", Resolution::K4) => 2520,
        ("gemini-3-pro-image", Resolution::K4) => 2000,
        ("gemini-2.5-flash-image", _) => 1290,
        _ => 1120,
    }
}

/// Google's pixel sizes at 1K (its documentation's table); 2K doubles each side, 4K
/// quadruples, 512 halves.
const ONE_K: [(&str, u32, u32); 10] = [
    ("1:1", 1024, 1024),
    ("2:3", 848, 1264),
    ("3:2", 1264, 848),
    ("3:4", 896, 1200),
    ("4:3", 1200, 896),
    ("4:5", 928, 1152),
    ("5:4", 1152, 928),
    ("9:16", 768, 1376),
    ("16:9", 1376, 768),
    ("21:9", 1584, 672),
];

/// The pixel size Google makes for `ratio` at `resolution`.
pub fn google_pixel_size(ratio: &str, resolution: Resolution) -> (u32, u32) {
    let (width, height) = ONE_K
        .iter()
        .find(|(known, _, _)| *known == ratio)
        .map(|(_, width, height)| (*width, *height))
        .unwrap_or_else(|| {
            // The very wide ratios of 3.1 Flash: the square's area, in steps of 16.
            let ratio = AspectRatio::parse(ratio)
                .expect("a ratio of the catalog")
                .ratio();
            let side = |x: f64| ((x / 16.0).round() * 16.0) as u32;
            (side(1024.0 * ratio.sqrt()), side(1024.0 / ratio.sqrt()))
        });
    match resolution {
        Resolution::Px512 => (width / 2, height / 2),
        Resolution::K1 => (width, height),
        Resolution::K2 => (width * 2, height * 2),
        Resolution::K4 => (width * 4, height * 4),
    }
}

/// A flat banana-yellow PNG of `width`×`height`, at one bit per pixel (a 5504x3072 image is
/// a few KB).
pub fn flat_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_palette(vec![0xff, 0xff, 0xff, 0xff, 0xe0, 0x66]);
    let mut writer = encoder.write_header().expect("a PNG header");
    let row = (width as usize).div_ceil(8);
    writer
        .write_image_data(&vec![0xff; row * height as usize])
        .expect("the PNG's rows");
    writer.finish().expect("the PNG's end");
    out
}
