//! TLS material of one node, read once at start: the server configurations of
//! its listeners and the client identity for its peer calls. One crypto
//! provider (aws-lc-rs, the one reqwest uses) is named explicitly everywhere,
//! so no process-wide default has to be installed.

use std::path::Path;
use std::sync::Arc;

use raft_store::network::PeerTls;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// TLS for a node: what its listeners present and check, and what it
/// presents to its peers.
#[derive(Clone)]
pub struct NodeTls {
    /// The public (or shared) listener. With client auth on, a client
    /// certificate is asked for but optional; `/raft` then refuses requests on
    /// connections without one ([`NodeTls::raft_needs_client_cert`]).
    pub shared: TlsAcceptor,
    /// The public listener when `/raft` has its own: never asks for a
    /// client certificate (a browser would offer its own to pick from).
    pub public_only: TlsAcceptor,
    /// A listener for `/raft` alone: with client auth on, no certificate, no handshake.
    pub raft_only: TlsAcceptor,
    pub raft_needs_client_cert: bool,
    pub peer: PeerTls,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{key} {} cannot be read: {e}", path.display()))
}

fn certs(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl NodeTls {
    /// Read and check the three files; `client_auth`: mutual TLS on `/raft`.
    pub fn load(cert: &Path, key: &Path, ca: &Path, client_auth: bool) -> Result<Self, String> {
        let (cert_pem, key_pem, ca_pem) =
            (read("ENGINE_TLS_CERT", cert)?, read("ENGINE_TLS_KEY", key)?, read("ENGINE_TLS_CA", ca)?);
        let chain = certs("ENGINE_TLS_CERT", cert, &cert_pem)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("ENGINE_TLS_KEY {} holds no usable PEM private key: {e}", key.display()))?;
        let mut roots = RootCertStore::empty();
        for c in certs("ENGINE_TLS_CA", ca, &ca_pem)? {
            roots.add(c).map_err(|e| format!("ENGINE_TLS_CA {} holds an unusable certificate: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);

        let server = |client_cert: Option<bool>| -> Result<TlsAcceptor, String> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?;
            let builder = match client_cert {
                None => builder.with_no_client_auth(),
                Some(required) => {
                    let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
                    let v = if required { v } else { v.allow_unauthenticated() };
                    builder.with_client_cert_verifier(
                        v.build().map_err(|e| format!("ENGINE_TLS_CA {} cannot verify clients: {e}", ca.display()))?,
                    )
                }
            };
            let mut config = builder.with_single_cert(chain.clone(), private.clone_key()).map_err(|e| {
                format!(
                    "ENGINE_TLS_CERT {} and ENGINE_TLS_KEY {} do not make a key pair: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            // HTTP/1.1 only: the header-read timeout and the connection
            // cap are per HTTP/1 connection.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        let shared = server(client_auth.then_some(false))?;
        let public_only = server(None)?;
        let raft_only = server(client_auth.then_some(true))?;

        let roots_for_peers = reqwest::Certificate::from_pem_bundle(&ca_pem)
            .map_err(|e| format!("ENGINE_TLS_CA {} cannot be used for peer calls: {e}", ca.display()))?;
        let identity = if client_auth {
            let both = [cert_pem.as_slice(), b"\n", key_pem.as_slice()].concat();
            Some(reqwest::Identity::from_pem(&both).map_err(|e| {
                format!("ENGINE_TLS_CERT/ENGINE_TLS_KEY cannot be a client identity for peer calls: {e}")
            })?)
        } else {
            None
        };
        let peer = PeerTls { roots: roots_for_peers, identity };
        raft_store::network::peer_http_client(None, Some(&peer))
            .map_err(|e| format!("peer TLS client cannot be built from ENGINE_TLS_*: {e}"))?;
        Ok(Self { shared, public_only, raft_only, raft_needs_client_cert: client_auth, peer })
    }
}
