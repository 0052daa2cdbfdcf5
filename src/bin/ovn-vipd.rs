//! The `ovn-vipd` daemon: parses flags, sets up tracing and runs [`ovn_vipd::daemon::run`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ovn_vipd::daemon::{self, DaemonConfig};
use ovn_vipd::ovsdb::{Remote, TlsFiles};
use tokio_util::sync::CancellationToken;

/// Reserves IP addresses (VIPs) for OVN networks and keeps OVN Northbound in line with them.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// OVN Northbound database, in OVN's remote syntax; a comma-separated list for a cluster.
    #[arg(long, env = "OVN_VIPD_OVN_NB", default_value = "unix:/var/run/ovn/ovnnb_db.sock")]
    ovn_nb: String,
    /// Directory of the durable store.
    #[arg(long, env = "OVN_VIPD_DATA_DIR", default_value = "/var/lib/ovn-vipd")]
    data_dir: PathBuf,
    /// Private key for ssl: NB remotes (OVN's -p).
    #[arg(long = "nb-private-key", env = "OVN_VIPD_NB_PRIVATE_KEY")]
    nb_private_key: Option<PathBuf>,
    /// Certificate for ssl: NB remotes (OVN's -c).
    #[arg(long = "nb-certificate", env = "OVN_VIPD_NB_CERTIFICATE")]
    nb_certificate: Option<PathBuf>,
    /// CA certificate for ssl: NB remotes (OVN's -C).
    #[arg(long = "nb-ca-cert", env = "OVN_VIPD_NB_CA_CERT")]
    nb_ca_cert: Option<PathBuf>,
    /// gRPC listener, repeatable: unix:PATH or tcp:HOST:PORT.
    #[arg(long, env = "OVN_VIPD_LISTEN", value_delimiter = ',', default_values = ["unix:/run/ovn-vipd/ovn-vipd.sock", "tcp:127.0.0.1:50051"])]
    listen: Vec<String>,
    /// Seconds between safety-net full resyncs.
    #[arg(long, env = "OVN_VIPD_RESYNC_INTERVAL", default_value_t = 300)]
    resync_interval: u64,
}

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let flags = Flags::parse();
    let ovn_nb = match Remote::parse_list(&flags.ovn_nb) {
        Ok(remotes) => remotes,
        Err(error) => {
            eprintln!("ovn-vipd: --ovn-nb: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let nb_tls = match (flags.nb_private_key, flags.nb_certificate, flags.nb_ca_cert) {
        (Some(private_key), Some(certificate), Some(ca_certificate)) => Some(TlsFiles {
            private_key,
            certificate,
            ca_certificate,
        }),
        (None, None, None) => None,
        _ => {
            eprintln!("ovn-vipd: --nb-private-key, --nb-certificate and --nb-ca-cert go together");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if flags.resync_interval == 0 {
        eprintln!("ovn-vipd: --resync-interval must be at least 1 second");
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut listen = Vec::new();
    for text in &flags.listen {
        match text.parse::<ovn_vipd::api::Listen>() {
            Ok(listener) => listen.push(listener),
            Err(error) => {
                eprintln!("ovn-vipd: --listen: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let config = DaemonConfig {
        listen,
        ovn_nb,
        nb_tls,
        data_dir: flags.data_dir,
        resync_interval: Duration::from_secs(flags.resync_interval),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ovn-vipd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal_token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signal_token.cancel();
        });
        daemon::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ovn-vipd: {error}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM and SIGINT both start a graceful stop.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
