//! TLS (rustls, no OpenSSL): the server's certificate and key, the CA that client certificates
//! must chain to, and `tls-auth-clients` — as Redis configures them.
//!
//! The `ServerConfig` built from the files lives in `Shared` and is read at each TLS accept,
//! so `CONFIG SET tls-cert-file ...` takes effect for the next connection: the new files are
//! loaded and checked first, and a bad one is refused with the old configuration kept.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, TlsAuthClients};

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Builds the TLS server configuration from `config`'s files; the error says which file and
/// why (startup refuses it, CONFIG SET answers it).
pub fn server_config(config: &Config) -> Result<Arc<ServerConfig>, String> {
    let cert_file = config
        .tls_cert_file
        .as_ref()
        .ok_or("tls-port needs tls-cert-file and tls-key-file")?;
    let key_file = config
        .tls_key_file
        .as_ref()
        .ok_or("tls-port needs tls-cert-file and tls-key-file")?;
    let chain = certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: not a PEM private key: {e}", key_file.display()))?;
    let builder = ServerConfig::builder();
    let builder = match config.tls_auth_clients {
        TlsAuthClients::No => builder.with_no_client_auth(),
        auth => {
            let ca_file = config.tls_ca_cert_file.as_ref().ok_or(
                "tls-auth-clients yes|optional needs tls-ca-cert-file (or set tls-auth-clients no)",
            )?;
            let mut roots = RootCertStore::empty();
            for c in certs(ca_file)? {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if auth == TlsAuthClients::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca_file.display()))?,
            )
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))?;
    Ok(Arc::new(server))
}
