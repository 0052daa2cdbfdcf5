//! The CNI plugin under a real container runtime: podman 4.3.1 with its CNI backend (as
//! ../shared CNI-RUNTIMES.md describes it: runc, vfs storage, a busybox image built from
//! `busybox-static`) on the whole-OVN harness of `common::ovn`. podman calls `ovn-vipd-cni` as in
//! production and validates every result it prints. Addresses and MACs are checked against the
//! daemon and NB, connectivity with ping, and every test ends with nothing left behind: no
//! container, binding, NB port, veth or bridge port, and `ovn-vipd check` clean.
//!
//! podman never touches the machine's configuration: `--root`, `--runroot`, `--tmpdir` and
//! `--network-config-dir` point into the test's directory and `CONTAINERS_CONF` at a
//! containers.conf of its own (CNI backend, the freshly built plugin in `cni_plugin_dirs`).
//! Containers run with podman's default capabilities (no NET_RAW, no NET_ADMIN): what a pod
//! really has. Needs root; one whole OVN at a time (`ovn::lock`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::ovn::{WholeOvn, BRIDGE};
use common::{subnet_request, wait_until};
use ovn_vipd::api::proto::v1 as pb;
use ovn_vipd::cni::dataplane::host_veth_name;

/// The namespace the test networks give pods of a runtime outside Kubernetes.
const NAMESPACE: &str = "vipd-pm";
const IMAGE: &str = "localhost/vipd-pm-bb:latest";
/// Network names (podman's and the CNI configurations' `name`), tagged for this suite.
const NET_A: &str = "vipd-pm-a";
const NET_B: &str = "vipd-pm-b";

/// podman with everything of its own under `dir`; removes every container it ran when dropped.
struct Podman {
    dir: PathBuf,
    ovs_remote: String,
    socket: PathBuf,
    /// (container id, interface) of every attachment made, for the final checks.
    attachments: std::cell::RefCell<Vec<(String, String)>>,
}

