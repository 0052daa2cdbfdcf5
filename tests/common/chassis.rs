//! Pods on two hosts, as ../shared/docs/MULTICHASSIS.md runs them on one machine: the central
//! services (NB, SB, ovn-northd and the `ovn-vipd` binary with a TCP listener that wants mTLS)
//! in the root namespace, and two chassis, each a network namespace with its own `ovsdb-server`,
//! `ovs-vswitchd` (userspace datapath) and `ovn-controller`, joined by Geneve over a veth.
//! Pods are made on a chassis by running `ovn-vipd-cni` inside that chassis' namespace
//! (`ip netns exec`), talking to the daemon over TCP with mTLS, as a worker's plugin does.
//!
//! Addresses (only inside namespaces made here, and on the two management veths):
//! - underlay: `10.253.0.N/24` on chassis N's `br-vipd-mh-phy` (the Geneve endpoint);
//! - management: `vipd-mh-mN` in the root namespace (`10.252.N.1/30`, where the daemon listens)
//!   paired with `vipd-mh-mgmt` in chassis N (`10.252.N.2/30`).
//!
//! Everything is named with [`PREFIX`]; [`TwoChassis`] holds [`super::ovn::lock`] (one whole OVN
//! on the machine at a time), records every PID for the next run's clean-up like `WholeOvn`, and
//! removes all of it when dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ovn_vipd::api::proto::v1 as pb;

use super::ovn::{self, CniOutput, MachineLock, Pod, PodSpec};
use super::process::{self, DaemonProcess};
use super::{issue_certificates, run, wait_until, OvsdbServer, TlsPaths};

/// Names of everything made here start with this.
pub const PREFIX: &str = "vipd-mh-";
/// The integration bridge of each chassis.
pub const BRIDGE: &str = "br-vipd-mh";
/// The underlay bridge of each chassis (its internal port carries the Geneve endpoint).
const UNDERLAY_BRIDGE: &str = "br-vipd-mh-phy";
/// The name the daemon's certificate carries (`tlsServerName` of the chassis' plugins).
pub const DAEMON_NAME: &str = "ovn-vipd";
const SB_SCHEMA: &str = "/usr/share/ovn/ovn-sb.ovsschema";
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// One host: its namespace, its OVS database and where its daemons keep their files.
pub struct Chassis {
    pub number: u8,
    pub netns: String,
    pub dir: PathBuf,
    pub ovs: OvsdbServer,
    /// The chassis' own certificate for the plugin (mTLS).
    pub tls: TlsPaths,
    /// The daemon's address as this chassis reaches it.
    pub daemon_address: String,
}

impl Chassis {
    /// `system-id` of the chassis in SB.
    pub fn name(&self) -> String {
        format!("{PREFIX}chassis{}", self.number)
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.ovs.unix_remote());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", &all)
    }

    /// Runs a command inside the chassis' namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

/// The central services, two chassis and the pods made on them; torn down when dropped.
pub struct TwoChassis {
    /// For the test's own gRPC calls (over the daemon's unix socket).
    pub runtime: tokio::runtime::Runtime,
    pub dir: PathBuf,
    pub nb: OvsdbServer,
    pub sb: OvsdbServer,
    pub chassis: Vec<Chassis>,
    /// The daemon's TCP gRPC listeners, one on each chassis' management address (ports the
    /// kernel chose, read from the daemon's log).
    pub ports: Vec<std::net::SocketAddr>,
    daemon: Option<DaemonProcess>,
    api_socket: PathBuf,
    children: Vec<(String, Child)>,
    namespaces: Vec<String>,
    root_links: Vec<String>,
    /// The chassis number of each pod (by container id).
    hosts: HashMap<String, u8>,
    next_container: u32,
    _dir: tempfile::TempDir,
    _lock: MachineLock,
}

