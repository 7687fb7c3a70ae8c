//! The RocksDB [`Engine`]: one database per store with the column families
//! `default`, `raft` and `meta`.
//!
//! Writes go through RocksDB's write-ahead log; `sync` writes fsync it. The
//! `raft` column family is written and deleted in order, so it gets a smaller
//! memtable budget than user data; everything else keeps RocksDB's defaults
//! tuned for a small machine (two background jobs).
//!
//! **Memtable layout of Raft state.** Every key of the `raft` and `meta`
//! column families starts with its region (see [`state_keys`]), and a store
//! with many active regions writes a few keys of each of them per round. In
//! one skip list those inserts land at scattered places, each a full search
//! from the top level (at one region the log is appended in order and RocksDB
//! reuses the last insert's position). So these two column families keep a
//! *hash skip list* memtable keyed by the region prefix
//! ([`state_keys::RAFT_LOG_PREFIX_LEN`], [`state_keys::REGION_META_PREFIX_LEN`]):
//! a small skip list per region. The price is on the read side: a prefix
//! extractor makes RocksDB iterate within one prefix unless told otherwise,
//! so [`read_options`] asks for total order whenever a scan's bounds do not
//! share one prefix or it runs backwards (a region's log entries are read
//! forwards within their prefix; the log's last entry is found by forward
//! seeks), and a total-order iterator over a hash memtable sorts a copy of
//! it (start-up scans of every region's state only). Measured with
//! `tessera-bench ycsb-scale` (README).
//!
//! [`state_keys`]: crate::state_keys
//! [`state_keys::RAFT_LOG_PREFIX_LEN`]: crate::state_keys::RAFT_LOG_PREFIX_LEN
//! [`state_keys::REGION_META_PREFIX_LEN`]: crate::state_keys::REGION_META_PREFIX_LEN

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, IngestExternalFileOptions,
    MemtableFactory, Options, ReadOptions, SliceTransform, SnapshotWithThreadMode, SstFileWriter,
    WriteBatch as RocksBatch, WriteOptions, DB,
};

use super::{file_crc32, Cf, Engine, EngineView, ExportPlan, ExportedFile, WriteBatch, WriteOp};
use crate::{state_keys, Error, Result};

/// Tuning knobs of the RocksDB engine.
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Shared block cache for all column families.
    pub block_cache_bytes: usize,
    /// Memtable size of the `default` column family.
    pub write_buffer_bytes: usize,
    /// Background flush and compaction threads.
    pub max_background_jobs: i32,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions {
            block_cache_bytes: 256 * 1024 * 1024,
            write_buffer_bytes: 64 * 1024 * 1024,
            max_background_jobs: 2,
        }
    }
}

pub struct RocksEngine {
    db: DB,
}

fn engine_err(e: rocksdb::Error) -> Error {
    Error::Engine(e.into_string())
}

/// Buckets of a hash skip list memtable: 8 bytes each per memtable; more
/// regions than buckets share skip lists, which stays correct.
const MEMTABLE_BUCKETS: usize = 64 * 1024;

/// The region prefix of `cf`'s keys, for column families that keep one
/// skip list per region in the memtable.
fn region_prefix_len(cf: Cf) -> Option<usize> {
    match cf {
        Cf::Default => None,
        Cf::Raft => Some(state_keys::RAFT_LOG_PREFIX_LEN),
        Cf::Meta => Some(state_keys::REGION_META_PREFIX_LEN),
    }
}

/// The region prefix extractor of `cf`: a key's first bytes, or all of a
/// shorter key (the store's identity key in `meta`), so that every key is in
/// its domain.
fn region_prefix(cf: Cf) -> Option<SliceTransform> {
    fn raft(key: &[u8]) -> &[u8] {
        &key[..key.len().min(state_keys::RAFT_LOG_PREFIX_LEN)]
    }
    fn meta(key: &[u8]) -> &[u8] {
        &key[..key.len().min(state_keys::REGION_META_PREFIX_LEN)]
    }
    match cf {
        Cf::Default => None,
        Cf::Raft => Some(SliceTransform::create("tessera.raft_prefix", raft, None)),
        Cf::Meta => Some(SliceTransform::create("tessera.meta_prefix", meta, None)),
    }
}

