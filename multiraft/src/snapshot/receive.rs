//! The receiving end of a snapshot transfer, shared by every transport.
//!
//! What another store sends is checked before it touches the disk beyond
//! the snapshot's own directory (the threat model trusts node identities
//! for Raft semantics, not for the shape of what they send): the first
//! chunk's message must describe this region ([`Expected::of`]), with files
//! of the data column family only (a snapshot never carries Raft logs or
//! local states), every file name plain, and at most
//! [`MAX_SNAPSHOT_BYTES`] in all; each chunk must belong to a declared file
//! and stay within its declared size ([`Expected::accept`]). Sizes and
//! checksums are verified once every file is there ([`complete`]). Every
//! transport goes through [`Expected::of`], so the checks hold for all.

use std::collections::HashMap;
use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tessera_proto::raft_serverpb::{RaftMessage, SnapshotData};

use super::apply::META_FILE;
use super::{decode_data, SnapManager};
use crate::engine::Cf;
use crate::{Error, Result};

/// The most file bytes one snapshot may declare (far above a region's
/// split size): a sender cannot fill the receiver's disk.
pub const MAX_SNAPSHOT_BYTES: u64 = 16 * 1024 * 1024 * 1024;

fn refused(detail: impl ToString) -> Error {
    Error::corruption("snapshot stream", detail)
}

/// What a snapshot's message declares, checked: its region and files,
/// where they go on this store, and how much of each has arrived.
#[derive(Debug)]
pub struct Expected {
    data: SnapshotData,
    /// Where the files go on this store.
    pub dir: PathBuf,
    /// name → (declared size, bytes received).
    files: HashMap<String, (u64, u64)>,
    /// The file the last chunk belonged to: files arrive one after another.
    current: Option<String>,
}

impl Expected {
    /// What the first chunk's message declares, checked; the files go to
    /// `mgr`'s directory for received snapshots.
    pub fn of(mgr: &SnapManager, msg: &RaftMessage) -> Result<Self> {
        let m = Message::parse_from_bytes(&msg.message)
            .map_err(|e| Error::corruption("snapshot message", e))?;
        if m.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return Err(refused(format!(
                "the first message is a {:?}, not a snapshot",
                m.get_msg_type()
            )));
        }
        let data = decode_data(m.get_snapshot())?;
        let region = data.region.as_ref().map(|r| r.id).unwrap_or_default();
        if region != msg.region_id {
            return Err(refused(format!(
                "a snapshot sent for region {} describes region {region}",
                msg.region_id
            )));
        }
        let mut files = HashMap::new();
        let mut total = 0u64;
        for f in &data.files {
            if f.cf != Cf::Default.name() {
                return Err(refused(format!(
                    "file {:?} is for column family {:?}; a snapshot carries region data only",
                    f.name, f.cf
                )));
            }
            if f.name.is_empty()
                || f.name.contains('/')
                || f.name.contains("..")
                || f.name == META_FILE
            {
                return Err(refused(format!("bad file name {:?}", f.name)));
            }
            total = total.saturating_add(f.size);
            if files.insert(f.name.clone(), (f.size, 0)).is_some() {
                return Err(refused(format!("file {:?} is declared twice", f.name)));
            }
        }
        if total > MAX_SNAPSHOT_BYTES {
            return Err(refused(format!(
                "{total} bytes declared; at most {MAX_SNAPSHOT_BYTES} are accepted"
            )));
        }
        let meta = m.get_snapshot().get_metadata();
        let dir = mgr.recv_dir(msg.region_id, meta.term, meta.index);
        Ok(Expected {
            data,
            dir,
            files,
            current: None,
        })
    }

    /// Accounts `len` bytes of file `name`: refused if it was not declared,
    /// grows past its declared size, or goes on after another file began
    /// (its first part is closed by then).
    pub fn accept(&mut self, name: &str, len: usize) -> Result<()> {
        let Some((size, got)) = self.files.get_mut(name) else {
            return Err(refused(format!("file {name:?} was not declared")));
        };
        if self.current.as_deref() != Some(name) {
            if *got > 0 {
                return Err(refused(format!(
                    "file {name:?} goes on after another file began"
                )));
            }
            self.current = Some(name.to_string());
        }
        *got = got.saturating_add(len as u64);
        if *got > *size {
            return Err(refused(format!(
                "file {name:?} is longer than the {size} bytes declared"
            )));
        }
        Ok(())
    }
}

