//! The builder's setters for how the client reaches the server: extra root certificates, a
//! proxy, and the user's own settings for the HTTP client (checked in `network`).

use std::sync::Arc;

use super::builder::ClientBuilder;
use super::network::HttpSettings;

impl ClientBuilder {
    /// Also trusts the certificates in `pem` (one or more, PEM): for a self-hosted server behind
    /// a private certificate authority or a TLS-intercepting proxy. The built-in roots (Mozilla's,
    /// through `webpki-roots`; with the `native-roots` feature, the system's too) stay trusted.
    /// Checked by `build()`. May be called more than once.
    pub fn add_root_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.root_certificates.push(pem.as_ref().to_vec());
        self
    }

    /// Sends every request through this proxy (`http://`, `https://` or `socks5://` are what
    /// reqwest takes; `http://user:password@host:port` carries credentials, which are never
    /// printed). Without it, the `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
    /// environment variables apply, as in most HTTP clients. Checked by `build()`.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Adjusts the HTTP client the worker sends with, for what the other setters do not cover:
    /// a client certificate (mTLS, [`Identity`](reqwest::Identity)), a fixed address for a
    /// host name ([`resolve`](reqwest::ClientBuilder::resolve)), a local address, headers a
    /// gateway wants. `configure` gets a fresh [`reqwest::ClientBuilder`] (reqwest is
    /// re-exported as [`pandaprobe::reqwest`](crate::reqwest), the version this SDK builds
    /// with); the SDK then sets its own over it: the API key and project headers, the request
    /// and connect timeouts, redirects off (a redirect would carry the key to another host),
    /// HTTP/1.1, the pool size, and the root certificates and proxy set here. It is called on
    /// the worker's thread each time the worker builds a client: twice at the start, and again
    /// when it renews its connection pool after a server closed a connection. If it panics,
    /// `build()` fails with [`ConfigError::Worker`](crate::ConfigError::Worker) (and a later renewal keeps the old pool).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use pandaprobe::Client;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let gateway: SocketAddr = "10.0.0.7:443".parse()?;
    /// let client = Client::builder()
    ///     .api_key("sk_pp_...")
    ///     .project_name("my-project")
    ///     .endpoint("https://pandaprobe.internal")
    ///     .configure_http(move |http| http.resolve("pandaprobe.internal", gateway))
    ///     .build()?;
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn configure_http(
        mut self,
        configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.http = Some(HttpSettings(Arc::new(configure)));
        self
    }
}