impl Podman {
    fn new(ovn: &WholeOvn) -> Podman {
        let dir = ovn.dir.join("podman");
        for sub in ["root", "runroot", "tmp", "net.d", "plugins", "image/bin"] {
            std::fs::create_dir_all(dir.join(sub)).expect("podman directories");
        }
        // OVN_VIPD_PODMAN_PLUGIN: another build of the plugin (to show a test fails without a fix).
        let plugin =
            std::env::var("OVN_VIPD_PODMAN_PLUGIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ovn-vipd-cni").into());
        std::fs::copy(plugin, dir.join("plugins").join("ovn-vipd-cni")).expect("install the plugin");
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{plugins}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{net}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nruntime = \"runc\"\n",
                plugins = dir.join("plugins").display(),
                net = dir.join("net.d").display(),
            ),
        )
        .expect("containers.conf");
        let podman = Podman {
            dir: dir.clone(),
            ovs_remote: ovn.ovs.unix_remote(),
            socket: ovn.daemon().socket.clone(),
            attachments: Default::default(),
        };
        // The image: busybox-static and a few applets.
        let image = dir.join("image");
        std::fs::copy("/bin/busybox", image.join("bin/busybox"))
            .expect("/bin/busybox (scripts/install-deps test installs busybox-static)");
        for applet in ["sh", "ip", "ping", "sleep", "cat", "arping"] {
            let _ = std::os::unix::fs::symlink("busybox", image.join("bin").join(applet));
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&image)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let output = podman
            .command()
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("podman import");
        assert!(tar.wait().is_ok_and(|status| status.success()), "tar of the image");
        assert!(
            output.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        podman
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .arg("--network-config-dir")
            .arg(self.dir.join("net.d"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        command
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("podman (scripts/install-deps test installs it)")
    }

    /// A podman command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.podman(args);
        assert!(
            output.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// A network through ovn-vipd-cni in `subnet`; `extra` is merged into the plugin's entry.
    fn network(&self, name: &str, subnet: &str, extra: serde_json::Value) {
        let mut plugin = serde_json::json!({
            "type": "ovn-vipd-cni",
            "serverSocket": self.socket,
            "subnet": subnet,
            "bridge": BRIDGE,
            "ovsdb": self.ovs_remote,
            "podNamespace": NAMESPACE,
            "capabilities": {"ips": true, "mac": true},
        });
        if let (Some(plugin), serde_json::Value::Object(extra)) = (plugin.as_object_mut(), extra) {
            plugin.extend(extra);
        }
        let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
        std::fs::write(
            self.dir.join("net.d").join(format!("{name}.conflist")),
            serde_json::to_string_pretty(&conflist).expect("json"),
        )
        .expect("write the conflist");
    }

    /// The plugin entry of a network as a runtime passes it on stdin, in `cni_version`.
    fn net_conf(&self, name: &str, cni_version: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("net.d").join(format!("{name}.conflist"))).expect("conflist");
        let conflist: serde_json::Value = serde_json::from_str(&text).expect("conflist json");
        let mut conf = conflist["plugins"][0].clone();
        conf["name"] = name.into();
        conf["cniVersion"] = cni_version.into();
        conf
    }

    /// `podman run -d` with podman's default capabilities; the container's full id.
    fn run(&self, options: &[&str]) -> String {
        let output = self.try_run(options);
        assert!(
            output.status.success(),
            "podman run {options:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        self.record(&id);
        id
    }

    fn try_run(&self, options: &[&str]) -> Output {
        let mut args = vec![
            "run",
            "-d",
            "--ulimit",
            "nproc=1024:1024",
            "--ulimit",
            "nofile=1024:1024",
        ];
        args.extend_from_slice(options);
        args.extend([IMAGE, "sleep", "3600"]);
        self.podman(&args)
    }

    /// Notes the container's attachments (every interface podman gave it) for the final checks.
    fn record(&self, id: &str) {
        for ifname in ["eth0", "eth1"] {
            self.attachments.borrow_mut().push((id.to_string(), ifname.to_string()));
        }
    }

    /// `podman exec`; with `admin`, as an administrator inside (`--privileged`).
    fn exec(&self, id: &str, admin: bool, args: &[&str]) -> Output {
        let mut all = vec!["exec"];
        if admin {
            all.push("--privileged");
        }
        all.push(id);
        all.extend_from_slice(args);
        self.podman(&all)
    }

    /// The interface's MAC and IPv4 addresses (with prefix) as the container sees them.
    fn interface(&self, id: &str, ifname: &str) -> (String, Vec<String>) {
        let output = self.exec(id, false, &["ip", "-o", "addr", "show", "dev", ifname]);
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let addresses = text
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|word| *word == "inet")?;
                words.next().map(str::to_string)
            })
            .collect();
        let mac = self.exec(id, false, &["cat", &format!("/sys/class/net/{ifname}/address")]);
        (String::from_utf8_lossy(&mac.stdout).trim().to_string(), addresses)
    }

    /// ping from the container (podman's default capabilities: an ICMP datagram socket).
    fn ping(&self, id: &str, address: &str) -> bool {
        self.exec(id, false, &["ping", "-c", "1", "-W", "2", address])
            .status
            .success()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "-a", "-f", "-t", "0"]).output();
        // libcni's cache of results and of the attachments of these networks.
        for cache in ["/var/lib/cni/results", "/var/lib/cni/networks"] {
            if let Ok(entries) = std::fs::read_dir(cache) {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with("vipd-pm-") {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
    }
}

fn pod_client(ovn: &WholeOvn) -> pb::pod_service_client::PodServiceClient<tonic::transport::Channel> {
    pb::pod_service_client::PodServiceClient::new(ovn.channel())
}

fn pods(ovn: &WholeOvn) -> Vec<pb::Pod> {
    ovn.runtime
        .block_on(pod_client(ovn).list_pods(pb::ListPodsRequest::default()))
        .expect("list pods")
        .into_inner()
        .pods
}

/// The pod the daemon bound for the container, and its NIC `ifname`.
fn bound(ovn: &WholeOvn, id: &str, ifname: &str) -> Option<(pb::Pod, pb::BoundNic)> {
    pods(ovn).into_iter().find_map(|pod| {
        let nic = pod
            .nics
            .iter()
            .find(|nic| nic.container_id == id && nic.interface == ifname)?
            .clone();
        Some((pod, nic))
    })
}

/// The container's NIC on `network` (podman names interfaces in no fixed order of networks).
fn nic_on(ovn: &WholeOvn, id: &str, network: &str) -> Option<pb::BoundNic> {
    pods(ovn)
        .into_iter()
        .flat_map(|pod| pod.nics)
        .find(|nic| nic.container_id == id && nic.network == network)
}

fn ifname_on(ovn: &WholeOvn, id: &str, network: &str) -> String {
    nic_on(ovn, id, network)
        .unwrap_or_else(|| panic!("{id} has no NIC on {network}"))
        .interface
}

/// NB's `addresses` of a logical switch port ("" when there is no such port).
fn nb_addresses(ovn: &WholeOvn, port: &str) -> String {
    let ports = ovn.nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"]);
    if !ports.lines().any(|line| line.trim() == port) {
        return String::new();
    }
    ovn.nbctl(&["lsp-get-addresses", port]).trim().to_string()
}

/// The container's interface has what the daemon bound, and NB's port says the same.
fn assert_matches_daemon(ovn: &WholeOvn, podman: &Podman, id: &str, ifname: &str) -> pb::BoundNic {
    let (pod, nic) = bound(ovn, id, ifname).unwrap_or_else(|| panic!("no binding for {id} {ifname}"));
    assert!(pod.bound);
    assert_eq!(pod.namespace, NAMESPACE);
    let (mac, addresses) = podman.interface(id, ifname);
    assert_eq!(mac, nic.mac, "{ifname}'s MAC");
    assert_eq!(addresses, nic.addresses, "{ifname}'s addresses");
    let ip = nic.addresses[0].split('/').next().expect("address");
    wait_until(&format!("NB port {}", nic.port_name), Duration::from_secs(10), || {
        nb_addresses(ovn, &nic.port_name) == format!("{} {ip}", nic.mac)
    });
    nic
}

fn subnet(ovn: &WholeOvn, name: &str, cidr: &str) {
    ovn.create_subnet(subnet_request(name, cidr, ""));
}

/// Nothing of any container is left: no container, binding, NB port of a pod, bridge port or
/// host veth; then, with the daemon stopped, `ovn-vipd check` finds store, IPAM and NB agreeing.
fn assert_nothing_left(ovn: &mut WholeOvn, podman: &Podman) {
    assert_eq!(podman.ok(&["ps", "-a", "-q"]), "", "containers left");
    let left: Vec<_> = pods(ovn).into_iter().filter(|pod| pod.namespace == NAMESPACE).collect();
    assert!(left.is_empty(), "bindings left: {left:?}");
    wait_until("no pod ports in NB", Duration::from_secs(10), || {
        !ovn.nbctl(&["--bare", "--columns=name", "list", "logical_switch_port"])
            .lines()
            .any(|port| port.contains(&format!(".{NAMESPACE}")))
    });
    assert_eq!(ovn.vsctl(&["list-ports", BRIDGE]).trim(), "", "bridge ports left");
    for (id, ifname) in podman.attachments.borrow().iter() {
        let host = host_veth_name(id, ifname);
        assert!(
            !Path::new(&format!("/sys/class/net/{host}")).exists(),
            "{host} ({id} {ifname}) left"
        );
    }
    ovn.stop_daemon();
    let daemon = ovn.daemon();
    let output = Command::new(env!("CARGO_BIN_EXE_ovn-vipd"))
        .arg("check")
        .arg(format!("--data-dir={}", daemon.dir.path().join("data").display()))
        .arg(format!("--ovn-nb={}", daemon.nb.unix_remote()))
        .output()
        .expect("ovn-vipd check");
    assert!(
        output.status.success(),
        "ovn-vipd check: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ovn.restart_daemon();
}

/// Runs the plugin as a CNI 1.1 runtime does for GC and STATUS (podman 4.3.1 predates them).
fn plugin(command: &str, conf: &serde_json::Value) -> (bool, serde_json::Value) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovn-vipd-cni"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ovn-vipd-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("ovn-vipd-cni");
    let stdout = String::from_utf8_lossy(&output.stdout);
    (
        output.status.success(),
        serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
    )
}

fn gc_conf(podman: &Podman, network: &str, valid: &[(&str, &str)]) -> serde_json::Value {
    let mut conf = podman.net_conf(network, "1.1.0");
    conf["cni.dev/valid-attachments"] = valid
        .iter()
        .map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname}))
        .collect();
    conf
}

