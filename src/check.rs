//! `ovn-vipd check`: compares the store, IPAM and OVN NB, like `calicoctl ipam check`, and with
//! `--repair` fixes what is safe to fix.
//!
//! It reports addresses and MACs allocated without an owner, owners whose addresses are not
//! allocated, addresses with two owners, and in NB: rows missing, owned rows that differ, owned
//! rows no object wants, and foreign rows in the way. Repairs: releasing allocations nobody holds,
//! allocating what a record holds when nobody else has it, and one NB sync (the same diff the
//! daemon applies, so it never touches rows it does not own). Two owners and foreign rows are
//! left to a person.
//!
//! The store is opened exclusively: run it while the daemon is stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::nb;
use crate::ovsdb::{Client, OvsdbError, Remote, TlsFiles};
use crate::reconcile::scope::{Dirty, Memory};
use crate::reconcile::{self, Difference};
use crate::registry::{Registry, RegistryError};
use crate::store::{Finding, Store, StoreError, WriteBatch};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the store at {path} is in use (is ovn-vipd running? stop it first): {source}")]
    StoreInUse {
        path: String,
        #[source]
        source: StoreError,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("store: {0}")]
    Registry(#[from] RegistryError),
    #[error("OVN NB: {0}")]
    Nb(#[from] OvsdbError),
    #[error(
        "another ovn-vipd holds the NB lock {lock} (it is the one writing NB): stop every daemon on this NB before --repair"
    )]
    NbLocked { lock: &'static str },
}

/// What the check found and what it repaired.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Store and IPAM problems.
    pub store: Vec<Finding>,
    /// Other store problems in words (e.g. a pod naming a VIP that does not name it).
    pub store_other: Vec<String>,
    /// NB differences.
    pub nb: Vec<Difference>,
    /// Foreign rows in the way of a row the daemon wants: port name → the row.
    pub conflicts: Vec<(String, String)>,
    /// Addresses and MACs allocated by the daemon that NB already uses outside its rows on the
    /// subnet's switch (a foreign port, a router port, a foreign load balancer).
    pub overlaps: Vec<String>,
    /// Repairs made (with `--repair`).
    pub repaired: Vec<String>,
    /// Found but not safe to repair automatically.
    pub left: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.store.is_empty()
            && self.store_other.is_empty()
            && self.nb.is_empty()
            && self.conflicts.is_empty()
            && self.overlaps.is_empty()
    }
}

pub struct CheckOptions<'a> {
    pub data_dir: &'a Path,
    pub ovn_nb: Vec<Remote>,
    pub nb_tls: Option<TlsFiles>,
    pub repair: bool,
    /// How long to wait for NB.
    pub nb_timeout: Duration,
}