/// Read options for `[start, end)` of `cf`: bounded, and in total order
/// unless the scan runs forward with both bounds in one region prefix of a
/// hash-memtable family (RocksDB's hash memtable cannot seek backwards by
/// prefix: a reverse scan there would miss the memtable's keys).
fn read_options(cf: Cf, start: &[u8], end: &[u8], reverse: bool) -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.set_iterate_lower_bound(start.to_vec());
    if !end.is_empty() {
        opts.set_iterate_upper_bound(end.to_vec());
    }
    let one_prefix = !reverse
        && region_prefix_len(cf).is_some_and(|len| {
            start.len() >= len && end.len() >= len && start[..len] == end[..len]
        });
    if !one_prefix {
        opts.set_total_order_seek(true);
    }
    opts
}

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path, opts: &RocksOptions) -> Result<Self> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(opts.max_background_jobs);
        db_opts.set_bytes_per_sync(1024 * 1024);
        db_opts.set_keep_log_file_num(4);
        // Hash skip list memtables take one writer at a time.
        db_opts.set_allow_concurrent_memtable_write(false);

        let cache = rocksdb::Cache::new_lru_cache(opts.block_cache_bytes);
        let cf_opts = |cf: Cf| {
            let mut o = Options::default();
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&table);
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_write_buffer_size(match cf {
                Cf::Default => opts.write_buffer_bytes,
                Cf::Raft => opts.write_buffer_bytes / 2,
                Cf::Meta => 8 * 1024 * 1024,
            });
            if let Some(prefix) = region_prefix(cf) {
                o.set_prefix_extractor(prefix);
                o.set_memtable_factory(MemtableFactory::HashSkipList {
                    bucket_count: MEMTABLE_BUCKETS,
                    // A region's log can hold ~10⁵ entries in one memtable.
                    height: 12,
                    branching_factor: 4,
                });
            }
            o
        };
        let cfs = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_opts(cf)));
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(engine_err)?;
        Ok(RocksEngine { db })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("column families are created at open")
    }

    /// Flushes every memtable to disk.
    pub fn flush(&self) -> Result<()> {
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf)).map_err(engine_err)?;
        }
        Ok(())
    }

    /// The raw database, for operations the trait does not cover yet.
    pub fn db(&self) -> &DB {
        &self.db
    }
}

struct SnapshotView<'a> {
    engine: &'a RocksEngine,
    snap: &'a SnapshotWithThreadMode<'a, DB>,
}

impl EngineView for SnapshotView<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.snap
            .get_cf(self.engine.cf(cf), key)
            .map_err(engine_err)
    }
}