// ---------------------------------------------------------------------------------------------

/// Fault 1: a container without `--name` (podman generates `adjective_name`, with `_`) and one
/// whose name is no DNS label both get a network, as pods `<name>-<hash>` in the configured
/// namespace; they reach each other; `podman rm` releases them.
#[test]
fn containers_with_any_name_or_none_get_a_network() {
    let _machine = common::ovn::lock();
    let mut ovn = WholeOvn::start();
    subnet(&ovn, NET_A, "10.16.0.0/16");
    let podman = Podman::new(&ovn);
    podman.network(NET_A, NET_A, serde_json::json!({}));

    let unnamed = podman.run(&["--network", NET_A]);
    let odd = podman.run(&["--network", NET_A, "--name", "Web.Server_1"]);
    let generated = podman.ok(&["inspect", "--format", "{{.Name}}", &unnamed]);
    let unnamed_nic = assert_matches_daemon(&ovn, &podman, &unnamed, "eth0");
    let odd_nic = assert_matches_daemon(&ovn, &podman, &odd, "eth0");
    let (unnamed_pod, _) = bound(&ovn, &unnamed, "eth0").expect("bound");
    let (odd_pod, _) = bound(&ovn, &odd, "eth0").expect("bound");
    let prefix = generated.replace('_', "-");
    assert!(
        unnamed_pod.name.starts_with(&format!("{prefix}-")),
        "{} for {generated}",
        unnamed_pod.name
    );
    assert!(odd_pod.name.starts_with("web-server-1-"), "{}", odd_pod.name);
    // Two containers of one name in turn are two pods: the name carries the container id's hash.
    let ip = |nic: &pb::BoundNic| nic.addresses[0].split('/').next().expect("ip").to_string();
    assert!(podman.ping(&unnamed, &ip(&odd_nic)), "{unnamed} cannot reach {odd}");
    assert!(podman.ping(&odd, &ip(&unnamed_nic)), "{odd} cannot reach {unnamed}");

    podman.ok(&["rm", "-f", "-t", "0", &odd]);
    assert!(bound(&ovn, &odd, "eth0").is_none(), "podman rm left the binding");
    let again = podman.run(&["--network", NET_A, "--name", "Web.Server_1"]);
    let (again_pod, _) = bound(&ovn, &again, "eth0").expect("bound");
    assert_ne!(
        again_pod.name, odd_pod.name,
        "a new container of the same name is a new pod"
    );
    assert_matches_daemon(&ovn, &podman, &again, "eth0");
    podman.ok(&["rm", "-a", "-f", "-t", "0"]);
    assert_nothing_left(&mut ovn, &podman);
}

