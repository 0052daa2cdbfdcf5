//! `vipctl`, the command-line client of the daemon's gRPC API: `get`, `apply -f` (Kube-OVN
//! manifests), `delete` and `watch`. It is a client of [`crate::api`] and so knows protobuf
//! types; it shares nothing else with the daemon and never touches the store or OVN.
//!
//! - [`manifest`]: Kube-OVN manifests to requests (pure).
//! - [`apply`]: what `apply` sends, and when an object is already as the manifest wants it.
//! - [`render`]: tables and the objects as manifests, for `get`.
//! - `commands`: the commands themselves, over one connection.

pub mod apply;
mod commands;
pub mod manifest;
pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::{Address, ClientError, Settings, TlsFiles, TlsSetting};

pub use manifest::{manifests_to_requests, ApplyRequest, ManifestError};

/// Where the daemon listens for local clients by default.
pub use crate::client::DEFAULT_SOCKET;

/// Talks to ovn-vipd: lists and shows subnets, VIPs, switch-LB rules and pods, applies Kube-OVN
/// manifests, deletes objects and watches VIPs.
#[derive(Parser, Debug)]
#[command(name = "vipctl", version)]
pub struct Args {
    /// The daemon's unix socket (when --server is not given).
    #[arg(long, env = "VIPCTL_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// The daemons, tried in order: a comma-separated list of unix:PATH and tcp:HOST:PORT
    /// (http://HOST:PORT and HOST:PORT are read as tcp:). Replaces --socket.
    #[arg(long, env = "VIPCTL_SERVER", global = true)]
    pub server: Option<String>,
    /// PEM CA that verifies the daemons' certificates: TLS on every tcp: address.
    #[arg(long, env = "VIPCTL_TLS_CA_CERT", global = true)]
    pub tls_ca_cert: Option<PathBuf>,
    /// PEM client certificate for mTLS (with --tls-private-key).
    #[arg(long, env = "VIPCTL_TLS_CERTIFICATE", global = true)]
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "VIPCTL_TLS_PRIVATE_KEY", global = true)]
    pub tls_private_key: Option<PathBuf>,
    /// The name the daemons' certificates carry, when not the host of the address.
    #[arg(long, env = "VIPCTL_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// Seconds to wait for each answer.
    #[arg(long, env = "VIPCTL_TIMEOUT", default_value_t = 30, global = true)]
    pub timeout: u64,
    /// Seconds per connection attempt to one daemon.
    #[arg(long, env = "VIPCTL_CONNECT_TIMEOUT", default_value_t = 5, global = true)]
    pub connect_timeout: u64,
    /// Seconds a change keeps moving to another daemon after UNAVAILABLE (a daemon gone, or a
    /// standby naming the active one); 0 tries once.
    #[arg(long, env = "VIPCTL_FAILOVER_TIMEOUT", default_value_t = 30, global = true)]
    pub failover_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Lists the objects of a kind, or shows one.
    Get {
        kind: Kind,
        /// The object to show; all of them when omitted.
        name: Option<String>,
        /// wide (more columns), json or yaml (the objects as Kube-OVN manifests).
        #[arg(short, long)]
        output: Option<Output>,
        /// Pods: the namespace (default "default" for one pod, all when listing). VIPs: only
        /// those of this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        /// VIPs: only those of this subnet.
        #[arg(long)]
        subnet: Option<String>,
    },
    /// Creates the objects of Kube-OVN manifests (Subnet, Vip, SwitchLBRule; Pods are bound as a
    /// CNI plugin would). Objects that exist with the same spec are left unchanged.
    Apply {
        /// The manifest file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Deletes an object (unbinds a pod), or every object of a manifest file.
    Delete {
        #[arg(requires = "name", required_unless_present = "file")]
        kind: Option<Kind>,
        name: Option<String>,
        /// Delete the objects of this manifest file (- for standard input), in reverse order.
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
        file: Option<String>,
        /// Pods: their namespace.
        #[arg(short, long, default_value = manifest::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Pods of a StatefulSet or VM: the owner is gone, so release the addresses too.
        #[arg(long)]
        owner_gone: bool,
        /// Succeed when the object does not exist.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Streams changes of one kind: every object as ADDED, then each change; with --since REV,
    /// what changed after revision REV (a list's or an event's), then each change.
    Watch {
        /// subnet, vip, slr or pod.
        kind: Kind,
        /// The object to watch (a pod as its name in --namespace); all when omitted.
        name: Option<String>,
        /// Pods: the namespace of NAME.
        #[arg(short, long, default_value = manifest::DEFAULT_NAMESPACE)]
        namespace: String,
        /// Resume after this revision; OUT_OF_RANGE when the daemon's change log no longer
        /// holds it (list again).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// json: one event per line, {"type": ..., "object": ...}.
        #[arg(short, long)]
        output: Option<Output>,
    },
}

/// The kinds of object the daemon keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Kind {
    #[value(alias = "subnets")]
    Subnet,
    #[value(alias = "vips")]
    Vip,
    #[value(aliases = ["slrs", "switchlbrule", "switchlbrules"])]
    Slr,
    #[value(alias = "pods")]
    Pod,
}

