//! Names, values and reasons as the caller hands them in: borrowed or owned, copied without an
//! allocation when short.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use compact_str::CompactString;

/// A string for a score's name, value or reason. Built from `&str` (borrowed from anywhere,
/// copied), `String` (moved, no copy), `&String`, `Cow<str>` or `Box<str>`.
///
/// Up to 24 bytes are kept inline, so a short name or value never allocates; longer text is
/// put on the heap once, or kept where it is for a `String`. [`Text::from_static`] keeps a
/// long `&'static str` without copying it.
///
/// ```
/// use pandaprobe::{Score, Text};
///
/// let label = String::from("thumbs_up");
/// let borrowed: &str = &label; // a label from a request: borrowed, not 'static
/// let score = Score::categorical(pandaprobe::Uuid::nil(), "feedback", borrowed);
/// assert_eq!(score.name(), "feedback");
/// let long = Text::from_static("a name longer than twenty-four bytes, kept by reference");
/// assert!(long.len() > 24);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Text(CompactString);

impl Text {
    /// A `&'static str` kept by reference: never copied, never allocated.
    pub const fn from_static(text: &'static str) -> Text {
        Text(CompactString::const_new(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Text {
        Text(CompactString::new(text))
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Text {
        Text(CompactString::new(text))
    }
}

impl From<String> for Text {
    fn from(text: String) -> Text {
        Text(CompactString::from(text))
    }
}

impl From<Box<str>> for Text {
    fn from(text: Box<str>) -> Text {
        Text(CompactString::from(text))
    }
}

impl From<Cow<'_, str>> for Text {
    fn from(text: Cow<'_, str>) -> Text {
        Text(CompactString::from(text))
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.0.into_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_inline_and_every_source_converts() {
        let borrowed = String::from("relevance");
        let t = Text::from(borrowed.as_str());
        assert!(!t.0.is_heap_allocated());
        assert_eq!(t, Text::from(borrowed.clone()));
        assert_eq!(t, Text::from(&borrowed));
        assert_eq!(t, Text::from(Cow::Borrowed("relevance")));
        assert_eq!(t, Text::from(Box::<str>::from("relevance")));
        assert_eq!(format!("{t:?} {t}"), "\"relevance\" relevance");
        let long = Text::from_static("0123456789012345678901234567890123456789");
        assert!(!long.0.is_heap_allocated());
        assert_eq!(String::from(long).len(), 40);
    }
}
