//! The storage engine under every region of a store.
//!
//! One engine per store, three column families:
//! - `default`: user data under encoded keys;
//! - `raft`: Raft log entries of every region;
//! - `meta`: per region, the Raft hard state, apply state and region state.
//!
//! Crash consistency rests on one primitive: [`Engine::write`] applies a
//! [`WriteBatch`] atomically, and with `sync` it is durable when the call
//! returns. Because the engine has a single write-ahead log, a synced write
//! also makes every earlier unsynced write durable.
//!
//! [`RocksEngine`] is what users run; [`MemoryEngine`] exists for
//! deterministic tests.

mod memory;
mod rocks;

pub use memory::MemoryEngine;
pub use rocks::{RocksEngine, RocksOptions};

use std::path::{Path, PathBuf};

use crate::Result;

/// A column family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    Default,
    Raft,
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 3] = [Cf::Default, Cf::Raft, Cf::Meta];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => "default",
            Cf::Raft => "raft",
            Cf::Meta => "meta",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One change in a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes `[start, end)`.
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// Changes applied atomically by [`Engine::write`].
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    data_bytes: usize,
}

impl WriteBatch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.data_bytes += key.len() + value.len();
        self.ops.push(WriteOp::Put { cf, key, value });
    }

    /// Puts a protobuf message, encoded.
    pub fn put_msg(&mut self, cf: Cf, key: impl Into<Vec<u8>>, msg: &impl prost::Message) {
        self.put(cf, key, msg.encode_to_vec());
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.data_bytes += key.len();
        self.ops.push(WriteOp::Delete { cf, key });
    }

    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        let (start, end) = (start.into(), end.into());
        self.data_bytes += start.len() + end.len();
        self.ops.push(WriteOp::DeleteRange { cf, start, end });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Bytes of keys and values in the batch.
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    pub fn clear(&mut self) {
        self.ops.clear();
        self.data_bytes = 0;
    }
}

/// Key-value storage with column families and atomic batches.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Applies `batch` atomically; with `sync`, durably (fsync) before
    /// returning.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;

    /// Visits the keys of `cf` in `[start, end)` (an empty `end` means no
    /// upper bound) in ascending order, or descending with `reverse`, until
    /// `visit` returns false.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;

    /// Takes one consistent view of the engine, lets `plan` read it and
    /// choose ranges, and writes those ranges from the same view into files
    /// in `dir` (created if needed). Ranges without keys produce no file.
    fn export(&self, dir: &Path, plan: &mut ExportPlan<'_>) -> Result<Vec<ExportedFile>>;

    /// Loads files written by [`Engine::export`] (of any engine of the same
    /// kind) into the engine. Keys in the files replace existing ones; the
    /// caller deletes the target range first if it must be replaced whole.
    fn ingest(&self, files: &[ExportedFile]) -> Result<()>;

    /// Checks files another node exported before they are ingested: each
    /// must be a well-formed file of this engine's kind holding only puts,
    /// every key in `[start, end)` (an empty `end` is unbounded). Changes
    /// nothing in the engine.
    fn check_external(&self, files: &[ExportedFile], start: &[u8], end: &[u8]) -> Result<()>;

    /// Approximate bytes of keys and values in `[start, end)` of `cf` (an
    /// empty end is unbounded). Data not yet flushed to disk may be left out
    /// (RocksDB estimates from its files).
    fn approximate_size(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64>;
}

/// The CRC-32 of a file's contents.
pub fn file_crc32(path: &Path) -> Result<u32> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| crate::Error::Engine(format!("{}: {e}", path.display())))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| crate::Error::Engine(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize())
}

/// A consistent point-in-time view of an engine, for [`Engine::export`].
pub trait EngineView {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// A key range of one column family, `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportRange {
    pub cf: Cf,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

/// A file written by [`Engine::export`] and read back by
/// [`Engine::ingest`]. Its format belongs to the engine (SST for RocksDB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedFile {
    pub cf: Cf,
    pub path: PathBuf,
    pub size: u64,
    pub keys: u64,
    pub crc32: u32,
}

