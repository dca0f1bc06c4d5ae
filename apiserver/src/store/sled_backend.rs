//! The default backend: sled, embedded, nothing to install. Every commit is one sled
//! transaction over the objects and the revision, flushed to disk before it returns.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::{Backend, Op, Result, StoreError};

const REVISION_KEY: &[u8] = b"revision";

pub struct SledBackend {
    db: sled::Db,
    objects: sled::Tree,
    meta: sled::Tree,
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<Self> {
        let db = sled::open(dir).map_err(backend)?;
        let objects = db.open_tree("objects").map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        Ok(SledBackend { db, objects, meta })
    }
}

fn backend(err: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(err.to_string())
}

impl Backend for SledBackend {
    fn revision(&self) -> Result<u64> {
        let Some(bytes) = self.meta.get(REVISION_KEY).map_err(backend)? else {
            return Ok(0);
        };
        let raw: [u8; 8] = bytes
            .as_ref()
            .try_into()
            .map_err(|_| backend("revision is not 8 bytes"))?;
        Ok(u64::from_be_bytes(raw))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .objects
            .get(key.as_bytes())
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.objects
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (k, v) = item.map_err(backend)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn commit(&self, revision: u64, ops: &[Op]) -> Result<()> {
        (&self.objects, &self.meta)
            .transaction(|(objects, meta)| {
                for op in ops {
                    match op {
                        Op::Put(k, v) => objects.insert(k.as_bytes(), v.as_slice())?,
                        Op::Delete(k) => objects.remove(k.as_bytes())?,
                    };
                }
                meta.insert(REVISION_KEY, &revision.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| backend(format!("{e:?}")))?;
        self.db.flush().map_err(backend)?;
        Ok(())
    }
}