impl TwoChassis {
    pub fn start() -> TwoChassis {
        assert!(
            run("id", &["-u"]).trim() == "0",
            "multi-chassis tests need root (network namespaces, veths, OVS); CI runs them as root"
        );
        let lock = ovn::lock();
        ovn::clean_up_earlier_runs();
        clean_up_earlier_runs();
        super::init_tracing();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_path_buf();
        let issued = issue_certificates(&dir, "mh", &[DAEMON_NAME, "chassis-1", "chassis-2"]);
        let nb = OvsdbServer::nb(&dir);
        let sb = OvsdbServer::standalone(&dir, "sb", Path::new(SB_SCHEMA));
        for server in [&nb, &sb] {
            ovn::record_pid(server.pid().expect("pid"), "ovsdb-server");
        }
        let mut two = TwoChassis {
            runtime,
            dir: dir.clone(),
            nb,
            sb,
            chassis: Vec::new(),
            ports: Vec::new(),
            daemon: None,
            api_socket: dir.join("run").join("api.sock"),
            children: Vec::new(),
            namespaces: Vec::new(),
            root_links: Vec::new(),
            hosts: HashMap::new(),
            next_container: 0,
            _dir: tempdir,
            _lock: lock,
        };
        let northd_args = [
            format!("--ovnnb-db={}", two.nb.unix_remote()),
            format!("--ovnsb-db={}", two.sb.unix_remote()),
            format!("--unixctl={}", dir.join("northd.ctl").display()),
            format!("--log-file={}", dir.join("northd.log").display()),
            "--no-chdir".to_string(),
        ];
        two.spawn("ovn-northd", Command::new("ovn-northd").args(&northd_args), &dir);

        // The hosts and their wires: the underlay veth between the chassis, a management veth
        // from the root namespace into each.
        let hosts = [format!("{PREFIX}hv1"), format!("{PREFIX}hv2")];
        for host in &hosts {
            run("ip", &["netns", "add", host]);
            two.namespaces.push(host.clone());
            run("ip", &["-n", host, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "link",
                "add",
                "vipd-mh-u1",
                "netns",
                &hosts[0],
                "type",
                "veth",
                "peer",
                "name",
                "vipd-mh-u2",
                "netns",
                &hosts[1],
            ],
        );
        for (index, host) in hosts.iter().enumerate() {
            let n = index + 1;
            let root_end = format!("{PREFIX}m{n}");
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &root_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "vipd-mh-mgmt",
                    "netns",
                    host,
                ],
            );
            two.root_links.push(root_end.clone());
            run("ip", &["addr", "add", &format!("10.252.{n}.1/30"), "dev", &root_end]);
            run("ip", &["link", "set", &root_end, "up"]);
            run(
                "ip",
                &[
                    "-n",
                    host,
                    "addr",
                    "add",
                    &format!("10.252.{n}.2/30"),
                    "dev",
                    "vipd-mh-mgmt",
                ],
            );
            run("ip", &["-n", host, "link", "set", "vipd-mh-mgmt", "up"]);
        }

        // The daemon: a unix socket for the test, TLS with client certificates on the
        // management addresses for the chassis.
        let server = &issued[0];
        let mut args = process::daemon_args(&dir, &two.nb.unix_remote());
        args.retain(|arg| !arg.starts_with("--listen"));
        args.extend([
            format!("--listen=unix:{}", two.api_socket.display()),
            "--listen=tcp:10.252.1.1:0".to_string(),
            "--listen=tcp:10.252.2.1:0".to_string(),
            format!("--tls-certificate={}", server.certificate.display()),
            format!("--tls-private-key={}", server.private_key.display()),
            format!("--tls-client-ca={}", server.ca_certificate.display()),
        ]);
        let daemon = process::start(&dir, &args, &[]);
        ovn::record_pid(daemon.pid(), "ovn-vipd");
        two.ports = daemon.bound_addresses("gRPC listening", 2);
        two.daemon = Some(daemon);
        let socket = two.api_socket.clone();
        wait_until("the daemon's socket", Duration::from_secs(30), || socket.exists());

