//! Base64 as it arrives from clients and providers: standard or URL-safe alphabet, padded or
//! not, possibly wrapped across lines.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Decodes any of the usual base64 spellings; `None` when it is not base64 at all.
pub fn decode_base64_lenient(encoded: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if encoded.contains(['-', '_']) {
        &alphabet::URL_SAFE
    } else {
        &alphabet::STANDARD
    };
    let engine = GeneralPurpose::new(alphabet, config);
    // Only a wrapped encoding pays for a compacted copy.
    if encoded.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = encoded
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        engine.decode(compact).ok()
    } else {
        engine.decode(encoded).ok()
    }
}

/// The bytes of `data:<type>;base64,<data>` or of plain base64.
pub fn decode_data_url_or_base64(text: &str) -> Option<Vec<u8>> {
    let encoded = match text.strip_prefix("data:") {
        Some(rest) => {
            let (header, data) = rest.split_once(',')?;
            header.ends_with(";base64").then_some(data)?
        }
        None => text,
    };
    decode_base64_lenient(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_decoded_leniently() {
        let png = b"\x89PNG\r\n\x1a\nabc";
        let standard = base64::engine::general_purpose::STANDARD.encode(png);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb, 0xff, 0xfe]);
        assert_eq!(decode_base64_lenient(&standard).unwrap(), png);
        assert_eq!(
            decode_base64_lenient(standard.trim_end_matches('=')).unwrap(),
            png
        );
        let wrapped = format!("{}\n{}", &standard[..8], &standard[8..]);
        assert_eq!(decode_base64_lenient(&wrapped).unwrap(), png);
        assert_eq!(
            decode_base64_lenient(&url_safe).unwrap(),
            [0xfb, 0xff, 0xfe]
        );
        assert!(decode_base64_lenient("not base64!").is_none());
    }

    #[test]
    fn data_urls_and_plain_base64_give_the_same_bytes() {
        assert_eq!(
            decode_data_url_or_base64("data:image/png;base64,aGk=").unwrap(),
            b"hi"
        );
        assert_eq!(decode_data_url_or_base64("aGk=").unwrap(), b"hi");
        assert!(decode_data_url_or_base64("data:image/png,hi").is_none());
        assert!(decode_data_url_or_base64("data:nothing").is_none());
    }
}
