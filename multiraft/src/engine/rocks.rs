//! The RocksDB [`Engine`]: one database per store with the column families
//! `default`, `raft` and `meta`.
//!
//! Writes go through RocksDB's write-ahead log; `sync` writes fsync it. The
//! `raft` column family is written and deleted in order, so it gets a smaller
//! memtable budget than user data; everything else keeps RocksDB's defaults
//! tuned for a small machine (two background jobs).

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, IngestExternalFileOptions,
    Options, ReadOptions, SnapshotWithThreadMode, SstFileWriter, WriteBatch as RocksBatch,
    WriteOptions, DB,
};

use super::{file_crc32, Cf, Engine, EngineView, ExportPlan, ExportedFile, WriteBatch, WriteOp};
use crate::{Error, Result};

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

impl RocksEngine {
    /// Opens (creating if needed) the database in `path`.
    pub fn open(path: &Path, opts: &RocksOptions) -> Result<Self> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(opts.max_background_jobs);
        db_opts.set_bytes_per_sync(1024 * 1024);
        db_opts.set_keep_log_file_num(4);

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
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(start.to_vec());
        if !end.is_empty() {
            opts.set_iterate_upper_bound(end.to_vec());
        }
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
            let mut opts = ReadOptions::default();
            opts.set_snapshot(&snap);
            opts.set_iterate_lower_bound(r.start.clone());
            if !r.end.is_empty() {
                opts.set_iterate_upper_bound(r.end.clone());
            }
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