        for (index, host) in hosts.iter().enumerate() {
            let number = index as u8 + 1;
            let chassis = two.start_chassis(number, host, issued[index + 1].clone());
            two.chassis.push(chassis);
        }
        let sb = two.sb.unix_remote();
        for chassis in &two.chassis {
            let name = chassis.name();
            wait_until(&format!("{name} in SB"), Duration::from_secs(30), || {
                run(
                    "ovn-sbctl",
                    &[&format!("--db={sb}"), "--bare", "--columns=name", "list", "chassis"],
                )
                .contains(&name)
            });
        }
        for chassis in &two.chassis {
            wait_until(
                &format!("the Geneve port on chassis {}", chassis.number),
                Duration::from_secs(30),
                || chassis.vsctl(&["list-ports", BRIDGE]).contains("ovn-"),
            );
        }
        // The first packet over a fresh userspace tunnel can be lost while OVS resolves the
        // peer: resolve it now (MULTICHASSIS.md, pitfall 2).
        wait_until("the underlay", Duration::from_secs(10), || {
            two.chassis[0]
                .exec(&["ping", "-c1", "-W1", "10.253.0.2"])
                .status
                .success()
        });
        two
    }

    /// ovsdb-server, ovs-vswitchd (netdev) and ovn-controller of chassis `number` in `host`.
    fn start_chassis(&mut self, number: u8, host: &str, tls: TlsPaths) -> Chassis {
        let dir = self.dir.join(format!("hv{number}"));
        std::fs::create_dir_all(&dir).expect("chassis dir");
        let ovs = OvsdbServer::standalone(&dir, "conf", Path::new(OVS_SCHEMA));
        ovn::record_pid(ovs.pid().expect("pid"), "ovsdb-server");
        let chassis = Chassis {
            number,
            netns: host.to_string(),
            dir: dir.clone(),
            ovs,
            tls,
            daemon_address: self
                .ports
                .iter()
                .find(|address| address.ip() == std::net::Ipv4Addr::new(10, 252, number, 1))
                .map(|address| format!("tcp:{address}"))
                .expect("the daemon listens on the chassis' management address"),
        };
        chassis.vsctl(&["--no-wait", "init"]);
        let ovs_remote = chassis.ovs.unix_remote();
        self.spawn(
            "ovs-vswitchd",
            Command::new("ip").args([
                "netns",
                "exec",
                host,
                "ovs-vswitchd",
                "--no-chdir",
                &format!("--unixctl={}", dir.join("vswitchd.ctl").display()),
                &format!("--log-file={}", dir.join("vswitchd.log").display()),
                &ovs_remote,
            ]),
            &dir,
        );
        chassis.vsctl(&[
            "set",
            "open_vswitch",
            ".",
            &format!("external_ids:system-id={}", chassis.name()),
            &format!("external_ids:hostname={}", chassis.name()),
            &format!("external_ids:ovn-remote={}", self.sb.unix_remote()),
            &format!("external_ids:ovn-bridge={BRIDGE}"),
            "external_ids:ovn-encap-type=geneve",
            &format!("external_ids:ovn-encap-ip=10.253.0.{number}"),
            "external_ids:ovn-bridge-datapath-type=netdev",
        ]);
        chassis.vsctl(&[
            "--may-exist",
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
            "fail-mode=secure",
            "other_config:disable-in-band=true",
        ]);
        chassis.vsctl(&[
            "--may-exist",
            "add-br",
            UNDERLAY_BRIDGE,
            "--",
            "set",
            "bridge",
            UNDERLAY_BRIDGE,
            "datapath_type=netdev",
            "other_config:disable-in-band=true",
        ]);
        // The underlay veth is up (and without transmit checksum offload) before OVS takes it.
        let underlay = format!("vipd-mh-u{number}");
        run("ip", &["-n", host, "link", "set", &underlay, "up"]);
        run("ip", &["netns", "exec", host, "ethtool", "-K", &underlay, "tx", "off"]);
        chassis.vsctl(&["--may-exist", "add-port", UNDERLAY_BRIDGE, &underlay]);
        run(
            "ip",
            &[
                "-n",
                host,
                "addr",
                "add",
                &format!("10.253.0.{number}/24"),
                "dev",
                UNDERLAY_BRIDGE,
            ],
        );
        run("ip", &["-n", host, "link", "set", UNDERLAY_BRIDGE, "up"]);
        self.spawn(
            "ovn-controller",
            Command::new("ip").args([
                "netns",
                "exec",
                host,
                "ovn-controller",
                "--no-chdir",
                &format!("--log-file={}", dir.join("controller.log").display()),
                &ovs_remote,
            ]),
            &dir,
        );
        chassis
    }

    /// Starts a daemon of a chassis (or the centre) with its run directory `dir` (OVS and OVN
    /// put their sockets there: `br-int.mgmt`, `ovn-controller.PID.ctl`).
    fn spawn(&mut self, name: &str, command: &mut Command, dir: &Path) {
        let child = command
            .env("OVS_RUNDIR", dir)
            .env("OVS_LOGDIR", dir)
            .env("OVS_DBDIR", dir)
            .env("OVN_RUNDIR", dir)
            .env("OVN_LOGDIR", dir)
            .env("OVN_DBDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {name}: {error} (scripts/install-deps test installs it)"));
        ovn::record_pid(child.id(), name);
        self.children.push((name.to_string(), child));
    }

    /// A plain connection over the daemon's unix socket, for the test's own calls.
    pub fn channel(&self) -> tonic::transport::Channel {
        let uri = format!("unix://{}", self.api_socket.display());
        self.runtime.block_on(async {
            tonic::transport::Endpoint::from_shared(uri)
                .expect("endpoint")
                .connect()
                .await
                .expect("connect to the daemon's socket")
        })
    }

    pub fn daemon_log(&self) -> String {
        self.daemon.as_ref().map(DaemonProcess::stderr).unwrap_or_default()
    }

    pub fn nbctl(&self, args: &[&str]) -> String {
        self.nb.nbctl(args)
    }

    pub fn sbctl(&self, args: &[&str]) -> String {
        let db = format!("--db={}", self.sb.unix_remote());
        let mut all = vec![db.as_str()];
        all.extend_from_slice(args);
        run("ovn-sbctl", &all)
    }

    pub fn create_subnet(&self, request: pb::CreateSubnetRequest) -> pb::Subnet {
        ovn::create_subnet(&self.runtime, self.channel(), &self.nb, request)
    }

    pub fn add_router_port(&self, switch: &str, mac: &str, networks: &[&str]) {
        ovn::add_router_port(&self.nb, switch, mac, networks)
    }

    /// The parent SB shows for a virtual port (empty when none has claimed it).
    pub fn virtual_parent(&self, port: &str) -> String {
        ovn::virtual_parent(&self.sb, port)
    }

    /// The chassis (number) SB binds a port to, if any.
    pub fn bound_chassis(&self, port: &str) -> Option<u8> {
        let uuid = self.sbctl(&[
            "--bare",
            "--columns=chassis",
            "find",
            "port_binding",
            &format!("logical_port=\"{port}\""),
        ]);
        let uuid = uuid.trim();
        if uuid.is_empty() {
            return None;
        }
        let name = self.sbctl(&["--bare", "--columns=name", "list", "chassis", uuid]);
        self.chassis
            .iter()
            .find(|chassis| chassis.name() == name.trim())
            .map(|chassis| chassis.number)
    }

    /// Asks every ovn-controller to recompute its flows (`ovn-appctl recompute`): the OVN
    /// 23.03.1 workaround `WholeOvn::recompute_flows` describes, for the switch-LB test only.
    pub fn recompute_flows(&self) -> bool {
        let mut all = true;
        for (name, child) in &self.children {
            if name != "ovn-controller" {
                continue;
            }
            let pid = child.id();
            let done = self.chassis.iter().any(|chassis| {
                let ctl = chassis.dir.join(format!("ovn-controller.{pid}.ctl"));
                ctl.exists()
                    && Command::new("ovn-appctl")
                        .arg("-t")
                        .arg(&ctl)
                        .arg("recompute")
                        .status()
                        .is_ok_and(|status| status.success())
            });
            all &= done;
        }
        all
    }

    /// The network configuration a worker's runtime passes the plugin on `chassis`: the
    /// daemon over TCP with mTLS, the chassis' own OVS.
    pub fn net_conf(&self, spec: &PodSpec, chassis: u8) -> serde_json::Value {
        let host = self.host(chassis);
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "ovn-vipd",
            "type": "ovn-vipd-cni",
            "server": host.daemon_address,
            "tlsCaCert": host.tls.ca_certificate,
            "tlsCertificate": host.tls.certificate,
            "tlsPrivateKey": host.tls.private_key,
            "tlsServerName": DAEMON_NAME,
            "subnet": spec.subnet,
            "bridge": BRIDGE,
            "ovsdb": host.ovs.unix_remote(),
            "args": {"cni": {
                "labels": spec.labels,
                "annotations": spec.annotations,
                "ownerKind": spec.owner_kind,
            }},
        })
    }

    pub fn host(&self, chassis: u8) -> &Chassis {
        &self.chassis[usize::from(chassis) - 1]
    }

    /// Runs `ovn-vipd-cni` inside the pod's chassis, as that host's runtime would.
    pub fn cni(&self, command: &str, pod: &Pod) -> CniOutput {
        let chassis = self.hosts[&pod.container_id];
        self.cni_with(command, pod, &self.net_conf(&pod.spec, chassis))
    }

    pub fn cni_with(&self, command: &str, pod: &Pod, conf: &serde_json::Value) -> CniOutput {
        let chassis = self.hosts[&pod.container_id];
        ovn::invoke_cni(Some(&self.host(chassis).netns), command, pod, conf)
    }

    /// A new sandbox on `chassis`: a network namespace and a fresh container id.
    pub fn sandbox(&mut self, spec: PodSpec, chassis: u8) -> Pod {
        self.next_container += 1;
        let netns = format!("{PREFIX}{}-{}", spec.name, self.next_container);
        run("ip", &["netns", "add", &netns]);
        self.namespaces.push(netns.clone());
        let pod = Pod {
            container_id: format!("mh{:04}{}", self.next_container, spec.name.replace('-', "")),
            netns,
            spec,
            result: None,
        };
        self.hosts.insert(pod.container_id.clone(), chassis);
        pod
    }

    /// A sandbox on `chassis` and a successful CNI ADD for it (run on that chassis).
    pub fn add_pod(&mut self, spec: PodSpec, chassis: u8) -> Pod {
        let mut pod = self.sandbox(spec, chassis);
        let output = self.cni("ADD", &pod);
        assert!(
            output.success,
            "CNI ADD of {} on chassis {chassis} failed: {}",
            pod.spec.name, output.stdout
        );
        pod.result = Some(output.json);
        // The plugin ran on the chassis: the host end of the veth is there, not on the machine.
        let host_end = pod.host_veth();
        let netns = &self.host(chassis).netns;
        assert!(
            self.host(chassis)
                .exec(&["ip", "link", "show", "dev", &host_end])
                .status
                .success(),
            "{host_end} is not in {netns}"
        );
        assert!(!ovn::link_exists(&host_end), "{host_end} is in the root namespace");
        pod
    }

    /// CNI DEL on the pod's chassis, then the sandbox goes as a runtime removes it.
    pub fn delete_pod(&self, pod: &Pod) {
        let output = self.cni("DEL", pod);
        assert!(output.success, "CNI DEL of {} failed: {}", pod.spec.name, output.stdout);
        let _ = Command::new("ip").args(["netns", "del", &pod.netns]).status();
    }

    /// A TCP server in the pod answering with its name (stopped with the rest).
    pub fn serve_name(&mut self, pod: &Pod, port: u16) {
        let dir = self.dir.clone();
        self.spawn("python3", &mut ovn::serve_name_command(pod, port), &dir);
    }
}

