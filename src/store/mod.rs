//! The durable store: subnets, VIPs, pods, switch-LB rules, the address and MAC allocations
//! (subnet/address → owner), object revisions and the change log, all in one sled tree
//! (`records`) whose keys start with a byte naming their kind ([`keys::Space`], format 4). The
//! only module that knows keys and encodings.
//!
//! - Every mutation is one [`WriteBatch`], applied as one atomic `sled::Batch` (records,
//!   revisions and change-log entries together): a crash leaves all of it or none of it.
//! - [`Store::durable`] returns once everything applied before the call is on disk. Concurrent
//!   callers share one flush (group commit), so many writers cost one fsync per batch.
//! - On open, pending migrations (`migrations/`) run in order, each atomically; a store written
//!   by a newer version is refused.

mod cluster;
mod keys;
pub mod migrations;
pub mod records;
pub mod revisions;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::model::{MacAddr, Pod, PodRef, Subnet, SwitchLbRule, Vip};
use records::{OwnerRecord, PodRecord, SubnetRecord, SwitchLbRuleRecord, VipRecord};

pub use cluster::{ClusterLink, Progress};
use keys::Space;
pub use migrations::CURRENT_VERSION;
pub use revisions::{ChangeType, Kind, LoggedChange, OutOfRange, CHANGE_LOG_RETAINED, STATUS_BULK};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
    #[error("cannot encode a record: {0}")]
    Encode(String),
    #[error("corrupt record in the store: {0}")]
    Corrupt(String),
    #[error("the store at {path} was written by a newer ovn-vipd (store format {found}; this version reads up to {supported})")]
    NewerVersion { path: String, found: u32, supported: u32 },
    #[error("migration {version} failed: {message}")]
    Migration { version: u32, message: String },
    #[error("the store's flusher has stopped")]
    FlusherGone,
    /// Clustered mode: the change was not committed by the cluster database (lost lock, cluster
    /// unavailable, refused by an index); nothing of it was kept.
    #[error("not committed in the cluster database: {0}")]
    ClusterCommit(String),
}

impl StoreError {}

/// Who owns an allocation: `vip/<name>`, `pod/<namespace>/<name>/<interface>`, `slr/<name>`.
pub type Owner = String;

pub fn vip_owner(name: &str) -> Owner {
    format!("vip/{name}")
}

pub fn pod_nic_owner(pod: &PodRef, interface: &str) -> Owner {
    format!("pod/{}/{}/{}", pod.namespace, pod.name, interface)
}

/// One write of a mutation.
#[derive(Debug, Clone)]
pub enum Write {
    PutSubnet(Subnet),
    DeleteSubnet(String),
    PutVip(Vip),
    DeleteVip(String),
    PutPod(Pod),
    DeletePod(PodRef),
    PutSwitchLbRule(SwitchLbRule),
    DeleteSwitchLbRule(String),
    AllocateIp { subnet: String, ip: IpAddr, owner: Owner },
    ReleaseIp { subnet: String, ip: IpAddr },
    AllocateMac { subnet: String, mac: MacAddr, owner: Owner },
    ReleaseMac { subnet: String, mac: MacAddr },
}

/// The writes of one mutation, applied atomically.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub writes: Vec<Write>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn push(&mut self, write: Write) {
        self.writes.push(write);
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Everything in the store, as read at open.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub subnets: Vec<Subnet>,
    pub vips: Vec<Vip>,
    pub pods: Vec<Pod>,
    pub switch_lb_rules: Vec<SwitchLbRule>,
    pub ips: Vec<(String, IpAddr, Owner)>,
    pub macs: Vec<(String, MacAddr, Owner)>,
}

/// What the consistency check found; empty when the store is consistent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConsistencyReport {
    /// Every problem in words.
    pub problems: Vec<String>,
    /// The allocation problems, typed, with what would repair them.
    pub findings: Vec<Finding>,
    /// Pods naming a VIP that does not name them (no safe automatic repair).
    pub references: Vec<String>,
}

