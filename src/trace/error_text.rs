//! The text a span keeps of an error: bounded, with anything shaped like a key masked.
//!
//! An error is often the provider's own words: OpenAI's answer to a wrong key quotes part of it
//! ("Incorrect API key provided: sk-..."), a proxy may quote a bearer token, and a provider's
//! error can quote a whole response body. None of that may reach a trace.

/// The most characters an error keeps; one `…` marks a cut.
pub(crate) const MAX_ERROR_CHARS: usize = 2_000;

/// `text` with key-shaped words and the word after `Bearer` masked, cut at [`MAX_ERROR_CHARS`].
pub(crate) fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_CHARS));
    let mut chars = 0;
    let mut mask_next = false;
    for (i, word) in text.split(' ').enumerate() {
        let shown = if mask_next || looks_like_key(word) {
            "[redacted]"
        } else {
            word
        };
        mask_next = word.eq_ignore_ascii_case("bearer");
        for c in (i > 0).then_some(' ').into_iter().chain(shown.chars()) {
            if chars == MAX_ERROR_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

fn looks_like_key(word: &str) -> bool {
    let word = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_');
    ["sk-", "sk_", "pk-", "key-"]
        .iter()
        .any(|prefix| word.len() > prefix.len() + 3 && word.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_bearer_tokens_are_masked() {
        assert_eq!(
            masked("Incorrect API key provided: sk-abc123456789. Also Bearer xyz."),
            "Incorrect API key provided: [redacted] Also Bearer [redacted]"
        );
        assert_eq!(masked("sk-a"), "sk-a", "too short to be a key");
        assert_eq!(masked("no key here"), "no key here");
    }

    #[test]
    fn errors_are_cut_with_a_mark() {
        let long = "x ".repeat(5_000);
        let cut = masked(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(cut.ends_with('…'));
        let exact = "y".repeat(MAX_ERROR_CHARS);
        assert_eq!(masked(&exact), exact, "exactly the limit is not cut");
    }
}