impl Drop for TwoChassis {
    fn drop(&mut self) {
        // Pods first (their host ends go with them), then each chassis' OVS (exit --cleanup
        // removes its bridges' tap devices), the daemons, and the hosts.
        for namespace in self.namespaces.iter().filter(|name| !name.contains("-hv")) {
            ovn::quietly("ip", &["netns", "del", namespace]);
        }
        for chassis in &self.chassis {
            ovn::exit_vswitchd(&chassis.dir);
        }
        ovn::kill_children(&mut self.children);
        self.daemon.take();
        for chassis in &mut self.chassis {
            chassis.ovs.kill();
        }
        self.sb.kill();
        self.nb.kill();
        for namespace in &self.namespaces {
            ovn::quietly("ip", &["netns", "del", namespace]);
        }
        for link in &self.root_links {
            ovn::quietly("ip", &["link", "del", "dev", link]);
        }
        let _ = std::fs::remove_file(ovn::PID_FILE);
    }
}

/// Removes what a killed run of these tests left (its processes are stopped through the PID
/// file [`ovn::clean_up_earlier_runs`] reads): namespaces and root-namespace veths named with
/// [`PREFIX`].
fn clean_up_earlier_runs() {
    let namespaces = run("ip", &["netns", "list"]);
    for namespace in namespaces.lines().filter_map(|line| line.split_whitespace().next()) {
        if namespace.starts_with(PREFIX) {
            let _ = Command::new("ip").args(["netns", "del", namespace]).status();
        }
    }
    for n in 1..=2 {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &format!("{PREFIX}m{n}")])
            .stderr(Stdio::null())
            .status();
    }
}
