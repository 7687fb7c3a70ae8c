//! The processes under test, seen from outside: which they are
//! ([`server_procs`]), peak resident memory per phase (`VmHWM` of
//! `/proc/PID/status`, reset between phases by writing `5` to
//! `/proc/PID/clear_refs`, which needs the same user or root), whether each
//! is still alive, the load generator's own CPU, and the CPU every process
//! spent per operation over a span ([`CpuProbe`]: `utime + stime` of
//! `/proc/PID/stat`, and this process's own as the client's).

use std::collections::BTreeMap;
use std::time::Instant;

use crate::profile::{Profile, ProfileSpec};
use crate::ycsb::clusters::LocalTessera;
use crate::ycsb::LocalCluster;

/// One server process: its kind (`store`, `router`, `directory`, `etcd`)
/// and pid.
#[derive(Clone, Debug)]
pub struct ServerProc {
    pub kind: &'static str,
    pub name: String,
    pub pid: u32,
}

pub fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether `pid` is running (not gone, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Peak resident memory of processes between [`Peaks::reset`] and
/// [`Peaks::read`].
pub struct Peaks {
    procs: Vec<ServerProc>,
    /// Whether the kernel let us reset the peaks (otherwise a peak is since
    /// the process started).
    pub resettable: bool,
}

impl Peaks {
    pub fn new(procs: Vec<ServerProc>) -> Peaks {
        Peaks {
            procs,
            resettable: true,
        }
    }

    pub fn procs(&self) -> &[ServerProc] {
        &self.procs
    }

    /// Starts a new peak for every process.
    pub fn reset(&mut self) {
        for p in &self.procs {
            if std::fs::write(format!("/proc/{}/clear_refs", p.pid), "5").is_err() {
                self.resettable = false;
            }
        }
    }

    /// The largest peak RSS (MiB) per process kind since the last reset.
    pub fn read(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for p in &self.procs {
            let mib = status_field_kib(p.pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
            let e = out.entry(p.kind.to_string()).or_default();
            *e = e.max(mib);
        }
        out
    }

    /// The processes that are no longer running.
    pub fn dead(&self) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| !alive(p.pid))
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect()
    }
}

/// CPU this process (the load generator) used, in cores, over a span.
pub struct CpuMeter {
    wall: Instant,
    cpu: f64,
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter {
            wall: Instant::now(),
            cpu: own_cpu_seconds(),
        }
    }

    /// Cores used since `start`.
    pub fn cores(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        (own_cpu_seconds() - self.cpu) / wall
    }
}

/// Raises this process's open-file limit to its hard limit (idle
/// connections need thousands of descriptors); returns the new limit.
/// Processes started afterwards inherit it.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur
    }
}

/// The server processes of a local cluster, by kind (`directory`,
/// `store`, `router`, `etcd`).
pub fn server_procs(local: &LocalCluster) -> Vec<ServerProc> {
    match local {
        LocalCluster::Tessera(t) => tessera_procs(t),
        LocalCluster::Etcd(e) => e
            .pids()
            .into_iter()
            .enumerate()
            .map(|(i, pid)| ServerProc {
                kind: "etcd",
                name: format!("etcd m{}", i + 1),
                pid,
            })
            .collect(),
    }
}

/// The processes of a local tessera cluster.
pub fn tessera_procs(t: &LocalTessera) -> Vec<ServerProc> {
    let c = &t.cluster;
    let kinds = [
        (
            "directory",
            c.directories
                .iter()
                .map(|(id, d)| (*id, &d.proc))
                .collect::<Vec<_>>(),
        ),
        (
            "store",
            c.stores
                .iter()
                .map(|(id, s)| (*id as u64, &s.proc))
                .collect(),
        ),
        (
            "router",
            c.routers
                .iter()
                .map(|(id, r)| (*id as u64, &r.proc))
                .collect(),
        ),
    ];
    kinds
        .into_iter()
        .flat_map(|(kind, procs)| {
            procs.into_iter().filter_map(move |(id, p)| {
                Some(ServerProc {
                    kind,
                    name: format!("{kind} {id}"),
                    pid: p.pid()?,
                })
            })
        })
        .collect()
}

/// CPU seconds (user + system) `pid` has used, from `/proc/PID/stat`.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses): state is field 3, utime
    // and stime fields 14 and 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// Measures the CPU each kind of process spends over a span: the servers
/// of a local cluster and this process (`client`: the load generator and
/// the SDK or etcd client inside it).
pub struct CpuProbe {
    procs: Vec<ServerProc>,
    /// With it, the run phase is also profiled (`crate::profile`).
    profile: Option<ProfileSpec>,
}

/// CPU seconds by process name at one moment.
pub struct CpuSample(BTreeMap<String, (&'static str, f64)>);

impl CpuProbe {
    pub fn new(procs: Vec<ServerProc>) -> CpuProbe {
        CpuProbe {
            procs,
            profile: None,
        }
    }

    /// Also profiles the span, as `spec` says.
    pub fn with_profile(mut self, spec: Option<ProfileSpec>) -> CpuProbe {
        self.profile = spec;
        self
    }

    /// Starts the profile of the span, if one was asked for.
    pub fn start_profile(&self) -> anyhow::Result<Option<Profile>> {
        self.profile
            .as_ref()
            .map(|spec| Profile::start(spec, &crate::profile::targets(&self.procs)))
            .transpose()
    }

    pub fn sample(&self) -> CpuSample {
        let mut by = BTreeMap::new();
        for p in &self.procs {
            if let Some(s) = cpu_seconds_of(p.pid) {
                by.insert(p.name.clone(), (p.kind, s));
            }
        }
        by.insert("client".to_string(), ("client", own_cpu_seconds()));
        CpuSample(by)
    }
}

impl CpuSample {
    /// Microseconds of CPU per operation since `self`, summed by kind of
    /// process (every store together, ...), for `operations` operations.
    pub fn per_op_since(&self, later: &CpuSample, operations: u64) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if operations == 0 {
            return out;
        }
        for (name, (kind, before)) in &self.0 {
            if let Some((_, after)) = later.0.get(name) {
                *out.entry(kind.to_string()).or_insert(0.0) +=
                    (after - before).max(0.0) * 1e6 / operations as f64;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_its_own_process_and_memory() {
        let me = std::process::id();
        assert!(alive(me));
        let peaks = Peaks::new(vec![ServerProc {
            kind: "bench",
            name: "self".into(),
            pid: me,
        }]);
        assert!(
            peaks.read()["bench"] > 1.0,
            "a running process has resident memory"
        );
        assert!(peaks.dead().is_empty());
        // A pid past the kernel's maximum is never running.
        assert!(!alive(u32::MAX - 1));
    }

    #[test]
    fn cpu_per_operation_is_counted_by_kind() {
        let me = std::process::id();
        let probe = CpuProbe::new(vec![ServerProc {
            kind: "store",
            name: "store 1".into(),
            pid: me,
        }]);
        let before = probe.sample();
        // Burn some CPU: at least a few clock ticks.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let per_op = before.per_op_since(&probe.sample(), 1_000);
        // The same process counted as a store and as the client.
        assert!(per_op["store"] > 50.0, "{per_op:?}");
        assert!(per_op["client"] > 50.0, "{per_op:?}");
        assert!(before.per_op_since(&probe.sample(), 0).is_empty());
        assert!(cpu_seconds_of(u32::MAX - 1).is_none());
    }
}
