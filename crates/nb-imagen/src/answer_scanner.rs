//! Reading a successful answer while it streams in, without holding its 2 MB.
//!
//! A 1.5 MB image arrives as ~2 MB of base64 in one JSON string. Buffering the body, letting
//! serde find the string's end byte by byte and then decoding it cost more than everything else
//! a generation does. The scanner instead looks at each chunk as it arrives: the JSON around
//! the images (a few hundred bytes) is kept as a *skeleton*; the value of every `data`,
//! `bytesBase64Encoded` or `bytes_base64_encoded` key is decoded from the chunk straight into
//! the image buffer (SIMD, the string's end found with `memchr`) and replaced in the skeleton by
//! a placeholder naming it. The skeleton is then parsed by the same typed structs as before.
//!
//! The fast path takes the usual spelling only: standard alphabet, no whitespace, no escapes,
//! padding at the end or none. Anything else (a URL-safe alphabet, wrapped lines, `\/`) turns
//! that string back into its raw JSON — the part already decoded is re-encoded, which is exact
//! for whole quads — and it is read by the general lenient path, as if the fast path did not
//! exist. Malformed JSON outside the strings is left for serde to refuse.

use base64_simd::{STANDARD, STANDARD_NO_PAD};

/// What a placeholder string starts with in the skeleton. JSON text cannot hold a raw NUL, so
/// an upstream string can only look like this by escaping it (`\u0000`), and then it is never
/// on the fast path.
pub(crate) const PLACEHOLDER_PREFIX: &str = "\u{0}nb-extracted:";

/// Keys whose string values are images in Google's answers (camelCase and snake_case).
const IMAGE_KEYS: [&[u8]; 3] = [b"data", b"bytesBase64Encoded", b"bytes_base64_encoded"];
/// Strings longer than this are never one of [`IMAGE_KEYS`].
const LONGEST_KEY: usize = 20;

/// An image string taken out of the skeleton.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Extracted {
    /// Decoded on the fast path.
    Decoded(Vec<u8>),
    /// The string as it was in the JSON, quotes included, for the lenient path.
    Raw(Vec<u8>),
    /// The last bytes of an image whose first ones were spilled ([`AnswerScanner::take_spills`]).
    SpilledTail(Vec<u8>),
    /// The rest of an image string whose first bytes were spilled and which then left the
    /// fast path, as JSON (quotes included) from a whole quad on: decoded leniently, it
    /// follows the spilled bytes.
    RawAfterSpill(Vec<u8>),
}

/// The scanner's output: the JSON with placeholders, and what they stand for.
#[derive(Debug)]
pub(crate) struct ScannedAnswer {
    pub skeleton: Vec<u8>,
    pub extracted: ExtractedStrings,
}

impl ScannedAnswer {
    /// Scans a whole body at once.
    #[cfg(test)]
    pub fn scan(body: &[u8]) -> Self {
        let mut scanner = AnswerScanner::new(body.len());
        scanner.push(body);
        scanner.finish()
    }
}

/// The image strings taken out of the skeleton, in order.
#[derive(Debug, Default)]
pub(crate) struct ExtractedStrings(Vec<Option<Extracted>>);