/// Runs the check; `progress` receives a line per stage (a long run shows where it is).
pub async fn run(options: CheckOptions<'_>, mut progress: impl FnMut(&str)) -> Result<CheckReport, CheckError> {
    let started = Instant::now();
    let mut report = CheckReport::default();
    let path = options.data_dir.join("store");
    let mut say = |text: String| progress(&format!("[{:>6.1}s] {text}", started.elapsed().as_secs_f64()));

    say(format!("opening the store at {}", path.display()));
    {
        let store = Store::open(&path).map_err(|source| match source {
            StoreError::Sled(ref error) if error.to_string().contains("lock") => CheckError::StoreInUse {
                path: path.display().to_string(),
                source,
            },
            other => CheckError::Store(other),
        })?;
        let snapshot = store.load()?;
        say(format!(
            "read {} subnets, {} VIPs, {} pods, {} switch-LB rules, {} address and {} MAC allocations",
            snapshot.subnets.len(),
            snapshot.vips.len(),
            snapshot.pods.len(),
            snapshot.switch_lb_rules.len(),
            snapshot.ips.len(),
            snapshot.macs.len()
        ));
        let consistency = Store::check(&snapshot);
        report.store = consistency.findings.clone();
        report.store_other = consistency.references.clone();
        say(format!(
            "store and IPAM checked: {} problem(s)",
            consistency.problems.len()
        ));
        let mut batch = WriteBatch::new();
        for finding in &report.store {
            match (options.repair, finding.repair()) {
                (true, Some(write)) => {
                    batch.push(write);
                    report.repaired.push(finding.to_string());
                }
                _ => report.left.push(finding.to_string()),
            }
        }
        report.left.extend(report.store_other.iter().cloned());
        if !batch.is_empty() {
            store.apply(&batch)?;
            store.flush()?;
            say(format!("store repaired: {} write(s)", report.repaired.len()));
        }
    }

    say("loading the registry".into());
    let registry = open_registry_again(&path).await?;
    say(format!("connecting to OVN NB at {}", join(&options.ovn_nb)));
    let mut config = nb::client_config(options.ovn_nb.clone());
    config.tls = options.nb_tls.clone();
    // A repair writes NB: only as the holder of the daemons' lock, asserted in every transaction,
    // so it never writes beside a running daemon (whose store it does not know).
    let lock = crate::role::LOCK_NAME;
    if options.repair {
        config.locks = vec![lock.to_string()];
    }
    let client = Client::start(config);
    let outcome = async {
        client.wait_connected(options.nb_timeout).await?;
        if options.repair && !client.holds_lock(lock) {
            return Err(CheckError::NbLocked { lock });
        }
        let mut memory = Memory::default();
        let plan = reconcile::compute_plan(&registry, &client.cache(), &Dirty::full(), &mut memory).plan;
        say(format!(
            "NB compared: {} difference(s), {} foreign row(s) in the way",
            plan.differences.len(),
            plan.conflicts.len()
        ));
        report.nb = plan.differences.clone();
        report.conflicts = plan.conflicts.clone().into_iter().collect();
        for (port, row) in &report.conflicts {
            report.left.push(format!("foreign row in the way of {port}: {row}"));
        }
        for (subnet, _) in registry.list_subnets() {
            let used = nb::in_use_outside(&client.cache(), &subnet.logical_switch);
            for (ip, user) in &used.ips {
                if let Some(owner) = registry.owner_in_subnet(&subnet.name, Some(*ip), None) {
                    report.overlaps.push(format!(
                        "subnet {}: {ip} is allocated to {owner} and used by {user}",
                        subnet.name
                    ));
                }
            }
            for (mac, user) in &used.macs {
                if let Some(owner) = registry.owner_in_subnet(&subnet.name, None, Some(mac)) {
                    report.overlaps.push(format!(
                        "subnet {}: MAC {mac} is allocated to {owner} and used by {user}",
                        subnet.name
                    ));
                }
            }
        }
        say(format!(
            "NB addresses outside ovn-vipd's rows: {} overlap(s)",
            report.overlaps.len()
        ));
        // Two users of one address: a person decides which one moves.
        report.left.extend(report.overlaps.iter().cloned());
        if options.repair && !plan.operations.is_empty() {
            // The daemon's own sync: a few passes, since a created switch gets its balancers in
            // the next one.
            for _ in 0..3 {
                let sent = reconcile::pass(&registry, &client, &Dirty::full(), &mut memory, Some(lock)).await?;
                if sent == 0 {
                    break;
                }
                // Let the monitor deliver the change before the next look.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            for difference in &plan.differences {
                report.repaired.push(difference.to_string());
            }
            say("NB repaired".into());
        } else if !options.repair {
            report
                .left
                .extend(plan.differences.iter().map(|difference| difference.to_string()));
        }
        Ok::<(), CheckError>(())
    }
    .await;
    client.shutdown().await;
    registry.flush()?;
    outcome?;
    Ok(report)
}

fn join(remotes: &[Remote]) -> String {
    remotes
        .iter()
        .map(|remote| remote.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Opens the registry on the store this check has just closed. sled releases its file lock when
/// its background flush thread ends, a moment after the last handle is dropped, so a lock refusal
/// right after our own close is retried for up to 5 s; any other error is returned at once.
async fn open_registry_again(path: &Path) -> Result<Registry, CheckError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Registry::open(path) {
            Ok((registry, _)) => return Ok(registry),
            Err(RegistryError::Store(StoreError::Sled(error)))
                if error.to_string().contains("lock") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
