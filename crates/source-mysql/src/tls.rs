//! `tls.mode = "verify_ca"`: trust any certificate the CA signed, whatever host name it holds.
//!
//! The driver can only check a certificate against one host name (it has no working switch to
//! skip that check with rustls 0.23). So before the first connection a probe opens a TLS
//! session the way a MySQL client does (read the server greeting, send an SSL request, start
//! TLS), verifies the certificate chain against the CA and reads the DNS names the certificate
//! holds. Real connections then verify chain *and* that name, which is exactly "signed by the
//! CA" for the server we talk to.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use backhaul_core::{Error, Result};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::conn::{CONNECT_TIMEOUT, Connector, tls_failure};

/// Capability flags of the SSL request packet (protocol 4.1, secure auth, TLS).
const CLIENT_LONG_PASSWORD: u32 = 0x1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
/// utf8mb4_general_ci.
const CHARSET_UTF8MB4: u8 = 45;

/// A DNS name from the server certificate, after verifying its chain against the CA.
pub(crate) async fn certificate_name(connector: &Connector) -> Result<String> {
    let endpoint = connector.endpoint();
    let host = connector.host().to_string();
    let port = connector.port();
    let roots = load_roots(connector.ca_file()).map_err(|m| tls_failure(&endpoint, "reading tls.ca_file", &m))?;
    let probe_endpoint = endpoint.clone();
    let names = tokio::task::spawn_blocking(move || probe(&host, port, roots, &probe_endpoint))
        .await
        .map_err(|e| Error::Internal(format!("TLS probe task failed: {e}")))??;
    let name = names
        .into_iter()
        .map(|n| match n.strip_prefix("*.") {
            // Any single label matches a wildcard.
            Some(rest) => format!("backhaul-verify-ca.{rest}"),
            None => n,
        })
        .next()
        .ok_or_else(|| {
            tls_failure(
                &endpoint,
                "checking the server certificate",
                "it holds no DNS name in subjectAltName, which verify_ca needs; use verify_full",
            )
        })?;
    Ok(name)
}

fn load_roots(ca_file: Option<&std::path::Path>) -> std::result::Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut found = false;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
                found = true;
            }
            if !found {
                return Err(format!("{} holds no PEM certificate", path.display()));
            }
        }
    }
    Ok(roots)
}

fn probe(host: &str, port: u16, roots: RootCertStore, endpoint: &str) -> Result<Vec<String>> {
    let unreachable = |m: String| Error::Unreachable {
        system: format!("mysql {endpoint}"),
        message: format!("TLS probe: {m}"),
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable(format!("{host} has no address")))?;
    let mut tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| unreachable(e.to_string()))?;
    tcp.set_read_timeout(Some(CONNECT_TIMEOUT)).ok();
    tcp.set_write_timeout(Some(CONNECT_TIMEOUT)).ok();

    let greeting = read_packet(&mut tcp).map_err(|e| unreachable(e.to_string()))?;
    if greeting.first() == Some(&0xff) {
        let code = greeting
            .get(1..3)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .unwrap_or(0);
        let text = String::from_utf8_lossy(greeting.get(3..).unwrap_or_default()).into_owned();
        let server = mysql_async::ServerError {
            code,
            message: text,
            state: "HY000".into(),
        };
        return Err(crate::conn::classify(
            mysql_async::Error::Server(server),
            endpoint,
            "",
            "TLS probe",
        ));
    }
    if capabilities(&greeting) & CLIENT_SSL == 0 {
        return Err(tls_failure(endpoint, "TLS probe", "the server does not offer TLS"));
    }
    let mut request = Vec::with_capacity(36);
    request.extend_from_slice(&[32, 0, 0, 1]);
    let caps = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    request.extend_from_slice(&caps.to_le_bytes());
    request.extend_from_slice(&(16u32 << 20).to_le_bytes());
    request.push(CHARSET_UTF8MB4);
    request.extend_from_slice(&[0; 23]);
    tcp.write_all(&request).map_err(|e| unreachable(e.to_string()))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_failure(endpoint, "TLS probe", &e.to_string()))?;
    let verifier = Arc::new(ChainOnly {
        inner,
        names: Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_failure(endpoint, "TLS probe", &e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| tls_failure(endpoint, "TLS probe", &format!("`{host}`: {e}")))?;
    let mut session = rustls::ClientConnection::new(Arc::new(config), server_name)
        .map_err(|e| tls_failure(endpoint, "TLS probe", &e.to_string()))?;
    while session.is_handshaking() {
        if let Err(e) = session.complete_io(&mut tcp) {
            if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Err(tls_failure(
                    endpoint,
                    "checking the server certificate",
                    &tls.to_string(),
                ));
            }
            return Err(unreachable(e.to_string()));
        }
    }
    session.send_close_notify();
    let _ = session.complete_io(&mut tcp);
    let names = verifier.names.lock().expect("not poisoned").take();
    names.ok_or_else(|| tls_failure(endpoint, "TLS probe", "the server sent no certificate"))
}

fn read_packet(tcp: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload)?;
    Ok(payload)
}

/// The lower 16 capability bits of a protocol-10 greeting: version byte, NUL-terminated server
/// version, 4-byte connection id, 8 bytes of scramble, a filler byte, then the flags.
fn capabilities(greeting: &[u8]) -> u32 {
    let Some(nul) = greeting.iter().skip(1).position(|b| *b == 0) else {
        return 0;
    };
    let at = 1 + nul + 1 + 4 + 8 + 1;
    greeting
        .get(at..at + 2)
        .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
        .unwrap_or(0)
}

/// Verifies the chain with the standard verifier and accepts a host-name mismatch only,
/// remembering the certificate's DNS names. Used by the probe session alone, which carries no
/// data.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
    names: Mutex<Option<Vec<String>>>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verdict {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                // The chain checks run before the name check, so a name mismatch means the
                // chain is good.
                let cert = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|e| rustls::Error::General(format!("unreadable certificate: {e}")))?;
                let names = cert.valid_dns_names().map(str::to_string).collect();
                *self.names.lock().expect("not poisoned") = Some(names);
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_greeting_capabilities() {
        let mut greeting = vec![10];
        greeting.extend_from_slice(b"10.11.19-MariaDB\0");
        greeting.extend_from_slice(&[1, 0, 0, 0]);
        greeting.extend_from_slice(&[0; 8]);
        greeting.push(0);
        greeting.extend_from_slice(&(CLIENT_SSL as u16 | 0x200).to_le_bytes());
        assert_eq!(capabilities(&greeting) & CLIENT_SSL, CLIENT_SSL);
        assert_eq!(capabilities(&[10, 0]), 0);
    }
}
