//! The RocksDB [`Engine`]: one database per store with the column families
//! `default`, `raft` and `meta`.
//!
//! Writes go through RocksDB's write-ahead log; `sync` writes fsync it. The
//! `raft` column family is written and deleted in order, so it gets a smaller
//! memtable budget than user data; everything else keeps RocksDB's defaults
//! tuned for a small machine (two background jobs).

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions,
    WriteBatch as RocksBatch, WriteOptions, DB,
};

use super::{Cf, Engine, WriteBatch, WriteOp};
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

    /// The raw database, for operations the trait does not cover yet.
    pub fn db(&self) -> &DB {
        &self.db
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
}