/// Fault 2: one container on two networks (two subnets): two NICs of one pod, each with the
/// daemon's address; `podman network disconnect` removes only its NIC and `connect` adds it
/// back; `podman restart` brings both back; `podman rm` unbinds the pod with its last NIC.
#[test]
fn one_container_on_two_networks_is_one_pod_with_two_nics() {
    let _machine = common::ovn::lock();
    let mut ovn = WholeOvn::start();
    subnet(&ovn, NET_A, "10.16.0.0/16");
    subnet(&ovn, NET_B, "10.17.0.0/16");
    let podman = Podman::new(&ovn);
    podman.network(
        NET_A,
        NET_A,
        serde_json::json!({"args": {"cni": {"labels": {"app": "web"}}}}),
    );
    podman.network(
        NET_B,
        NET_B,
        serde_json::json!({"args": {"cni": {"labels": {"tier": "db"}}}}),
    );

    let both = podman.run(&["--network", NET_A, "--network", NET_B, "--name", "m1"]);
    let peer_b = podman.run(&["--network", NET_B]);
    let (if_a, if_b) = (ifname_on(&ovn, &both, NET_A), ifname_on(&ovn, &both, NET_B));
    let mut names = [if_a.clone(), if_b.clone()];
    names.sort();
    assert_eq!(names, ["eth0", "eth1"]);
    let a = assert_matches_daemon(&ovn, &podman, &both, &if_a);
    let b = assert_matches_daemon(&ovn, &podman, &both, &if_b);
    assert_eq!(a.subnet, NET_A);
    assert_eq!(b.subnet, NET_B);
    assert_ne!(a.port_name, b.port_name);
    let (pod, _) = bound(&ovn, &both, "eth0").expect("bound");
    assert_eq!(pod.nics.len(), 2, "{pod:?}");
    assert_eq!(
        pod.labels.get("app").map(String::as_str),
        Some("web"),
        "labels of both networks"
    );
    assert_eq!(
        pod.labels.get("tier").map(String::as_str),
        Some("db"),
        "labels of both networks"
    );
    let peer = assert_matches_daemon(&ovn, &podman, &peer_b, "eth0");
    let peer_ip = peer.addresses[0].split('/').next().expect("ip").to_string();
    assert!(podman.ping(&both, &peer_ip), "no traffic on the second network");

    // One network goes: only its NIC and port.
    podman.ok(&["network", "disconnect", NET_B, &both]);
    let (pod, _) = bound(&ovn, &both, &if_a).expect("the other NIC still bound");
    assert_eq!(pod.nics.len(), 1, "{pod:?}");
    wait_until(
        "the NB port of the disconnected NIC gone",
        Duration::from_secs(10),
        || nb_addresses(&ovn, &b.port_name).is_empty(),
    );
    assert!(!Path::new(&format!("/sys/class/net/{}", host_veth_name(&both, &if_b))).exists());
    assert_matches_daemon(&ovn, &podman, &both, &if_a);
    podman.ok(&["network", "connect", NET_B, &both]);
    let if_b = ifname_on(&ovn, &both, NET_B);
    assert_matches_daemon(&ovn, &podman, &both, &if_b);
    assert!(podman.ping(&both, &peer_ip), "no traffic after connect");

    podman.ok(&["restart", "-t", "0", &both]);
    for network in [NET_A, NET_B] {
        let ifname = ifname_on(&ovn, &both, network);
        assert_matches_daemon(&ovn, &podman, &both, &ifname);
    }
    podman.ok(&["rm", "-f", "-t", "0", &both]);
    assert!(bound(&ovn, &both, "eth0").is_none() && bound(&ovn, &both, "eth1").is_none());
    podman.ok(&["rm", "-a", "-f", "-t", "0"]);
    assert_nothing_left(&mut ovn, &podman);
}