/// An allocated address or MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Ip(IpAddr),
    Mac(MacAddr),
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Ip(ip) => write!(f, "address {ip}"),
            Resource::Mac(mac) => write!(f, "mac {mac}"),
        }
    }
}

/// One allocation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Allocated to an owner that has no record holding it (or in a subnet that is gone): safe
    /// to release.
    WithoutOwner {
        subnet: String,
        resource: Resource,
        owner: Owner,
    },
    /// An owner's record holds it but it is not allocated: safe to allocate when nobody else
    /// holds it.
    NotAllocated {
        subnet: String,
        resource: Resource,
        owner: Owner,
    },
    /// Allocated to one owner while another's record holds it: needs a person.
    TwoOwners {
        subnet: String,
        resource: Resource,
        allocated_to: Owner,
        held_by: Owner,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::WithoutOwner {
                subnet,
                resource,
                owner,
            } => {
                write!(
                    f,
                    "{resource} in {subnet} is allocated to {owner}, which has no record holding it"
                )
            }
            Finding::NotAllocated {
                subnet,
                resource,
                owner,
            } => {
                write!(f, "{owner} holds {resource} in {subnet} without an allocation")
            }
            Finding::TwoOwners {
                subnet,
                resource,
                allocated_to,
                held_by,
            } => write!(
                f,
                "{resource} in {subnet} is allocated to {allocated_to} but {held_by} holds it"
            ),
        }
    }
}

impl Finding {
    /// The writes that repair it, if a repair is safe.
    pub fn repair(&self) -> Option<Write> {
        match self {
            Finding::WithoutOwner { subnet, resource, .. } => Some(match resource {
                Resource::Ip(ip) => Write::ReleaseIp {
                    subnet: subnet.clone(),
                    ip: *ip,
                },
                Resource::Mac(mac) => Write::ReleaseMac {
                    subnet: subnet.clone(),
                    mac: *mac,
                },
            }),
            Finding::NotAllocated {
                subnet,
                resource,
                owner,
            } => Some(match resource {
                Resource::Ip(ip) => Write::AllocateIp {
                    subnet: subnet.clone(),
                    ip: *ip,
                    owner: owner.clone(),
                },
                Resource::Mac(mac) => Write::AllocateMac {
                    subnet: subnet.clone(),
                    mac: *mac,
                    owner: owner.clone(),
                },
            }),
            Finding::TwoOwners { .. } => None,
        }
    }
}

impl ConsistencyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The store's trees, as migrations see them: those of formats 1–3 (opened only while
/// migrations run) and `records` (format 4).
pub struct Trees {
    pub meta: sled::Tree,
    pub subnets: sled::Tree,
    pub vips: sled::Tree,
    pub pods: sled::Tree,
    pub slrs: sled::Tree,
    pub ips: sled::Tree,
    pub macs: sled::Tree,
    /// Clustered mode: the replica's rows by `table NUL uuid` (see `cluster.rs`).
    pub cluster_rows: sled::Tree,
    /// Format 3: object revisions and the change log (see [`revisions`]).
    pub revisions: sled::Tree,
    pub changes: sled::Tree,
    /// Format 4: every record, keys prefixed by their [`keys::Space`].
    pub records: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> Result<Trees, StoreError> {
        Ok(Trees {
            meta: db.open_tree("meta")?,
            subnets: db.open_tree("subnets")?,
            vips: db.open_tree("vips")?,
            pods: db.open_tree("pods")?,
            slrs: db.open_tree("slrs")?,
            ips: db.open_tree("ips")?,
            macs: db.open_tree("macs")?,
            cluster_rows: db.open_tree("cluster_rows")?,
            revisions: db.open_tree("revisions")?,
            changes: db.open_tree("changes")?,
            records: db.open_tree("records")?,
        })
    }
}

/// One sled write: key (with its space byte), value (`None` removes).
type EncodedWrite = (Vec<u8>, Option<Vec<u8>>);

type FlushWaiter = oneshot::Sender<Result<(), String>>;

