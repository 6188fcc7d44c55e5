//! Python's `float()`, which is how the server checks a NUMERIC score value. It accepts more
//! than Rust's parser: surrounding whitespace (`" 0.5"`), `_` between digits (`"0.2_5"`),
//! digits of any script (`"٠.٥"`). The SDK accepts exactly what the server stores, and sends
//! the value as given. `pandaprobe-testing` has its own implementation, written apart on
//! purpose: the property test in `tests/validation.rs` checks this one against it, and both are
//! checked against CPython's answers.

/// Where each run of ten Unicode decimal digits (general category Nd) beyond ASCII starts:
/// Unicode guarantees such runs are contiguous and start at zero. From Python 3.11's
/// `unicodedata` (Unicode 14), plus the two runs Unicode 15 added (Kawi, Nag Mundari), which
/// the server's Python 3.13 knows.
const DIGIT_ZEROS: [u32; 67] = [
    0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xDE6,
    0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50,
    0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950,
    0x1FBF0,
];

/// The value of a non-ASCII decimal digit.
fn unicode_digit(c: char) -> Option<u8> {
    let c = u32::from(c);
    let run = DIGIT_ZEROS
        .partition_point(|&zero| zero <= c)
        .checked_sub(1)?;
    let offset = c - DIGIT_ZEROS[run];
    (offset < 10).then_some(offset as u8)
}

/// What `float(text)` returns in Python, or `None` where it raises `ValueError`. Plain ASCII
/// text, the common case, is read without an allocation.
pub(crate) fn parse(text: &str) -> Option<f64> {
    // Over this alphabet Rust's grammar is Python's: `[sign] (digits [. digits?] | . digits)
    // [e [sign] digits]`; anything else (spaces, `_`, other scripts, `inf`) takes the long way.
    if text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'+' | b'-' | b'e' | b'E'))
    {
        return text.parse::<f64>().ok();
    }
    if text.is_ascii() {
        return parse_ascii(text);
    }
    // Python first maps non-ASCII whitespace to ' ' and non-ASCII digits to ASCII ones.
    let mut ascii = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else if c.is_whitespace() {
            ascii.push(' ');
        } else {
            ascii.push(char::from(b'0' + unicode_digit(c)?));
        }
    }
    parse_ascii(&ascii)
}

fn parse_ascii(text: &str) -> Option<f64> {
    // Python strips C `isspace` (not \x1c-\x1f, which `str.isspace` would count).
    let trimmed = text.trim_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    if trimmed.contains('_') {
        return literal(&without_underscores(trimmed)?);
    }
    literal(trimmed)
}

fn literal(text: &str) -> Option<f64> {
    if !is_python_float_literal(text) {
        return None;
    }
    text.parse::<f64>().ok()
}

/// Removes PEP 515 underscores, each allowed only between two digits.
fn without_underscores(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + 1);
            if !(before.is_some_and(u8::is_ascii_digit) && after.is_some_and(u8::is_ascii_digit)) {
                return None;
            }
        } else {
            out.push(char::from(b));
        }
    }
    Some(out)
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`, or `inf`, `infinity`, `nan`
/// in any case with an optional sign.
fn is_python_float_literal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
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
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
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
    fn agrees_with_cpython() {
        // Each was checked with CPython's float() (Kawi digits: 3.13; the rest: 3.11 too).
        let accepted = [
            (" 0.5 ", 0.5),
            ("\u{2000}0.5", 0.5),
            ("0.2_5", 0.25),
            ("1_0e-1", 1.0),
            ("٠.٥", 0.5),
            ("-0", -0.0),
            ("+0.5", 0.5),
            ("1e-1", 0.1),
            (".5", 0.5),
            ("5.", 5.0),
            ("1E0", 1.0),
            ("１", 1.0),
            ("0.５", 0.5),
            ("\u{a0}0.5\u{3000}", 0.5),
            ("0.5\x0b", 0.5),
            ("0.5\u{85}", 0.5),
            ("1_000e-3", 1.0),
            ("0.1e1_0", 1e9),
            ("\u{11F50}.\u{11F55}", 0.5),
        ];
        for (text, expected) in accepted {
            assert_eq!(parse(text), Some(expected), "{text:?}");
        }
        assert!(parse("inf").is_some_and(f64::is_infinite));
        assert!(parse("-Infinity").is_some_and(f64::is_infinite));
        assert!(parse("nAn").is_some_and(f64::is_nan));
        let refused = [
            "\x1c0.5", "0.5\x1c", "0__1", "_0.5", "0.5_", "0._5", "0x1", "", " ", ".", "e5", "1e",
            "1e+", "- 1", "1 0", "0.5a", "½", "1.5.", "++1", "nan(1)", "in f",
        ];
        for text in refused {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