impl ExtractedStrings {
    /// The string a placeholder names, taken out (each is used once), or `None` if `value` is
    /// not a placeholder.
    pub fn take(&mut self, value: &str) -> Option<(usize, Extracted)> {
        let index: usize = value.strip_prefix(PLACEHOLDER_PREFIX)?.parse().ok()?;
        Some((index, self.0.get_mut(index)?.take()?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between tokens, in the skeleton.
    Between,
    /// Inside a string copied to the skeleton.
    InString { escaped: bool },
    /// Inside an image string, decoding.
    Decoding,
    /// Inside an image string kept raw.
    Raw { escaped: bool },
}

/// Feeds on chunks; see the module's documentation.
pub(crate) struct AnswerScanner {
    state: State,
    skeleton: Vec<u8>,
    extracted: ExtractedStrings,
    /// Where the current skeleton string's content starts in the skeleton.
    string_start: usize,
    /// The last string was a short key followed (so far) only by whitespace.
    last_string: Option<Vec<u8>>,
    /// `"key":` with an image key was just seen: the next string is an image.
    image_value_next: bool,
    /// The image being decoded, and the 0–4 base64 characters not yet decoded.
    decoded: Vec<u8>,
    pending: [u8; 4],
    pending_len: usize,
    /// The raw JSON of an image string off the fast path.
    raw: Vec<u8>,
    /// How much room the first image gets up front (from the answer's Content-Length).
    size_hint: usize,
    /// Decoded image bytes are handed over ([`Self::take_spills`]) once an image has the first
    /// of these, then whenever it has the second; `None`: never (images are held whole).
    spill_at: Option<(usize, usize)>,
    /// Handed-over pieces not taken yet: (the image string's index, its next bytes).
    spills: Vec<(usize, Vec<u8>)>,
    /// The current image string has spilled.
    spilled: bool,
}

impl AnswerScanner {
    /// `expected_len`: the answer's length if known (sizes the image buffer once); 0 if not.
    pub fn new(expected_len: usize) -> Self {
        Self {
            state: State::Between,
            skeleton: Vec::with_capacity(1024),
            extracted: ExtractedStrings::default(),
            string_start: 0,
            last_string: None,
            image_value_next: false,
            decoded: Vec::new(),
            pending: [0; 4],
            pending_len: 0,
            raw: Vec::new(),
            size_hint: expected_len / 4 * 3,
            spill_at: None,
            spills: Vec::new(),
            spilled: false,
        }
    }

    /// Holds an image whole up to `first` bytes; past them, hands it over (everything so far,
    /// then pieces of `piece`) as it is decoded: [`Self::take_spills`] after every
    /// [`Self::push`].
    pub fn spilling(mut self, first: usize, piece: usize) -> Self {
        self.spill_at = Some((first.max(3), piece.max(3)));
        self
    }

    /// The pieces of images decoded since the last call, in order: (the image string's
    /// index, as its placeholder names it, and the bytes).
    pub fn take_spills(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.spills)
    }

    /// Hands the decoded bytes over when there are enough. Whole quads only are decoded, so
    /// what stays is always a whole number of quads' bytes from the string's start.
    fn spill_if_full(&mut self) {
        if let Some((first, piece)) = self.spill_at
            && self.decoded.len() >= if self.spilled { piece } else { first }
        {
            let piece = std::mem::replace(&mut self.decoded, Vec::with_capacity(piece + piece / 2));
            self.spills.push((self.extracted.0.len(), piece));
            self.spilled = true;
        }
    }

    pub fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let used = match self.state {
                State::Between => self.between(chunk),
                State::InString { escaped } => self.in_string(chunk, escaped),
                State::Decoding => self.decoding(chunk),
                State::Raw { escaped } => self.in_raw(chunk, escaped),
            };
            chunk = &chunk[used..];
        }
    }

    /// Ends the scan. An answer cut inside an image string keeps what was read of it in the
    /// skeleton as an unterminated string, which the parser refuses.
    pub fn finish(mut self) -> ScannedAnswer {
        match self.state {
            State::Decoding => {
                self.skeleton.push(b'"');
            }
            State::Raw { .. } => {
                let raw = std::mem::take(&mut self.raw);
                self.skeleton.extend_from_slice(&raw);
            }
            State::Between | State::InString { .. } => {}
        }
        ScannedAnswer {
            skeleton: self.skeleton,
            extracted: self.extracted,
        }
    }

    /// Structural bytes: copied, with an eye on `"key":` pairs. Returns how many were used.
    fn between(&mut self, chunk: &[u8]) -> usize {
        for (at, &byte) in chunk.iter().enumerate() {
            match byte {
                b' ' | b'\t' | b'\n' | b'\r' => self.skeleton.push(byte),
                b':' => {
                    self.skeleton.push(byte);
                    self.image_value_next = self
                        .last_string
                        .take()
                        .is_some_and(|key| IMAGE_KEYS.contains(&key.as_slice()));
                }
                b'"' if self.image_value_next => {
                    self.image_value_next = false;
                    self.start_image();
                    return at + 1;
                }
                b'"' => {
                    self.skeleton.push(byte);
                    self.string_start = self.skeleton.len();
                    self.last_string = None;
                    self.state = State::InString { escaped: false };
                    return at + 1;
                }
                _ => {
                    self.skeleton.push(byte);
                    self.last_string = None;
                    self.image_value_next = false;
                }
            }
        }
        chunk.len()
    }

