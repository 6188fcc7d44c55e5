//! The `PANDAPROBE_*` environment variables, read as the Python SDK reads them.

use std::time::Duration;

use crate::error::ConfigError;

/// One recognised variable's value, parsed.
pub(super) enum EnvValue {
    ApiKey(String),
    ProjectName(String),
    Endpoint(String),
    Environment(String),
    Release(String),
    Enabled(bool),
    Debug(bool),
    BatchSize(usize),
    MaxQueueSize(usize),
    MaxQueueBytes(usize),
    MaxRecordBytes(usize),
    MaxInFlight(usize),
    MaxRetries(u32),
    FlushInterval(Duration),
    RequestTimeout(Duration),
    ConnectTimeout(Duration),
    ShutdownTimeout(Duration),
}

/// Every variable [`read`] knows; errors name them, so they must be `'static`.
pub(super) const ENV_VARS: [&str; 17] = [
    "PANDAPROBE_API_KEY",
    "PANDAPROBE_PROJECT_NAME",
    "PANDAPROBE_ENDPOINT",
    "PANDAPROBE_ENVIRONMENT",
    "PANDAPROBE_RELEASE",
    "PANDAPROBE_ENABLED",
    "PANDAPROBE_DEBUG",
    "PANDAPROBE_BATCH_SIZE",
    "PANDAPROBE_MAX_QUEUE_SIZE",
    "PANDAPROBE_MAX_QUEUE_BYTES",
    "PANDAPROBE_MAX_RECORD_BYTES",
    "PANDAPROBE_MAX_IN_FLIGHT",
    "PANDAPROBE_MAX_RETRIES",
    "PANDAPROBE_FLUSH_INTERVAL",
    "PANDAPROBE_REQUEST_TIMEOUT",
    "PANDAPROBE_CONNECT_TIMEOUT",
    "PANDAPROBE_SHUTDOWN_TIMEOUT",
];

/// Parses one variable: `None` for a name that is not ours, `Err` naming the variable for a
/// value that does not parse.
pub(super) fn read(name: &str, value: &str) -> Option<Result<EnvValue, ConfigError>> {
    let name = ENV_VARS.iter().copied().find(|known| *known == name)?;
    let text = || value.to_owned();
    Some(match name {
        "PANDAPROBE_API_KEY" => Ok(EnvValue::ApiKey(text())),
        "PANDAPROBE_PROJECT_NAME" => Ok(EnvValue::ProjectName(text())),
        "PANDAPROBE_ENDPOINT" => Ok(EnvValue::Endpoint(text())),
        "PANDAPROBE_ENVIRONMENT" => Ok(EnvValue::Environment(text())),
        "PANDAPROBE_RELEASE" => Ok(EnvValue::Release(text())),
        "PANDAPROBE_ENABLED" => Ok(EnvValue::Enabled(parse_bool(value))),
        "PANDAPROBE_DEBUG" => Ok(EnvValue::Debug(parse_bool(value))),
        "PANDAPROBE_BATCH_SIZE" => parse_positive(name, value).map(EnvValue::BatchSize),
        "PANDAPROBE_MAX_QUEUE_SIZE" => parse_positive(name, value).map(EnvValue::MaxQueueSize),
        "PANDAPROBE_MAX_QUEUE_BYTES" => parse_positive(name, value).map(EnvValue::MaxQueueBytes),
        "PANDAPROBE_MAX_RECORD_BYTES" => parse_positive(name, value).map(EnvValue::MaxRecordBytes),
        "PANDAPROBE_MAX_IN_FLIGHT" => parse_positive(name, value).map(EnvValue::MaxInFlight),
        "PANDAPROBE_MAX_RETRIES" => parse_count(name, value)
            .map(|n| EnvValue::MaxRetries(u32::try_from(n).unwrap_or(u32::MAX))),
        "PANDAPROBE_FLUSH_INTERVAL" => parse_seconds(name, value).map(EnvValue::FlushInterval),
        "PANDAPROBE_REQUEST_TIMEOUT" => parse_seconds(name, value).map(EnvValue::RequestTimeout),
        "PANDAPROBE_CONNECT_TIMEOUT" => parse_seconds(name, value).map(EnvValue::ConnectTimeout),
        _ => parse_seconds(name, value).map(EnvValue::ShutdownTimeout),
    })
}

/// The Python SDK's booleans: `true`, `1`, `yes` in any case; anything else is false.
fn parse_bool(value: &str) -> bool {
    let value = value.trim();
    ["true", "1", "yes"]
        .iter()
        .any(|t| value.eq_ignore_ascii_case(t))
}

fn parse_count(setting: &'static str, value: &str) -> Result<usize, ConfigError> {
    value
        .trim()
        .parse::<usize>()
        .map_err(|_| invalid(setting, format!("{value:?} is not a whole number")))
}

/// A count that must be at least 1, checked here so the error names the variable.
fn parse_positive(setting: &'static str, value: &str) -> Result<usize, ConfigError> {
    match parse_count(setting, value)? {
        0 => Err(invalid(setting, "must be at least 1")),
        n => Ok(n),
    }
}

fn parse_seconds(setting: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| invalid(setting, format!("{value:?} is not a number of seconds")))
}

pub(super) fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_the_python_rules() {
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            (" Yes ", true),
            ("false", false),
            ("0", false),
            ("on", false),
            ("", false),
        ] {
            assert_eq!(parse_bool(value), expected, "{value:?}");
        }
    }

    #[test]
    fn numbers_are_checked_and_errors_name_the_variable() {
        assert!(read("OTHER", "x").is_none());
        assert!(matches!(
            read("PANDAPROBE_FLUSH_INTERVAL", "0.25"),
            Some(Ok(EnvValue::FlushInterval(d))) if d == Duration::from_millis(250)
        ));
        for (name, value) in [
            ("PANDAPROBE_BATCH_SIZE", "ten"),
            ("PANDAPROBE_MAX_QUEUE_SIZE", "0"),
            ("PANDAPROBE_FLUSH_INTERVAL", "-1"),
            ("PANDAPROBE_SHUTDOWN_TIMEOUT", "soon"),
        ] {
            let Some(Err(e)) = read(name, value) else {
                panic!("{name}={value} should not parse");
            };
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
