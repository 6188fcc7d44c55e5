//! Timestamps as the real server keeps them: pydantic parses them (an offset, none meaning
//! UTC, or Unix seconds/milliseconds as a number), PostgreSQL keeps microseconds in UTC, and
//! Python's `isoformat()` prints them back.

use serde_json::Value;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(i64);

/// pydantic's line between Unix seconds and milliseconds.
const MILLIS_ABOVE: f64 = 2e10;

impl Timestamp {
    /// A JSON value pydantic takes for a `datetime`: a string like
    /// `2026-11-29T03:27:52.093623+05:30` (digits past the sixth of a second are dropped, no
    /// offset is UTC), or a number of Unix seconds (milliseconds above 2×10¹⁰).
    pub(crate) fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => parse(s),
            Value::Number(n) => {
                let mut seconds = n.as_f64()?;
                if seconds.abs() > MILLIS_ABOVE {
                    seconds /= 1000.0;
                }
                let micros = (seconds * 1e6).round();
                // Years 1-9999, like Python's datetime.
                let valid = (-62_135_596_800e6..=253_402_300_799e6).contains(&micros);
                valid.then_some(Timestamp(micros as i64))
            }
            _ => None,
        }
    }

    /// Python's `datetime.isoformat()` of the UTC instant: microseconds only when not zero.
    pub(crate) fn isoformat(self) -> String {
        let nanos = i128::from(self.0) * 1000;
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return String::new();
        };
        let mut out = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        if t.microsecond() != 0 {
            out.push_str(&format!(".{:06}", t.microsecond()));
        }
        out.push_str("+00:00");
        out
    }

    /// Milliseconds from `earlier` to `self`, as Python's
    /// `(b - a).total_seconds() * 1000` computes them.
    pub(crate) fn millis_since(self, earlier: Timestamp) -> f64 {
        let micros = self.0.saturating_sub(earlier.0);
        (micros as f64 / 1e6) * 1000.0
    }
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.fraction]][Z|±HH[[:]MM]]`, the grammar the request checks accept.
fn parse(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<u32> {
        let digits = b.get(at..at + len)?;
        digits.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let is = |at: usize, c: u8| b.get(at) == Some(&c);
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute) = (num(11, 2)?, num(14, 2)?);
    if !(is(4, b'-')
        && is(7, b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && is(13, b':'))
    {
        return None;
    }
    let (mut second, mut micros) = (0, 0);
    let mut i = 16;
    if is(i, b':') {
        second = num(i + 1, 2)?;
        i += 3;
        if is(i, b'.') || is(i, b',') {
            i += 1;
            let mut digits = 0;
            while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
                if digits < 6 {
                    micros = micros * 10 + u32::from(d - b'0');
                }
                digits += 1;
                i += 1;
            }
            if digits == 0 {
                return None;
            }
            for _ in digits..6 {
                micros *= 10;
            }
        }
    }
    let offset_seconds: i32 = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = num(i + 1, 2)?;
            let minutes = match b.len().checked_sub(i + 3)? {
                0 => 0,
                2 => num(i + 3, 2)?,
                3 if is(i + 3, b':') => num(i + 4, 2)?,
                _ => return None,
            };
            let total = i32::try_from(hours * 3600 + minutes * 60).ok()?;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        Some(_) => return None,
    };
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let time = Time::from_hms_micro(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        micros,
    )
    .ok()?;
    let offset = UtcOffset::from_whole_seconds(offset_seconds).ok()?;
    let instant = PrimitiveDateTime::new(date, time).assume_offset(offset);
    let micros = instant.unix_timestamp_nanos() / 1000;
    i64::try_from(micros).ok().map(Timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn iso(value: Value) -> Option<String> {
        Timestamp::from_json(&value).map(Timestamp::isoformat)
    }

    #[test]
    fn as_the_real_server_prints_them() {
        // Each pair measured against the real server.
        let cases = [
            (
                json!("2026-11-29T03:27:52.0936239+05:30"),
                "2026-11-28T21:57:52.093623+00:00",
            ),
            (json!("2026-11-29T03:27:53"), "2026-11-29T03:27:53+00:00"),
            (json!(1_764_386_872), "2025-11-29T03:27:52+00:00"),
            (
                json!("2026-11-29T03:27:52.5Z"),
                "2026-11-29T03:27:52.500000+00:00",
            ),
            (
                json!("2026-11-29T03:27:52.999999999Z"),
                "2026-11-29T03:27:52.999999+00:00",
            ),
        ];
        for (input, printed) in cases {
            assert_eq!(iso(input.clone()).as_deref(), Some(printed), "{input}");
        }
        assert_eq!(
            iso(json!(1_764_386_872_500_i64)).as_deref(),
            Some("2025-11-29T03:27:52.500000+00:00")
        );
        assert_eq!(
            iso(json!("2026-11-29 03:27-0100")).as_deref(),
            Some("2026-11-29T04:27:00+00:00")
        );
        assert_eq!(iso(json!("2026-02-30T00:00:00Z")), None);
        assert_eq!(iso(json!("soon")), None);
    }

    #[test]
    fn latency_like_python() {
        let a = Timestamp::from_json(&json!("2026-11-29T03:27:52.5Z"));
        let b = Timestamp::from_json(&json!("2026-11-29T03:27:53.25Z"));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("timestamps")
        };
        assert_eq!(b.millis_since(a), 750.0);
        assert_eq!(a.millis_since(b), -750.0);
    }
}