pub struct Store {
    db: sled::Db,
    /// How many flushes the flusher thread has done: fewer than waiters means they were shared.
    flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The format version (`format_version`).
    meta: sled::Tree,
    /// Everything else (see [`keys::Space`]).
    records: sled::Tree,
    /// Hands waiters to the flusher thread, which flushes once for everyone waiting.
    flush_requests: Mutex<Option<std_mpsc::Sender<FlushWaiter>>>,
    /// Joined on drop, so the flusher's handle on the database is gone when the store is.
    flusher: Option<std::thread::JoinHandle<()>>,
    path: String,
    /// Clustered mode's queue to the cluster database (`cluster.rs`); unset when standalone.
    cluster: std::sync::OnceLock<std::sync::Arc<ClusterLink>>,
    /// Object revisions; held across each batch's transaction so revisions are handed out in
    /// commit order.
    revisions: Mutex<revisions::Revisions>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut sender) = self.flush_requests.lock() {
            sender.take();
        }
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
        // A clean close: no revision above the current one was handed out, so the next start
        // goes on right after it (a crash restarts above the floor instead).
        if let Ok(revisions) = self.revisions.lock() {
            if revisions.floor > revisions.current {
                let _ = self.meta.insert(revisions::FLOOR_KEY, &revisions.current.to_be_bytes());
            }
        }
        let _ = self.db.flush();
    }
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|error| StoreError::Encode(error.to_string()))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

