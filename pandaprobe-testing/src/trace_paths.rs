//! The paths under `/traces/{trace_id}`: their templates, concrete paths, how a path matches a
//! template, and the trace id in a path as FastAPI validates it.

use uuid::Uuid;

use crate::json_fields::FieldError;

/// The template of `GET /traces/{trace_id}` for
/// [`TestServerBuilder::rate_limit`](crate::TestServerBuilder::rate_limit) and
/// [`TestServer::fail_next_on`](crate::TestServer::fail_next_on): it stands for every
/// concrete path [`trace_path`] makes, each limited on its own.
pub const TRACE_PATH_TEMPLATE: &str = "/traces/{trace_id}";

/// The template of `POST /traces/{trace_id}/spans`; see [`TRACE_PATH_TEMPLATE`].
pub const SPANS_PATH_TEMPLATE: &str = "/traces/{trace_id}/spans";

/// The concrete path of one trace: `/traces/<trace_id>`.
pub fn trace_path(trace_id: Uuid) -> String {
    format!("/traces/{trace_id}")
}

/// The concrete path spans of one trace are posted to: `/traces/<trace_id>/spans`.
pub fn spans_path(trace_id: Uuid) -> String {
    format!("/traces/{trace_id}/spans")
}

/// Which of the two routes a path is, with its raw `{trace_id}` segment.
pub(crate) enum TraceRoute<'a> {
    Trace(&'a str),
    Spans(&'a str),
}

pub(crate) fn route(path: &str) -> Option<TraceRoute<'_>> {
    let rest = path.strip_prefix("/traces/")?;
    match rest.split_once('/') {
        None if !rest.is_empty() => Some(TraceRoute::Trace(rest)),
        Some((id, "spans")) if !id.is_empty() => Some(TraceRoute::Spans(id)),
        _ => None,
    }
}

/// Whether `path` is `template` with each `{…}` segment replaced by a non-empty segment.
/// A template without `{` matches only itself.
pub(crate) fn matches(template: &str, path: &str) -> bool {
    if !template.contains('{') {
        return template == path;
    }
    let mut wanted = template.split('/');
    let mut got = path.split('/');
    loop {
        match (wanted.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The trace id of a path, or the error FastAPI reports for it (`path -> trace_id`, with
/// the message of the `uuid` crate pydantic-core is built with).
pub(crate) fn trace_id(segment: &str) -> Result<Uuid, FieldError> {
    let decoded = percent_decode(segment);
    Uuid::parse_str(&decoded).map_err(|e| {
        FieldError::new(
            "path -> trace_id",
            format!(
                "Input should be a valid UUID, {}",
                pydantic_uuid_error(&e.to_string())
            ),
        )
    })
}

/// This crate's `uuid` words some errors more briefly than the version in pydantic-core.
fn pydantic_uuid_error(ours: &str) -> String {
    if let Some(rest) = ours.strip_prefix("invalid character: found ") {
        // `` `c` at N ``, 0-based here and 1-based there.
        if let Some((found, at)) = rest.rsplit_once(" at ") {
            if let Ok(at) = at.parse::<usize>() {
                return format!(
                    "invalid character: expected an optional prefix of `urn:uuid:` followed by \
                     [0-9a-fA-F-], found {found} at {}",
                    at + 1
                );
            }
        }
    }
    if let Some(n) = ours.strip_prefix("invalid length: found ") {
        return format!("invalid length: expected length 32 for simple format, found {n}");
    }
    ours.to_owned()
}

/// Starlette matches routes against the percent-decoded path.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_templates() {
        assert!(matches!(
            route("/traces/abc"),
            Some(TraceRoute::Trace("abc"))
        ));
        assert!(matches!(
            route("/traces/abc/spans"),
            Some(TraceRoute::Spans("abc"))
        ));
        for none in [
            "/traces",
            "/traces/",
            "/traces//spans",
            "/traces/a/b",
            "/traces/a/spans/x",
        ] {
            assert!(route(none).is_none(), "{none}");
        }
        assert!(matches(TRACE_PATH_TEMPLATE, "/traces/abc"));
        assert!(!matches(TRACE_PATH_TEMPLATE, "/traces/"));
        assert!(!matches(TRACE_PATH_TEMPLATE, "/traces/abc/spans"));
        assert!(matches(SPANS_PATH_TEMPLATE, "/traces/abc/spans"));
        assert!(!matches(SPANS_PATH_TEMPLATE, "/traces/abc/spanz"));
        assert!(matches("/traces", "/traces"));
        assert!(!matches("/traces", "/traces/abc"));
        let id = Uuid::from_u128(7);
        assert!(matches(TRACE_PATH_TEMPLATE, &trace_path(id)));
        assert!(matches(SPANS_PATH_TEMPLATE, &spans_path(id)));
    }

    #[test]
    fn trace_id_errors_as_the_real_server_words_them() {
        let message = |s: &str| trace_id(s).err().map(|e| e.message().to_owned());
        // Measured against the real server.
        assert_eq!(
            message("not-a-uuid").as_deref(),
            Some(
                "Input should be a valid UUID, invalid character: expected an optional prefix \
                 of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1"
            )
        );
        assert_eq!(
            message("1234").as_deref(),
            Some(
                "Input should be a valid UUID, invalid length: expected length 32 for simple \
                 format, found 4"
            )
        );
        assert_eq!(
            message("d104d59d-f124-4533-b5c0-77602651d15").as_deref(),
            Some(
                "Input should be a valid UUID, invalid group length in group 4: expected 12, \
                 found 11"
            )
        );
        let id = "d104d59d-f124-4533-b5c0-77602651d15e";
        assert_eq!(
            trace_id(&id.to_uppercase())
                .ok()
                .map(|u| u.to_string())
                .as_deref(),
            Some(id)
        );
        assert_eq!(
            trace_id("d104d59d%2Df124-4533-b5c0-77602651d15e")
                .ok()
                .map(|u| u.to_string())
                .as_deref(),
            Some(id)
        );
    }
}
