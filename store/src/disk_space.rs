//! The store's free disk space: a reserve file set aside at start, the
//! low-space state (the NOSPACE alarm), and what turns it on and off.
//!
//! At start the store allocates `disk.reserve_mib` in
//! `<data_dir>/space-reserve` (TiKV's placeholder file). A thread looks at
//! the file system every [`CHECK_INTERVAL`] and counts as *available* what
//! would be free if the reserve were still held — so releasing the reserve
//! never looks like space coming back:
//! - available below `disk.low_space_mib`: the store is **low**. It deletes
//!   the reserve, so that Raft's own writes (hard states, log compaction,
//!   membership changes, leader transfers, entries already accepted) have
//!   room; sets the poller's flag, after which its leaders refuse user
//!   writes with `NoSpace`, hand their leaderships to stores with space,
//!   and its followers take no new data (`tessera_multiraft::poller::space`
//!   has the rules); raises the `NOSPACE` alarm in `/ready` (which stays 200:
//!   reads go on), `tessera_store_low_space` = 1, and the heartbeat tells the
//!   directory, which places no replica on the store and shows the alarm in
//!   `tessera cluster status`;
//! - available back above the threshold plus a tenth ([`resume_at`], so a
//!   store at the edge does not flap): the reserve is allocated again, the
//!   flag and alarm cleared, writes resume — no restart.
//!
//! With `low_space_mib = 0` the store is never low; with `reserve_mib = 0`
//! it keeps no reserve. It runs on its own thread, like the watchdog, so a
//! busy runtime cannot delay it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tessera_common::status::Readiness;
use tessera_multiraft::poller::space::DiskSpace;

use crate::config::DiskSection;
use crate::metrics as m;

/// How often the monitor looks.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The reserve file, in the data directory.
pub const RESERVE_FILE: &str = "space-reserve";

/// The alarm's name in `/ready`.
pub const ALARM: &str = "NOSPACE";

/// The file system holding the data directory, as last measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub capacity_bytes: u64,
    /// Free bytes, counting the reserve as used whether or not it is held.
    pub available_bytes: u64,
    pub low: bool,
}

/// Total and free (for unprivileged users) bytes of the file system
/// holding `path`.
pub fn statvfs(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes into `st`; `c` is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = st.f_frsize;
    Ok((st.f_blocks * block, st.f_bavail * block))
}

/// Where a low store is no longer low.
pub fn resume_at(threshold: u64) -> u64 {
    threshold + threshold / 10
}

/// Whether a store with `available` bytes is low, given what it was.
fn is_low(available: u64, threshold: u64, was_low: bool) -> bool {
    if threshold == 0 {
        false
    } else if was_low {
        available < resume_at(threshold)
    } else {
        available < threshold
    }
}

pub struct DiskMonitor {
    store_id: u64,
    reserve_path: PathBuf,
    data_dir: PathBuf,
    reserve: u64,
    threshold: u64,
    space: Arc<DiskSpace>,
    readiness: Arc<Readiness>,
    usage: Mutex<Usage>,
}

impl DiskMonitor {
    /// Measures once (allocating the reserve if there is room) and starts
    /// the monitor thread for the rest of the process's life.
    pub fn start(
        store_id: u64,
        data_dir: &Path,
        cfg: &DiskSection,
        space: Arc<DiskSpace>,
        readiness: Arc<Readiness>,
    ) -> std::io::Result<Arc<Self>> {
        let monitor = Arc::new(DiskMonitor {
            store_id,
            reserve_path: data_dir.join(RESERVE_FILE),
            data_dir: data_dir.to_path_buf(),
            reserve: cfg.reserve_mib << 20,
            threshold: cfg.low_space_mib << 20,
            space,
            readiness,
            usage: Mutex::new(Usage::default()),
        });
        metrics::gauge!(m::LOW_SPACE).set(0.0);
        monitor.check();
        let m = monitor.clone();
        std::thread::Builder::new()
            .name(format!("disk-space-{store_id}"))
            .spawn(move || loop {
                std::thread::sleep(CHECK_INTERVAL);
                m.check();
            })?;
        Ok(monitor)
    }

    /// The last measurement.
    pub fn usage(&self) -> Usage {
        *self.usage.lock()
    }

    /// Bytes of the reserve file on disk now.
    fn held(&self) -> u64 {
        std::fs::metadata(&self.reserve_path)
            .map(|md| (md.blocks() * 512).min(md.len()))
            .unwrap_or(0)
    }