impl Kind {
    /// The lower-case kind kubectl prints before a name: `vip/vip-dynamic-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subnet => "subnet",
            Kind::Vip => "vip",
            Kind::Slr => "switchlbrule",
            Kind::Pod => "pod",
        }
    }

    /// The plural in words, for messages ("No switch-LB rules found.").
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Subnet => "subnets",
            Kind::Vip => "VIPs",
            Kind::Slr => "switch-LB rules",
            Kind::Pod => "pods",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Wide,
    Json,
    Yaml,
}

impl Args {
    /// How to reach the daemons: `--server`'s list, else `--socket`; a bad value names its flag.
    pub fn client_settings(&self) -> Result<Settings, CliError> {
        let setting = |flag: &'static str, message: String| CliError::Setting { flag, message };
        let addresses = match self
            .server
            .as_deref()
            .map(str::trim)
            .filter(|server| !server.is_empty())
        {
            Some(server) => Address::parse_list(server).map_err(|message| setting("--server", message))?,
            None => vec![Address::Unix(self.socket.clone())],
        };
        Ok(Settings {
            addresses,
            tls: TlsFiles {
                ca_certificate: self.tls_ca_cert.clone(),
                certificate: self.tls_certificate.clone(),
                private_key: self.tls_private_key.clone(),
                server_name: self.tls_server_name.clone(),
            },
            connect_timeout: Duration::from_secs(self.connect_timeout.max(1)),
            request_timeout: Duration::from_secs(self.timeout.max(1)),
            failover_timeout: Duration::from_secs(self.failover_timeout),
        })
    }
}

