//! The daemon's settings: flags, the same settings as `OVN_VIPD_*` environment variables, and an
//! optional TOML file (`--config`). A flag beats the environment, which beats the file, which
//! beats the default. Every value is parsed and checked here, so a bad setting stops start-up
//! with a message that names it (and where it came from) before anything is opened.
//!
//! This module owns the list of settings; it never opens the store or a connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;

use crate::ovsdb::{Remote, TlsFiles};

/// A gRPC listener: `unix:PATH` or `tcp:IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(address) = text.strip_prefix("tcp:") {
            return address
                .parse()
                .map(Listen::Tcp)
                .map_err(|_| format!("{address:?} is not HOST:PORT (an IP address and a port)"));
        }
        Err(format!("{text:?}: expected unix:PATH or tcp:HOST:PORT"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// The settings as flags (each also read from its `OVN_VIPD_*` variable). Every value is a
/// string here and parsed in [`Settings::resolve`], so flags, variables and the file share one
/// parser and one kind of error.
#[derive(clap::Args, Debug, Clone)]
pub struct SettingFlags {
    /// TOML file with any of these settings (keys as the flags, without the dashes in front).
    #[arg(long, env = "OVN_VIPD_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// OVN Northbound database, in OVN's remote syntax; a comma-separated list for a cluster.
    /// [default: unix:/var/run/ovn/ovnnb_db.sock]
    #[arg(long, env = "OVN_VIPD_OVN_NB", global = true)]
    pub ovn_nb: Option<String>,
    /// Private key for ssl: NB remotes (OVN's -p).
    #[arg(long, env = "OVN_VIPD_NB_PRIVATE_KEY", global = true)]
    pub nb_private_key: Option<String>,
    /// Certificate for ssl: NB remotes (OVN's -c).
    #[arg(long, env = "OVN_VIPD_NB_CERTIFICATE", global = true)]
    pub nb_certificate: Option<String>,
    /// CA certificate for ssl: NB remotes (OVN's -C).
    #[arg(long, env = "OVN_VIPD_NB_CA_CERT", global = true)]
    pub nb_ca_cert: Option<String>,
    /// Directory of the durable store. [default: /var/lib/ovn-vipd]
    #[arg(long, env = "OVN_VIPD_DATA_DIR", global = true)]
    pub data_dir: Option<String>,
    /// gRPC listeners, comma-separated or repeated: unix:PATH or tcp:HOST:PORT.
    /// [default: unix:/run/ovn-vipd/ovn-vipd.sock,tcp:127.0.0.1:50051]
    #[arg(long, env = "OVN_VIPD_LISTEN", global = true)]
    pub listen: Vec<String>,
    /// Group (name or number) that owns the unix sockets, which are created mode 0660.
    #[arg(long, env = "OVN_VIPD_SOCKET_GROUP", global = true)]
    pub socket_group: Option<String>,
    /// PEM certificate chain for TLS on the TCP gRPC listeners.
    #[arg(long, env = "OVN_VIPD_TLS_CERTIFICATE", global = true)]
    pub tls_certificate: Option<String>,
    /// PEM private key for TLS on the TCP gRPC listeners.
    #[arg(long, env = "OVN_VIPD_TLS_PRIVATE_KEY", global = true)]
    pub tls_private_key: Option<String>,
    /// PEM CA: when given, TCP clients must present a certificate it signed (mTLS).
    #[arg(long, env = "OVN_VIPD_TLS_CLIENT_CA", global = true)]
    pub tls_client_ca: Option<String>,
    /// Allow plain-text TCP gRPC on addresses other than loopback. [default: false]
    #[arg(long, env = "OVN_VIPD_INSECURE", global = true, num_args = 0..=1, default_missing_value = "true")]
    pub insecure: Option<String>,
    /// Prometheus /metrics listener, HOST:PORT, or "off". [default: 127.0.0.1:50052]
    #[arg(long, env = "OVN_VIPD_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<String>,
    /// Seconds between safety-net full resyncs. [default: 300]
    #[arg(long, env = "OVN_VIPD_RESYNC_INTERVAL", global = true)]
    pub resync_interval: Option<String>,
    /// Seconds in-flight requests may take to finish at shutdown. [default: 10]
    #[arg(long, env = "OVN_VIPD_SHUTDOWN_GRACE", global = true)]
    pub shutdown_grace: Option<String>,
    /// Clustered mode: comma-separated OVSDB remotes (tcp:, ssl:, unix:) of the OVN_VIPD RAFT
    /// cluster database (deploy/ovn-vipd.ovsschema); ssl: uses the nb-* TLS files. [default: none,
    /// standalone]
    #[arg(long, env = "OVN_VIPD_CLUSTER_DB", global = true)]
    pub cluster_db: Option<String>,
    /// Clustered mode: the gRPC address clients use to reach this daemon, published while it is
    /// active (e.g. tcp:10.0.0.1:50051). [default: the first tcp listen address]
    #[arg(long, env = "OVN_VIPD_ADVERTISE_ADDRESS", global = true)]
    pub advertise_address: Option<String>,
    /// Log filter in RUST_LOG syntax, e.g. "info,ovn_vipd::reconcile=debug". [default: $RUST_LOG or info]
    #[arg(long, env = "OVN_VIPD_LOG", global = true)]
    pub log: Option<String>,
    /// Log format: text or json. [default: text]
    #[arg(long, env = "OVN_VIPD_LOG_FORMAT", global = true)]
    pub log_format: Option<String>,
}

/// Every setting: its key (the flag without `--`, the TOML key) and environment variable.
pub const SETTINGS: &[(&str, &str)] = &[
    ("ovn-nb", "OVN_VIPD_OVN_NB"),
    ("nb-private-key", "OVN_VIPD_NB_PRIVATE_KEY"),
    ("nb-certificate", "OVN_VIPD_NB_CERTIFICATE"),
    ("nb-ca-cert", "OVN_VIPD_NB_CA_CERT"),
    ("data-dir", "OVN_VIPD_DATA_DIR"),
    ("listen", "OVN_VIPD_LISTEN"),
    ("socket-group", "OVN_VIPD_SOCKET_GROUP"),
    ("tls-certificate", "OVN_VIPD_TLS_CERTIFICATE"),
    ("tls-private-key", "OVN_VIPD_TLS_PRIVATE_KEY"),
    ("tls-client-ca", "OVN_VIPD_TLS_CLIENT_CA"),
    ("insecure", "OVN_VIPD_INSECURE"),
    ("metrics-listen", "OVN_VIPD_METRICS_LISTEN"),
    ("resync-interval", "OVN_VIPD_RESYNC_INTERVAL"),
    ("shutdown-grace", "OVN_VIPD_SHUTDOWN_GRACE"),
    ("cluster-db", "OVN_VIPD_CLUSTER_DB"),
    ("advertise-address", "OVN_VIPD_ADVERTISE_ADDRESS"),
    ("log", "OVN_VIPD_LOG"),
    ("log-format", "OVN_VIPD_LOG_FORMAT"),
];

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => write!(f, "flag"),
            Origin::Env(variable) => write!(f, "environment {variable}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("setting {key} (from {origin}): {message}")]
    Invalid {
        key: &'static str,
        origin: Origin,
        message: String,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// TLS for the TCP gRPC listeners, read and checked at start-up.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    pub certificate_pem: Vec<u8>,
    pub private_key_pem: Vec<u8>,
    /// With a client CA, clients must present a certificate it signed.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// The resolved settings, each with where its value came from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ovn_nb: Vec<Remote>,
    pub nb_tls: Option<TlsFiles>,
    pub data_dir: PathBuf,
    pub listen: Vec<Listen>,
    pub socket_group: Option<u32>,
    pub grpc_tls: Option<GrpcTls>,
    pub insecure: bool,
    pub metrics_listen: Option<SocketAddr>,
    pub resync_interval: Duration,
    pub shutdown_grace: Duration,
    /// The OVN_VIPD cluster database's remotes; empty = standalone (sled is the store).
    pub cluster_db: Vec<Remote>,
    /// The gRPC address published in `Active.address` while this daemon is active (`tcp:HOST:PORT`
    /// or `unix:PATH`), if any.
    pub advertise_address: Option<String>,
    pub log: String,
    pub log_format: LogFormat,
    /// The raw value and origin of every setting, for `ovn-vipd config` and reloads.
    pub values: BTreeMap<&'static str, (String, Origin)>,
}

fn default_of(key: &str) -> String {
    match key {
        "ovn-nb" => "unix:/var/run/ovn/ovnnb_db.sock".into(),
        "data-dir" => "/var/lib/ovn-vipd".into(),
        "listen" => "unix:/run/ovn-vipd/ovn-vipd.sock,tcp:127.0.0.1:50051".into(),
        "insecure" => "false".into(),
        "metrics-listen" => "127.0.0.1:50052".into(),
        "resync-interval" => "300".into(),
        "shutdown-grace" => "10".into(),
        "log" => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        "log-format" => "text".into(),
        _ => String::new(),
    }
}

/// Reads the TOML file into raw values; unknown keys and values of the wrong kind are errors.
fn read_file(path: &Path) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|error: toml::de::Error| file_error(error.to_string()))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let Some((known, _)) = SETTINGS.iter().find(|(name, _)| *name == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|(name, _)| *name).collect();
            return Err(file_error(format!(
                "unknown setting {key:?}; known settings: {}",
                known.join(", ")
            )));
        };
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text),
                    other => Err(file_error(format!("{key}: expected strings, found {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(","),
            other => return Err(file_error(format!("{key}: unsupported value {other}"))),
        };
        values.insert(*known, text);
    }
    Ok(values)
}

