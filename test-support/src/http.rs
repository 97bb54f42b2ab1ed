//! A reqwest client for loopback HTTP.

use std::time::Duration;

/// A reqwest client for loopback HTTP: no proxy, requests time out after `timeout`.
///
/// The provider's reqwest features (which its tests and bench share) include rustls
/// without a crypto provider, and building a client then panics unless one is
/// installed: this installs ring's.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("build an HTTP client")
}