/// The flag of a TLS setting, for error messages.
fn tls_flag(setting: TlsSetting) -> &'static str {
    match setting {
        TlsSetting::CaCertificate => "--tls-ca-cert",
        TlsSetting::Certificate => "--tls-certificate",
        TlsSetting::PrivateKey => "--tls-private-key",
        TlsSetting::ServerName => "--tls-server-name",
    }
}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> CliError {
        match error {
            ClientError::Setting { setting, message } => CliError::Setting {
                flag: tls_flag(setting),
                message,
            },
            ClientError::Unreachable { .. } => CliError::Connect {
                reason: error.to_string(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon answered with an error: `NOT_FOUND: vip "x" not found`.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Box<tonic::Status>),
    /// No daemon of the list answered.
    #[error("cannot connect: {reason}")]
    Connect { reason: String },
    /// A watch's connection broke after it was open (the daemon killed, the network gone).
    #[error("the connection to the daemon broke during the watch ({reason}); watch again with --since {resume}")]
    WatchBroken { reason: String, resume: u64 },
    /// A flag (or its environment variable) is wrong; nothing was sent.
    #[error("{flag}: {message}")]
    Setting { flag: &'static str, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the output: {0}")]
    Write(#[from] std::io::Error),
    #[error("cannot encode the output: {0}")]
    Encode(String),
    /// Some objects of an `apply` or `delete -f` failed; each was reported as it failed.
    #[error("{failed} of {total} objects failed")]
    Partial { failed: usize, total: usize },
}

impl From<tonic::Status> for CliError {
    /// A status the daemon sent, or (when tonic made it of a transport error, its source) the
    /// connection failing under the request, with the cause.
    fn from(status: tonic::Status) -> CliError {
        match std::error::Error::source(&status) {
            Some(cause) => CliError::Connect {
                reason: format!("{}: {}", status.message(), crate::client::error_chain(cause)),
            },
            None => CliError::Status(Box::new(status)),
        }
    }
}

impl CliError {
    /// True when the output pipe closed (`vipctl get vip | head -1`): nothing to report.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Write(error) if error.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// The canonical name of a gRPC status code, as grpcurl and the gRPC docs spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Runs one command. Results go to standard output, per-object failures of `apply` and
/// `delete -f` to standard error; the returned error is the one to report before exiting
/// non-zero.
pub async fn run(args: Args) -> Result<(), CliError> {
    let settings = args.client_settings()?;
    match args.command {
        Command::Apply { file } => {
            // Parse everything before connecting: a bad manifest sends nothing.
            let requests = manifests_to_requests(&read_input(&file)?)?;
            let mut client = commands::Client::connect(settings).await?;
            client.apply(requests).await
        }
        Command::Delete {
            kind,
            name,
            file,
            namespace,
            owner_gone,
            ignore_not_found,
        } => {
            let options = commands::DeleteOptions {
                owner_gone,
                ignore_not_found,
            };
            match (file, kind, name) {
                (Some(file), _, _) => {
                    let requests = manifests_to_requests(&read_input(&file)?)?;
                    let mut client = commands::Client::connect(settings).await?;
                    client.delete_all(requests, options).await
                }
                (None, Some(kind), Some(name)) => {
                    let mut client = commands::Client::connect(settings).await?;
                    client.delete(kind, &name, &namespace, options).await
                }
                // clap requires a kind and a name without a file.
                _ => Ok(()),
            }
        }
        Command::Get {
            kind,
            name,
            output,
            namespace,
            subnet,
        } => {
            let mut client = commands::Client::connect(settings).await?;
            let query = commands::Query {
                name,
                namespace,
                subnet,
            };
            client.get(kind, query, output).await
        }
        Command::Watch {
            kind,
            name,
            namespace,
            since,
            output,
        } => {
            let mut client = commands::Client::connect(settings).await?;
            client.watch(kind, name, &namespace, since, output).await
        }
    }
}

fn read_input(file: &str) -> Result<String, CliError> {
    let read = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    read.map_err(|source| CliError::Read {
        path: if file == "-" {
            "standard input".into()
        } else {
            file.to_string()
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_wins_over_socket_and_a_bad_flag_is_named() {
        let settings = |extra: &[&str]| {
            let mut argv = vec!["vipctl", "get", "vip"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv).unwrap().client_settings()
        };
        assert_eq!(
            settings(&["--socket", "/run/x.sock"]).unwrap().addresses,
            vec![Address::Unix("/run/x.sock".into())]
        );
        assert_eq!(
            settings(&[
                "--server",
                "127.0.0.1:50051,tcp:10.0.0.2:50051",
                "--connect-timeout",
                "2"
            ])
            .unwrap()
            .addresses,
            vec![
                Address::Tcp {
                    host: "127.0.0.1".into(),
                    port: 50051
                },
                Address::Tcp {
                    host: "10.0.0.2".into(),
                    port: 50051
                }
            ]
        );
        let error = settings(&["--server", "ssl:10.0.0.1:1"]).unwrap_err();
        assert!(error.to_string().starts_with("--server: "), "{error}");
    }

    #[test]
    fn status_errors_print_code_and_message() {
        let error = CliError::from(tonic::Status::not_found("vip \"x\" not found"));
        assert_eq!(error.to_string(), "NOT_FOUND: vip \"x\" not found");
    }

    #[test]
    fn kinds_take_kubectl_style_names() {
        for (text, kind) in [
            ("vip", Kind::Vip),
            ("vips", Kind::Vip),
            ("subnets", Kind::Subnet),
            ("slr", Kind::Slr),
            ("switchlbrule", Kind::Slr),
            ("pods", Kind::Pod),
        ] {
            assert_eq!(Kind::from_str(text, false), Ok(kind), "{text}");
        }
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "vipctl",
            "get",
            "vip",
            "vip-aap",
            "-o",
            "wide",
            "--server",
            "127.0.0.1:50051",
        ]);
        assert!(matches!(
            args.map(|args| args.command),
            Ok(Command::Get {
                kind: Kind::Vip,
                name: Some(_),
                output: Some(Output::Wide),
                ..
            })
        ));
        assert!(
            Args::try_parse_from(["vipctl", "delete", "vip"]).is_err(),
            "a kind needs a name"
        );
        assert!(Args::try_parse_from(["vipctl", "delete", "-f", "x.yaml"]).is_ok());
        assert!(Args::try_parse_from(["vipctl", "delete", "pod", "busybox", "-n", "default", "--owner-gone"]).is_ok());
    }
}
