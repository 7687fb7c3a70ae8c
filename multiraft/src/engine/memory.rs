//! An in-memory [`Engine`] for deterministic tests. Every write is "durable"
//! for as long as the value lives; a test simulates a restart by handing the
//! same engine to a new store. Never used by a binary.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use std::io::{Read, Write};
use std::path::Path;

use super::{Cf, Engine, EngineView, ExportPlan, ExportedFile, WriteBatch, WriteOp};
use crate::{Error, Result};

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub struct MemoryEngine {
    tables: RwLock<[Table; 3]>,
    synced_writes: AtomicU64,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes made with `sync`, for tests that count fsyncs.
    pub fn synced_writes(&self) -> u64 {
        self.synced_writes.load(Ordering::Relaxed)
    }
}

fn bounds<'a>(start: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(end)
    };
    (Bound::Included(start), upper)
}

struct TablesView<'a>(&'a [Table; 3]);

impl EngineView for TablesView<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0[cf.index()].get(key).cloned())
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Engine(format!("{}: {e}", path.display()))
}

/// Export files of the memory engine: `[u32 BE len][key][u32 BE len][value]`
/// repeated.
fn write_pairs(path: &Path, pairs: &[(&Vec<u8>, &Vec<u8>)]) -> Result<(u64, u32)> {
    let mut buf = Vec::new();
    for (k, v) in pairs {
        buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
        buf.extend_from_slice(v);
    }
    let mut f = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    f.write_all(&buf).map_err(|e| io_err(path, e))?;
    f.sync_all().map_err(|e| io_err(path, e))?;
    Ok((buf.len() as u64, crc32fast::hash(&buf)))
}

fn read_pairs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| io_err(path, e))?;
    let mut out = Vec::new();
    let mut rest = buf.as_slice();
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>> {
        let bad = || Error::corruption(format!("export file {}", path.display()), "truncated");
        let len = u32::from_be_bytes(rest.get(..4).ok_or_else(bad)?.try_into().expect("4 bytes"))
            as usize;
        let item = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
        *rest = &rest[4 + len..];
        Ok(item)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Ok(out)
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tables.read()[cf.index()].get(key).cloned())
    }

    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()> {
        let mut tables = self.tables.write();
        for op in batch.ops() {
            match op {
                WriteOp::Put { cf, key, value } => {
                    tables[cf.index()].insert(key.clone(), value.clone());
                }
                WriteOp::Delete { cf, key } => {
                    tables[cf.index()].remove(key);
                }
                WriteOp::DeleteRange { cf, start, end } => {
                    if start >= end {
                        continue;
                    }
                    let table = &mut tables[cf.index()];
                    let doomed: Vec<Vec<u8>> = table
                        .range::<[u8], _>(bounds(start, end))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        table.remove(&k);
                    }
                }
            }
        }
        if sync {
            self.synced_writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
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
        let tables = self.tables.read();
        let range = tables[cf.index()].range::<[u8], _>(bounds(start, end));
        if reverse {
            for (k, v) in range.rev() {
                if !visit(k, v) {
                    break;
                }
            }
        } else {
            for (k, v) in range {
                if !visit(k, v) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn export(&self, dir: &Path, plan: &mut ExportPlan<'_>) -> Result<Vec<ExportedFile>> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let tables = self.tables.read();
        let ranges = plan(&TablesView(&tables))?;
        let mut files = vec![];
        for (i, r) in ranges.iter().enumerate() {
            if !r.end.is_empty() && r.start >= r.end {
                continue;
            }
            let pairs: Vec<_> = tables[r.cf.index()]
                .range::<[u8], _>(bounds(&r.start, &r.end))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let path = dir.join(format!("{}_{i}.bin", r.cf.name()));
            let (size, crc32) = write_pairs(&path, &pairs)?;
            files.push(ExportedFile {
                cf: r.cf,
                path,
                size,
                keys: pairs.len() as u64,
                crc32,
            });
        }
        Ok(files)
    }

    fn check_external(&self, files: &[ExportedFile], start: &[u8], end: &[u8]) -> Result<()> {
        for f in files {
            for (k, _) in read_pairs(&f.path)? {
                if !super::key_in_range(&k, start, end) {
                    return Err(super::outside_range(&f.path, &k, start, end));
                }
            }
        }
        Ok(())
    }

    fn ingest(&self, files: &[ExportedFile]) -> Result<()> {
        let mut loaded = vec![];
        for f in files {
            loaded.push((f.cf, read_pairs(&f.path)?));
        }
        let mut tables = self.tables.write();
        for (cf, pairs) in loaded {
            tables[cf.index()].extend(pairs);
        }
        Ok(())
    }

    fn approximate_size(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64> {
        let mut size = 0u64;
        self.scan(cf, start, end, false, &mut |k, v| {
            size += (k.len() + v.len()) as u64;
            true
        })?;
        Ok(size)
    }
}
