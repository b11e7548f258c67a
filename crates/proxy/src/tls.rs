//! rustls client configuration for https backends and mirror targets, built from the `tls` block of a backend
//! (routing.md §11): CA bundle, SNI, SAN lists and client certificates.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};
use tunnelgate_config::BackendTls;

/// Why a TLS client configuration could not be built. The backend then fails closed (502).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("invalid caBundle: {0}")]
    CaBundle(String),
    #[error("invalid client certificate: {0}")]
    ClientCert(String),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("tls configuration: {0}")]
    Rustls(#[from] TlsError),
}

/// Builds the client configuration for one upstream. `h2` selects ALPN `h2`, otherwise `http/1.1`.
pub fn client_config(tls: Option<&BackendTls>, h2: bool) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(tls)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?;
    let sans = tls
        .filter(|t| !t.subject_alt_names.is_empty() || !t.subject_alt_name_uris.is_empty())
        .map(|t| SanVerifier {
            roots: roots.clone(),
            algorithms: provider.signature_verification_algorithms,
            dns_names: t
                .subject_alt_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            uris: t.subject_alt_name_uris.clone(),
        });
    let builder = match sans {
        Some(verifier) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier)),
        None => builder.with_root_certificates(roots),
    };
    let mut config = match client_identity(tls)? {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// SNI: `tls.serverName`, else the URL host.
pub fn server_name(tls: Option<&BackendTls>, host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    let name = tls
        .map(|t| t.server_name.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned()).map_err(|_| TlsSetupError::ServerName(name.to_owned()))
}

fn roots(tls: Option<&BackendTls>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    match tls.map(|t| t.ca_bundle.as_str()).filter(|b| !b.is_empty()) {
        Some(pem) => {
            let mut reader = pem.as_bytes();
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(|e| TlsSetupError::CaBundle(e.to_string()))?;
                store
                    .add(cert)
                    .map_err(|e| TlsSetupError::CaBundle(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(TlsSetupError::CaBundle("no certificate found".into()));
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(tls: Option<&BackendTls>) -> Result<Option<Identity>, TlsSetupError> {
    let Some(tls) = tls else { return Ok(None) };
    if tls.client_cert_pem.is_empty() && tls.client_key_pem.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str| TlsSetupError::ClientCert(what.to_owned());
    let b64 = base64::engine::general_purpose::STANDARD;
    let cert_pem = b64
        .decode(tls.client_cert_pem.as_bytes())
        .map_err(|_| bad("clientCertPem is not base64"))?;
    let key_pem = b64
        .decode(tls.client_key_pem.as_bytes())
        .map_err(|_| bad("clientKeyPem is not base64"))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("clientCertPem is not PEM"))?;
    if certs.is_empty() {
        return Err(bad("clientCertPem holds no certificate"));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|_| bad("clientKeyPem is not PEM"))?
        .ok_or_else(|| bad("clientKeyPem holds no key"))?;
    Ok(Some((certs, key)))
}

/// Verifies the chain against the configured roots, then accepts the certificate when any listed DNS SAN or
/// exact URI SAN is present in it, instead of checking the SNI name.
#[derive(Debug)]
struct SanVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    dns_names: Vec<String>,
    uris: Vec<String>,
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let (cert_dns, cert_uris) = certificate_sans(end_entity.as_ref())
            .ok_or(TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
        let dns_ok = self
            .dns_names
            .iter()
            .any(|want| cert_dns.iter().any(|have| dns_san_matches(want, have)));
        let uri_ok = self
            .uris
            .iter()
            .any(|want| cert_uris.iter().any(|have| have == want));
        if dns_ok || uri_ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(TlsError::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// DNS and URI SANs of a DER certificate; DNS names lowercased.
fn certificate_sans(der: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push(n.to_ascii_lowercase()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    Some((dns, uris))
}

/// `want` is a configured SAN (may be `*.suffix`), `have` one from the certificate (may be a wildcard too).
/// Equal names match; a wildcard on either side covers exactly one label in front of its suffix.
fn dns_san_matches(want: &str, have: &str) -> bool {
    if want == have {
        return true;
    }
    let covers = |wildcard: &str, name: &str| {
        wildcard.strip_prefix("*.").is_some_and(|suffix| {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
                && !name[..name.len() - suffix.len() - 1].contains('.')
                && !name.starts_with("*.")
        })
    };
    covers(have, want) || covers(want, have)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_matching() {
        assert!(dns_san_matches("a.web.svc", "a.web.svc"));
        assert!(dns_san_matches("a.web.svc", "*.web.svc"));
        assert!(dns_san_matches("*.web.svc", "a.web.svc"));
        assert!(!dns_san_matches("a.b.web.svc", "*.web.svc"));
        assert!(!dns_san_matches("web.svc", "*.web.svc"));
        assert!(!dns_san_matches("a.web.svc", "b.web.svc"));
    }

    #[test]
    fn bad_ca_bundle_is_an_error() {
        let tls = BackendTls {
            ca_bundle: "not pem".into(),
            ..BackendTls::default()
        };
        assert!(matches!(
            client_config(Some(&tls), false),
            Err(TlsSetupError::CaBundle(_))
        ));
    }

    #[test]
    fn server_name_prefers_configured_sni() {
        let tls = BackendTls {
            server_name: "assets.web.svc".into(),
            ..BackendTls::default()
        };
        assert_eq!(
            server_name(Some(&tls), "10.0.0.1").unwrap(),
            ServerName::try_from("assets.web.svc").unwrap()
        );
        assert_eq!(
            server_name(None, "10.0.0.1").unwrap(),
            ServerName::try_from("10.0.0.1").unwrap()
        );
    }
}
