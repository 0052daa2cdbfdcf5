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

pub use manifest::{manifests_to_requests, ApplyRequest, ManifestError};

/// Where the daemon listens for local clients by default.
pub const DEFAULT_SOCKET: &str = "/run/ovn-vipd/ovn-vipd.sock";

/// Talks to ovn-vipd: lists and shows subnets, VIPs, switch-LB rules and pods, applies Kube-OVN
/// manifests, deletes objects and watches VIPs.
#[derive(Parser, Debug)]
#[command(name = "vipctl", version)]
pub struct Args {
    /// The daemon's unix socket.
    #[arg(long, env = "VIPCTL_SOCKET", default_value = DEFAULT_SOCKET, global = true)]
    pub socket: PathBuf,
    /// Talk to the daemon at this address instead of the socket, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "VIPCTL_SERVER", global = true)]
    pub server: Option<String>,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout: u64,
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
    /// Streams VIP changes: first every VIP as ADDED, then each change.
    Watch {
        /// The VIP to watch; all when omitted.
        name: Option<String>,
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Wide,
    Json,
    Yaml,
}

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    /// `http://host:port`.
    Url(String),
}

impl Target {
    /// `--server` wins over `--socket`; a server without a scheme is taken as `http://`, and
    /// `unix:PATH` names a socket.
    pub fn from_args(socket: &std::path::Path, server: Option<&str>) -> Target {
        match server.map(str::trim).filter(|server| !server.is_empty()) {
            None => Target::Unix(socket.to_path_buf()),
            Some(server) => match server.strip_prefix("unix://").or_else(|| server.strip_prefix("unix:")) {
                Some(path) => Target::Unix(PathBuf::from(path)),
                None if server.contains("://") => Target::Url(server.to_string()),
                None => Target::Url(format!("http://{server}")),
            },
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Url(url) => f.write_str(url),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon answered with an error: `NOT_FOUND: vip "x" not found`.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Box<tonic::Status>),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
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
    fn from(status: tonic::Status) -> CliError {
        CliError::Status(Box::new(status))
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
    let target = Target::from_args(&args.socket, args.server.as_deref());
    let timeout = Duration::from_secs(args.timeout.max(1));
    match args.command {
        Command::Apply { file } => {
            // Parse everything before connecting: a bad manifest sends nothing.
            let requests = manifests_to_requests(&read_input(&file)?)?;
            let mut client = commands::Client::connect(&target, timeout).await?;
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
                    let mut client = commands::Client::connect(&target, timeout).await?;
                    client.delete_all(requests, options).await
                }
                (None, Some(kind), Some(name)) => {
                    let mut client = commands::Client::connect(&target, timeout).await?;
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
            let mut client = commands::Client::connect(&target, timeout).await?;
            let query = commands::Query {
                name,
                namespace,
                subnet,
            };
            client.get(kind, query, output).await
        }
        Command::Watch { name, output } => {
            let mut client = commands::Client::connect(&target, timeout).await?;
            client.watch(name.unwrap_or_default(), output).await
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
    fn server_wins_over_socket_and_gets_a_scheme() {
        let socket = std::path::Path::new("/run/ovn-vipd/ovn-vipd.sock");
        assert_eq!(Target::from_args(socket, None), Target::Unix(socket.to_path_buf()));
        assert_eq!(
            Target::from_args(socket, Some("127.0.0.1:50051")),
            Target::Url("http://127.0.0.1:50051".into())
        );
        assert_eq!(
            Target::from_args(socket, Some("http://[::1]:50051")),
            Target::Url("http://[::1]:50051".into())
        );
        assert_eq!(
            Target::from_args(socket, Some("unix:run/ovn-vipd.sock")),
            Target::Unix("run/ovn-vipd.sock".into())
        );
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
