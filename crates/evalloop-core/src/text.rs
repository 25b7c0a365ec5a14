//! Making user text safe to print on a terminal: control characters escaped.
//!
//! Cohort names, request ids, prompts and comments come from end users. Printed raw, an ESC or
//! OSC sequence would retitle the window, plant a hyperlink or clear the screen, and a newline
//! would forge an output line. Every text output that prints such a value passes it through
//! [`escape`]; JSON output escapes on its own.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with each control character (C0, DEL, C1), line or paragraph separator and bidirectional
/// formatting character written as `\n`, `\r`, `\t` or `\u{XX}`; `s` itself (no copy) when
/// there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal would act on or that would reorder or break the printed line.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_not_copied() {
        assert!(matches!(escape("pro cohort, café"), Cow::Borrowed(_)));
    }

    #[test]
    fn terminal_sequences_and_newlines_are_escaped() {
        assert_eq!(escape("a\x1b]0;owned\x07b"), "a\\u{1b}]0;owned\\u{7}b");
        assert_eq!(escape("x\nlogs 0\r"), "x\\nlogs 0\\r");
        assert_eq!(escape("\u{9b}2J\u{202e}"), "\\u{9b}2J\\u{202e}");
        assert!(!escape("\x1b\u{85}\x7f").chars().any(|c| c.is_control()));
    }
}