impl Settings {
    /// Resolves the settings from parsed command-line matches (flags and their variables), the
    /// config file they name, and the defaults.
    pub fn from_matches(matches: &ArgMatches) -> Result<Settings, ConfigError> {
        let config_file = matches.get_one::<PathBuf>("config").cloned();
        let mut given = BTreeMap::new();
        for (key, variable) in SETTINGS {
            let id = key.replace('-', "_");
            let Ok(Some(values)) = matches.try_get_many::<String>(&id) else {
                continue;
            };
            let text = values.cloned().collect::<Vec<_>>().join(",");
            let origin = match matches.value_source(&id) {
                Some(ValueSource::EnvVariable) => Origin::Env(variable),
                _ => Origin::Flag,
            };
            given.insert(*key, (text, origin));
        }
        Settings::resolve(given, config_file.as_deref())
    }

    /// Resolves `given` (flag and environment values) over the file over the defaults.
    pub fn resolve(
        given: BTreeMap<&'static str, (String, Origin)>,
        config_file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let file = match config_file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        let mut values = BTreeMap::new();
        for (key, _) in SETTINGS {
            let value = given.get(key).cloned().or_else(|| {
                file.get(key).map(|text| {
                    (
                        text.clone(),
                        Origin::File(config_file.unwrap_or(Path::new("")).to_path_buf()),
                    )
                })
            });
            values.insert(*key, value.unwrap_or_else(|| (default_of(key), Origin::Default)));
        }
        Settings::parse(values)
    }

