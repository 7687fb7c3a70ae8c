//! Size-limited file systems for stores: a tmpfs mounted with `size=` on
//! a store's data directory, so a test can fill the store's disk for real
//! (ENOSPC from the kernel, `statvfs` telling the truth).
//!
//! Mounting needs root (CI runs as root): without the privilege the test
//! fails with the reason — it never skips. A [`Tmpfs`] is unmounted when
//! dropped (lazily, so a process still holding files cannot keep it).
//! tmpfs's fsync does nothing; stalls are injected with failpoints instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file [`Tmpfs::fill_to`] writes.
pub const BALLAST: &str = "ballast";

pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mib` MiB at `path` (created if missing).
    pub fn mount(path: &Path, size_mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a {size_mib} MiB tmpfs at {} (this test needs root, as CI has): {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Free bytes now.
    pub fn available(&self) -> u64 {
        let c = std::ffi::CString::new(self.path.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: statvfs only writes into `st`; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return 0;
        }
        st.f_bavail * st.f_frsize
    }

    /// Grows the ballast file until at most `free` bytes are left (or the
    /// file system is full).
    pub fn fill_to(&self, free: u64) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.join(BALLAST))?;
        let chunk = vec![0xa5u8; 1 << 20];
        while self.available() > free {
            let n = (self.available() - free).min(chunk.len() as u64) as usize;
            match f.write_all(&chunk[..n.max(4096)]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes the ballast: the space is back.
    pub fn free_ballast(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.path.join(BALLAST)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
