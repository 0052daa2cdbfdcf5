//! How the daemon's clients (`vipctl`, `ovn-vipd-cni`) reach it: one module for both.
//!
//! A client is given a list of daemons ([`Address`]: `unix:PATH` or `tcp:HOST:PORT`), TLS files
//! ([`TlsFiles`]: a CA to verify the daemon, and for mTLS a certificate and key of its own) and
//! three time-outs ([`Settings`]). [`Daemons::connect`] tries the addresses in order and keeps the
//! first that answers. [`Daemons::call`] sends one request; when the answer is `UNAVAILABLE` (the
//! daemon is gone, or it is a standby refusing a change) it moves to the daemon the answer names in
//! its [`ACTIVE_METADATA`] metadata, else to the next address of the list, and sends the request
//! again, until the failover deadline.
//!
//! TLS is used on every TCP address when a CA is given; unix sockets are never TLS (their mode is
//! their protection, as the daemon's listeners say). The daemon's certificate must name the host
//! the client connects to (a DNS name, or the IP address as an IP SAN), or the name given as the
//! TLS server name.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::config::{read_pem, PemKind};

/// The response metadata key in which a standby daemon names the active one (its address in the
/// syntax [`Address::parse`] reads) when it refuses a change with `UNAVAILABLE`; defined with
/// the daemon's roles.
pub use crate::role::ACTIVE_METADATA_KEY as ACTIVE_METADATA;

/// The daemon's default unix socket (as `ovn-vipd --listen` defaults it).
pub const DEFAULT_SOCKET: &str = "/run/ovn-vipd/ovn-vipd.sock";

/// One daemon's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A unix socket (plain gRPC; the socket's mode protects it).
    Unix(PathBuf),
    /// A TCP listener; `host` is a DNS name or an IP address (IPv6 without brackets).
    Tcp { host: String, port: u16 },
}

