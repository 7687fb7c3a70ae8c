//! Where snapshot files live on disk, and their cleanup.

use std::path::{Path, PathBuf};

use tessera_proto::raft_serverpb::SnapshotFile;

use crate::engine::{Cf, ExportedFile};
use crate::{Error, RegionId, Result};

/// The snapshot directory of one store.
#[derive(Clone, Debug)]
pub struct SnapManager {
    dir: PathBuf,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Engine(format!("{}: {e}", path.display()))
}

impl SnapManager {
    /// Uses (and creates) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(SnapManager { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a generated snapshot's files are kept.
    pub fn gen_dir(&self, region_id: RegionId, term: u64, index: u64) -> PathBuf {
        self.dir.join(format!("gen_{region_id}_{term}_{index}"))
    }

    /// Where a received snapshot's files are kept until applied.
    pub fn recv_dir(&self, region_id: RegionId, term: u64, index: u64) -> PathBuf {
        self.dir.join(format!("rcv_{region_id}_{term}_{index}"))
    }

    /// A scratch directory for a snapshot being generated.
    pub fn tmp_dir(&self, region_id: RegionId) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.dir.join(format!("tmp_{region_id}_{nanos}"))
    }

    pub fn remove(&self, path: &Path) {
        if let Err(e) = std::fs::remove_dir_all(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove snapshot files");
            }
        }
    }

    /// Removes every generated snapshot of `region_id` except `keep`.
    pub fn remove_generated_except(&self, region_id: RegionId, keep: Option<&Path>) {
        let prefix = format!("gen_{region_id}_");
        for path in self.list(&prefix) {
            if Some(path.as_path()) != keep {
                self.remove(&path);
            }
        }
    }

    /// Removes what no snapshot in progress can need: scratch directories,
    /// generated snapshots (they are cheap to make again) and received
    /// snapshots not in `keep`.
    pub fn clean_on_start(&self, keep: &[PathBuf]) {
        for path in self.list("") {
            if !keep.contains(&path) {
                self.remove(&path);
            }
        }
    }

    fn list(&self, prefix: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.path())
            .collect()
    }

    /// The engine files of a snapshot described by `files`, in `dir`.
    pub fn files_in(dir: &Path, files: &[SnapshotFile]) -> Result<Vec<ExportedFile>> {
        files
            .iter()
            .map(|f| {
                let cf = Cf::ALL
                    .into_iter()
                    .find(|c| c.name() == f.cf)
                    .ok_or_else(|| {
                        Error::corruption(
                            "snapshot file",
                            format!("unknown column family {:?}", f.cf),
                        )
                    })?;
                if f.name.contains('/') || f.name.contains("..") {
                    return Err(Error::corruption(
                        "snapshot file",
                        format!("bad file name {:?}", f.name),
                    ));
                }
                Ok(ExportedFile {
                    cf,
                    path: dir.join(&f.name),
                    size: f.size,
                    keys: f.keys,
                    crc32: f.crc32,
                })
            })
            .collect()
    }

    /// Checks that every file is present with its size and checksum.
    pub fn verify(files: &[ExportedFile]) -> Result<()> {
        for f in files {
            let size = std::fs::metadata(&f.path)
                .map_err(|e| io(&f.path, e))?
                .len();
            if size != f.size {
                return Err(Error::corruption(
                    format!("snapshot file {}", f.path.display()),
                    format!("{size} bytes, expected {}", f.size),
                ));
            }
            let crc = crate::engine::file_crc32(&f.path)?;
            if crc != f.crc32 {
                return Err(Error::corruption(
                    format!("snapshot file {}", f.path.display()),
                    "checksum mismatch",
                ));
            }
        }
        Ok(())
    }
}