/// Checks the files of a snapshot (already written to its
/// [`Expected::dir`]) and records its description; its message may then be
/// delivered to the poller.
pub fn complete(expected: &Expected) -> Result<()> {
    let dir = &expected.dir;
    let files = SnapManager::files_in(dir, &expected.data.files)?;
    SnapManager::verify(&files)?;
    std::fs::write(
        dir.join(META_FILE),
        prost::Message::encode_to_vec(&expected.data),
    )
    .map_err(|e| Error::Engine(format!("{}: {e}", dir.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{MessageType, Snapshot};
    use tessera_proto::metapb::Region;
    use tessera_proto::raft_serverpb::SnapshotFile;

    use super::*;

    fn snapshot_msg(region_id: u64, described: u64, files: Vec<SnapshotFile>) -> RaftMessage {
        let data = SnapshotData {
            region: Some(Region {
                id: described,
                ..Default::default()
            }),
            files,
            ..Default::default()
        };
        let mut snap = Snapshot::default();
        snap.set_data(prost::Message::encode_to_vec(&data).into());
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.set_snapshot(snap);
        RaftMessage {
            region_id,
            message: m.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    fn mgr() -> SnapManager {
        SnapManager::new(std::env::temp_dir().join("tessera-receive-tests")).unwrap()
    }

    fn file(cf: &str, name: &str, size: u64) -> SnapshotFile {
        SnapshotFile {
            cf: cf.into(),
            name: name.into(),
            size,
            ..Default::default()
        }
    }

    #[test]
    fn only_declared_data_files_within_their_sizes_are_accepted() {
        let mut e = Expected::of(
            &mgr(),
            &snapshot_msg(7, 7, vec![file("default", "a.sst", 10)]),
        )
        .unwrap();
        e.accept("a.sst", 6).unwrap();
        e.accept("a.sst", 4).unwrap();
        let err = e.accept("a.sst", 1).unwrap_err().to_string();
        assert!(err.contains("longer than"), "{err}");
        let err = e.accept("b.sst", 1).unwrap_err().to_string();
        assert!(err.contains("not declared"), "{err}");
    }

    #[test]
    fn a_file_cannot_go_on_after_the_next_one_began() {
        let mut e = Expected::of(
            &mgr(),
            &snapshot_msg(
                7,
                7,
                vec![file("default", "a.sst", 10), file("default", "b.sst", 10)],
            ),
        )
        .unwrap();
        e.accept("a.sst", 5).unwrap();
        e.accept("b.sst", 5).unwrap();
        let err = e.accept("a.sst", 5).unwrap_err().to_string();
        assert!(err.contains("goes on after another file began"), "{err}");
    }

    #[test]
    fn hostile_declarations_are_refused_by_name() {
        let cases = [
            (
                snapshot_msg(7, 7, vec![file("raft", "a.sst", 1)]),
                "column family \"raft\"",
            ),
            (
                snapshot_msg(7, 7, vec![file("meta", "a.sst", 1)]),
                "column family \"meta\"",
            ),
            (
                snapshot_msg(7, 8, vec![file("default", "a.sst", 1)]),
                "describes region 8",
            ),
            (
                snapshot_msg(7, 7, vec![file("default", "../x", 1)]),
                "bad file name",
            ),
            (
                snapshot_msg(7, 7, vec![file("default", META_FILE, 1)]),
                "bad file name",
            ),
            (
                snapshot_msg(
                    7,
                    7,
                    vec![file("default", "a.sst", 1), file("default", "a.sst", 1)],
                ),
                "declared twice",
            ),
            (
                snapshot_msg(
                    7,
                    7,
                    vec![
                        file("default", "a.sst", MAX_SNAPSHOT_BYTES),
                        file("default", "b.sst", u64::MAX),
                    ],
                ),
                "at most",
            ),
        ];
        for (msg, says) in cases {
            let err = Expected::of(&mgr(), &msg).unwrap_err().to_string();
            assert!(err.contains(says), "{says}: {err}");
        }
        let mut not_a_snapshot = snapshot_msg(7, 7, vec![]);
        let mut m = Message::parse_from_bytes(&not_a_snapshot.message).unwrap();
        m.set_msg_type(MessageType::MsgHeartbeat);
        not_a_snapshot.message = m.write_to_bytes().unwrap();
        let err = Expected::of(&mgr(), &not_a_snapshot)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a snapshot"), "{err}");
    }
}