impl Store {
    /// Opens (or creates) the store at `path` and runs pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // A bounded page cache: every record is also held in memory by the registry.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(32 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()?;
        let path_text = path.display().to_string();
        let (meta, records) = migrations::run(&db, &path_text)?;
        let revisions = revisions::Revisions::load(&records, &meta)?;
        let (sender, receiver) = std_mpsc::channel::<FlushWaiter>();
        let flusher_db = db.clone();
        let flushes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let flusher_count = flushes.clone();
        let handle = std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || flusher(flusher_db, receiver, flusher_count))
            .map_err(|error| StoreError::Sled(sled::Error::Io(error)))?;
        Ok(Store {
            db,
            flushes,
            meta,
            records,
            flush_requests: Mutex::new(Some(sender)),
            flusher: Some(handle),
            path: path_text,
            cluster: std::sync::OnceLock::new(),
            revisions: Mutex::new(revisions),
        })
    }

    /// Flushes done so far.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The store format version on disk.
    pub fn version(&self) -> Result<u32, StoreError> {
        migrations::read_version(&self.meta)
    }

    /// Applies a batch atomically (not yet durable: see [`Store::durable`]). In clustered mode
    /// it is queued for the cluster database instead (`ClusterCommit` when refused).
    pub fn apply(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if let Some(queued) = self.cluster_push(batch) {
            return queued;
        }
        let mut sled_batch = self.encode_batch(batch)?;
        // Held from planning to commit, so revisions are handed out in the order batches land.
        let mut revisions = self.lock_revisions()?;
        let planned = revisions.plan(&batch.writes)?;
        planned.write_in(&mut sled_batch);
        self.records.apply_batch(sled_batch)?;
        revisions.commit(planned);
        Ok(())
    }

    /// The sled writes of a batch, as one `sled::Batch` on `records`.
    fn encode_batch(&self, batch: &WriteBatch) -> Result<sled::Batch, StoreError> {
        let mut sled_batch = sled::Batch::default();
        for write in &batch.writes {
            let (key, value): EncodedWrite = match write {
                Write::PutSubnet(subnet) => (
                    Space::Subnet.key(subnet.name.as_bytes()),
                    Some(encode(&SubnetRecord::from(subnet))?),
                ),
                Write::DeleteSubnet(name) => (Space::Subnet.key(name.as_bytes()), None),
                Write::PutVip(vip) => (
                    Space::Vip.key(vip.spec.name.as_bytes()),
                    Some(encode(&VipRecord::from(vip))?),
                ),
                Write::DeleteVip(name) => (Space::Vip.key(name.as_bytes()), None),
                Write::PutPod(pod) => (
                    Space::Pod.key(&keys::pod(&pod.key())),
                    Some(encode(&PodRecord::from(pod))?),
                ),
                Write::DeletePod(pod) => (Space::Pod.key(&keys::pod(pod)), None),
                Write::PutSwitchLbRule(rule) => (
                    Space::SwitchLbRule.key(rule.name.as_bytes()),
                    Some(encode(&SwitchLbRuleRecord::from(rule))?),
                ),
                Write::DeleteSwitchLbRule(name) => (Space::SwitchLbRule.key(name.as_bytes()), None),
                Write::AllocateIp { subnet, ip, owner } => (
                    Space::Ip.key(&keys::ip(subnet, *ip)),
                    Some(encode(&OwnerRecord::V1(owner.clone()))?),
                ),
                Write::ReleaseIp { subnet, ip } => (Space::Ip.key(&keys::ip(subnet, *ip)), None),
                Write::AllocateMac { subnet, mac, owner } => (
                    Space::Mac.key(&keys::mac(subnet, *mac)),
                    Some(encode(&OwnerRecord::V1(owner.clone()))?),
                ),
                Write::ReleaseMac { subnet, mac } => (Space::Mac.key(&keys::mac(subnet, *mac)), None),
            };
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        Ok(sled_batch)
    }

    /// The entries of one key space, keys without their space byte.
    fn scan(&self, space: Space) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> {
        self.records.scan_prefix(space.prefix()).map(|entry| {
            let (key, value) = entry?;
            Ok((key.subslice(1, key.len() - 1), value))
        })
    }

    fn lock_revisions(&self) -> Result<std::sync::MutexGuard<'_, revisions::Revisions>, StoreError> {
        self.revisions
            .lock()
            .map_err(|_| StoreError::Corrupt("the revisions lock was poisoned".into()))
    }

    /// The newest revision handed out: what a list answered now is current as of it (0 on a
    /// new store).
    pub fn revision(&self) -> u64 {
        self.lock_revisions().map(|revisions| revisions.current).unwrap_or(0)
    }

    /// The revision of an object (`key` is its name, or `namespace/name` for a pod): `None`
    /// when it is not stored, 0 when it was stored before revisions existed (format 3).
    pub fn revision_of(&self, kind: Kind, key: &str) -> Option<u64> {
        let revisions = self.lock_revisions().ok()?;
        revisions.by_object.get(&(kind, key.to_string())).copied()
    }

    /// Gives a status change of each of `keys` (objects of `kind`) the next revision, in memory,
    /// so watches report it in order with stored changes (see [`revisions`]); from
    /// [`revisions::STATUS_BULK`] keys on, one revision for all of them, which watches read as a
    /// change of every object of the kind. Raises the durable
    /// revision floor first when it must (a sled write and a flush, once per
    /// [`revisions::FLOOR_BLOCK`] changes). Callers hold the registry's lock, so a watch that
    /// reads the revision then reads the new status.
    pub fn log_status(&self, kind: Kind, keys: &[&str]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut revisions = self.lock_revisions()?;
        if let Some(floor) = revisions.floor_needed(revisions::Revisions::status_revisions(keys.len())) {
            self.meta.insert(revisions::FLOOR_KEY, &floor.to_be_bytes())?;
            self.meta.flush()?;
            revisions.floor = floor;
        }
        revisions.log_status(kind, keys);
        Ok(())
    }

    /// Keeps the newest `retained` changes (at least 1) from the next batch on, instead of
    /// [`CHANGE_LOG_RETAINED`]: for tests of a watch that resumes from a revision too old.
    pub fn set_change_log_retained(&self, retained: u64) {
        if let Ok(mut revisions) = self.lock_revisions() {
            revisions.retained = retained.max(1);
        }
    }

    /// The changes after revision `after`, oldest first, up to the current revision (which is
    /// returned too): stored changes and status changes ([`Store::log_status`]) merged.
    /// Refused when the logs no longer hold every change after `after` (too old) or `after` is
    /// newer than the current revision.
    pub fn changes_since(&self, after: u64) -> Result<Result<(Vec<LoggedChange>, u64), OutOfRange>, StoreError> {
        let (current, oldest, statuses) = {
            let revisions = self.lock_revisions()?;
            let oldest = revisions.oldest.max(revisions.status_pruned + 1);
            let statuses: Vec<LoggedChange> = if after + 1 < oldest || after > revisions.current {
                Vec::new()
            } else {
                revisions.status_since(after, revisions.current)
            };
            (revisions.current, oldest, statuses)
        };
        let out_of_range = |why, oldest| OutOfRange {
            asked: after,
            why,
            oldest: oldest - 1,
            current,
        };
        if after > current {
            return Ok(Err(out_of_range("in the future", oldest)));
        }
        if after + 1 < oldest {
            return Ok(Err(out_of_range("too old", oldest)));
        }
        let mut changes = revisions::read_log(&self.records, after, current)?;
        // Entries may have been pruned while they were read.
        let oldest_now = self.lock_revisions()?.oldest;
        if after + 1 < oldest_now {
            return Ok(Err(out_of_range("too old", oldest_now)));
        }
        if !statuses.is_empty() {
            changes.extend(statuses);
            // A bulk status entry gives many changes one revision: stable, so each keeps its place.
            changes.sort_by_key(|change| change.revision);
        }
        Ok(Ok((changes, current)))
    }

    /// Returns once everything applied before this call is on disk. Callers waiting at the same
    /// time share one flush.
    /// In clustered mode: once every batch queued before the call was committed by the cluster.
    pub async fn durable(&self) -> Result<(), StoreError> {
        if let Some(result) = self.cluster_durable().await {
            return result;
        }
        let (sender, receiver) = oneshot::channel();
        {
            let requests = self.flush_requests.lock().map_err(|_| StoreError::FlusherGone)?;
            requests
                .as_ref()
                .ok_or(StoreError::FlusherGone)?
                .send(sender)
                .map_err(|_| StoreError::FlusherGone)?;
        }
        match receiver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::Sled(sled::Error::Io(std::io::Error::other(message)))),
            Err(_) => Err(StoreError::FlusherGone),
        }
    }

    /// Flushes synchronously (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Reads everything.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            subnets: self.subnets().collect::<Result<_, _>>()?,
            vips: self.vips().collect::<Result<_, _>>()?,
            pods: self.pods().collect::<Result<_, _>>()?,
            switch_lb_rules: self.switch_lb_rules().collect::<Result<_, _>>()?,
            ips: self.ips().collect::<Result<_, _>>()?,
            macs: self.macs().collect::<Result<_, _>>()?,
        })
    }

    /// The stored subnets, in name order, read one at a time (as are the kinds below: the
    /// registry's open builds its state from them without a whole [`Snapshot`] beside it).
    pub fn subnets(&self) -> impl Iterator<Item = Result<Subnet, StoreError>> + '_ {
        self.scan(Space::Subnet).map(|entry| {
            let (key, value) = entry?;
            let record: SubnetRecord = decode(&value, &format!("subnet {}", String::from_utf8_lossy(&key)))?;
            Subnet::try_from(record)
        })
    }

    /// The stored VIPs, in name order.
    pub fn vips(&self) -> impl Iterator<Item = Result<Vip, StoreError>> + '_ {
        self.scan(Space::Vip).map(|entry| {
            let (key, value) = entry?;
            let record: VipRecord = decode(&value, &format!("vip {}", String::from_utf8_lossy(&key)))?;
            Ok(Vip::from(record))
        })
    }

    /// The stored pods, in `namespace/name` order.
    pub fn pods(&self) -> impl Iterator<Item = Result<Pod, StoreError>> + '_ {
        self.scan(Space::Pod).map(|entry| {
            let (key, value) = entry?;
            let record: PodRecord = decode(&value, &format!("pod {}", String::from_utf8_lossy(&key)))?;
            Pod::try_from(record)
        })
    }

    /// The stored switch-LB rules, in name order.
    pub fn switch_lb_rules(&self) -> impl Iterator<Item = Result<SwitchLbRule, StoreError>> + '_ {
        self.scan(Space::SwitchLbRule).map(|entry| {
            let (key, value) = entry?;
            let record: SwitchLbRuleRecord = decode(&value, &format!("rule {}", String::from_utf8_lossy(&key)))?;
            SwitchLbRule::try_from(record)
        })
    }

    /// The address allocations: (subnet, address, owner), by subnet and address.
    pub fn ips(&self) -> impl Iterator<Item = Result<(String, IpAddr, Owner), StoreError>> + '_ {
        self.scan(Space::Ip).map(|entry| {
            let (key, value) = entry?;
            let (subnet, ip) = keys::parse_ip(&key)?;
            let OwnerRecord::V1(owner) = decode(&value, "ip owner")?;
            Ok((subnet, ip, owner))
        })
    }

    /// The MAC allocations: (subnet, MAC, owner), by subnet and MAC.
    pub fn macs(&self) -> impl Iterator<Item = Result<(String, MacAddr, Owner), StoreError>> + '_ {
        self.scan(Space::Mac).map(|entry| {
            let (key, value) = entry?;
            let (subnet, mac) = keys::parse_mac(&key)?;
            let OwnerRecord::V1(owner) = decode(&value, "mac owner")?;
            Ok((subnet, mac, owner))
        })
    }

    /// Checks that every allocation has an owner record that lists it, and every owner record's
    /// addresses are allocated to it.
    pub fn check(snapshot: &Snapshot) -> ConsistencyReport {
        let allocated = snapshot
            .ips
            .iter()
            .map(|(subnet, ip, owner)| Ok((subnet.clone(), Resource::Ip(*ip), owner.clone())))
            .chain(
                snapshot
                    .macs
                    .iter()
                    .map(|(subnet, mac, owner)| Ok((subnet.clone(), Resource::Mac(*mac), owner.clone()))),
            );
        // Nothing in a snapshot can fail to read.
        Store::check_records(
            snapshot.subnets.iter().map(|subnet| subnet.name.as_str()),
            &snapshot.vips,
            &snapshot.pods,
            allocated,
        )
        .unwrap_or_default()
    }

    /// [`Store::check`] over records held elsewhere (the registry's state) and the allocations
    /// read one at a time (from [`Store::ips`] and [`Store::macs`]).
    pub fn check_records<'a>(
        subnet_names: impl IntoIterator<Item = &'a str>,
        vip_records: impl IntoIterator<Item = &'a Vip> + Clone,
        pod_records: impl IntoIterator<Item = &'a Pod>,
        allocated: impl Iterator<Item = Result<(String, Resource, Owner), StoreError>>,
    ) -> Result<ConsistencyReport, StoreError> {
        let mut problems = Vec::new();
        let mut references = Vec::new();
        // What each owner record says it holds, keyed by names borrowed from the records (the
        // check runs at every open over every record: no copies per entry), and whether an
        // allocation was found for it.
        let mut expected: BTreeMap<(&'a str, Resource), (ExpectedOwner<'a>, bool)> = BTreeMap::new();
        let vips: BTreeMap<&str, &Vip> = vip_records
            .clone()
            .into_iter()
            .map(|vip| (vip.spec.name.as_str(), vip))
            .collect();
        // A pending VIP (it waits for its subnet) holds nothing.
        for vip in vip_records.into_iter().filter(|vip| vip.is_allocated()) {
            let subnet = vip.spec.subnet.as_str();
            let owner = ExpectedOwner::Vip(&vip.spec.name);
            for ip in vip.addresses() {
                expected.insert((subnet, Resource::Ip(ip)), (owner.clone(), false));
            }
            expected.insert((subnet, Resource::Mac(vip.mac)), (owner, false));
        }
        for pod in pod_records {
            for nic in &pod.nics {
                if let Some(vip_name) = &nic.vip {
                    // The VIP owns the addresses; it must name this pod as its holder.
                    match vips.get(vip_name.as_str()) {
                        Some(vip) if vip.holder.as_ref() == Some(&pod.key()) => {}
                        Some(_) => references.push(format!(
                            "pod {} uses vip {vip_name}, which does not name it as holder",
                            pod.key()
                        )),
                        None => references.push(format!("pod {} uses vip {vip_name}, which does not exist", pod.key())),
                    }
                    continue;
                }
                let owner = ExpectedOwner::Other(pod_nic_owner(&pod.key(), &nic.interface));
                let subnet = nic.subnet.as_str();
                for ip in nic.v4ip.map(IpAddr::V4).into_iter().chain(nic.v6ip.map(IpAddr::V6)) {
                    expected.insert((subnet, Resource::Ip(ip)), (owner.clone(), false));
                }
                expected.insert((subnet, Resource::Mac(nic.mac)), (owner, false));
            }
        }
        let subnets: BTreeSet<&str> = subnet_names.into_iter().collect();
        // Every subnet name a key can hold, to look keys up by an allocation's (owned) name.
        let names: BTreeSet<&'a str> = expected.keys().map(|(subnet, _)| *subnet).collect();
        let mut findings = Vec::new();
        for entry in allocated {
            let (subnet, resource, owner) = entry?;
            let subnet_missing = !subnets.contains(subnet.as_str());
            if subnet_missing {
                problems.push(format!(
                    "{resource} is allocated in subnet {subnet}, which does not exist"
                ));
            }
            let held = names
                .get(subnet.as_str())
                .and_then(|name| expected.get_mut(&(*name, resource)));
            match held {
                Some((expected, seen)) => {
                    *seen = true;
                    if !expected.is(&owner) {
                        let finding = Finding::TwoOwners {
                            subnet: subnet.clone(),
                            resource,
                            allocated_to: owner,
                            held_by: expected.to_owner(),
                        };
                        problems.push(finding.to_string());
                        findings.push(finding);
                    }
                }
                None if is_subnet_owner(&owner, &subnet) && !subnet_missing => {}
                None => {
                    let finding = Finding::WithoutOwner {
                        subnet: subnet.clone(),
                        resource,
                        owner,
                    };
                    // A missing subnet was said above, in its own words.
                    if !subnet_missing {
                        problems.push(finding.to_string());
                    }
                    findings.push(finding);
                }
            }
        }
        for ((subnet, resource), (owner, seen)) in &expected {
            if !seen {
                let finding = Finding::NotAllocated {
                    subnet: subnet.to_string(),
                    resource: *resource,
                    owner: owner.to_owner(),
                };
                problems.push(finding.to_string());
                findings.push(finding);
            }
        }
        problems.extend(references.iter().cloned());
        Ok(ConsistencyReport {
            problems,
            findings,
            references,
        })
    }
}

