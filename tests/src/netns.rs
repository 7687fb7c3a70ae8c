//! Network hosts for the e2e harness: each process in its own network
//! namespace with its own address, so that a test can cut the link between
//! any two of them from outside the processes, as a switch or a firewall
//! would (issue "Network and clock faults from outside the process").
//!
//! ## Topology
//! One *switch* namespace routes between the hosts. Host number `H` of
//! network `K` is the namespace `tessera-K-<name>` (`<name>` is the
//! process's: `directory-1`, `store-2`, `router-1`) with one veth, address
//! `10.K.H.2/24`, and its default route through the switch's end of that
//! veth, `10.K.H.1`. The harness itself (the test process: its SDK and
//! routing clients, its directory connections, its status scrapes) stays in
//! the root namespace and is the host [`HARNESS`], `10.K.254.2`, over one
//! veth `tsnK` and one route for `10.K.0.0/16`: the only things added to
//! the root namespace, nothing of the machine's own is changed, and both go
//! with the network.
//!
//! ## Cuts
//! A cut is a policy rule in the switch (`ip rule add from A to B
//! blackhole`): the switch drops what A sends B, silently, as a partitioned
//! network does. Established connections and new ones time out; neither
//! process sees an error from its own kernel. A cut in one direction only
//! ([`Network::cut_one_way`]) is a real one-way loss of packets, but every
//! tessera link is TCP, which needs each direction for the other's
//! acknowledgements: a one-way cut stops the connections between the two
//! hosts both ways (a connection from B to A never completes its handshake;
//! one from A to B never gets its data through).
//!
//! ## Ownership
//! `K` (1..=250) is reserved per network with a file in the temporary
//! directory holding its owner's process id; a reservation whose owner died
//! (a test binary killed) is taken over after deleting what it left behind.
//! Dropping the [`Network`] deletes its namespaces (kill the processes in
//! them first: the harness's cluster drops its processes before its
//! network). It needs root and iproute2's `ip` (`scripts/deps` installs
//! it); [`Network::create`] says which is missing, and a test that asks for
//! namespaces fails with that reason rather than skipping.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::E2eCluster;

/// The harness's own host (the test process, in the root namespace).
pub const HARNESS: &str = "harness";

/// Hosts a network holds at most (its certificates name every address).
pub const MAX_HOSTS: u8 = 32;

/// The harness's host number in every network.
const HARNESS_HOST: u8 = 254;

/// A set of network hosts joined by one switch; see the module doc.
pub struct Network {
    k: u8,
    /// Host name → host number (`10.K.H.2`).
    hosts: BTreeMap<String, u8>,
    /// One-way cuts in force: (from, to) host names.
    cuts: BTreeSet<(String, String)>,
    reservation: PathBuf,
}

/// Runs `ip` with `args`; the error says what failed and why.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2; scripts/deps installs it): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip`'s standard output, for listings.
fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn reservations() -> PathBuf {
    std::env::temp_dir().join("tessera-e2e-nets")
}

/// Deletes what network `k` left behind: its namespaces and its veth.
fn remove_leftovers(k: u8) {
    let prefix = format!("tessera-{k}-");
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&prefix) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    let _ = ip(&["link", "del", &format!("tsn{k}")]);
}

