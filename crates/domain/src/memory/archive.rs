use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::archive::check_key;
use crate::ports::{Archive, ArchiveError, ObjectBody, PutOutcome};

/// An archive in a mutex-guarded map.
#[derive(Debug, Default)]
pub struct MemoryArchive {
    objects: Mutex<BTreeMap<String, ObjectBody>>,
}

impl MemoryArchive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key and object, for the local runner to write out.
    pub fn snapshot(&self) -> Vec<(String, ObjectBody)> {
        self.objects
            .lock()
            .expect("archive lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[async_trait]
impl Archive for MemoryArchive {
    async fn put_if_absent(&self, key: &str, body: ObjectBody) -> Result<PutOutcome, ArchiveError> {
        check_key(key)?;
        body.check()?;
        let mut objects = self.objects.lock().expect("archive lock");
        if objects.contains_key(key) {
            return Ok(PutOutcome::AlreadyExists);
        }
        objects.insert(key.to_owned(), body);
        Ok(PutOutcome::Created)
    }

    async fn put(&self, key: &str, body: ObjectBody) -> Result<(), ArchiveError> {
        check_key(key)?;
        body.check()?;
        self.objects.lock().expect("archive lock").insert(key.to_owned(), body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        check_key(key)?;
        Ok(self.objects.lock().expect("archive lock").get(key).cloned())
    }
}
