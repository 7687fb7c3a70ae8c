//! Where snapshot files live on disk, and their cleanup.
//!
//! A received snapshot's directory is named by its region, term and index,
//! so two streams of the same snapshot (a leader sends it again when the
//! first copy has not been applied yet) meet at one directory. Its files
//! are written by one stream at a time ([`SnapManager::begin_receive`] keeps
//! the set of directories being written), and a complete copy, one whose
//! description file is there, is never removed or rewritten by a later
//! stream: the poller may already have staged its apply. Every reader after
//! the stream (the poller's checks, the apply, a restart's resume) takes the
//! file list from that description ([`SnapManager::received_files`]), not
//! from the message that announced it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use prost::Message as _;
use tessera_proto::raft_serverpb::{SnapshotData, SnapshotFile};

use super::apply::META_FILE;
use crate::engine::{Cf, ExportedFile};
use crate::{Error, RegionId, Result};

/// The snapshot directory of one store.
#[derive(Clone, Debug)]
pub struct SnapManager {
    dir: PathBuf,
    /// Received snapshots' directories whose files a stream is writing.
    receiving: Arc<Mutex<HashSet<PathBuf>>>,
}

/// What a stream that brings a snapshot does with its files.
#[derive(Debug)]
pub enum Receive {
    /// A complete copy is already here: the stream's files are not needed.
    Present,
    /// Write them; the directory is this stream's until the guard drops.
    Write(ReceiveGuard),
}

/// Marks a received snapshot's directory as being written, until dropped.
#[derive(Debug)]
pub struct ReceiveGuard {
    dir: PathBuf,
    receiving: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Drop for ReceiveGuard {
    fn drop(&mut self) {
        self.receiving.lock().remove(&self.dir);
    }
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Engine(format!("{}: {e}", path.display()))
}

impl SnapManager {
    /// Uses (and creates) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(SnapManager {
            dir,
            receiving: Arc::default(),
        })
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

    /// Claims `dir`, a received snapshot's directory, for a stream that
    /// brings its files: [`Receive::Present`] if a complete copy is there
    /// (it stays as it is), else the directory is emptied of what an
    /// interrupted stream left and is this stream's to write. Refused while
    /// another stream writes it (the sender tries again later).
    pub fn begin_receive(&self, dir: &Path) -> Result<Receive> {
        let mut receiving = self.receiving.lock();
        if receiving.contains(dir) {
            return Err(Error::Transport(format!(
                "{} is being received by another stream",
                dir.display()
            )));
        }
        if dir.join(META_FILE).exists() {
            return Ok(Receive::Present);
        }
        self.remove(dir);
        receiving.insert(dir.to_path_buf());
        Ok(Receive::Write(ReceiveGuard {
            dir: dir.to_path_buf(),
            receiving: self.receiving.clone(),
        }))
    }

    /// The files of the complete received snapshot in `dir`, as its own
    /// description (written when every file had arrived and checked) lists
    /// them.
    pub fn received_files(dir: &Path) -> Result<Vec<ExportedFile>> {
        let path = dir.join(META_FILE);
        let meta = std::fs::read(&path).map_err(|e| {
            Error::corruption("received snapshot", format!("{}: {e}", path.display()))
        })?;
        let data = SnapshotData::decode(meta.as_slice())?;
        Self::files_in(dir, &data.files)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mgr() -> (tempfile::TempDir, SnapManager) {
        let dir = tempfile::tempdir().unwrap();
        let mgr = SnapManager::new(dir.path()).unwrap();
        (dir, mgr)
    }

    fn write_complete(dir: &Path, name: &str, body: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(name), body).unwrap();
        let data = SnapshotData {
            region: None,
            files: vec![SnapshotFile {
                cf: Cf::Default.name().into(),
                name: name.into(),
                size: body.len() as u64,
                keys: 1,
                crc32: crc32fast::hash(body),
            }],
            ..Default::default()
        };
        std::fs::write(dir.join(META_FILE), prost::Message::encode_to_vec(&data)).unwrap();
    }

    #[test]
    fn one_stream_writes_a_snapshot_and_a_complete_copy_is_never_rewritten() {
        let (_dir, mgr) = mgr();
        let dir = mgr.recv_dir(7, 3, 40);
        let first = match mgr.begin_receive(&dir).unwrap() {
            Receive::Write(guard) => guard,
            Receive::Present => panic!("nothing was received yet"),
        };
        // A second stream of the same snapshot waits for the first.
        let err = mgr.begin_receive(&dir).unwrap_err().to_string();
        assert!(err.contains("being received by another stream"), "{err}");
        write_complete(&dir, "a.sst", b"the first copy");
        drop(first);

        // Once complete, a later stream writes nothing and removes nothing:
        // the first copy may already be staged for apply.
        assert!(matches!(mgr.begin_receive(&dir).unwrap(), Receive::Present));
        let files = SnapManager::received_files(&dir).unwrap();
        assert_eq!(files.len(), 1);
        SnapManager::verify(&files).unwrap();
        assert_eq!(std::fs::read(dir.join("a.sst")).unwrap(), b"the first copy");
    }

    #[test]
    fn what_an_interrupted_stream_left_is_cleared_for_the_next() {
        let (_dir, mgr) = mgr();
        let dir = mgr.recv_dir(7, 3, 41);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.sst"), b"half a fi").unwrap();
        let err = SnapManager::received_files(&dir).unwrap_err().to_string();
        assert!(err.contains(META_FILE), "{err}");
        let Receive::Write(_guard) = mgr.begin_receive(&dir).unwrap() else {
            panic!("an incomplete copy is not a snapshot");
        };
        assert!(!dir.join("a.sst").exists());
    }
}