    fn parse(values: BTreeMap<&'static str, (String, Origin)>) -> Result<Settings, ConfigError> {
        let get = |key: &'static str| -> (&str, Origin) {
            values
                .get(key)
                .map(|(text, origin)| (text.as_str(), origin.clone()))
                .unwrap_or(("", Origin::Default))
        };
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            key,
            origin: get(key).1,
            message,
        };
        let optional = |key: &'static str| -> Option<String> {
            let (text, _) = get(key);
            (!text.trim().is_empty()).then(|| text.trim().to_string())
        };

        let ovn_nb = Remote::parse_list(get("ovn-nb").0).map_err(|error| invalid("ovn-nb", error.to_string()))?;
        let nb_tls = match (
            optional("nb-private-key"),
            optional("nb-certificate"),
            optional("nb-ca-cert"),
        ) {
            (Some(private_key), Some(certificate), Some(ca_certificate)) => Some(TlsFiles {
                private_key: private_key.into(),
                certificate: certificate.into(),
                ca_certificate: ca_certificate.into(),
            }),
            (None, None, None) => None,
            _ => {
                return Err(invalid(
                    "nb-private-key",
                    "nb-private-key, nb-certificate and nb-ca-cert go together".into(),
                ))
            }
        };
        if nb_tls.is_none() && ovn_nb.iter().any(|remote| remote.to_string().starts_with("ssl:")) {
            return Err(invalid(
                "ovn-nb",
                "an ssl: remote needs nb-private-key, nb-certificate and nb-ca-cert".into(),
            ));
        }
        let data_dir = optional("data-dir").ok_or_else(|| invalid("data-dir", "must not be empty".into()))?;
        let insecure = parse_bool(get("insecure").0).map_err(|message| invalid("insecure", message))?;
        let mut listen = Vec::new();
        for text in get("listen")
            .0
            .split(',')
            .map(str::trim)
            .filter(|text| !text.is_empty())
        {
            listen.push(text.parse::<Listen>().map_err(|message| invalid("listen", message))?);
        }
        if listen.is_empty() {
            return Err(invalid("listen", "at least one listener is needed".into()));
        }
        let socket_group = match optional("socket-group") {
            None => None,
            Some(group) => Some(resolve_group(&group).map_err(|message| invalid("socket-group", message))?),
        };
        let grpc_tls = match (optional("tls-certificate"), optional("tls-private-key")) {
            (Some(certificate), Some(private_key)) => {
                let certificate_pem = read_pem(&certificate, PemKind::Certificate)
                    .map_err(|message| invalid("tls-certificate", message))?;
                let private_key_pem = read_pem(&private_key, PemKind::PrivateKey)
                    .map_err(|message| invalid("tls-private-key", message))?;
                let client_ca_pem = match optional("tls-client-ca") {
                    Some(path) => Some(
                        read_pem(&path, PemKind::Certificate).map_err(|message| invalid("tls-client-ca", message))?,
                    ),
                    None => None,
                };
                Some(GrpcTls {
                    certificate_pem,
                    private_key_pem,
                    client_ca_pem,
                })
            }
            (None, None) if optional("tls-client-ca").is_some() => {
                return Err(invalid(
                    "tls-client-ca",
                    "needs tls-certificate and tls-private-key".into(),
                ))
            }
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "tls-certificate",
                    "tls-certificate and tls-private-key go together".into(),
                ))
            }
        };
        if grpc_tls.is_none() && !insecure {
            if let Some(exposed) = listen.iter().find_map(|listen| match listen {
                Listen::Tcp(address) if !address.ip().is_loopback() => Some(address),
                _ => None,
            }) {
                return Err(invalid(
                    "listen",
                    format!(
                        "tcp:{exposed} is not a loopback address: give tls-certificate and tls-private-key, \
                         or set insecure to serve plain text there"
                    ),
                ));
            }
        }
        let metrics_listen = match get("metrics-listen").0.trim() {
            "" | "off" => None,
            text => Some(
                text.strip_prefix("tcp:")
                    .unwrap_or(text)
                    .parse::<SocketAddr>()
                    .map_err(|_| invalid("metrics-listen", format!("{text:?} is not HOST:PORT or \"off\"")))?,
            ),
        };
        let seconds = |key: &'static str, minimum: u64| -> Result<Duration, ConfigError> {
            let text = get(key).0.trim();
            let value: u64 = text
                .parse()
                .map_err(|_| invalid(key, format!("{text:?} is not a whole number of seconds")))?;
            if value < minimum {
                return Err(invalid(key, format!("must be at least {minimum} second(s)")));
            }
            Ok(Duration::from_secs(value))
        };
        let resync_interval = seconds("resync-interval", 1)?;
        let shutdown_grace = seconds("shutdown-grace", 0)?;
        let cluster_db = match optional("cluster-db") {
            None => Vec::new(),
            Some(text) => Remote::parse_list(&text).map_err(|error| invalid("cluster-db", error.to_string()))?,
        };
        if nb_tls.is_none() && cluster_db.iter().any(|remote| remote.to_string().starts_with("ssl:")) {
            return Err(invalid(
                "cluster-db",
                "an ssl: remote needs nb-private-key, nb-certificate and nb-ca-cert (the cluster database uses NB's TLS files)".into(),
            ));
        }
        let advertise_address = match optional("advertise-address") {
            Some(text) => {
                let listen: Listen = text.parse().map_err(|error: String| invalid("advertise-address", error))?;
                Some(listen.to_string())
            }
            None => listen.iter().find_map(|listen| match listen {
                Listen::Tcp(address) => Some(format!("tcp:{address}")),
                Listen::Unix(_) => None,
            }),
        };
        let log = get("log").0.trim().to_string();
        tracing_subscriber::EnvFilter::try_new(&log).map_err(|error| invalid("log", error.to_string()))?;
        let log_format = match get("log-format").0.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log-format", format!("{other:?}: expected text or json"))),
        };
        Ok(Settings {
            ovn_nb,
            nb_tls,
            data_dir: data_dir.into(),
            listen,
            socket_group,
            grpc_tls,
            insecure,
            metrics_listen,
            resync_interval,
            shutdown_grace,
            cluster_db,
            advertise_address,
            log,
            log_format,
            values,
        })
    }

    /// The effective settings as TOML, each line commented with where the value came from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (key, _) in SETTINGS {
            let Some((text, origin)) = self.values.get(key) else {
                continue;
            };
            let value = match *key {
                "listen" => toml::Value::Array(
                    text.split(',')
                        .filter(|part| !part.is_empty())
                        .map(|part| toml::Value::String(part.trim().to_string()))
                        .collect(),
                ),
                "insecure" => toml::Value::Boolean(text == "true"),
                "resync-interval" | "shutdown-grace" => text
                    .trim()
                    .parse::<i64>()
                    .map(toml::Value::Integer)
                    .unwrap_or_else(|_| toml::Value::String(text.clone())),
                _ => toml::Value::String(text.clone()),
            };
            out.push_str(&format!("{key} = {value}  # {origin}\n"));
        }
        out
    }

    /// The settings whose value differs in `newer` but only take effect at a restart.
    pub fn needs_restart(&self, newer: &Settings) -> Vec<&'static str> {
        SETTINGS
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| !matches!(*key, "log"))
            .filter(|key| self.values.get(key).map(|(text, _)| text) != newer.values.get(key).map(|(text, _)| text))
            .collect()
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => Err(format!("no group named {group:?}")),
        Err(error) => Err(format!("cannot look up group {group:?}: {error}")),
    }
}

