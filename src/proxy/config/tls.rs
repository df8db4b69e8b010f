//! `[server] tls_cert` and `tls_key`: the certificate chain and private key the proxy serves
//! HTTPS with, read and checked when the configuration is read.
//!
//! Both are PEM file paths; a relative path is taken from the configuration file's directory
//! (so a unit that starts the proxy from `/` finds them). The certificate file holds the
//! server's certificate first, then any intermediates; the key file one PKCS#8, PKCS#1 or SEC1
//! private key. Errors name the file, line and field of the setting: a file that cannot be
//! read, one with no certificate or no key, and a key that does not belong to the
//! certificate. Nothing a key file holds is ever quoted in an error.
//!
//! The server offers TLS 1.2 and 1.3 with rustls' safe defaults (the `aws-lc-rs` provider,
//! the one the HTTP client already uses) and ALPN `h2` then `http/1.1`, so clients that speak
//! HTTP/2 get it.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::{Checker, ConfigError};

/// Reads both files and builds the server's TLS configuration; `None` when neither is set.
pub(super) fn load(
    c: &Checker<'_>,
    cert: Option<&Spanned<String>>,
    key: Option<&Spanned<String>>,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(cert), None) => {
            return Err(c.error(
                &cert.span(),
                "server.tls_cert",
                "tls_cert needs tls_key: add tls_key = \"/path/to/key.pem\" under [server], or \
                 remove tls_cert to serve plain HTTP",
            ));
        }
        (None, Some(key)) => {
            return Err(c.error(
                &key.span(),
                "server.tls_key",
                "tls_key needs tls_cert: add tls_cert = \"/path/to/cert.pem\" under [server], or \
                 remove tls_key to serve plain HTTP",
            ));
        }
    };
    let cert_path = resolve(c.path, cert.get_ref());
    let key_path = resolve(c.path, key.get_ref());
    let read = |path: &Path, span: &Range<usize>, field: &str| {
        std::fs::read(path).map_err(|e| {
            c.error(
                span,
                field,
                format!(
                    "cannot read {}: {e}; give the path of a PEM file the proxy's user may read",
                    path.display()
                ),
            )
        })
    };
    let cert_pem = read(&cert_path, &cert.span(), "server.tls_cert")?;
    let key_pem = read(&key_path, &key.span(), "server.tls_key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            c.error(
                &cert.span(),
                "server.tls_cert",
                format!(
                    "{} is not a readable PEM file ({e}); it must hold \"-----BEGIN CERTIFICATE-----\" blocks",
                    cert_path.display()
                ),
            )
        })?;
    if chain.is_empty() {
        return Err(c.error(
            &cert.span(),
            "server.tls_cert",
            format!(
                "{} holds no certificate; it must hold the server's \"-----BEGIN CERTIFICATE-----\" \
                 block first, then any intermediates",
                cert_path.display()
            ),
        ));
    }
    // The parser's own error may quote the file; a key file's text is never repeated.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        c.error(
            &key.span(),
            "server.tls_key",
            format!(
                "{} holds no private key; it must hold one \"-----BEGIN PRIVATE KEY-----\" \
                 (PKCS#8), \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" block",
                key_path.display()
            ),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| c.error(&cert.span(), "server.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the certificate".to_owned()
                }
                other => other.to_string(),
            };
            c.error(
                &key.span(),
                "server.tls_key",
                format!(
                    "{} cannot serve {}: {why}; give the key the certificate was issued for",
                    key_path.display(),
                    cert_path.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// `path` as written, or relative to the configuration file's directory.
fn resolve(config: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_owned();
    }
    config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| p.to_owned(), |d| d.join(p))
}
