//! TLS for `mqtts://`: the operator's CA (or the web PKI) and an optional client certificate.

use std::sync::Arc;

use rumqttc::TlsConfiguration;

use crate::config::MqttTls;

pub(super) fn tls_configuration(tls: &MqttTls) -> anyhow::Result<TlsConfiguration> {
    // As in `OpenWhiskClient::new`: ring is the provider, installed by the first caller.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca {
        Some(certs) => {
            roots.add_parsable_certificates(certs.iter().cloned());
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match &tls.client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                anyhow::anyhow!("MQTT_CLIENT_CERT_FILE/MQTT_CLIENT_KEY_FILE unusable: {e}")
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}
