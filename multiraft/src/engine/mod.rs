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

    #[test]
    fn memory_engine_keeps_the_contract() {
        check_engine_contract(&MemoryEngine::new());
    }

    #[test]
    fn rocks_engine_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        check_engine_contract(&engine);
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