/// Who a record says holds an allocation: a VIP by its borrowed name, anyone else by the owner
/// string (see [`vip_owner`], [`pod_nic_owner`]).
#[derive(Clone)]
enum ExpectedOwner<'a> {
    Vip(&'a str),
    Other(Owner),
}

impl ExpectedOwner<'_> {
    fn is(&self, owner: &str) -> bool {
        match self {
            ExpectedOwner::Vip(name) => owner.strip_prefix("vip/") == Some(*name),
            ExpectedOwner::Other(other) => other == owner,
        }
    }

    fn to_owner(&self) -> Owner {
        match self {
            ExpectedOwner::Vip(name) => vip_owner(name),
            ExpectedOwner::Other(other) => other.clone(),
        }
    }
}

/// Allocations the subnet itself holds (its load-balancer health-check source): their record
/// is the allocation.
fn is_subnet_owner(owner: &str, subnet: &str) -> bool {
    owner.strip_prefix("healthcheck/") == Some(subnet)
}

/// Flushes for every waiter that queued before the flush began.
fn flusher(
    db: sled::Db,
    requests: std_mpsc::Receiver<FlushWaiter>,
    flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    while let Ok(first) = requests.recv() {
        let mut waiters = vec![first];
        while let Ok(more) = requests.try_recv() {
            waiters.push(more);
        }
        let started = Instant::now();
        let result = db.flush().map(|_| ()).map_err(|error| error.to_string());
        flushes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let elapsed = started.elapsed();
        crate::telemetry::metrics()
            .store_flush_seconds
            .observe(elapsed.as_secs_f64());
        if elapsed > Duration::from_millis(500) {
            warn!(?elapsed, waiters = waiters.len(), "slow store flush");
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
    info!("store flusher stopped");
}
