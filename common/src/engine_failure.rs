//! A store or directory member whose storage engine failed a write stops
//! once and stays down until an operator acts.
//!
//! After a failed write or fsync the kernel may have dropped the pages it
//! held, so the engine cannot tell what is durable; reopening it in the
//! same process, or restarting blindly, could let Raft act on a vote or a
//! log it no longer has. So the poller stops acknowledging anything and
//! reports why (`tessera_multiraft` `PollerStats::engine_failure`), and
//! [`watch`] then:
//! 1. writes the marker file [`MARKER`] into the data directory, with the
//!    reason and what to do;
//! 2. logs the reason, waits a moment for the poller's leadership
//!    hand-offs to leave, and exits with [`EXIT_CODE`] (74, `EX_IOERR`).
//!
//! On start, [`refuse_if_failed`] finds the marker and refuses to open the
//! engine, naming it: the process stays down (one clear line per restart,
//! no writes) instead of crash-looping on a bad disk. The operator checks
//! the disk and deletes the marker to start it again (its replicas catch
//! up from the others), or removes the store and starts a new one. If the
//! disk is so broken that the marker cannot be written, the process exits
//! all the same; a restart then finds the engine's own error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, Result};

/// The marker file's name, in the data directory.
pub const MARKER: &str = "ENGINE_FAILED";

/// The exit code after an engine failure (`EX_IOERR`).
pub const EXIT_CODE: i32 = 74;

/// How long to wait before exiting: time for the leadership hand-offs the
/// poller sent to leave the process.
const HANDOFF_WAIT: Duration = Duration::from_millis(300);

/// How often [`watch`] looks.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The marker's path in `data_dir`.
pub fn marker(data_dir: &Path) -> PathBuf {
    data_dir.join(MARKER)
}

/// Refuses to start when `data_dir` holds an engine-failure marker.
pub fn refuse_if_failed(data_dir: &Path) -> Result<()> {
    let path = marker(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let reason = text.lines().next().unwrap_or("").trim();
            Err(Error::Setup(format!(
                "the storage engine of this process failed earlier ({reason}); it stays down \
                 until an operator acts: check the disk (dmesg, SMART, free space), then delete \
                 {} to start it again (its replicas catch up from the others), or remove the \
                 store (`tessera store remove ID`) and start a new one on a good disk",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Setup(format!(
            "cannot read {} (an engine-failure marker?): {e}",
            path.display()
        ))),
    }
}

/// Writes the marker for `reason` (best effort: the disk is failing).
pub fn write_marker(data_dir: &Path, reason: &str) -> std::io::Result<()> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = format!(
        "{reason}\n\
         written at unix time {since} by the process that stopped on it.\n\
         The process refuses to start while this file exists. Check the disk, then delete \
         this file to start it again; or remove the store and start a new one.\n"
    );
    std::fs::write(marker(data_dir), text)
}

/// Watches `failed` (the poller's engine-failure report) and, once it has
/// a reason, writes the marker into `data_dir` and exits the process with
/// [`EXIT_CODE`]. Runs until then.
pub async fn watch(data_dir: PathBuf, failed: impl Fn() -> Option<String>) {
    let reason = loop {
        if let Some(reason) = failed() {
            break reason;
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    };
    match write_marker(&data_dir, &reason) {
        Ok(()) => tracing::error!(
            marker = %marker(&data_dir).display(),
            "the storage engine failed: {reason}; exiting, and staying down until the marker is deleted"
        ),
        Err(e) => tracing::error!(
            marker = %marker(&data_dir).display(),
            error = %e,
            "the storage engine failed: {reason}; exiting (the marker could not be written)"
        ),
    }
    tokio::time::sleep(HANDOFF_WAIT).await;
    std::process::exit(EXIT_CODE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_keeps_the_process_down_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        refuse_if_failed(dir.path()).unwrap();
        write_marker(dir.path(), "store 4: writing Raft state failed: EIO").unwrap();
        let e = refuse_if_failed(dir.path()).unwrap_err().to_string();
        assert!(e.contains("writing Raft state failed: EIO"), "{e}");
        assert!(e.contains(&marker(dir.path()).display().to_string()), "{e}");
        assert!(e.contains("delete"), "{e}");
        std::fs::remove_file(marker(dir.path())).unwrap();
        refuse_if_failed(dir.path()).unwrap();
    }
}
