//! TLS and QUIC parameters (tunnel.md §3) for both ends of a tunnel connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Server name for the QUIC transport.
pub const QUIC_SERVER_NAME: &str = "quic.cftunnel.com";
/// Server name for the HTTP/2 transport.
pub const H2_SERVER_NAME: &str = "h2.cftunnel.com";
/// The only ALPN offered on QUIC.
pub const ALPN: &[u8] = b"argotunnel";
/// QUIC handshake timeout.
pub const QUIC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 dial + TLS timeout.
pub const H2_DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Peer-initiated bidirectional streams allowed at once. cloudflared allows 2^60, and tunnel.md §3 asks for
/// at least 2^30, but quinn materialises one map entry per allowed stream up front (2^30 entries exhaust
/// memory and stall the connection). quinn re-grants credit as streams finish, so this bounds only the
/// number of *concurrent* eyeball requests per connection, which stays far below it in practice.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 1 << 14;

const CLOUDFLARE_CAS: &str = include_str!("../certs/cloudflare-origin-cas.pem");

/// A TLS set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading CA file {path}: {source}")]
    CaFile { path: String, source: std::io::Error },
    #[error("CA file {0} holds no usable certificate")]
    NoCertificates(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("quic crypto: {0}")]
    Quic(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Edge trust roots: Mozilla's roots plus the Cloudflare origin CAs, or exactly the certificates in
/// `ca_file` (`PROXY_TUNNEL_CA_FILE` replaces the pool).
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| TlsError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            let (added, _) = store.add_parsable_certificates(parse_pem_certs(&pem));
            if added == 0 {
                return Err(TlsError::NoCertificates(path.display().to_string()));
            }
        }
        None => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            store.add_parsable_certificates(parse_pem_certs(CLOUDFLARE_CAS.as_bytes()));
        }
    }
    Ok(store)
}

/// Certificates in a PEM bundle; other blocks are skipped.
pub fn parse_pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut &pem[..])
        .filter_map(Result::ok)
        .collect()
}

/// TLS client config for the QUIC transport: TLS 1.3, ALPN `argotunnel`, no resumption or 0-RTT.
pub fn quic_client_tls(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_early_data = false;
    Ok(cfg)
}

/// TLS client config for the HTTP/2 transport: TLS ≥ 1.2, no ALPN.
pub fn h2_client_tls(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, TlsError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

/// QUIC transport settings shared by the connector and the edge emulator.
pub fn transport_config(ipv6: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(5_000))));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_CONCURRENT_BIDI_STREAMS));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.datagram_receive_buffer_size(Some(1 << 20));
    t.receive_window(quinn::VarInt::from_u32(30 * 1024 * 1024));
    t.stream_receive_window(quinn::VarInt::from_u32(6 * 1024 * 1024));
    t.initial_mtu(if ipv6 { 1252 } else { 1232 });
    t
}

/// The connector's quinn client config.
pub fn quic_client_config(roots: rustls::RootCertStore, ipv6: bool) -> Result<quinn::ClientConfig, TlsError> {
    let tls = quic_client_tls(roots)?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config(ipv6)));
    Ok(cfg)
}

/// Edge side: TLS server config (no ALPN required, so HTTP/2 clients without ALPN are accepted).
pub fn edge_server_tls(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Option<&[u8]>,
) -> Result<rustls::ServerConfig, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if alpn.is_some() {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    if let Some(alpn) = alpn {
        cfg.alpn_protocols = vec![alpn.to_vec()];
    }
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// Edge side: quinn server config with ALPN `argotunnel` and the transport settings above.
pub fn edge_quic_server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, TlsError> {
    let tls = edge_server_tls(chain, key, Some(ALPN))?;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config(false)));
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roots_include_the_cloudflare_cas() {
        let shipped = parse_pem_certs(CLOUDFLARE_CAS.as_bytes());
        assert_eq!(shipped.len(), 3);
        let store = root_store(None).unwrap();
        assert!(store.len() > 3);
    }

    #[test]
    fn a_ca_file_replaces_the_pool_and_bad_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("tg-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, CLOUDFLARE_CAS).unwrap();
        assert_eq!(root_store(Some(&good)).unwrap().len(), 3);
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "not a cert").unwrap();
        assert!(matches!(root_store(Some(&bad)), Err(TlsError::NoCertificates(_))));
        assert!(matches!(
            root_store(Some(&dir.join("missing"))),
            Err(TlsError::CaFile { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
