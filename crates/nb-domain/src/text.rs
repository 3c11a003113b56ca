//! Rules for text that people type and other people read: names, emails, prompts.

/// Characters that take no room on screen but change what a string is or how it reads:
/// zero-width spaces and joiners, bidirectional overrides and isolates (which can make
/// `txt.exe` read as `exe.txt`), word joiners, the byte-order mark, soft hyphens and the
/// Hangul fillers.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Whether `text` holds a control character or an invisible formatting character.
pub fn has_hidden_characters(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() || is_invisible_format(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_bidi_characters_are_hidden() {
        for hidden in [
            "a\u{200b}b",
            "\u{202e}txt",
            "x\u{feff}",
            "tab\there",
            "nul\0",
        ] {
            assert!(has_hidden_characters(hidden), "{hidden:?}");
        }
        for plain in ["laptop", "Zoë's key", "日本語", "emoji 🍌"] {
            assert!(!has_hidden_characters(plain), "{plain:?}");
        }
    }
}