impl Engine for RocksEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(cf), key).map_err(engine_err)
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut wb = RocksBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put { cf, key, value } => wb.put_cf(self.cf(*cf), key, value),
                WriteOp::Delete { cf, key } => wb.delete_cf(self.cf(*cf), key),
                WriteOp::DeleteRange { cf, start, end } => {
                    if start < end {
                        wb.delete_range_cf(self.cf(*cf), start, end)
                    }
                }
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.write_opt(wb, &opts).map_err(engine_err)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        if !end.is_empty() && start >= end {
            return Ok(());
        }
        let opts = read_options(cf, start, end, reverse);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), opts);
        if reverse {
            it.seek_to_last();
        } else {
            it.seek(start);
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !visit(k, v) {
                return Ok(());
            }
            if reverse {
                it.prev();
            } else {
                it.next();
            }
        }
        it.status().map_err(engine_err)
    }

    fn export(&self, dir: &Path, plan: &mut ExportPlan<'_>) -> Result<Vec<ExportedFile>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Engine(format!("{}: {e}", dir.display())))?;
        let snap = self.db.snapshot();
        let ranges = plan(&SnapshotView {
            engine: self,
            snap: &snap,
        })?;
        let mut files = vec![];
        for (i, r) in ranges.iter().enumerate() {
            if !r.end.is_empty() && r.start >= r.end {
                continue;
            }
            let mut opts = read_options(r.cf, &r.start, &r.end, false);
            opts.set_snapshot(&snap);
            opts.fill_cache(false);
            let mut it = self.db.raw_iterator_cf_opt(self.cf(r.cf), opts);
            it.seek(&r.start);
            if !it.valid() {
                it.status().map_err(engine_err)?;
                continue;
            }
            let path = dir.join(format!("{}_{i}.sst", r.cf.name()));
            let writer_opts = Options::default();
            let mut writer = SstFileWriter::create(&writer_opts);
            writer.open(&path).map_err(engine_err)?;
            let mut keys = 0u64;
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else {
                    break;
                };
                writer.put(k, v).map_err(engine_err)?;
                keys += 1;
                it.next();
            }
            it.status().map_err(engine_err)?;
            writer.finish().map_err(engine_err)?;
            let size = std::fs::metadata(&path)
                .map_err(|e| Error::Engine(format!("{}: {e}", path.display())))?
                .len();
            files.push(ExportedFile {
                cf: r.cf,
                crc32: file_crc32(&path)?,
                path,
                size,
                keys,
            });
        }
        Ok(files)
    }

    fn ingest(&self, files: &[ExportedFile]) -> Result<()> {
        for cf in Cf::ALL {
            let paths: Vec<&Path> = files
                .iter()
                .filter(|f| f.cf == cf)
                .map(|f| f.path.as_path())
                .collect();
            if paths.is_empty() {
                continue;
            }
            // Copy, not move: the files stay for a retry after a crash.
            let opts = IngestExternalFileOptions::default();
            self.db
                .ingest_external_file_cf_opts(self.cf(cf), &opts, paths)
                .map_err(engine_err)?;
        }
        Ok(())
    }

    /// Ingests the files, one by one, into a scratch RocksDB beside them
    /// (RocksDB reads and checks each as it would for the real one), and
    /// reads each one's smallest and largest key and its deletions from the
    /// scratch database's metadata. Costs a copy of the files; snapshots are rare.
    fn check_external(&self, files: &[ExportedFile], start: &[u8], end: &[u8]) -> Result<()> {
        let Some(first) = files.first() else {
            return Ok(());
        };
        let scratch = first
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .join("check.scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        let checked = (|| -> Result<()> {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, &scratch).map_err(engine_err)?;
            let mut seen = std::collections::HashSet::new();
            for f in files {
                let opts = IngestExternalFileOptions::default();
                db.ingest_external_file_opts(&opts, vec![f.path.as_path()])
                    .map_err(|e| {
                        Error::corruption(
                            format!("snapshot file {}", f.path.display()),
                            format!("not a readable SST file: {e}"),
                        )
                    })?;
                for live in db.live_files().map_err(engine_err)? {
                    if !seen.insert(live.name.clone()) {
                        continue;
                    }
                    if live.num_deletions > 0 {
                        return Err(Error::corruption(
                            format!("snapshot file {}", f.path.display()),
                            "holds deletions; snapshot files hold puts only",
                        ));
                    }
                    for key in [&live.start_key, &live.end_key].into_iter().flatten() {
                        if !super::key_in_range(key, start, end) {
                            return Err(super::outside_range(&f.path, key, start, end));
                        }
                    }
                }
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&scratch);
        checked
    }

    fn approximate_size(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64> {
        let end = if end.is_empty() {
            crate::state_keys::data_end_key()
        } else {
            end.to_vec()
        };
        let sizes = self
            .db
            .get_approximate_sizes_cf(self.cf(cf), &[rocksdb::Range::new(start, &end)]);
        Ok(sizes.first().copied().unwrap_or(0))
    }
}