    /// A string in the skeleton: copied up to its closing quote.
    fn in_string(&mut self, chunk: &[u8], mut escaped: bool) -> usize {
        let (used, closed) = copy_string(chunk, &mut escaped, &mut self.skeleton);
        if closed {
            // Only a short string without escapes can be one of the image keys.
            let content = &self.skeleton[self.string_start..self.skeleton.len() - 1];
            self.last_string = (content.len() <= LONGEST_KEY && !content.contains(&b'\\'))
                .then(|| content.to_vec());
            self.state = State::Between;
        } else {
            self.state = State::InString { escaped };
        }
        used
    }

    fn start_image(&mut self) {
        self.state = State::Decoding;
        self.pending_len = 0;
        self.spilled = false;
        let room = std::mem::take(&mut self.size_hint);
        // Spilling, no more than the first bytes (or a piece) are ever held.
        let room = self
            .spill_at
            .map_or(room, |(first, _)| room.min(first + first / 2));
        self.decoded = Vec::with_capacity(room);
    }

    /// An image string on the fast path. Decodes all but the last 1–4 characters seen (the
    /// final group may carry padding, and is decoded leniently once the string ends).
    fn decoding(&mut self, chunk: &[u8]) -> usize {
        let stop = memchr::memchr2(b'"', b'\\', chunk);
        let piece = &chunk[..stop.unwrap_or(chunk.len())];
        if let Err(()) = self.decode_piece(piece) {
            self.leave_fast_path(piece);
            return piece.len();
        }
        self.spill_if_full();
        match stop {
            None => chunk.len(),
            Some(end) if chunk[end] == b'"' => {
                let tail = &self.pending[..self.pending_len];
                match base64_simd::forgiving_decode_to_vec(tail) {
                    Ok(last) => {
                        self.decoded.extend_from_slice(&last);
                        let image = std::mem::take(&mut self.decoded);
                        self.close_image(if self.spilled {
                            Extracted::SpilledTail(image)
                        } else {
                            Extracted::Decoded(image)
                        });
                        self.state = State::Between;
                        end + 1
                    }
                    Err(_) => {
                        self.leave_fast_path(&[]);
                        end
                    }
                }
            }
            // An escape: whatever it is, the lenient path reads it.
            Some(end) => {
                self.leave_fast_path(&[]);
                end
            }
        }
    }

    /// Decodes whole quads of `pending + piece`, keeping the last 1–4 characters pending.
    /// On a character off the fast path, nothing of `piece` is kept.
    fn decode_piece(&mut self, piece: &[u8]) -> Result<(), ()> {
        let total = self.pending_len + piece.len();
        if total <= 4 {
            self.pending[self.pending_len..total].copy_from_slice(piece);
            self.pending_len = total;
            return Ok(());
        }
        let keep = (total - 1) % 4 + 1;
        let decode_len = total - keep;
        let decoded_before = self.decoded.len();
        let needed = decode_len / 4 * 3;
        if self.decoded.capacity() - self.decoded.len() < needed {
            // Amortised growth; `decode_append` itself reserves exactly.
            self.decoded.reserve(needed.max(self.decoded.len()));
        }
        // The pending characters and the first of `piece` make the first quad.
        let (mut result, from, until) = if self.pending_len > 0 {
            let mut quad = self.pending;
            let from = 4 - self.pending_len;
            quad[self.pending_len..].copy_from_slice(&piece[..from]);
            let result = STANDARD_NO_PAD.decode_append(quad, &mut self.decoded);
            (result, from, from + decode_len - 4)
        } else {
            (Ok(()), 0, decode_len)
        };
        if result.is_ok() {
            result = STANDARD_NO_PAD.decode_append(&piece[from..until], &mut self.decoded);
        }
        if result.is_err() {
            self.decoded.truncate(decoded_before);
            return Err(());
        }
        let rest = &piece[until..];
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
        Ok(())
    }