/// Fault 3: `--ip`/`--mac-address` are what the container gets, also after `podman restart`;
/// `podman network reload` keeps the address and MAC podman had (it asks for them again); an
/// address or MAC that is taken, or outside the subnet, or the gateway, is refused with the
/// daemon's reason and leaves nothing.
#[test]
fn runtime_requested_addresses_are_honoured_or_refused() {
    let _machine = common::ovn::lock();
    let mut ovn = WholeOvn::start();
    subnet(&ovn, NET_A, "10.16.0.0/16");
    let podman = Podman::new(&ovn);
    podman.network(NET_A, NET_A, serde_json::json!({}));

    let fixed = podman.run(&[
        "--network",
        NET_A,
        "--ip",
        "10.16.5.5",
        "--mac-address",
        "02:00:00:00:05:05",
    ]);
    let nic = assert_matches_daemon(&ovn, &podman, &fixed, "eth0");
    assert_eq!(nic.addresses, vec!["10.16.5.5/16".to_string()]);
    assert_eq!(nic.mac, "02:00:00:00:05:05");

    // Without --ip, the subnet chooses (randomly). `podman network reload` asks for the address
    // and MAC the container had (IP/MAC in CNI_ARGS after its DEL): it keeps them. (podman
    // 4.3.1's `restart` asks for nothing unless the container was run with --ip, so the subnet
    // chooses again.)
    let chosen = podman.run(&["--network", NET_A]);
    let first = assert_matches_daemon(&ovn, &podman, &chosen, "eth0");
    podman.ok(&["network", "reload", &chosen]);
    let reloaded = assert_matches_daemon(&ovn, &podman, &chosen, "eth0");
    assert_eq!(
        (&reloaded.addresses, &reloaded.mac),
        (&first.addresses, &first.mac),
        "podman network reload changed the address"
    );
    podman.ok(&["restart", "-t", "0", &chosen]);
    assert_matches_daemon(&ovn, &podman, &chosen, "eth0");
    podman.ok(&["restart", "-t", "0", &fixed]);
    let nic = assert_matches_daemon(&ovn, &podman, &fixed, "eth0");
    assert_eq!(
        (nic.addresses[0].as_str(), nic.mac.as_str()),
        ("10.16.5.5/16", "02:00:00:00:05:05")
    );
    assert!(podman.ping(&chosen, "10.16.5.5"));

    // Refusals: taken address, taken MAC, outside the subnet, the subnet's gateway.
    for (options, reason) in [
        (vec!["--ip", "10.16.5.5"], "10.16.5.5 is already owned"),
        (
            vec!["--mac-address", "02:00:00:00:05:05"],
            "02:00:00:00:05:05 is already owned",
        ),
        (vec!["--ip", "192.168.7.7"], "outside"),
        (vec!["--ip", "10.16.0.1"], "gateway"),
    ] {
        let mut all = vec!["--network", NET_A, "--name", "refused"];
        all.extend(options.iter().copied());
        let output = podman.try_run(&all);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{options:?} was not refused");
        assert!(stderr.contains(reason), "{options:?}: {stderr}");
        let id = podman.ok(&["inspect", "--format", "{{.Id}}", "refused"]);
        podman.record(&id);
        assert!(bound(&ovn, &id, "eth0").is_none(), "{options:?} left a binding");
        podman.ok(&["rm", "-f", "-t", "0", "refused"]);
    }
    // The holder kept its address through all that.
    assert_matches_daemon(&ovn, &podman, &fixed, "eth0");
    podman.ok(&["rm", "-a", "-f", "-t", "0"]);
    assert_nothing_left(&mut ovn, &podman);
}

