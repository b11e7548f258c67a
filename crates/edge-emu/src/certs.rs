//! The emulator's certificate authority and leaf (tunnel.md §13): a CA whose PEM users pass as
//! `PROXY_TUNNEL_CA_FILE` / `--cacert`, and a leaf for `quic.cftunnel.com` and `h2.cftunnel.com`.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::EmuError;

/// CA and leaf material.
pub struct EdgeCerts {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub leaf_chain: Vec<CertificateDer<'static>>,
    pub leaf_key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for EdgeCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeCerts")
    }
}

fn tls_err(e: rcgen::Error) -> EmuError {
    EmuError::Certificate(e.to_string())
}

impl EdgeCerts {
    /// Generates a CA (or reuses `ca_key_pem`) and a fresh leaf signed by it.
    pub fn generate(ca_key_pem: Option<&str>) -> Result<Self, EmuError> {
        let ca_key = match ca_key_pem {
            Some(pem) => KeyPair::from_pem(pem).map_err(tls_err)?,
            None => KeyPair::generate().map_err(tls_err)?,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tunnelgate edge emulator CA");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "tunnelgate");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let leaf_key = KeyPair::generate().map_err(tls_err)?;
        let mut leaf_params = CertificateParams::new(vec![
            tunnelgate_tunnel::transport::QUIC_SERVER_NAME.to_string(),
            tunnelgate_tunnel::transport::H2_SERVER_NAME.to_string(),
        ])
        .map_err(tls_err)?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "quic.cftunnel.com");
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(tls_err)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            leaf_chain: vec![leaf.der().clone()],
            leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        })
    }
}
