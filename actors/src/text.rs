//! What counts as printable text in a free-text field (a user's name, an
//! order's description): one rule, shared, so the fields cannot drift apart.
//!
//! Refused:
//!
//! * **control characters** (Unicode `Cc`: C0 including NUL, DEL, C1):
//!   NUL truncates in C-based consumers (and PostgreSQL refuses it in
//!   `text`), and newlines, escapes and the like forge log lines and
//!   terminal output;
//! * **explicit bidirectional formatting**: the embeddings and overrides
//!   U+202A–U+202E and the isolates U+2066–U+2069. They open a
//!   directional state that runs on until closed, so text holding one can
//!   reorder what is shown *after* it — the rest of an invoice line, an
//!   admin's table (the "Trojan Source" trick, CVE-2021-42574).
//!
//! Allowed: the marks U+200E (LRM), U+200F (RLM) and U+061C (ALM). They
//! carry no state beyond their own position, so they cannot reach past the
//! field, and right-to-left writers need them to show numbers and Latin
//! words correctly inside Hebrew or Arabic text. Other format characters
//! (zero-width joiners, soft hyphens) are left alone for the same reason:
//! scripts and emoji sequences need them.

/// The one message both fields answer with.
pub const NOT_PRINTABLE: &str = "must not contain control or bidirectional override characters";

/// `Ok` when `value` holds no control and no explicit bidi character.
pub fn check_printable(value: &str) -> Result<(), &'static str> {
    if value.chars().any(|c| c.is_control() || is_bidi_override(c)) {
        Err(NOT_PRINTABLE)
    } else {
        Ok(())
    }
}

/// U+202A–U+202E (LRE, RLE, PDF, LRO, RLO) and U+2066–U+2069 (LRI, RLI,
/// FSI, PDI).
fn is_bidi_override(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_override_characters_are_refused() {
        for bad in [
            "a\0b",
            "tab\there",
            "line\n",
            "bell\u{7}",
            "del\u{7f}",
            "c1\u{85}",
            "\u{9b}31m",
            "\u{202A}",
            "\u{202B}",
            "\u{202C}",
            "\u{202D}",
            "abc\u{202E}cba",
            "\u{2066}",
            "\u{2067}",
            "\u{2068}",
            "\u{2069}",
        ] {
            assert_eq!(check_printable(bad), Err(NOT_PRINTABLE), "{bad:?}");
        }
    }

    #[test]
    fn text_in_any_script_and_the_bidi_marks_are_fine() {
        for good in [
            "",
            "Ann Lee",
            "Zoë — café №5 ✓",
            "שלום 123\u{200F}",
            "مرحبا\u{061C}",
            "left\u{200E}",
            "👩\u{200D}💻",
        ] {
            assert_eq!(check_printable(good), Ok(()), "{good:?}");
        }
    }
}