/// Fault 4: containers removed while the daemon is down leave bindings (podman runs DEL once);
/// STATUS says the plugin is not available meanwhile, GC asks to be tried again; once the
/// daemon is back STATUS is fine and GC, given the containers podman still has, releases the
/// rest (binding, NB port) and keeps those. GC and STATUS need cniVersion 1.1.0.
#[test]
fn gc_releases_what_a_del_missed_while_the_daemon_was_down() {
    let _machine = common::ovn::lock();
    let mut ovn = WholeOvn::start();
    subnet(&ovn, NET_A, "10.16.0.0/16");
    subnet(&ovn, NET_B, "10.17.0.0/16");
    let podman = Podman::new(&ovn);
    podman.network(NET_A, NET_A, serde_json::json!({"requestTimeout": 3}));
    podman.network(NET_B, NET_B, serde_json::json!({"requestTimeout": 3}));

    let kept = podman.run(&["--network", NET_A, "--network", NET_B]);
    let gone = podman.run(&["--network", NET_A, "--network", NET_B]);
    let other_kept = podman.run(&["--network", NET_A]);
    // What podman has: each container's interface on each network.
    let on = |id: &str, network: &str| ifname_on(&ovn, id, network);
    let (kept_a, kept_b, gone_a, gone_b) = (on(&kept, NET_A), on(&kept, NET_B), on(&gone, NET_A), on(&gone, NET_B));
    let gone_nic = assert_matches_daemon(&ovn, &podman, &gone, &gone_a);
    assert_matches_daemon(&ovn, &podman, &kept, &kept_b);
    let (ok, _) = plugin("STATUS", &podman.net_conf(NET_A, "1.1.0"));
    assert!(ok, "STATUS with the daemon up");

    ovn.stop_daemon();
    let (ok, error) = plugin("STATUS", &podman.net_conf(NET_A, "1.1.0"));
    assert!(!ok);
    assert_eq!(error["code"], 50, "{error}");
    // podman tries DEL once, logs the failure and removes the container anyway.
    podman.ok(&["rm", "-f", "-t", "0", &gone]);
    let (ok, error) = plugin("GC", &gc_conf(&podman, NET_A, &[]));
    assert!(!ok);
    assert_eq!(error["code"], 11, "GC with the daemon down: {error}");
    ovn.restart_daemon();
    assert!(
        bound(&ovn, &gone, &gone_a).is_some(),
        "the binding leaked, as the issue says"
    );
    assert!(!nb_addresses(&ovn, &gone_nic.port_name).is_empty());
    let (ok, _) = plugin("STATUS", &podman.net_conf(NET_A, "1.1.0"));
    assert!(ok, "STATUS after the daemon came back");

    // An attachment of the same network on another node: not this node's runtime's to judge.
    let elsewhere = pb::BindPodRequest {
        namespace: NAMESPACE.into(),
        name: "elsewhere".into(),
        nics: vec![pb::NicRequest {
            subnet: NET_A.into(),
            interface: "eth0".into(),
            network: NET_A.into(),
            container_id: "c-on-another-node".into(),
            node: "vipd-pm-another-node".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    ovn.runtime
        .block_on(pod_client(&ovn).bind_pod(elsewhere))
        .expect("bind");

    // GC of network A: the attachments podman still has are valid.
    let valid_a = [(kept.as_str(), kept_a.as_str()), (other_kept.as_str(), "eth0")];
    let (ok, error) = plugin("GC", &gc_conf(&podman, NET_A, &valid_a));
    assert!(ok, "GC: {error}");
    assert!(bound(&ovn, &gone, &gone_a).is_none(), "GC kept the stale NIC");
    assert!(
        bound(&ovn, &gone, &gone_b).is_some(),
        "GC of one network released another's NIC"
    );
    assert!(
        bound(&ovn, "c-on-another-node", "eth0").is_some(),
        "GC released another node's attachment"
    );
    let unbind = pb::UnbindPodRequest {
        namespace: NAMESPACE.into(),
        name: "elsewhere".into(),
        ..Default::default()
    };
    ovn.runtime
        .block_on(pod_client(&ovn).unbind_pod(unbind))
        .expect("unbind");
    wait_until("the stale NB port gone", Duration::from_secs(10), || {
        nb_addresses(&ovn, &gone_nic.port_name).is_empty()
    });
    let (ok, error) = plugin("GC", &gc_conf(&podman, NET_B, &[(kept.as_str(), kept_b.as_str())]));
    assert!(ok, "GC: {error}");
    assert!(bound(&ovn, &gone, &gone_b).is_none(), "the pod goes with its last NIC");
    for (id, ifname) in [(&kept, &kept_a), (&kept, &kept_b), (&other_kept, &"eth0".to_string())] {
        assert_matches_daemon(&ovn, &podman, id, ifname);
    }
    // A sandbox whose DEL never ran at all (a runtime that crashed): its veth and bridge port
    // are still there; GC removes them with the binding.
    let mut spec = common::ovn::PodSpec::new("crashed", NET_A);
    spec.namespace = NAMESPACE.into();
    let mut sandbox = ovn.sandbox(spec);
    let added = ovn.cni_with("ADD", &sandbox, &podman.net_conf(NET_A, "1.0.0"));
    assert!(added.success, "{}", added.stdout);
    sandbox.result = Some(added.json);
    assert!(Path::new(&format!("/sys/class/net/{}", sandbox.host_veth())).exists());
    let (ok, error) = plugin("GC", &gc_conf(&podman, NET_A, &valid_a));
    assert!(ok, "GC: {error}");
    assert!(
        bound(&ovn, &sandbox.container_id, "eth0").is_none(),
        "GC kept the crashed sandbox's NIC"
    );
    assert!(
        !Path::new(&format!("/sys/class/net/{}", sandbox.host_veth())).exists(),
        "GC kept its veth"
    );
    assert!(
        !ovn.vsctl(&["list-ports", BRIDGE]).contains(&sandbox.host_veth()),
        "GC kept its bridge port"
    );

    // GC is repeatable, and GC/STATUS are refused below 1.1.0.
    let (ok, _) = plugin("GC", &gc_conf(&podman, NET_A, &valid_a));
    assert!(ok);
    let mut old = gc_conf(&podman, NET_A, &valid_a);
    old["cniVersion"] = "1.0.0".into();
    for command in ["GC", "STATUS"] {
        let (ok, error) = plugin(command, &old);
        assert!(!ok);
        assert_eq!(error["code"], 1, "{command} at 1.0.0: {error}");
    }
    // STATUS of a network whose subnet the daemon lacks.
    let mut missing = podman.net_conf(NET_A, "1.1.0");
    missing["subnet"] = "vipd-pm-none".into();
    let (ok, error) = plugin("STATUS", &missing);
    assert!(!ok);
    assert_eq!(error["code"], 50, "{error}");

    podman.ok(&["rm", "-a", "-f", "-t", "0"]);
    assert_nothing_left(&mut ovn, &podman);
}

/// The basics with several networks: an AAP VIP of the second network's subnet moves between
/// containers that announce it (keepalived-style; they are granted NET_ADMIN and NET_RAW, as a
/// keepalived container is), its virtual parent being each container's NIC in that subnet; a
/// client on that subnet reaches it with podman's default capabilities.
#[test]
fn an_aap_vip_moves_between_containers_on_their_second_network() {
    let _machine = common::ovn::lock();
    let mut ovn = WholeOvn::start();
    subnet(&ovn, NET_A, "10.16.0.0/16");
    subnet(&ovn, NET_B, "10.18.0.0/24");
    let mut vips = pb::vip_service_client::VipServiceClient::new(ovn.channel());
    let vip = ovn
        .runtime
        .block_on(vips.create_vip(pb::CreateVipRequest {
            vip: Some(pb::Vip {
                name: "vip-pm-aap".into(),
                subnet: NET_B.into(),
                namespace: NAMESPACE.into(),
                selector: vec!["app: vrrp".into()],
                ..Default::default()
            }),
        }))
        .expect("create vip")
        .into_inner();
    let address = vip.status.expect("status").v4ip;
    let podman = Podman::new(&ovn);
    podman.network(NET_A, NET_A, serde_json::json!({}));
    podman.network(
        NET_B,
        NET_B,
        serde_json::json!({"args": {"cni": {
            "labels": {"app": "vrrp"},
            "annotations": {"ovn.kubernetes.io/aaps": "vip-pm-aap"},
        }}}),
    );
    let net_c = "vipd-pm-c";
    podman.network(net_c, NET_B, serde_json::json!({}));

    let keepalived = ["--network", NET_A, "--network", NET_B, "--cap-add", "NET_ADMIN,NET_RAW"];
    let first = podman.run(&keepalived);
    let second = podman.run(&keepalived);
    let client = podman.run(&["--network", net_c]);
    let port_of = |id: &str| nic_on(&ovn, id, NET_B).expect("NIC on B").port_name;
    let claim = |id: &str| {
        let ifname = ifname_on(&ovn, id, NET_B);
        let with_prefix = format!("{address}/24");
        let output = podman.exec(id, false, &["ip", "addr", "add", &with_prefix, "dev", &ifname]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        // A gratuitous ARP; it gets no reply.
        podman.exec(
            id,
            false,
            &["arping", "-U", "-c", "2", "-I", &ifname, "-s", &address, &address],
        );
    };
    let release = |id: &str| {
        let ifname = ifname_on(&ovn, id, NET_B);
        podman.exec(
            id,
            false,
            &["ip", "addr", "del", &format!("{address}/24"), "dev", &ifname],
        );
    };
    assert!(
        !podman.ping(&client, &address),
        "the VIP answered before anyone claimed it"
    );

    claim(&first);
    wait_until(
        "the VIP answers from the first container",
        Duration::from_secs(30),
        || ovn.virtual_parent("vip-pm-aap") == port_of(&first) && podman.ping(&client, &address),
    );
    release(&first);
    claim(&second);
    wait_until(
        "the VIP answers from the second container",
        Duration::from_secs(30),
        || ovn.virtual_parent("vip-pm-aap") == port_of(&second) && podman.ping(&client, &address),
    );
    podman.ok(&["rm", "-a", "-f", "-t", "0"]);
    assert_nothing_left(&mut ovn, &podman);
}