    /// Turns the image string back into raw JSON: the decoded quads re-encoded, the pending
    /// characters, and `piece` (not decoded), then reads on as a raw string. Bytes already
    /// spilled stay spilled: the JSON starts after them.
    fn leave_fast_path(&mut self, piece: &[u8]) {
        let mut raw = Vec::with_capacity(self.decoded.len() / 3 * 4 + piece.len() + 8);
        raw.push(b'"');
        STANDARD.encode_append(&self.decoded, &mut raw);
        raw.extend_from_slice(&self.pending[..self.pending_len]);
        raw.extend_from_slice(piece);
        self.decoded = Vec::new();
        self.pending_len = 0;
        self.raw = raw;
        self.state = State::Raw { escaped: false };
    }

    /// An image string off the fast path: kept as JSON up to its closing quote.
    fn in_raw(&mut self, chunk: &[u8], mut escaped: bool) -> usize {
        let (used, closed) = copy_string(chunk, &mut escaped, &mut self.raw);
        if closed {
            let raw = std::mem::take(&mut self.raw);
            self.close_image(if self.spilled {
                Extracted::RawAfterSpill(raw)
            } else {
                Extracted::Raw(raw)
            });
            self.state = State::Between;
        } else {
            self.state = State::Raw { escaped };
        }
        used
    }

    fn close_image(&mut self, image: Extracted) {
        self.skeleton.push(b'"');
        self.skeleton.extend_from_slice(b"\\u0000nb-extracted:");
        self.skeleton
            .extend_from_slice(self.extracted.0.len().to_string().as_bytes());
        self.skeleton.push(b'"');
        self.extracted.0.push(Some(image));
    }
}