/// Reserves a network number no running test and no route of this
/// machine uses; returns it and its reservation file.
fn reserve() -> Result<(u8, PathBuf), String> {
    let dir = reservations();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let start = (std::process::id() % 250) as u8;
    for i in 0..250u16 {
        let k = 1 + ((start as u16 + i) % 250) as u8;
        let path = dir.join(k.to_string());
        let mut taken = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .is_ok();
        if !taken {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let alive = owner
                .trim()
                .parse::<u32>()
                .is_ok_and(|pid| PathBuf::from(format!("/proc/{pid}")).exists());
            if alive || owner.is_empty() {
                continue;
            }
            remove_leftovers(k);
            taken = std::fs::remove_file(&path).is_ok()
                && std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .is_ok();
        }
        if !taken {
            continue;
        }
        std::fs::write(&path, std::process::id().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // A route of this machine's own inside 10.K.0.0/16: not ours to use.
        if !ip_output(&["-4", "route", "show", "root", &format!("10.{k}.0.0/16")])
            .trim()
            .is_empty()
        {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        return Ok((k, path));
    }
    Err(format!(
        "no free network number (1..=250) in {}",
        dir.display()
    ))
}

impl Network {
    /// Checks that this machine can run network hosts (root, `ip`, network
    /// namespaces) and builds an empty network (the switch and the
    /// harness's host).
    pub fn create() -> Result<Network, String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (CI runs the tests as root)".into());
        }
        ip(&["-V"])?;
        let (k, reservation) = reserve()?;
        let net = Network {
            k,
            hosts: BTreeMap::new(),
            cuts: BTreeSet::new(),
            reservation,
        };
        net.build_switch()?;
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("tessera-{}-switch", self.k)
    }

    fn namespace(&self, name: &str) -> String {
        format!("tessera-{}-{name}", self.k)
    }

    fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.k, host, 2)
    }

    fn build_switch(&self) -> Result<(), String> {
        let (sw, k) = (self.switch(), self.k);
        ip(&["netns", "add", &sw])?;
        // The switch forwards between its ports (a sysctl of its own
        // namespace, not the machine's).
        ip(&[
            "netns",
            "exec",
            &sw,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ])?;
        let veth = format!("tsn{k}");
        let port = format!("h{HARNESS_HOST}");
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", &port, "netns", &sw,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.address(HARNESS_HOST)),
            "dev",
            &veth,
        ])?;
        ip(&["link", "set", &veth, "up"])?;
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("10.{k}.{HARNESS_HOST}.1/24"),
            "dev",
            &port,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "up"])?;
        ip(&[
            "route",
            "add",
            &format!("10.{k}.0.0/16"),
            "via",
            &format!("10.{k}.{HARNESS_HOST}.1"),
        ])
    }

    /// Adds the host `name` (its namespace, joined to the switch); returns
    /// its address. Adding a host that exists returns its address.
    pub fn add_host(&mut self, name: &str) -> Result<Ipv4Addr, String> {
        if name == HARNESS {
            return Ok(self.address(HARNESS_HOST));
        }
        if let Some(&h) = self.hosts.get(name) {
            return Ok(self.address(h));
        }
        let h = self.hosts.len() as u8 + 1;
        if h > MAX_HOSTS {
            return Err(format!("a test network holds at most {MAX_HOSTS} hosts"));
        }
        let (sw, ns, k) = (self.switch(), self.namespace(name), self.k);
        let port = format!("h{h}");
        ip(&["netns", "add", &ns])?;
        self.hosts.insert(name.to_string(), h);
        ip(&[
            "link", "add", "e0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &sw,
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.address(h)),
            "dev",
            "e0",
        ])?;
        ip(&["-n", &ns, "link", "set", "e0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("10.{k}.{h}.1/24"),
            "dev",
            &port,
        ])?;
        ip(&["-n", &sw, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{k}.{h}.1"),
        ])?;
        Ok(self.address(h))
    }

    /// The namespace file a process of host `name` enters (`setns(2)`).
    pub fn namespace_path(&self, name: &str) -> Option<PathBuf> {
        self.hosts
            .contains_key(name)
            .then(|| PathBuf::from("/run/netns").join(self.namespace(name)))
    }

    /// Every address a host of this network can have, the harness's too
    /// (what its certificates name).
    pub fn all_addresses(&self) -> Vec<Ipv4Addr> {
        (1..=MAX_HOSTS)
            .chain([HARNESS_HOST])
            .map(|h| self.address(h))
            .collect()
    }

    fn host_address(&self, name: &str) -> Result<Ipv4Addr, String> {
        if name == HARNESS {
            return Ok(self.address(HARNESS_HOST));
        }
        self.hosts
            .get(name)
            .map(|&h| self.address(h))
            .ok_or_else(|| format!("no host {name} in this network"))
    }

    fn rule(&self, verb: &str, from: &str, to: &str) -> Result<(), String> {
        let (a, b) = (self.host_address(from)?, self.host_address(to)?);
        ip(&[
            "-n",
            &self.switch(),
            "rule",
            verb,
            "from",
            &a.to_string(),
            "to",
            &b.to_string(),
            "blackhole",
        ])
    }

    /// Drops everything `from` sends `to` (see the module doc for what TCP
    /// makes of it). Cutting a cut link again changes nothing.
    pub fn cut_one_way(&mut self, from: &str, to: &str) -> Result<(), String> {
        let key = (from.to_string(), to.to_string());
        if self.cuts.contains(&key) {
            return Ok(());
        }
        self.rule("add", from, to)?;
        self.cuts.insert(key);
        Ok(())
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: &str, b: &str) -> Result<(), String> {
        self.cut_one_way(a, b)?;
        self.cut_one_way(b, a)
    }

    /// Cuts every link between a host of `side` and a host of `other`.
    pub fn cut_between(&mut self, side: &[&str], other: &[&str]) -> Result<(), String> {
        for a in side {
            for b in other {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Heals the link between `a` and `b`, both ways.
    pub fn heal(&mut self, a: &str, b: &str) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            let key = (from.to_string(), to.to_string());
            if self.cuts.contains(&key) {
                self.rule("del", from, to)?;
                self.cuts.remove(&key);
            }
        }
        Ok(())
    }

    /// Heals every link.
    pub fn heal_all(&mut self) -> Result<(), String> {
        for (from, to) in self.cuts.clone() {
            self.heal(&from, &to)?;
        }
        Ok(())
    }

    /// The one-way cuts in force, as (from, to) host names.
    pub fn cuts(&self) -> Vec<(String, String)> {
        self.cuts.iter().cloned().collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &format!("tsn{}", self.k)]);
        for name in self.hosts.keys() {
            let _ = ip(&["netns", "del", &self.namespace(name)]);
        }
        let _ = ip(&["netns", "del", &self.switch()]);
        let _ = std::fs::remove_file(&self.reservation);
    }
}

/// The harness's side: where each process listens and runs.
impl E2eCluster {
    /// The address the process `name` listens on (its host's, with network
    /// namespaces; else 127.0.0.1) and the namespace it runs in.
    pub(crate) fn host(&mut self, name: &str) -> (String, Option<PathBuf>) {
        match &mut self.net {
            Some(net) => {
                let addr = net
                    .add_host(name)
                    .unwrap_or_else(|e| panic!("network host {name}: {e}"));
                (addr.to_string(), net.namespace_path(name))
            }
            None => ("127.0.0.1".into(), None),
        }
    }

    /// On network hosts the status addresses are not loopback ones, which a
    /// test build's processes accept only with `--allow-fault-endpoints`
    /// (the hosts are namespaces of this machine, out of reach of any
    /// other); a plain build takes the flag and changes nothing.
    pub(crate) fn network_args(&self) -> Vec<String> {
        match self.net {
            Some(_) => vec!["--allow-fault-endpoints".into()],
            None => vec![],
        }
    }

    /// The network hosts: panics unless the cluster runs on them.
    pub fn net(&mut self) -> &mut Network {
        self.net
            .as_mut()
            .expect("the cluster runs without network namespaces (Options::network_namespaces)")
    }
}
