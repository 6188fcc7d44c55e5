//! Score rules: what the server refuses is refused, what it stores passes as given.

use super::*;
use crate::error::ScoreError;
use serde_json::json;

const ID: &str = "29c160fc-44bc-41ad-8bec-fa678ddb1f9a";

fn check(score: Score) -> Result<Uuid, ScoreError> {
    score.validate()
}

#[test]
fn accepts_what_the_server_stores() {
    let boolean = |v: &str| Score::new(ID, "a", v).data_type(ScoreDataType::Boolean);
    let ok = [
        Score::new(ID, "a", "0.85"),
        Score::new(ID, "a", "1"),
        Score::new(ID, "a", " 0.5"),
        Score::new(ID, "a", "0.2_5"),
        Score::new(ID, "a", "٠.٥"),
        Score::new(ID, "a", "-0"),
        Score::new(ID, "", "0.5"),
        boolean("TRUE"),
        boolean("fAlSe"),
        Score::numeric(ID, "a", 0.0),
        Score::numeric(ID, "a", -0.0),
        Score::boolean(ID, "a", false),
        Score::categorical(ID, "a", ""),
        Score::categorical(ID, "a", "PASS").metadata(json!({"k": 1})),
        Score::new(Uuid::nil(), "a", "0.5").reason(""),
    ];
    for score in ok {
        let debug = format!("{score:?}");
        assert!(check(score).is_ok(), "{debug}");
    }
}

#[test]
fn sends_text_values_exactly_as_given() {
    for (score, wire) in [
        (Score::new(ID, "a", " 0.5"), " 0.5"),
        (
            Score::new(ID, "a", "TRUE").data_type(ScoreDataType::Boolean),
            "TRUE",
        ),
        (Score::numeric(ID, "a", 0.85), "0.85"),
        (Score::numeric(ID, "a", 1e-300), "1e-300"),
        (Score::numeric(ID, "a", 1.0), "1"),
        (Score::boolean(ID, "a", true), "true"),
    ] {
        assert_eq!(score.wire_value(), wire);
    }
}

#[test]
fn refuses_what_the_server_refuses_or_fails_on() {
    let long = "x".repeat(256);
    let cases = [
        (
            Score::new("nope", "a", "0.5"),
            ScoreError::InvalidTraceId("nope".into()),
        ),
        (
            Score::new(ID, long.clone(), "0.5"),
            ScoreError::NameTooLong(256),
        ),
        (
            Score::categorical(ID, "a", long.clone()),
            ScoreError::ValueTooLong(256),
        ),
        (
            Score::new(ID, "a", "1.5"),
            ScoreError::InvalidNumeric("1.5".into()),
        ),
        (
            Score::new(ID, "a", "nan"),
            ScoreError::InvalidNumeric("nan".into()),
        ),
        (
            Score::new(ID, "a", "0__5"),
            ScoreError::InvalidNumeric("0__5".into()),
        ),
        (
            Score::numeric(ID, "a", f64::INFINITY),
            ScoreError::InvalidNumeric("inf".into()),
        ),
        (
            Score::numeric(ID, "a", -0.1),
            ScoreError::InvalidNumeric("-0.1".into()),
        ),
        (
            Score::new(ID, "a", "yes").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean("yes".into()),
        ),
        (
            Score::new(ID, "a", " true").data_type(ScoreDataType::Boolean),
            ScoreError::InvalidBoolean(" true".into()),
        ),
        (
            Score::categorical(ID, "a", "x").metadata(json!([1])),
            ScoreError::MetadataNotObject("an array"),
        ),
        (
            Score::categorical(ID, "a", "x").metadata(json!(null)),
            ScoreError::MetadataNotObject("null"),
        ),
        (
            Score::new(ID, "a\0", "0.5"),
            ScoreError::NulCharacter("name"),
        ),
        (
            Score::categorical(ID, "a", "x\0"),
            ScoreError::NulCharacter("value"),
        ),
        (
            Score::categorical(ID, "a", "x").reason("\0"),
            ScoreError::NulCharacter("reason"),
        ),
        (
            Score::categorical(ID, "a", "x").metadata(json!({"k": ["\0"]})),
            ScoreError::NulCharacter("metadata"),
        ),
        (
            Score::categorical(ID, "a", "x").metadata(json!({"k\0": 1})),
            ScoreError::NulCharacter("metadata"),
        ),
    ];
    for (score, expected) in cases {
        assert_eq!(check(score), Err(expected));
    }
}

#[test]
fn lengths_count_characters_not_bytes() {
    assert!(check(Score::new(ID, "é".repeat(255), "0.5")).is_ok());
}

#[test]
fn data_types_parse_in_any_case() {
    for (text, t) in [
        ("NUMERIC", ScoreDataType::Numeric),
        ("boolean", ScoreDataType::Boolean),
        ("Categorical", ScoreDataType::Categorical),
    ] {
        assert_eq!(text.parse::<ScoreDataType>(), Ok(t));
        assert_eq!(t.to_string().parse::<ScoreDataType>(), Ok(t));
    }
    let err = "bool".parse::<ScoreDataType>().unwrap_err();
    assert!(err.to_string().contains("\"bool\""), "{err}");
}