    /// One look: measure, then act on a change.
    fn check(&self) {
        let (capacity, free) = match statvfs(&self.data_dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.data_dir.display(), "cannot measure free space");
                return;
            }
        };
        let held = self.held();
        let available = (free + held).saturating_sub(self.reserve);
        let was_low = self.usage.lock().low;
        let low = is_low(available, self.threshold, was_low);
        // What the reserve file holds after this look.
        let held = if low && held > 0 {
            // Room for Raft's own writes.
            match std::fs::remove_file(&self.reserve_path) {
                Ok(()) => {
                    tracing::warn!(
                        store_id = self.store_id,
                        bytes = held,
                        "low on disk space: released the reserve file for Raft's own writes"
                    );
                    0
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot release the reserve file");
                    held
                }
            }
        } else if !low && held < self.reserve {
            match self.allocate_reserve() {
                Ok(()) => self.reserve,
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.reserve_path.display(), "cannot allocate the reserve file");
                    let _ = std::fs::remove_file(&self.reserve_path);
                    0
                }
            }
        } else {
            held
        };
        self.space.set_low(low);
        metrics::gauge!(m::LOW_SPACE).set(if low { 1.0 } else { 0.0 });
        metrics::gauge!(m::RESERVE_BYTES).set(held as f64);
        *self.usage.lock() = Usage {
            capacity_bytes: capacity,
            available_bytes: available,
            low,
        };
        if low == was_low {
            return;
        }
        let detail = format!(
            "{} MiB free for data, below disk.low_space_mib = {}: user writes are refused with \
             NO_SPACE, reads go on; free or add space and writes resume above {} MiB",
            available >> 20,
            self.threshold >> 20,
            resume_at(self.threshold) >> 20
        );
        if low {
            tracing::error!(store_id = self.store_id, "{detail}");
            self.readiness.raise_alarm(ALARM, detail);
        } else {
            tracing::info!(
                store_id = self.store_id,
                available_mib = available >> 20,
                "disk space is back: user writes are taken again"
            );
            self.readiness.clear_alarm(ALARM);
        }
    }

    /// Allocates the reserve file to its full size (blocks on disk, not a
    /// sparse file).
    fn allocate_reserve(&self) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.reserve_path)?;
        let len = i64::try_from(self.reserve).unwrap_or(i64::MAX);
        // SAFETY: `f` is an open, writable file for the whole call.
        match unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, len) } {
            0 => f.sync_all(),
            errno => Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_starts_below_the_threshold_and_ends_a_tenth_above_it() {
        let t = 1000;
        assert!(!is_low(1000, t, false));
        assert!(is_low(999, t, false));
        assert!(is_low(1050, t, true), "still low just above the threshold");
        assert!(!is_low(1100, t, true));
        assert!(!is_low(0, 0, true), "0 turns it off");
    }

    #[test]
    fn the_reserve_is_held_counted_as_used_and_released_when_low() {
        let cfg = |low_space_mib| DiskSection {
            reserve_mib: 4,
            low_space_mib,
            ..DiskSection::default()
        };
        // A threshold far below what this disk has: not low, reserve held.
        let dir = tempfile::tempdir().unwrap();
        let (_, free) = statvfs(dir.path()).unwrap();
        let readiness = Readiness::new("test");
        let space = Arc::new(DiskSpace::default());
        let fine =
            DiskMonitor::start(1, dir.path(), &cfg(1), space.clone(), readiness.clone()).unwrap();
        assert!(!fine.usage().low);
        assert!(fine.held() >= 4 << 20, "held {}", fine.held());
        assert!(fine.usage().available_bytes <= free);
        assert!(readiness.alarm_lines().is_empty());
        // A threshold above the disk's size: low at once, reserve released.
        let dir = tempfile::tempdir().unwrap();
        let readiness = Readiness::new("test");
        let space = Arc::new(DiskSpace::default());
        std::fs::write(dir.path().join(RESERVE_FILE), vec![1u8; 4 << 20]).unwrap();
        let huge = (free >> 20) * 4 + 1024;
        let low = DiskMonitor::start(1, dir.path(), &cfg(huge), space.clone(), readiness.clone())
            .unwrap();
        assert!(low.usage().low);
        assert!(space.is_low());
        assert_eq!(low.held(), 0);
        assert!(
            readiness.alarm_lines().contains("alarm NOSPACE"),
            "{}",
            readiness.alarm_lines()
        );
    }
}
