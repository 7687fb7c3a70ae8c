//! Flamegraphs of the processes under test (`compare --flamegraphs`).
//!
//! For the run phase of a workload, `perf record` samples one process of
//! each kind that serves requests (the first store, the router, the first
//! etcd member) and the load generator itself (`client`: this process, with
//! the SDK or the etcd client inside), at [`FREQUENCY_HZ`] with DWARF call
//! graphs (the release profile keeps line tables and unwind tables, not
//! frame pointers). When the phase ends each recording is stopped
//! (SIGINT), folded by `inferno-collapse-perf` and drawn by
//! `inferno-flamegraph` into `<out>/flamegraphs/<label>-<process>.svg`,
//! next to the folded stacks (`.folded`, for diffs with
//! `inferno-diff-folded`). The `perf.data` files are removed once folded.
//!
//! The tools are found on `PATH` or in cargo's `bin` directory;
//! `scripts/bench-tools` installs them (Debian's `linux-perf`, `cargo
//! install inferno`). A missing tool is an error before anything is
//! measured, never a run without its flamegraphs. Sampling slows the
//! sampled processes (read-only in direct mode: 49,618 ops/s unprofiled,
//! 44,602 profiled at 199 Hz), so `compare` profiles a pass of its own
//! after the measured rounds and counts none of it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use crate::procs::ServerProc;

/// Samples per second per thread.
pub const FREQUENCY_HZ: u32 = 199;
/// Bytes of stack copied per sample for the DWARF unwinder.
const STACK_BYTES: u32 = 16 * 1024;

/// The external tools a profile needs.
#[derive(Clone, Debug)]
pub struct Tools {
    perf: PathBuf,
    collapse: PathBuf,
    flamegraph: PathBuf,
}

impl Tools {
    /// Finds `perf`, `inferno-collapse-perf` and `inferno-flamegraph`.
    pub fn find() -> anyhow::Result<Tools> {
        let missing = |name: &str| {
            anyhow::anyhow!(
                "--flamegraphs needs `{name}`, which is neither on PATH nor in cargo's bin \
                 directory: run scripts/bench-tools"
            )
        };
        let find = |name: &str| which(name).ok_or_else(|| missing(name));
        Ok(Tools {
            perf: find("perf")?,
            collapse: find("inferno-collapse-perf")?,
            flamegraph: find("inferno-flamegraph")?,
        })
    }
}

/// `name` on `PATH`, or in `$CARGO_HOME/bin` (default `~/.cargo/bin`,
/// where `cargo install` puts it).
fn which(name: &str) -> Option<PathBuf> {
    crate::ycsb::clusters::which(name).or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        Some(cargo_home.join("bin").join(name)).filter(|p| p.is_file())
    })
}

/// Where and what to profile during the run phases of one `compare` run.
#[derive(Clone, Debug)]
pub struct ProfileSpec {
    pub tools: Tools,
    /// `<out>/flamegraphs`.
    pub dir: PathBuf,
    /// Names the files: round, workload, mode and system.
    pub label: String,
}

/// The processes a profile samples: the first of each serving kind, and
/// this process as the client.
pub fn targets(procs: &[ServerProc]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = vec![];
    for p in procs {
        if p.kind != "directory" && !out.iter().any(|(k, _)| k == p.kind) {
            out.push((p.kind.to_string(), p.pid));
        }
    }
    out.push(("client".to_string(), std::process::id()));
    out
}

/// `perf record` running against one process.
struct Recording {
    process: String,
    child: Child,
    data: PathBuf,
}

/// The recordings of one run phase.
pub struct Profile {
    spec: ProfileSpec,
    recordings: Vec<Recording>,
}

impl Profile {
    /// Starts sampling every process of `targets`.
    pub fn start(spec: &ProfileSpec, targets: &[(String, u32)]) -> anyhow::Result<Profile> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let mut recordings = vec![];
        for (process, pid) in targets {
            let data = spec.dir.join(format!("{}-{process}.perf.data", spec.label));
            let child = Command::new(&spec.tools.perf)
                .args(["record", "--quiet", "-F"])
                .arg(FREQUENCY_HZ.to_string())
                .arg(format!("--call-graph=dwarf,{STACK_BYTES}"))
                .arg("-p")
                .arg(pid.to_string())
                .arg("-o")
                .arg(&data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting perf record on {process} (pid {pid})"))?;
            recordings.push(Recording {
                process: process.clone(),
                child,
                data,
            });
        }
        Ok(Profile {
            spec: spec.clone(),
            recordings,
        })
    }

    /// Stops sampling and draws one flamegraph per process that ran
    /// (an idle one, with no sample, gets none); returns the SVG files.
    pub fn finish(self) -> anyhow::Result<Vec<PathBuf>> {
        for r in &self.recordings {
            // SAFETY: kill only sends a signal to perf, our own child.
            unsafe {
                libc::kill(r.child.id() as libc::pid_t, libc::SIGINT);
            }
        }
        let mut svgs = vec![];
        for mut r in self.recordings {
            let status = r.child.wait()?;
            anyhow::ensure!(
                r.data.is_file(),
                "perf record on {} wrote nothing ({status}): is perf allowed to sample \
                 (/proc/sys/kernel/perf_event_paranoid)?",
                r.process
            );
            let title = format!("{} — {}", self.spec.label, r.process);
            let stem = self
                .spec
                .dir
                .join(format!("{}-{}", self.spec.label, r.process));
            let drawn = draw(&self.spec.tools, &r.data, &stem, &title)?;
            std::fs::remove_file(&r.data).ok();
            svgs.extend(drawn);
        }
        Ok(svgs)
    }
}

/// `perf script | inferno-collapse-perf > stem.folded`, then
/// `inferno-flamegraph stem.folded > stem.svg`; the SVG, or `None` for a
/// process that was idle (not one sample: the router in direct mode).
fn draw(tools: &Tools, data: &Path, stem: &Path, title: &str) -> anyhow::Result<Option<PathBuf>> {
    let folded = stem.with_extension("folded");
    let svg = stem.with_extension("svg");
    let mut script = Command::new(&tools.perf)
        .arg("script")
        .arg("-i")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf script")?;
    let collapse = Command::new(&tools.collapse)
        .stdin(script.stdout.take().expect("piped"))
        .stdout(std::fs::File::create(&folded)?)
        .status()
        .context("running inferno-collapse-perf")?;
    script.wait()?;
    anyhow::ensure!(
        collapse.success(),
        "inferno-collapse-perf failed: {collapse}"
    );
    if std::fs::metadata(&folded)?.len() == 0 {
        std::fs::remove_file(&folded).ok();
        return Ok(None);
    }
    let drawn = Command::new(&tools.flamegraph)
        .arg("--title")
        .arg(title)
        .arg(&folded)
        .stdout(std::fs::File::create(&svg)?)
        .status()
        .context("running inferno-flamegraph")?;
    anyhow::ensure!(drawn.success(), "inferno-flamegraph failed: {drawn}");
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_of_each_serving_kind_and_the_client_are_sampled() {
        let p = |kind, pid| ServerProc {
            kind,
            name: format!("{kind} {pid}"),
            pid,
        };
        let t = targets(&[
            p("directory", 1),
            p("store", 2),
            p("store", 3),
            p("router", 4),
        ]);
        assert_eq!(
            t,
            vec![
                ("store".to_string(), 2),
                ("router".to_string(), 4),
                ("client".to_string(), std::process::id())
            ]
        );
    }
}