impl Address {
    /// `unix:PATH` or `tcp:HOST:PORT` (IPv6 in brackets: `tcp:[fd00::1]:50051`), as the
    /// daemon's `--listen` spells them. Also read, for older vipctl command lines:
    /// `unix://PATH`, `http://HOST:PORT`, `https://HOST:PORT` and a bare `HOST:PORT` (all TCP;
    /// whether TLS is used depends on [`TlsFiles`] only).
    pub fn parse(text: &str) -> Result<Address, String> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix://").or_else(|| text.strip_prefix("unix:")) {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let rest = ["tcp:", "http://", "https://"]
            .iter()
            .find_map(|scheme| text.strip_prefix(scheme))
            .unwrap_or(text);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let shape = || format!("{text:?} is not unix:PATH or tcp:HOST:PORT");
        let (host, port) = rest.rsplit_once(':').ok_or_else(shape)?;
        let port: u16 = port.parse().map_err(|_| shape())?;
        if port == 0 {
            return Err(format!("{text:?}: port 0"));
        }
        let host = match host.strip_prefix('[').and_then(|host| host.strip_suffix(']')) {
            Some(v6) => {
                v6.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("{text:?}: {v6:?} is not an IPv6 address"))?;
                v6.to_string()
            }
            None if host.contains(':') => return Err(format!("{text:?}: put an IPv6 address in brackets")),
            None if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) =>
            {
                return Err(shape())
            }
            None => host.to_string(),
        };
        Ok(Address::Tcp { host, port })
    }

    /// A comma-separated list (at least one address; spaces around commas are ignored).
    pub fn parse_list(text: &str) -> Result<Vec<Address>, String> {
        let addresses = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(Address::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if addresses.is_empty() {
            return Err("no address given".into());
        }
        Ok(addresses)
    }

    /// The URI tonic connects to.
    fn uri(&self, tls: bool) -> String {
        match self {
            Address::Unix(path) => format!("unix://{}", path.display()),
            Address::Tcp { host, port } => {
                let scheme = if tls { "https" } else { "http" };
                if host.contains(':') {
                    format!("{scheme}://[{host}]:{port}")
                } else {
                    format!("{scheme}://{host}:{port}")
                }
            }
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

/// PEM files for TLS on TCP addresses. With `ca_certificate`, TCP is TLS and the daemon's
/// certificate must chain to it; `certificate` + `private_key` (together) are the client's own
/// for mTLS. `server_name` replaces the host name the daemon's certificate must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_certificate: Option<PathBuf>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// Which TLS setting a [`ClientError::Setting`] is about; each client names it in its own terms
/// (`tlsCaCert` in a CNI configuration, `--tls-ca-cert` for vipctl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSetting {
    CaCertificate,
    Certificate,
    PrivateKey,
    ServerName,
}

/// Where the daemons are and how long to wait for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Tried in order; the first that answers is used.
    pub addresses: Vec<Address>,
    pub tls: TlsFiles,
    /// Per connection attempt (TCP connect and TLS handshake).
    pub connect_timeout: Duration,
    /// Per request.
    pub request_timeout: Duration,
    /// How long [`Daemons::call`] keeps moving to another daemon after `UNAVAILABLE` answers
    /// or failed connections, from the call's start.
    pub failover_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A TLS file is missing, unreadable or not what it should be; nothing was sent.
    #[error("{message}")]
    Setting { setting: TlsSetting, message: String },
    /// No daemon of the list could be reached: each address with why.
    #[error("no ovn-vipd daemon answered: {}", .tried.iter().map(|(address, reason)| format!("{address}: {reason}")).collect::<Vec<_>>().join("; "))]
    Unreachable { tried: Vec<(String, String)> },
}

/// The TLS configuration read and checked once, before any connection.
#[derive(Clone)]
struct Tls {
    config: ClientTlsConfig,
}

impl Tls {
    fn load(files: &TlsFiles) -> Result<Option<Tls>, ClientError> {
        let setting = |setting: TlsSetting, message: String| ClientError::Setting { setting, message };
        let path_text = |path: &PathBuf| path.display().to_string();
        let identity = match (&files.certificate, &files.private_key) {
            (Some(certificate), Some(private_key)) => {
                let certificate = read_pem(&path_text(certificate), PemKind::Certificate)
                    .map_err(|message| setting(TlsSetting::Certificate, message))?;
                let private_key = read_pem(&path_text(private_key), PemKind::PrivateKey)
                    .map_err(|message| setting(TlsSetting::PrivateKey, message))?;
                Some(Identity::from_pem(certificate, private_key))
            }
            (Some(_), None) => {
                return Err(setting(
                    TlsSetting::PrivateKey,
                    "a client certificate needs its private key".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(setting(
                    TlsSetting::Certificate,
                    "a private key needs its client certificate".into(),
                ))
            }
            (None, None) => None,
        };
        let Some(ca) = &files.ca_certificate else {
            if identity.is_some() {
                return Err(setting(
                    TlsSetting::CaCertificate,
                    "a client certificate needs the CA that verifies the daemon".into(),
                ));
            }
            if files.server_name.is_some() {
                return Err(setting(
                    TlsSetting::ServerName,
                    "a TLS server name needs the CA that verifies the daemon".into(),
                ));
            }
            return Ok(None);
        };
        let ca = read_pem(&path_text(ca), PemKind::Certificate)
            .map_err(|message| setting(TlsSetting::CaCertificate, message))?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        if let Some(name) = &files.server_name {
            if name.is_empty() {
                return Err(setting(TlsSetting::ServerName, "the TLS server name is empty".into()));
            }
            config = config.domain_name(name.clone());
        }
        Ok(Some(Tls { config }))
    }
}

/// A connection to one daemon of a list, moving to another when it answers `UNAVAILABLE`.
pub struct Daemons {
    settings: Settings,
    tls: Option<Tls>,
    current: Address,
    channel: Channel,
    /// The last call on `current` got no answer (its connection failed or the request timed
    /// out, e.g. the daemon was cut off mid-call): the next call starts on another daemon.
    suspect: bool,
}

impl Daemons {
    /// Reads the TLS files (a bad one is [`ClientError::Setting`], before any connection), then
    /// connects to the first address that answers.
    pub async fn connect(settings: Settings) -> Result<Daemons, ClientError> {
        let tls = Tls::load(&settings.tls)?;
        let mut tried = Vec::new();
        for address in &settings.addresses {
            match open(&settings, tls.as_ref(), address).await {
                Ok(channel) => {
                    return Ok(Daemons {
                        current: address.clone(),
                        channel,
                        settings,
                        tls,
                        suspect: false,
                    })
                }
                Err(reason) => tried.push((address.to_string(), reason)),
            }
        }
        Err(ClientError::Unreachable { tried })
    }

    /// The daemon in use.
    pub fn current(&self) -> &Address {
        &self.current
    }

    /// The connection to the daemon in use (for reads and streams, which every daemon serves).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Sends `request` through `send` (one gRPC method); on `UNAVAILABLE`, moves to the daemon
    /// the answer names in [`ACTIVE_METADATA`], else to the next address of the list (round
    /// and round, with a pause between rounds), and sends it again, until
    /// [`Settings::failover_timeout`] after the first attempt. Any other answer is returned as
    /// it is. Only `UNAVAILABLE` is retried: a standby refuses a change before doing anything,
    /// and a connection that could not be made sent nothing; the daemon's mutating calls are
    /// also safe to repeat (bind of a bound pod, create of an existing object are answered as
    /// such).
    pub async fn call<R, T, F, Fut>(&mut self, request: R, mut send: F) -> Result<T, Status>
    where
        R: Clone,
        F: FnMut(Channel, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.settings.failover_timeout;
        let mut pause = Duration::from_millis(100);
        if std::mem::take(&mut self.suspect) {
            // The previous call went unanswered here: try the others first (this one last).
            self.move_on(None, deadline.max(Instant::now() + self.settings.connect_timeout))
                .await;
        }
        loop {
            let status = match send(self.channel.clone(), request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unavailable => status,
                // The connection failed under the request (tonic makes an UNKNOWN, CANCELLED or
                // INTERNAL status of the transport error, with the error as its source; a
                // daemon's answer has none): the daemon did not answer, e.g. it refused our
                // certificate after the handshake, or it does not speak TLS. Not retried (the
                // request may have arrived), but reported as UNAVAILABLE with its cause.
                Err(status) if std::error::Error::source(&status).is_some() => {
                    self.suspect = true;
                    let cause = std::error::Error::source(&status).map(error_chain).unwrap_or_default();
                    return Err(Status::unavailable(format!(
                        "{} at {}: {cause}",
                        status.message(),
                        self.current
                    )));
                }
                // The request timed out (the client's own deadline, no daemon answer): not
                // retried, since it may have arrived, but the next call starts elsewhere.
                Err(status) if status.code() == Code::Cancelled || status.code() == Code::DeadlineExceeded => {
                    self.suspect = true;
                    return Err(status);
                }
                Err(status) => return Err(status),
            };
            if Instant::now() >= deadline {
                return Err(status);
            }
            let named = status
                .metadata()
                .get(ACTIVE_METADATA)
                .and_then(|value| value.to_str().ok())
                .and_then(|text| Address::parse(text).ok());
            tracing::debug!(daemon = %self.current, active = ?named, message = status.message(), "UNAVAILABLE; moving on");
            if !self.move_on(named, deadline).await {
                // Nobody reachable this round: wait a little, then go round again.
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Connects to `named` if given, else to the addresses after the current one (wrapping
    /// round to it last); true when a connection was made.
    async fn move_on(&mut self, named: Option<Address>, deadline: Instant) -> bool {
        let list = &self.settings.addresses;
        let start = list
            .iter()
            .position(|address| *address == self.current)
            .map_or(0, |index| index + 1);
        let mut candidates: Vec<Address> = named.into_iter().collect();
        candidates.extend((0..list.len()).map(|offset| list[(start + offset) % list.len()].clone()));
        if !list.contains(&self.current) {
            // A daemon named by an earlier answer that is no longer answering: the list's first.
            candidates.push(self.current.clone());
        }
        for address in candidates {
            if Instant::now() >= deadline {
                return false;
            }
            if let Ok(channel) = open(&self.settings, self.tls.as_ref(), &address).await {
                self.current = address;
                self.channel = channel;
                return true;
            }
        }
        false
    }
}

/// Connects to one address (TCP connect, TLS handshake, HTTP/2); the reason when it fails.
async fn open(settings: &Settings, tls: Option<&Tls>, address: &Address) -> Result<Channel, String> {
    let tls = match address {
        Address::Unix(_) => None,
        Address::Tcp { .. } => tls,
    };
    let mut endpoint = Endpoint::from_shared(address.uri(tls.is_some()))
        .map_err(|error| error_chain(&error))?
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.config.clone().timeout(settings.connect_timeout))
            .map_err(|error| error_chain(&error))?;
    }
    match tokio::time::timeout(settings.connect_timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(error_chain(&error)),
        Err(_) => Err(format!("no answer within {:?}", settings.connect_timeout)),
    }
}

/// An error and its causes: `transport error: No such file or directory (os error 2)`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_the_daemons_syntax_and_the_old_vipctl_one() {
        let tcp = |host: &str, port| Address::Tcp {
            host: host.into(),
            port,
        };
        for (text, address) in [
            (
                "unix:/run/ovn-vipd/ovn-vipd.sock",
                Address::Unix("/run/ovn-vipd/ovn-vipd.sock".into()),
            ),
            ("unix://run/a.sock", Address::Unix("run/a.sock".into())),
            ("tcp:10.0.0.1:50051", tcp("10.0.0.1", 50051)),
            ("tcp:[fd00::1]:50051", tcp("fd00::1", 50051)),
            ("tcp:vipd.example:50051", tcp("vipd.example", 50051)),
            ("http://127.0.0.1:50051", tcp("127.0.0.1", 50051)),
            ("https://[::1]:50051/", tcp("::1", 50051)),
            ("127.0.0.1:50051", tcp("127.0.0.1", 50051)),
        ] {
            assert_eq!(Address::parse(text), Ok(address.clone()), "{text}");
            // Display gives the daemon's syntax back.
            assert_eq!(Address::parse(&address.to_string()), Ok(address), "{text}");
        }
        for text in [
            "",
            "unix:",
            "tcp:10.0.0.1",
            "tcp:10.0.0.1:0",
            "tcp:10.0.0.1:99999",
            "tcp:fd00::1:50051",
            "tcp:[not-v6]:1",
            "ssl:10.0.0.1:6641",
            "tcp::50051",
            "tcp:a b:1",
        ] {
            assert!(Address::parse(text).is_err(), "{text:?} parsed");
        }
        assert_eq!(
            Address::parse_list("tcp:10.0.0.1:50051, tcp:10.0.0.2:50051,unix:/x.sock"),
            Ok(vec![
                tcp("10.0.0.1", 50051),
                tcp("10.0.0.2", 50051),
                Address::Unix("/x.sock".into())
            ])
        );
        assert!(Address::parse_list(" , ").is_err());
        assert!(Address::parse_list("tcp:10.0.0.1:1,bogus").is_err());
    }

    #[test]
    fn tls_files_are_checked_before_any_connection() {
        let error = |files: TlsFiles| match Tls::load(&files) {
            Err(ClientError::Setting { setting, .. }) => Some(setting),
            _ => None,
        };
        assert_eq!(
            error(TlsFiles {
                ca_certificate: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            }),
            Some(TlsSetting::CaCertificate)
        );
        assert_eq!(
            error(TlsFiles {
                certificate: Some("/nonexistent/cert.pem".into()),
                ..Default::default()
            }),
            Some(TlsSetting::PrivateKey)
        );
        assert_eq!(
            error(TlsFiles {
                certificate: Some("/c".into()),
                private_key: Some("/k".into()),
                ..Default::default()
            }),
            Some(TlsSetting::Certificate),
            "an unreadable certificate is named before the missing CA"
        );
        assert_eq!(
            error(TlsFiles {
                server_name: Some("vipd".into()),
                ..Default::default()
            }),
            Some(TlsSetting::ServerName)
        );
        assert!(matches!(Tls::load(&TlsFiles::default()), Ok(None)));
    }
}
