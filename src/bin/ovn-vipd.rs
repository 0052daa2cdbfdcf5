//! The `ovn-vipd` daemon: resolves its settings, sets up logging and runs
//! [`ovn_vipd::daemon::run`]; `ovn-vipd check` audits the store against NB and `ovn-vipd config`
//! prints the effective settings.

// No unwrap()/expect() outside tests: a panic in a daemon or a plugin is an outage (clippy denies both).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ovn_vipd::config::{ConfigError, SettingFlags, Settings};
use ovn_vipd::daemon::{self, DaemonConfig};
use ovn_vipd::telemetry::{self, systemd, LogHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Reserves IP addresses (VIPs) for OVN networks and keeps OVN Northbound in line with them.
///
/// Every setting is a flag, an OVN_VIPD_* environment variable, or a key of the --config TOML
/// file; a flag beats the environment, which beats the file, which beats the default.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: SettingFlags,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Compare the store, IPAM and NB; report what is wrong (exit 1 if anything is). The store is
    /// opened exclusively: stop the daemon first.
    Check {
        /// Fix what is safe to fix: release allocations nobody holds, allocate what a record
        /// holds when nobody else has it, and apply the NB diff to owned rows.
        #[arg(long)]
        repair: bool,
        /// Seconds to wait for NB.
        #[arg(long, default_value_t = 10)]
        nb_timeout: u64,
    },
    /// Print the effective settings as TOML, each with where it came from.
    Config,
}

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let settings = match Settings::from_matches(&matches) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ovn-vipd: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::Config) = cli.command {
        print!("{}", settings.render());
        return ExitCode::SUCCESS;
    }
    let log = match telemetry::init_logging(&settings.log, settings.log_format) {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("ovn-vipd: setting log: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ovn-vipd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Check { repair, nb_timeout }) => runtime.block_on(check(&settings, repair, nb_timeout)),
        _ => runtime.block_on(serve(settings, log)),
    }
}

async fn serve(settings: Settings, log: LogHandle) -> ExitCode {
    let config = DaemonConfig::from_settings(&settings);
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        handle_signals(settings, log).await;
        signal_token.cancel();
    });
    match daemon::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ovn-vipd: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn check(settings: &Settings, repair: bool, nb_timeout: u64) -> ExitCode {
    if repair && !settings.cluster_db.is_empty() {
        // The local store is only this host's replica of the cluster database: a repair written
        // there would be overwritten by the mirror and never reach the other daemons.
        eprintln!(
            "ovn-vipd check: --repair is not available in clustered mode (cluster-db is set): the store here is a replica of the cluster database"
        );
        return ExitCode::from(2);
    }
    let options = ovn_vipd::check::CheckOptions {
        data_dir: &settings.data_dir,
        ovn_nb: settings.ovn_nb.clone(),
        nb_tls: settings.nb_tls.clone(),
        repair,
        nb_timeout: Duration::from_secs(nb_timeout),
    };
    let report = match ovn_vipd::check::run(options, |line| eprintln!("{line}")).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("ovn-vipd check: {error}");
            return ExitCode::from(2);
        }
    };
    for line in &report.repaired {
        println!("repaired: {line}");
    }
    for line in &report.left {
        println!("problem: {line}");
    }
    if report.is_clean() {
        println!("clean: store, IPAM and NB agree");
        ExitCode::SUCCESS
    } else if repair && report.left.is_empty() {
        println!("repaired everything found");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// SIGTERM and SIGINT start a graceful stop; SIGHUP re-reads the configuration file and applies
/// what can change while running (the log filter), naming what needs a restart.
async fn handle_signals(mut settings: Settings, log: LogHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => return,
            _ = interrupt.recv() => return,
            _ = hangup.recv() => {
                systemd::reloading();
                match reload() {
                    Ok(newer) => {
                        match log.set_filter(&newer.log) {
                            Ok(()) => info!(log = %newer.log, "configuration reloaded"),
                            Err(error) => warn!(%error, "log filter not changed"),
                        }
                        let restart = settings.needs_restart(&newer);
                        if !restart.is_empty() {
                            warn!(settings = ?restart, "changed settings take effect at the next restart");
                        }
                        settings = newer;
                    }
                    Err(error) => warn!(%error, "configuration not reloaded"),
                }
                systemd::ready("serving; configuration reloaded");
            }
        }
    }
}

/// The settings again: the same flags and environment, the file as it is now.
fn reload() -> Result<Settings, ConfigError> {
    let matches = Cli::command().get_matches_from(std::env::args_os());
    Settings::from_matches(&matches)
}
