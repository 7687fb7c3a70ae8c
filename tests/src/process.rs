//! One process the e2e harness runs: started with its arguments and extra
//! environment, its output appended to a log file, and stopped the ways a
//! test needs — SIGKILL (a crash), SIGTERM with a grace period, SIGSTOP and
//! SIGCONT (a process that stops answering). Dropping it kills it. A
//! process of a cluster on network hosts ([`crate::netns`]) starts in its
//! host's network namespace (`setns(2)` between fork and exec).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One process the harness runs.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    args: Vec<String>,
    bin: PathBuf,
    /// Extra environment for the next starts (e.g. `FAILPOINTS`).
    env: Vec<(String, String)>,
    /// How it last exited on its own ([`Proc::has_exited`]).
    exited: Option<std::process::ExitStatus>,
    /// The network namespace it runs in, if not the harness's.
    netns: Option<PathBuf>,
}

impl Proc {
    pub(crate) fn spawn(
        bin: PathBuf,
        name: String,
        args: Vec<String>,
        log: PathBuf,
        netns: Option<PathBuf>,
    ) -> Proc {
        let mut p = Proc {
            name,
            child: None,
            log,
            args,
            bin,
            env: vec![],
            exited: None,
            netns,
        };
        p.start();
        p
    }

    /// (Re)starts the process with its arguments; its output is appended to
    /// its log file.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(&self.bin);
        // Opened here (close-on-exec), entered in the child before exec.
        let netns = self.netns.as_ref().map(|p| {
            std::fs::File::open(p)
                .unwrap_or_else(|e| panic!("{}: network namespace {}: {e}", self.name, p.display()))
        });
        if let Some(ns) = &netns {
            use std::os::unix::io::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: only setns(2), which is async-signal-safe, runs
            // between fork and exec; `fd` stays open until after spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("TESSERA_E2E_LOG").unwrap_or_else(|_| "info,slog=warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Sets an environment variable for every later [`Proc::start`]
    /// (replacing an earlier value); `None` removes it.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Whether the process has exited on its own (a crash, or a failpoint
    /// that aborted it); reaps it if so.
    pub fn has_exited(&mut self) -> bool {
        let status = match self.child.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(Some(status)) => status,
                _ => return false,
            },
            None => return false,
        };
        self.child = None;
        self.exited = Some(status);
        true
    }

    /// How the process last exited on its own, once [`Proc::has_exited`]
    /// saw it.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.exited
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGSTOP (`pause`) or SIGCONT (`!pause`): a process that stops
    /// answering without exiting.
    pub fn pause(&self, pause: bool) {
        if let Some(pid) = self.pid() {
            let sig = if pause { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on a child process this harness started.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (killing it after `grace`).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of the process's log, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        // Lossy: one stray byte must not hide the whole log.
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
