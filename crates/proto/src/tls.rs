//! TLS and mutual TLS for the control plane and the Flight data plane, with rustls on the ring
//! provider (tonic's `tls-ring` feature). Certificates and keys are PEM files.
//!
//! Every file is read and parsed here, so a missing, unreadable or malformed file is an error
//! naming that file; tonic alone would report "Error parsing TLS certificate", or accept a file
//! without any certificate and fail every handshake later.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::WireError;

fn read(path: &Path) -> Result<Vec<u8>, WireError> {
    std::fs::read(path).map_err(|source| WireError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM file holding at least one certificate (a chain or a CA bundle).
fn read_certificates(path: &Path) -> Result<Vec<u8>, WireError> {
    let pem = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WireError::Pem {
            path: path.to_path_buf(),
            message: format!("not a readable PEM certificate file: {e}"),
        })?;
    if certificates.is_empty() {
        return Err(WireError::Pem {
            path: path.to_path_buf(),
            message: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(pem)
}

/// A PEM file holding a private key.
fn read_private_key(path: &Path) -> Result<Vec<u8>, WireError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| WireError::Pem {
        path: path.to_path_buf(),
        message: format!("holds no readable PEM private key: {e}"),
    })?;
    Ok(pem)
}

fn identity(cert: &Path, key: &Path) -> Result<Identity, WireError> {
    Ok(Identity::from_pem(read_certificates(cert)?, read_private_key(key)?))
}

/// A server's TLS (the coordinator's gRPC port, a worker's Flight port): its certificate chain
/// and key, and for mutual TLS the CA that client certificates must chain to.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA bundle; when set, every client must present a certificate it signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// The tonic server config (reads and checks the files).
    pub fn config(&self) -> Result<ServerTlsConfig, WireError> {
        let mut config = ServerTlsConfig::new().identity(identity(&self.cert, &self.key)?);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_certificates(ca)?));
        }
        Ok(config)
    }
}

/// A client's TLS: the CA that signed the server's certificate, and for mutual TLS the
/// client's own certificate and key.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle that signed the server's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name to expect in the server's certificate, when it differs from the URL's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// The tonic client config (reads and checks the files).
    pub fn config(&self) -> Result<ClientTlsConfig, WireError> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read_certificates(ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => config = config.identity(identity(cert, key)?),
            (None, None) => {}
            _ => {
                return Err(WireError::InvalidConfig(
                    "a client certificate needs its key and a key its certificate (--tls-cert with --tls-key)".into(),
                ));
            }
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_files_are_named() {
        let dir = std::env::temp_dir().join(format!("backhaul-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing-ca.pem");
        let not_pem = dir.join("not-a-ca.pem");
        std::fs::write(&not_pem, "just some text\n").unwrap();
        let broken = dir.join("broken-ca.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for (path, expect) in [
            (&missing, "No such file"),
            (&not_pem, "holds no PEM certificate"),
            (&broken, "not a readable PEM certificate file"),
        ] {
            let tls = ClientTls {
                ca: Some(path.clone()),
                ..ClientTls::default()
            };
            let err = tls.config().expect_err("a bad CA file").to_string();
            assert!(err.starts_with(&path.display().to_string()), "{err}");
            assert!(err.contains(expect), "{err}");
            let server = ServerTls {
                cert: path.clone(),
                key: path.clone(),
                client_ca: None,
            };
            let err = server.config().expect_err("a bad certificate").to_string();
            assert!(err.starts_with(&path.display().to_string()), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