pub(crate) enum PemKind {
    Certificate,
    PrivateKey,
}

/// Reads a PEM file and checks it holds what it should, so a wrong path or file is a
/// configuration error at start-up rather than a failed handshake later.
pub(crate) fn read_pem(path: &str, kind: PemKind) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot read {path}: {error}"))?;
    let mut reader = bytes.as_slice();
    let found = match kind {
        PemKind::Certificate => rustls_pemfile::certs(&mut reader)
            .next()
            .is_some_and(|item| item.is_ok()),
        PemKind::PrivateKey => matches!(rustls_pemfile::private_key(&mut reader), Ok(Some(_))),
    };
    if !found {
        let what = match kind {
            PemKind::Certificate => "a PEM certificate",
            PemKind::PrivateKey => "a PEM private key",
        };
        return Err(format!("{path} does not hold {what}"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(pairs: &[(&'static str, &str, Origin)]) -> BTreeMap<&'static str, (String, Origin)> {
        pairs
            .iter()
            .map(|(key, value, origin)| (*key, (value.to_string(), origin.clone())))
            .collect()
    }

    #[test]
    fn defaults_fit_a_host_beside_ovn_northd() {
        let settings = Settings::resolve(BTreeMap::new(), None).expect("defaults are valid");
        assert_eq!(settings.ovn_nb[0].to_string(), "unix:/var/run/ovn/ovnnb_db.sock");
        assert_eq!(settings.data_dir, PathBuf::from("/var/lib/ovn-vipd"));
        assert_eq!(settings.listen[0], Listen::Unix("/run/ovn-vipd/ovn-vipd.sock".into()));
        assert_eq!(settings.metrics_listen, Some(([127, 0, 0, 1], 50052).into()));
        assert_eq!(settings.log_format, LogFormat::Text);
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ovn-vipd.toml");
        std::fs::write(
            &file,
            "data-dir = \"/from/file\"\nresync-interval = 7\nshutdown-grace = 3\nlisten = [\"tcp:127.0.0.1:1\"]\n",
        )
        .expect("write");
        let settings = Settings::resolve(
            given(&[
                ("data-dir", "/from/flag", Origin::Flag),
                ("resync-interval", "9", Origin::Env("OVN_VIPD_RESYNC_INTERVAL")),
            ]),
            Some(&file),
        )
        .expect("valid");
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.resync_interval, Duration::from_secs(9));
        assert_eq!(settings.shutdown_grace, Duration::from_secs(3));
        assert_eq!(settings.listen, vec![Listen::Tcp(([127, 0, 0, 1], 1).into())]);
        assert_eq!(settings.values["log-format"].1, Origin::Default);
    }

    #[test]
    fn a_bad_setting_is_named_with_its_origin() {
        let error = Settings::resolve(given(&[("listen", "tcp:nowhere", Origin::Flag)]), None)
            .expect_err("invalid")
            .to_string();
        assert!(error.contains("setting listen (from flag)"), "{error}");
        let error = Settings::resolve(
            given(&[("resync-interval", "soon", Origin::Env("OVN_VIPD_RESYNC_INTERVAL"))]),
            None,
        )
        .expect_err("invalid")
        .to_string();
        assert!(
            error.contains("resync-interval (from environment OVN_VIPD_RESYNC_INTERVAL)"),
            "{error}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "data_dir = \"/x\"\n").expect("write");
        let error = Settings::resolve(BTreeMap::new(), Some(&file))
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("unknown setting \"data_dir\""), "{error}");
    }

    #[test]
    fn plain_tcp_beyond_loopback_needs_insecure_or_tls() {
        let error = Settings::resolve(given(&[("listen", "tcp:0.0.0.0:50051", Origin::Flag)]), None)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("not a loopback address"), "{error}");
        let settings = Settings::resolve(
            given(&[
                ("listen", "tcp:0.0.0.0:50051", Origin::Flag),
                ("insecure", "true", Origin::Flag),
            ]),
            None,
        )
        .expect("insecure allows it");
        assert!(settings.insecure);
        let error = Settings::resolve(given(&[("tls-client-ca", "/nonexistent", Origin::Flag)]), None)
            .expect_err("refused")
            .to_string();
        assert!(error.contains("needs tls-certificate"), "{error}");
        let error = Settings::resolve(
            given(&[
                ("tls-certificate", "/nonexistent.pem", Origin::Flag),
                ("tls-private-key", "/nonexistent.key", Origin::Flag),
            ]),
            None,
        )
        .expect_err("refused")
        .to_string();
        assert!(
            error.contains("setting tls-certificate") && error.contains("cannot read"),
            "{error}"
        );
    }

    #[test]
    fn render_is_toml_that_reads_back_the_same() {
        let settings = Settings::resolve(given(&[("resync-interval", "42", Origin::Flag)]), None).expect("valid");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rendered.toml");
        std::fs::write(&file, settings.render()).expect("write");
        let again = Settings::resolve(BTreeMap::new(), Some(&file)).expect("reads back");
        assert_eq!(again.resync_interval, Duration::from_secs(42));
        assert_eq!(again.listen, settings.listen);
        assert!(settings.needs_restart(&again).is_empty());
    }

    #[test]
    fn cluster_db_and_advertise_address() {
        let standalone = Settings::resolve(BTreeMap::new(), None).expect("defaults");
        assert!(standalone.cluster_db.is_empty(), "standalone is the default");
        assert_eq!(standalone.advertise_address.as_deref(), Some("tcp:127.0.0.1:50051"));
        let clustered = Settings::resolve(
            given(&[
                ("cluster-db", "tcp:10.0.0.1:6647,tcp:10.0.0.2:6647,unix:/run/vipd.sock", Origin::Flag),
                ("advertise-address", "tcp:10.0.0.1:50051", Origin::Env("OVN_VIPD_ADVERTISE_ADDRESS")),
            ]),
            None,
        )
        .expect("valid");
        assert_eq!(clustered.cluster_db.len(), 3);
        assert_eq!(clustered.advertise_address.as_deref(), Some("tcp:10.0.0.1:50051"));
        assert!(clustered.render().contains("cluster-db = \"tcp:10.0.0.1:6647"));
        let error = Settings::resolve(given(&[("cluster-db", "http://x", Origin::Flag)]), None)
            .expect_err("a bad remote")
            .to_string();
        assert!(error.contains("cluster-db"), "{error}");
        let error = Settings::resolve(given(&[("cluster-db", "ssl:10.0.0.1:6647", Origin::Flag)]), None)
            .expect_err("ssl without TLS files")
            .to_string();
        assert!(error.contains("cluster-db") && error.contains("nb-private-key"), "{error}");
        let error = Settings::resolve(given(&[("advertise-address", "10.0.0.1", Origin::Flag)]), None)
            .expect_err("no scheme")
            .to_string();
        assert!(error.contains("advertise-address"), "{error}");
        let unix_only = Settings::resolve(given(&[("listen", "unix:/tmp/x.sock", Origin::Flag)]), None).expect("valid");
        assert_eq!(unix_only.advertise_address, None);
    }
}