/// Copies the bytes of a JSON string from `chunk` to `out`, up to and with its closing quote.
/// Returns how many bytes were used and whether the string closed; `escaped` carries a
/// backslash that ended the previous chunk (the byte after one never closes the string).
fn copy_string(chunk: &[u8], escaped: &mut bool, out: &mut Vec<u8>) -> (usize, bool) {
    let mut at = 0;
    loop {
        if *escaped {
            let Some(&byte) = chunk.get(at) else {
                return (chunk.len(), false);
            };
            out.push(byte);
            at += 1;
            *escaped = false;
        }
        let Some(offset) = memchr::memchr2(b'"', b'\\', &chunk[at..]) else {
            out.extend_from_slice(&chunk[at..]);
            return (chunk.len(), false);
        };
        let end = at + offset;
        out.extend_from_slice(&chunk[at..=end]);
        if chunk[end] == b'"' {
            return (end + 1, true);
        }
        *escaped = true;
        at = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::{parse_generate_content, parse_predict};
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
    use nb_domain::generation::ProviderError;

    /// A PNG signature and `len` bytes after it (every byte value, in no neat order).
    fn png_like(len: usize) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend((0..len).map(|i| (i.wrapping_mul(7919) >> 3) as u8));
        bytes
    }

    fn gemini_answer(data_json: &str) -> String {
        format!(
            r#"{{"candidates": [{{"content": {{"role": "model", "parts": [{{"text": "data: here it is"}},
            {{"inlineData": {{"mimeType": "image/png", "data": {data_json}}}}}]}},
            "finishReason": "STOP"}}], "usageMetadata": {{"totalTokenCount": 1290}}}}"#
        )
    }

    /// The answer fed in pieces of `sizes` (cycled), as the network would hand them over.
    fn scan_in_chunks(body: &[u8], sizes: &[usize]) -> ScannedAnswer {
        let mut scanner = AnswerScanner::new(0);
        let mut rest = body;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            scanner.push(chunk);
            rest = after;
        }
        scanner.finish()
    }

    /// The answer fed in pieces of `sizes` (cycled) to a scanner spilling every `at` bytes:
    /// the pieces spilled for string 0, joined, and what the scan left.
    fn spill_in_chunks(body: &[u8], sizes: &[usize], at: usize) -> (Vec<u8>, ScannedAnswer) {
        spill_in_chunks_after(body, sizes, at, at)
    }

    /// As [`spill_in_chunks`], holding the first `first` bytes before spilling.
    fn spill_in_chunks_after(
        body: &[u8],
        sizes: &[usize],
        first: usize,
        at: usize,
    ) -> (Vec<u8>, ScannedAnswer) {
        let mut scanner = AnswerScanner::new(0).spilling(first, at);
        let mut spilled = Vec::new();
        let mut rest = body;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            scanner.push(chunk);
            for (index, piece) in scanner.take_spills() {
                assert_eq!(index, 0);
                spilled.extend_from_slice(&piece);
            }
            rest = after;
        }
        (spilled, scanner.finish())
    }

    #[test]
    fn a_spilling_scan_hands_the_image_over_in_pieces_that_join_to_it() {
        for image_len in [0, 1, 2, 3, 4, 5, 1000, 4099] {
            let image = png_like(image_len);
            let body = gemini_answer(&format!("\"{}\"", B64.encode(&image)));
            for sizes in CHUNKINGS {
                for at in [3, 64, 1000] {
                    let (spilled, mut scanned) = spill_in_chunks(body.as_bytes(), sizes, at);
                    let (first_then_pieces, _) =
                        spill_in_chunks_after(body.as_bytes(), sizes, 2 * at, at);
                    assert!(spilled.starts_with(&first_then_pieces));
                    let placeholder = format!("{PLACEHOLDER_PREFIX}0");
                    let whole = match scanned.extracted.take(&placeholder) {
                        Some((0, Extracted::SpilledTail(tail))) => [spilled, tail].concat(),
                        Some((0, Extracted::Decoded(all))) if spilled.is_empty() => all,
                        other => panic!("{image_len} bytes at {at}, chunks {sizes:?}: {other:?}"),
                    };
                    assert_eq!(whole, image, "{image_len} bytes at {at}, chunks {sizes:?}");
                }
            }
        }
    }

    #[test]
    fn a_string_leaving_the_fast_path_after_spilling_keeps_the_rest_as_json() {
        // Standard base64 first, then a wrapped line: the spilled bytes and the rest decoded
        // leniently are the image.
        let image = png_like(3000);
        let encoded = B64.encode(&image);
        let (first, second) = encoded.split_at(2000);
        let body = gemini_answer(&format!("\"{first}\\n{second}\""));
        let (spilled, mut scanned) = spill_in_chunks(body.as_bytes(), &[100], 300);
        assert!(!spilled.is_empty());
        let placeholder = format!("{PLACEHOLDER_PREFIX}0");
        let Some((0, Extracted::RawAfterSpill(json))) = scanned.extracted.take(&placeholder) else {
            panic!("not kept raw after spilling");
        };
        let text: String = serde_json::from_slice(&json).unwrap();
        let rest = nb_domain::encoding::decode_base64_lenient(&text).unwrap();
        assert_eq!([spilled, rest].concat(), image);
    }

    const CHUNKINGS: [&[usize]; 7] = [
        &[1],
        &[2],
        &[3],
        &[5, 1, 4],
        &[7, 13],
        &[16_384],
        &[usize::MAX],
    ];

    #[test]
    fn standard_base64_is_decoded_on_the_fast_path_at_every_split() {
        for image_len in [0, 1, 2, 3, 4, 5, 6, 7, 20, 1000, 100_001] {
            let image = png_like(image_len);
            let encoded = B64.encode(&image);
            for padded in [true, false] {
                let data = if padded {
                    encoded.clone()
                } else {
                    encoded.trim_end_matches('=').to_owned()
                };
                let body = gemini_answer(&format!("\"{data}\""));
                for sizes in CHUNKINGS {
                    let mut scanned = scan_in_chunks(body.as_bytes(), sizes);
                    assert!(
                        scanned.skeleton.len() < 400,
                        "the image stayed in the skeleton"
                    );
                    let placeholder = format!("{PLACEHOLDER_PREFIX}0");
                    assert_eq!(
                        scanned.extracted.take(&placeholder),
                        Some((0, Extracted::Decoded(image.clone()))),
                        "{image_len} bytes, padded {padded}, chunks {sizes:?}"
                    );
                    let scanned = scan_in_chunks(body.as_bytes(), sizes);
                    let parsed = parse_generate_content(scanned, None).unwrap();
                    assert_eq!(parsed.image.in_memory().unwrap().bytes().as_ref(), image);
                }
            }
        }
    }

    #[test]
    fn other_spellings_leave_the_fast_path_and_still_give_the_same_bytes() {
        let image = png_like(70_000);
        let standard = B64.encode(&image);
        let wrapped_lines = standard
            .as_bytes()
            .chunks(76)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect::<Vec<_>>()
            .join("\\r\\n");
        let spellings = [
            // URL-safe, unpadded.
            format!("\"{}\"", URL_SAFE_NO_PAD.encode(&image)),
            // Wrapped as MIME does, the line breaks escaped in JSON.
            format!("\"{wrapped_lines}\""),
            // `/` escaped as JSON allows.
            format!("\"{}\"", standard.replace('/', "\\/")),
            // A unicode escape for the first character.
            format!("\"\\u{:04x}{}\"", standard.as_bytes()[0], &standard[1..]),
            // A plain space inside.
            format!("\"{} {}\"", &standard[..4000], &standard[4000..]),
        ];
        for data in &spellings {
            let body = gemini_answer(data);
            for sizes in CHUNKINGS {
                let scanned = scan_in_chunks(body.as_bytes(), sizes);
                let parsed = parse_generate_content(scanned, None)
                    .unwrap_or_else(|error| panic!("{error} for {}…", &data[..40]));
                assert_eq!(
                    parsed.image.in_memory().unwrap().bytes().as_ref(),
                    image,
                    "chunks {sizes:?}"
                );
            }
        }
    }

    #[test]
    fn bad_image_strings_are_upstream_failures_at_every_split() {
        let image = png_like(3000);
        let encoded = B64.encode(&image);
        let bad = [
            // Padding in the middle: two padded encodings glued together.
            format!(
                "\"{}{}\"",
                B64.encode(&image[..100]),
                B64.encode(&image[100..])
            ),
            // Not base64 at all.
            "\"not base64 at all!\"".to_owned(),
            // A length no encoding has (4n + 1 characters).
            format!("\"{}AA\"", encoded.trim_end_matches('=')),
            // Not an image: valid base64 of text.
            format!("\"{}\"", B64.encode(b"hello, this is not a picture")),
        ];
        for data in &bad {
            let body = gemini_answer(data);
            for sizes in CHUNKINGS {
                let scanned = scan_in_chunks(body.as_bytes(), sizes);
                assert!(
                    matches!(
                        parse_generate_content(scanned, None),
                        Err(ProviderError::Upstream(_))
                    ),
                    "{}… accepted with chunks {sizes:?}",
                    &data[..20]
                );
            }
        }
    }

    #[test]
    fn an_answer_cut_short_anywhere_is_never_an_image() {
        let image = png_like(5000);
        let body = gemini_answer(&format!("\"{}\"", B64.encode(&image)));
        for cut in (0..body.len()).step_by(97).chain([body.len() - 1]) {
            let scanned = scan_in_chunks(&body.as_bytes()[..cut], &[4096]);
            assert!(
                matches!(
                    parse_generate_content(scanned, None),
                    Err(ProviderError::Upstream(_))
                ),
                "cut at {cut} of {}",
                body.len()
            );
        }
    }

    #[test]
    fn only_image_keys_are_taken_out() {
        // `data` as a value, a key spelled with an escape, and a long text: all stay.
        let image = png_like(10);
        let body = format!(
            r#"{{"candidates": [{{"content": {{"parts": [{{"text": "data"}}, {{"text": "{long}"}},
            {{"inlineData": {{"d\u0061ta": "{encoded}"}}}}]}}}}]}}"#,
            long = "x".repeat(10_000),
            encoded = B64.encode(&image)
        );
        for sizes in CHUNKINGS {
            let scanned = scan_in_chunks(body.as_bytes(), sizes);
            assert_eq!(scanned.skeleton, body.as_bytes(), "chunks {sizes:?}");
            let parsed = parse_generate_content(scanned, None).unwrap();
            assert_eq!(parsed.image.in_memory().unwrap().bytes().as_ref(), image);
        }
    }

    #[test]
    fn imagen_answers_use_the_fast_path_too() {
        let image = png_like(50_000);
        for key in ["bytesBase64Encoded", "bytes_base64_encoded"] {
            let body = format!(
                r#"{{"predictions": [{{"mimeType": "image/png", "{key}": "{}"}}]}}"#,
                B64.encode(&image)
            );
            for sizes in CHUNKINGS {
                let scanned = scan_in_chunks(body.as_bytes(), sizes);
                assert!(scanned.skeleton.len() < 200);
                assert_eq!(
                    parse_predict(scanned).unwrap().bytes().as_ref(),
                    image,
                    "chunks {sizes:?}"
                );
            }
        }
    }
}
