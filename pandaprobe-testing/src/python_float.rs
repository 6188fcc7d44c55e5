//! Python's `float(str)`, which is how the real server checks a NUMERIC score value.
//!
//! CPython first maps non-ASCII whitespace to `' '` and Unicode decimal digits to `'0'..='9'`
//! (any other non-ASCII character makes the string invalid), strips ASCII whitespace
//! (`' '`, `\t`, `\n`, `\r`, `\x0b`, `\x0c`; not `\x1c`..`\x1f`), removes PEP 515 underscores
//! (each must sit between two digits), then parses a decimal literal or `inf`, `infinity`,
//! `nan` with an optional sign, in any case.
//!
//! This crate uses nothing of the SDK, whose own implementation is written apart: each is an
//! oracle for the other, and both are checked against CPython's answers.

/// Non-ASCII characters for which Python's `str.isspace()` is true (Unicode 14; unchanged
/// through Unicode 15.1).
const SPACES: [char; 19] = [
    '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}',
    '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}', '\u{2009}', '\u{200a}', '\u{2028}', '\u{2029}',
    '\u{202f}', '\u{205f}', '\u{3000}',
];

/// The digit zero of every run of ten non-ASCII decimal digits (general category Nd), sorted.
/// Unicode 14 as Python 3.11 has it, plus Kawi (U+11F50) and Nag Mundari (U+1E4F0) from
/// Unicode 15, which the real server's Python 3.13 knows.
const DIGIT_ZEROS: [u32; 67] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

/// `float(s)` as Python computes it, or `None` where Python raises `ValueError`.
pub(crate) fn parse(s: &str) -> Option<f64> {
    let mut ascii = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else if SPACES.contains(&c) {
            ascii.push(' ');
        } else {
            ascii.push(char::from(b'0' + decimal_digit(c)?));
        }
    }
    let stripped = ascii.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
    let literal = without_underscores(stripped)?;
    if !is_literal(&literal) {
        return None;
    }
    // Both Rust and CPython round correctly, so the values agree once the grammar does.
    literal.parse().ok()
}

/// The value of a non-ASCII decimal digit.
fn decimal_digit(c: char) -> Option<u8> {
    let c = u32::from(c);
    let run = DIGIT_ZEROS
        .partition_point(|&zero| zero <= c)
        .checked_sub(1)?;
    let offset = c - DIGIT_ZEROS[run];
    u8::try_from(offset).ok().filter(|d| *d < 10)
}

/// `s` without its underscores, or `None` when one is not between two digits (PEP 515).
fn without_underscores(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('_') {
        return Some(s.into());
    }
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'_' {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + 1);
            if !before.is_some_and(u8::is_ascii_digit) || !after.is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
    }
    Some(s.replace('_', "").into())
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?` or `[+-]? (inf | infinity | nan)`.
fn is_literal(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if ["inf", "infinity", "nan"]
        .iter()
        .any(|word| unsigned.eq_ignore_ascii_case(word))
    {
        return true;
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mantissa_ok =
        digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_are_sorted_and_disjoint() {
        assert!(DIGIT_ZEROS.windows(2).all(|w| w[0] + 10 <= w[1]));
        assert_eq!(decimal_digit('\u{0665}'), Some(5));
        assert_eq!(decimal_digit('\u{1D7FF}'), Some(9));
        assert_eq!(decimal_digit('\u{11F59}'), Some(9));
        assert_eq!(decimal_digit('\u{1E4F0}'), Some(0));
        assert_eq!(decimal_digit('\u{065F}'), None);
        assert_eq!(decimal_digit('\u{00B2}'), None);
        assert_eq!(decimal_digit('\u{80}'), None);
    }

    #[test]
    fn values() {
        assert_eq!(parse("0.85"), Some(0.85));
        assert_eq!(parse(" 0.5\n"), Some(0.5));
        assert_eq!(parse("0.2_5"), Some(0.25));
        assert_eq!(parse("\u{0660}.\u{0665}"), Some(0.5));
        assert_eq!(parse("\u{3000}1\u{2029}"), Some(1.0));
        assert_eq!(parse("1e-400"), Some(0.0));
        assert_eq!(parse("-0").map(f64::is_sign_negative), Some(true));
        assert_eq!(parse("-InFiNiTy"), Some(f64::NEG_INFINITY));
        assert!(parse("+nan").is_some_and(f64::is_nan));
        assert_eq!(parse("5."), Some(5.0));
        assert_eq!(parse(".5"), Some(0.5));
    }

    #[test]
    fn rejections() {
        for bad in [
            "",
            " ",
            ".",
            "e1",
            "1e",
            "1e+",
            "_1",
            "1_",
            "1__0",
            "1_e1",
            "1e_1",
            "0._5",
            "\x1c0.5",
            "0.5\x1f",
            "\u{200b}0.5",
            "\u{00b2}",
            "\u{ff0e}5",
            "0x1",
            "infinit",
            "nan()",
            "+-1",
            "- 1",
            "1 0",
            "\0",
            "0.5\0",
            "\u{7f}1",
            "\u{2212}1",
            "in_f",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
