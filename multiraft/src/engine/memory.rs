//! An in-memory [`Engine`] for deterministic tests. Every write is "durable"
//! for as long as the value lives; a test simulates a restart by handing the
//! same engine to a new store. Never used by a binary.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use super::{Cf, Engine, WriteBatch, WriteOp};
use crate::Result;

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
}
