use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::archive::check_key;
use crate::ports::{Archive, ArchiveError, ObjectBody, PutOutcome};

/// An archive in a mutex-guarded map, keeping every version of an object like a versioned
/// bucket (version ids `v1`, `v2`, ... across the archive).
#[derive(Debug, Default)]
pub struct MemoryArchive {
    objects: Mutex<Objects>,
}

#[derive(Debug, Default)]
struct Objects {
    /// Every key's versions, oldest first.
    versions: BTreeMap<String, Vec<(String, ObjectBody)>>,
    next_version: u64,
}

impl Objects {
    fn current(&self, key: &str) -> Option<&(String, ObjectBody)> {
        self.versions.get(key).and_then(|v| v.last())
    }

    fn insert(&mut self, key: &str, body: ObjectBody) {
        self.next_version += 1;
        let id = format!("v{}", self.next_version);
        self.versions.entry(key.to_owned()).or_default().push((id, body));
    }
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
            .versions
            .iter()
            .filter_map(|(k, v)| v.last().map(|(_, body)| (k.clone(), body.clone())))
            .collect()
    }
}

#[async_trait]
impl Archive for MemoryArchive {
    async fn put_if_absent(&self, key: &str, body: ObjectBody) -> Result<PutOutcome, ArchiveError> {
        check_key(key)?;
        body.check()?;
        let mut objects = self.objects.lock().expect("archive lock");
        if objects.current(key).is_some() {
            return Ok(PutOutcome::AlreadyExists);
        }
        objects.insert(key, body);
        Ok(PutOutcome::Created)
    }

    async fn put(&self, key: &str, body: ObjectBody) -> Result<(), ArchiveError> {
        check_key(key)?;
        body.check()?;
        self.objects.lock().expect("archive lock").insert(key, body);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        check_key(key)?;
        Ok(self
            .objects
            .lock()
            .expect("archive lock")
            .current(key)
            .map(|(_, body)| body.clone()))
    }

    async fn get_version(&self, key: &str, version_id: &str) -> Result<Option<ObjectBody>, ArchiveError> {
        check_key(key)?;
        let objects = self.objects.lock().expect("archive lock");
        let versions = objects.versions.get(key).map(Vec::as_slice).unwrap_or_default();
        Ok(versions.iter().find(|(id, _)| id == version_id).map(|(_, body)| body.clone()))
    }

    async fn current_version(&self, key: &str) -> Result<Option<String>, ArchiveError> {
        check_key(key)?;
        Ok(self.objects.lock().expect("archive lock").current(key).map(|(id, _)| id.clone()))
    }
}
