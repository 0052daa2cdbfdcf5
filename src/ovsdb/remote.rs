//! OVN's remote syntax (`unix:PATH`, `tcp:HOST:PORT`, `ssl:HOST:PORT`, comma-separated lists) and
//! the transports behind it, TLS included. OVN checks a server's certificate against the CA only,
//! never its host name (remotes are usually IP addresses), and so does this client.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::error::OvsdbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Ssl { host: String, port: u16 },
}

impl fmt::Display for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |host: &str| {
            if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            }
        };
        match self {
            Remote::Unix(path) => write!(f, "unix:{}", path.display()),
            Remote::Tcp { host, port } => write!(f, "tcp:{}:{port}", bracket(host)),
            Remote::Ssl { host, port } => write!(f, "ssl:{}:{port}", bracket(host)),
        }
    }
}

impl Remote {
    /// Parses one remote, e.g. `tcp:[::1]:6641`.
    pub fn parse(text: &str) -> Result<Remote, OvsdbError> {
        let invalid = |reason: &str| OvsdbError::InvalidRemote {
            remote: text.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = text
            .split_once(':')
            .ok_or_else(|| invalid("expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT"))?;
        match kind {
            "unix" if !rest.is_empty() => Ok(Remote::Unix(PathBuf::from(rest))),
            "unix" => Err(invalid("empty socket path")),
            "tcp" | "ssl" => {
                let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
                    let (host, after) = bracketed.split_once(']').ok_or_else(|| invalid("unclosed '['"))?;
                    (host, after.strip_prefix(':').ok_or_else(|| invalid("missing port"))?)
                } else {
                    rest.rsplit_once(':').ok_or_else(|| invalid("missing port"))?
                };
                if host.is_empty() {
                    return Err(invalid("missing host"));
                }
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid("port must be a number from 1 to 65535"))?;
                if port == 0 {
                    return Err(invalid("port must be a number from 1 to 65535"));
                }
                let host = host.to_string();
                Ok(if kind == "tcp" {
                    Remote::Tcp { host, port }
                } else {
                    Remote::Ssl { host, port }
                })
            }
            "punix" | "ptcp" | "pssl" => Err(invalid(
                "passive remotes are for servers; a client needs unix:, tcp: or ssl:",
            )),
            _ => Err(invalid("expected unix:PATH, tcp:HOST:PORT or ssl:HOST:PORT")),
        }
    }

    /// Parses a comma-separated list, as `ovn-nbctl --db` takes it.
    pub fn parse_list(text: &str) -> Result<Vec<Remote>, OvsdbError> {
        let remotes = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Remote::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if remotes.is_empty() {
            return Err(OvsdbError::InvalidRemote {
                remote: text.to_string(),
                reason: "no remote given".into(),
            });
        }
        Ok(remotes)
    }
}

/// Files for `ssl:` remotes, as OVN's `-p/--private-key`, `-c/--certificate`, `-C/--ca-cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_certificate: PathBuf,
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens the transport for one remote.
pub async fn connect(remote: &Remote, tls: Option<&TlsFiles>) -> Result<Box<dyn Stream>, OvsdbError> {
    let connect_error = |source| OvsdbError::Connect {
        remote: remote.to_string(),
        source,
    };
    match remote {
        Remote::Unix(path) => Ok(Box::new(UnixStream::connect(path).await.map_err(connect_error)?)),
        Remote::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_error)?;
            stream.set_nodelay(true).map_err(connect_error)?;
            Ok(Box::new(stream))
        }
        Remote::Ssl { host, port } => {
            let files = tls.ok_or_else(|| {
                OvsdbError::Tls(format!(
                    "{remote} needs a private key, a certificate and a CA certificate"
                ))
            })?;
            let config = client_config(files)?;
            let stream = TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(connect_error)?;
            stream.set_nodelay(true).map_err(connect_error)?;
            let server_name = ServerName::try_from(host.clone())
                .map_err(|error| OvsdbError::Tls(format!("bad server name {host}: {error}")))?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let tls_stream = connector.connect(server_name, stream).await.map_err(connect_error)?;
            Ok(Box::new(tls_stream))
        }
    }
}

fn read_pem(path: &PathBuf, what: &str) -> Result<Vec<u8>, OvsdbError> {
    std::fs::read(path).map_err(|error| OvsdbError::Tls(format!("cannot read {what} {}: {error}", path.display())))
}

fn load_certificates(path: &PathBuf, what: &str) -> Result<Vec<CertificateDer<'static>>, OvsdbError> {
    let pem = read_pem(path, what)?;
    let certificates = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| OvsdbError::Tls(format!("bad {what} {}: {error}", path.display())))?;
    if certificates.is_empty() {
        return Err(OvsdbError::Tls(format!(
            "{what} {} holds no certificate",
            path.display()
        )));
    }
    Ok(certificates)
}

fn load_private_key(path: &PathBuf) -> Result<PrivateKeyDer<'static>, OvsdbError> {
    let pem = read_pem(path, "private key")?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|error| OvsdbError::Tls(format!("bad private key {}: {error}", path.display())))?
        .ok_or_else(|| OvsdbError::Tls(format!("{} holds no private key", path.display())))
}

/// Builds the rustls client configuration: client certificate, and server certificates checked
/// against the CA.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, OvsdbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in load_certificates(&files.ca_certificate, "CA certificate")? {
        roots
            .add(certificate)
            .map_err(|error| OvsdbError::Tls(format!("bad CA certificate: {error}")))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| OvsdbError::Tls(format!("cannot build certificate verifier: {error}")))?;
    let certificates = load_certificates(&files.certificate, "certificate")?;
    let key = load_private_key(&files.private_key)?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| OvsdbError::Tls(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaOnlyVerifier { webpki }))
        .with_client_auth_cert(certificates, key)
        .map_err(|error| OvsdbError::Tls(format!("bad client certificate or key: {error}")))
}

/// Verifies the chain to the CA and the signatures; accepts a certificate issued for another name.
#[derive(Debug)]
struct CaOnlyVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ovn_remotes() {
        assert_eq!(
            Remote::parse("unix:/run/ovn/ovnnb_db.sock").unwrap(),
            Remote::Unix("/run/ovn/ovnnb_db.sock".into())
        );
        assert_eq!(
            Remote::parse("tcp:127.0.0.1:6641").unwrap(),
            Remote::Tcp {
                host: "127.0.0.1".into(),
                port: 6641
            }
        );
        assert_eq!(
            Remote::parse("ssl:[::1]:6641").unwrap(),
            Remote::Ssl {
                host: "::1".into(),
                port: 6641
            }
        );
        assert_eq!(Remote::parse("ssl:[::1]:6641").unwrap().to_string(), "ssl:[::1]:6641");
        let list = Remote::parse_list("tcp:10.0.0.1:6641, tcp:10.0.0.2:6641,tcp:10.0.0.3:6641").unwrap();
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn refuses_bad_remotes_with_a_reason() {
        for bad in [
            "",
            "tcp:1.2.3.4",
            "tcp:1.2.3.4:x",
            "tcp::80",
            "ptcp:6641",
            "http://x",
            "unix:",
            "tcp:[::1:80",
            "tcp:h:0",
        ] {
            let error = Remote::parse_list(bad).unwrap_err();
            assert!(matches!(error, OvsdbError::InvalidRemote { .. }), "{bad}: {error}");
        }
    }
}
