//! How the client reaches the server, besides the endpoint: extra root certificates (a
//! private CA, a TLS-intercepting proxy) and an explicit proxy, checked when the client is
//! built, and the user's own settings for the HTTP client. The proxy's URL may carry a
//! password: it is never printed.

use std::fmt;
use std::sync::Arc;

use super::env::invalid;
use crate::error::ConfigError;

/// A proxy for every request; its URL (which may carry credentials) is never printed.
#[derive(Clone)]
pub(crate) struct Proxy(pub(crate) reqwest::Proxy);

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proxy(<set>)")
    }
}

/// The user's settings for the HTTP client ([`ClientBuilder::configure_http`](crate::ClientBuilder::configure_http)),
/// applied before the SDK's own.
#[derive(Clone)]
pub(crate) struct HttpSettings(
    pub(crate) Arc<dyn Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync>,
);

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpSettings(<function>)")
    }
}

/// Every certificate in the PEM texts given.
pub(super) fn root_certificates(
    pems: &[Vec<u8>],
) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let mut certificates = Vec::new();
    for pem in pems {
        let found = reqwest::Certificate::from_pem_bundle(pem)
            .ok()
            .filter(|found| !found.is_empty())
            .ok_or_else(|| {
                invalid(
                    "root_certificate",
                    "it is not one or more PEM certificates (-----BEGIN CERTIFICATE-----)",
                )
            })?;
        certificates.extend(found);
    }
    Ok(certificates)
}

/// The proxy, checked; an error never repeats the URL (it may hold a password).
pub(super) fn proxy(url: Option<&str>) -> Result<Option<Proxy>, ConfigError> {
    let Some(url) = url else {
        return Ok(None);
    };
    reqwest::Proxy::all(url)
        .map(|p| Some(Proxy(p)))
        .map_err(|_| {
            invalid(
                "proxy",
                "not a proxy URL (scheme://host:port, the scheme http, https or socks5)",
            )
        })
}
