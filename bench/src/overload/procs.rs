//! The processes under test, seen from outside: peak resident memory per
//! phase (`VmHWM` of `/proc/PID/status`, reset between phases by writing
//! `5` to `/proc/PID/clear_refs`, which needs the same user or root),
//! whether each is still alive, and the load generator's own CPU.

use std::collections::BTreeMap;
use std::time::Instant;

/// One server process: its kind (`store`, `router`, `directory`, `etcd`)
/// and pid.
#[derive(Clone, Debug)]
pub struct ServerProc {
    pub kind: &'static str,
    pub name: String,
    pub pid: u32,
}

fn status_field_kib(pid: u32, field: &str) -> Option<u64> {
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
}