/// Plans an export from a view: which ranges to write, decided from what
/// the same view holds (e.g. a region's range from its region state).
pub type ExportPlan<'a> = dyn FnMut(&dyn EngineView) -> Result<Vec<ExportRange>> + 'a;

/// Whether `key` lies in `[start, end)` (an empty `end` is unbounded).
pub fn key_in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// The refusal of a file from another node whose keys leave the range.
pub(crate) fn outside_range(path: &Path, key: &[u8], start: &[u8], end: &[u8]) -> crate::Error {
    use tessera_proto::escape;
    let end = if end.is_empty() {
        "+inf".to_string()
    } else {
        escape(end)
    };
    crate::Error::corruption(
        format!("snapshot file {}", path.display()),
        format!(
            "key {} lies outside the region [{}, {end})",
            escape(key),
            escape(start)
        ),
    )
}

/// Helpers over any [`Engine`].
pub trait EngineExt: Engine {
    /// Reads and decodes a protobuf message.
    fn get_msg<M: prost::Message + Default>(&self, cf: Cf, key: &[u8]) -> Result<Option<M>> {
        match self.get(cf, key)? {
            Some(bytes) => Ok(Some(M::decode(bytes.as_slice())?)),
            None => Ok(None),
        }
    }

    /// Number of keys in `[start, end)` of `cf`.
    fn count(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<usize> {
        let mut n = 0;
        self.scan(cf, start, end, false, &mut |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }
}

impl<E: Engine + ?Sized> EngineExt for E {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every engine implementation must keep.
    pub(crate) fn check_engine_contract(engine: &dyn Engine) {
        let mut wb = WriteBatch::default();
        for i in 0u8..10 {
            wb.put(Cf::Default, vec![b'k', i], vec![i]);
        }
        wb.put(Cf::Meta, b"k\x03".to_vec(), b"meta".to_vec());
        engine.write(&wb, true).unwrap();
        assert_eq!(engine.get(Cf::Default, b"k\x03").unwrap(), Some(vec![3]));
        assert_eq!(
            engine.get(Cf::Meta, b"k\x03").unwrap(),
            Some(b"meta".to_vec())
        );
        assert_eq!(engine.get(Cf::Raft, b"k\x03").unwrap(), None);

        let mut seen = vec![];
        engine
            .scan(Cf::Default, b"k\x02", b"k\x05", false, &mut |k, _| {
                seen.push(k[1]);
                true
            })
            .unwrap();
        assert_eq!(seen, vec![2, 3, 4]);

        seen.clear();
        engine
            .scan(Cf::Default, b"k\x02", b"k\x05", true, &mut |k, _| {
                seen.push(k[1]);
                true
            })
            .unwrap();
        assert_eq!(seen, vec![4, 3, 2]);

        seen.clear();
        engine
            .scan(Cf::Default, b"k\x07", b"", false, &mut |k, _| {
                seen.push(k[1]);
                seen.len() < 2
            })
            .unwrap();
        assert_eq!(seen, vec![7, 8], "the visitor stops the scan");

        let mut wb = WriteBatch::default();
        wb.delete_range(Cf::Default, b"k\x01".to_vec(), b"k\x09".to_vec());
        wb.delete(Cf::Default, b"k\x09".to_vec());
        engine.write(&wb, false).unwrap();
        assert_eq!(engine.count(Cf::Default, b"", b"").unwrap(), 1);
        assert_eq!(engine.get(Cf::Default, b"k\x00").unwrap(), Some(vec![0]));
        assert_eq!(
            engine.get(Cf::Meta, b"k\x03").unwrap(),
            Some(b"meta".to_vec())
        );
    }

    /// Export from one engine, ingest into another: the range moves, and
    /// the plan sees the same view.
    pub(crate) fn check_export_ingest(from: &dyn Engine, to: &dyn Engine, dir: &Path) {
        let mut wb = WriteBatch::default();
        for i in 0u8..50 {
            wb.put(Cf::Default, vec![b'd', i], vec![i; 100]);
        }
        wb.put(Cf::Meta, b"range-end".to_vec(), vec![b'd', 40]);
        from.write(&wb, true).unwrap();
        let files = from
            .export(dir, &mut |view| {
                let end = view.get(Cf::Meta, b"range-end")?.unwrap();
                Ok(vec![
                    ExportRange {
                        cf: Cf::Default,
                        start: vec![b'd', 10],
                        end,
                    },
                    ExportRange {
                        cf: Cf::Default,
                        start: b"x".to_vec(),
                        end: b"y".to_vec(),
                    },
                ])
            })
            .unwrap();
        assert_eq!(files.len(), 1, "an empty range makes no file");
        assert_eq!(files[0].keys, 30);
        assert_eq!(file_crc32(&files[0].path).unwrap(), files[0].crc32);
        let mut wb = WriteBatch::default();
        wb.put(Cf::Default, vec![b'd', 20], b"old".to_vec());
        to.write(&wb, true).unwrap();
        to.ingest(&files).unwrap();
        assert_eq!(to.count(Cf::Default, b"", b"").unwrap(), 30);
        assert_eq!(
            to.get(Cf::Default, &[b'd', 20]).unwrap(),
            Some(vec![20; 100])
        );
    }

    #[test]
    fn memory_engine_keeps_the_contract() {
        check_engine_contract(&MemoryEngine::new());
        let dir = tempfile::tempdir().unwrap();
        check_export_ingest(&MemoryEngine::new(), &MemoryEngine::new(), dir.path());
    }

    #[test]
    fn rocks_engine_exports_and_ingests() {
        let dir = tempfile::tempdir().unwrap();
        let a = RocksEngine::open(&dir.path().join("a"), &RocksOptions::default()).unwrap();
        let b = RocksEngine::open(&dir.path().join("b"), &RocksOptions::default()).unwrap();
        check_export_ingest(&a, &b, &dir.path().join("snap"));
        // Sizes count flushed data.
        a.flush().unwrap();
        assert!(a.approximate_size(Cf::Default, b"", b"").unwrap() > 0);
    }

    #[test]
    fn rocks_engine_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        check_engine_contract(&engine);
    }

    /// Raft logs and states of many regions written interleaved, as a store
    /// writes them: every scan a store makes sees exactly its region's keys,
    /// in order both ways, from the memtable and from flushed files.
    fn check_raft_state_layout(engine: &dyn Engine, flush: &dyn Fn()) {
        use crate::state_keys::{apply_state_key, raft_log_key, region_meta_bounds};
        let regions: Vec<u64> = (1..=300).map(|i| i * 7919).collect();
        for round in 1..=20u64 {
            let mut wb = WriteBatch::default();
            for &r in &regions {
                wb.put(
                    Cf::Raft,
                    raft_log_key(r, round).to_vec(),
                    r.to_be_bytes().to_vec(),
                );
                wb.put(
                    Cf::Meta,
                    apply_state_key(r).to_vec(),
                    round.to_be_bytes().to_vec(),
                );
            }
            engine.write(&wb, false).unwrap();
            if round == 10 {
                flush();
            }
        }
        let mut wb = WriteBatch::default();
        wb.put(
            Cf::Meta,
            crate::state_keys::STORE_IDENT_KEY.to_vec(),
            b"id".to_vec(),
        );
        // Region 2's log is truncated to 15..
        wb.delete_range(
            Cf::Raft,
            raft_log_key(regions[1], 0).to_vec(),
            raft_log_key(regions[1], 15).to_vec(),
        );
        engine.write(&wb, true).unwrap();

        let log = |r: u64, lo: u64, hi: u64, reverse: bool| {
            let mut seen = vec![];
            engine
                .scan(
                    Cf::Raft,
                    &raft_log_key(r, lo),
                    &raft_log_key(r, hi),
                    reverse,
                    &mut |k, v| {
                        assert_eq!(
                            v,
                            r.to_be_bytes(),
                            "a key of region {r} holds another's value"
                        );
                        seen.push(crate::state_keys::raft_log_index(k).unwrap());
                        true
                    },
                )
                .unwrap();
            seen
        };
        for &r in &regions {
            let expect_first = if r == regions[1] { 15 } else { 1 };
            assert_eq!(
                log(r, 0, u64::MAX, false),
                (expect_first..=20).collect::<Vec<_>>()
            );
            assert_eq!(log(r, 0, u64::MAX, true).first(), Some(&20));
            assert_eq!(
                log(r, 8, 13, false),
                if r == regions[1] {
                    vec![]
                } else {
                    (8..13).collect()
                }
            );
            assert_eq!(
                log(r, 8, 13, true),
                if r == regions[1] {
                    vec![]
                } else {
                    (8..13).rev().collect()
                }
            );
            assert_eq!(
                engine.get(Cf::Meta, &apply_state_key(r)).unwrap(),
                Some(20u64.to_be_bytes().to_vec())
            );
        }
        // A region nobody wrote has no log; a scan across regions sees all.
        assert_eq!(log(5, 0, u64::MAX, true), Vec::<u64>::new());
        assert_eq!(
            engine
                .count(
                    Cf::Raft,
                    &raft_log_key(regions[0], 0),
                    &raft_log_key(regions[3], 0)
                )
                .unwrap(),
            20 + 6 + 20
        );
        let (start, end) = region_meta_bounds();
        assert_eq!(engine.count(Cf::Meta, &start, &end).unwrap(), regions.len());
        assert_eq!(engine.count(Cf::Meta, b"", b"").unwrap(), regions.len() + 1);
        assert_eq!(
            engine
                .get(Cf::Meta, crate::state_keys::STORE_IDENT_KEY)
                .unwrap(),
            Some(b"id".to_vec())
        );
    }

    #[test]
    fn engines_keep_each_regions_raft_state_apart() {
        check_raft_state_layout(&MemoryEngine::new(), &|| {});
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        check_raft_state_layout(&engine, &|| engine.flush().unwrap());
    }

    /// A store whose data was written before the `raft` and `meta` column
    /// families had a region prefix reads it back as before.
    #[test]
    fn rocks_engine_reads_state_written_without_a_prefix_extractor() {
        use crate::state_keys::{raft_log_key, raft_state_key};
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = rocksdb::DB::open_cf(&opts, dir.path(), ["raft", "meta"]).unwrap();
            let raft = db.cf_handle("raft").unwrap();
            for i in 1..=5u64 {
                db.put_cf(raft, raft_log_key(3, i), [i as u8]).unwrap();
            }
            db.put_cf(db.cf_handle("meta").unwrap(), raft_state_key(3), b"hs")
                .unwrap();
            db.flush_cf(raft).unwrap();
        }
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        let mut seen = vec![];
        engine
            .scan(
                Cf::Raft,
                &raft_log_key(3, 2),
                &raft_log_key(3, u64::MAX),
                true,
                &mut |_, v| {
                    seen.push(v[0]);
                    true
                },
            )
            .unwrap();
        assert_eq!(seen, vec![5, 4, 3, 2]);
        assert_eq!(
            engine.get(Cf::Meta, &raft_state_key(3)).unwrap(),
            Some(b"hs".to_vec())
        );
    }

    #[test]
    fn rocks_engine_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
            let mut wb = WriteBatch::default();
            wb.put(Cf::Raft, b"a".to_vec(), b"1".to_vec());
            engine.write(&wb, true).unwrap();
        }
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        assert_eq!(engine.get(Cf::Raft, b"a").unwrap(), Some(b"1".to_vec()));
    }
}
