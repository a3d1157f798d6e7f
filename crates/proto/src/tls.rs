//! TLS and mutual TLS for the control plane, with rustls on the ring provider (tonic's
//! `tls-ring` feature). Certificates and keys are PEM files.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::WireError;

fn read(path: &Path) -> Result<Vec<u8>, WireError> {
    std::fs::read(path).map_err(|source| WireError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The coordinator's TLS: its certificate chain and key, and for mutual TLS the CA that
/// client certificates must chain to.
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
    /// The tonic server config (reads the files).
    pub fn config(&self) -> Result<ServerTlsConfig, WireError> {
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read(ca)?));
        }
        Ok(config)
    }
}

/// A client's TLS: the CA that signed the coordinator's certificate, and for mutual TLS the
/// client's own certificate and key.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle that signed the coordinator's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name to expect in the coordinator's certificate, when it differs from the URL's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// The tonic client config (reads the files).
    pub fn config(&self) -> Result<ClientTlsConfig, WireError> {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(read(cert)?, read(key)?)),
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
