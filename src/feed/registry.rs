//! The durable feed registry: one record per trigger registered through the feed API, in
//! `<STATE_DIR>/registry.redb`.
//!
//! Why redb: an embedded, pure-Rust store whose write transaction is durable when
//! `commit()` returns (`Durability::Immediate`: data, checksums and the commit slot are
//! fsynced), and whose pages are checksummed so that a commit torn by a crash is detected
//! and rolled back on the next open. So a registration the feed API answered 2xx (after
//! [`Registry::put`] returned) survives SIGKILL or power loss, and a crash in the middle
//! of a write leaves the previous state, never a half-written record. There is no log to
//! replay or compact and no server to run.
//!
//! Each record is one value keyed by `(namespace, trigger)`: the registration as JSON,
//! or, when a [`StateKey`] is given, that JSON sealed with XChaCha20-Poly1305. Sealing
//! binds the record's key as associated data, so a sealed value copied onto another
//! trigger's record (by anyone who can write the file) fails to open instead of firing
//! that trigger with someone else's API key.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{
    Builder, Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    WriteTransaction,
};
use secrecy::zeroize::{Zeroize as _, Zeroizing};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

pub use super::sealed::StateKey;
use super::sealed::{SealError, Sealer};
use crate::config::ApiKey;

/// The registry's file name inside `STATE_DIR`.
pub const FILE_NAME: &str = "registry.redb";
/// Where [`Registry::open`] builds the sealed copy of a plain registry before renaming it
/// over [`FILE_NAME`]; one left by a crash is deleted on the next open.
const SEALING_FILE_NAME: &str = "registry.redb.sealing";

const REGISTRATIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("registrations");

/// First byte of a stored value: what follows.
const PLAIN: u8 = 1;
const SEALED: u8 = 2;

/// Associated data of a sealed record: a label (so these bytes mean nothing elsewhere),
/// then namespace and trigger, length-prefixed so that no two pairs give the same bytes.
fn associated_data(namespace: &str, trigger: &str) -> Vec<u8> {
    let label = b"mqtt-whisk-provider feed registration v1";
    let mut data = Vec::with_capacity(label.len() + 8 + namespace.len() + trigger.len());
    data.extend_from_slice(label);
    for part in [namespace, trigger] {
        data.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        data.extend_from_slice(part.as_bytes());
    }
    data
}

/// A trigger registered through the feed API.
///
/// Its `Debug` shows neither the API key nor the broker URL (which may hold a password).
pub struct Registration {
    /// Resolved, never `_`.
    pub namespace: String,
    pub trigger: String,
    /// MQTT topic filter, validated by the caller.
    pub topic: String,
    /// The broker URL as given, possibly with `user:pass`; `None`: the provider's `MQTT_URL`.
    pub broker: Option<SecretString>,
    pub qos: u8,
    /// The key the trigger is fired with (the registering caller's).
    pub key: ApiKey,
    pub status: FeedStatus,
}

/// Whether a registration fires, as READ shows it (OpenWhisk's alarms feed's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    pub active: bool,
    /// When `active` last changed, in ms since the Unix epoch.
    pub changed_at_ms: i64,
    /// Why it is inactive, when it is.
    pub reason: Option<Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// `AUTO` (the provider disabled it) or `USER`.
    pub kind: String,
    pub status_code: Option<u16>,
    pub message: String,
}

impl Clone for Registration {
    fn clone(&self) -> Self {
        Registration {
            namespace: self.namespace.clone(),
            trigger: self.trigger.clone(),
            topic: self.topic.clone(),
            broker: self.broker.clone(),
            qos: self.qos,
            key: ApiKey {
                uuid: self.key.uuid.clone(),
                key: self.key.key.clone(),
            },
            status: self.status.clone(),
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("namespace", &self.namespace)
            .field("trigger", &self.trigger)
            .field("topic", &self.topic)
            .field("broker", &self.broker.as_ref().map(|_| "[REDACTED]"))
            .field("qos", &self.qos)
            .field("key", &"[REDACTED]")
            .field("status", &self.status)
            .finish()
    }
}

/// What can go wrong; every message names the file, and none shows a secret.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot open the feed registry {path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("cannot open the feed registry {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "the feed registry {path} is in use by another process: only one provider may use a STATE_DIR"
    )]
    InUse { path: PathBuf },
    #[error(
        "the feed registry {path} holds encrypted keys: set STATE_KEY_FILE to the key they were written with"
    )]
    KeyRequired { path: PathBuf },
    #[error(
        "the feed registry {path} holds keys encrypted with another key than STATE_KEY_FILE's \
         (record {record} does not decrypt): set STATE_KEY_FILE to the key they were written with"
    )]
    WrongKey { path: PathBuf, record: String },
    #[error("the feed registry {path} is damaged: record {record}: {reason}")]
    Corrupt {
        path: PathBuf,
        record: String,
        reason: String,
    },
    #[error(
        "cannot encrypt a record of the feed registry {path}: the system's random number generator failed"
    )]
    Random { path: PathBuf },
    #[error("cannot read or write the feed registry {path}: {source}")]
    Storage { path: PathBuf, source: redb::Error },
}

/// The feed registry: cheap to clone, `Send + Sync`.
///
/// Every call blocks on disk I/O (a write waits for fsync): call it from
/// `spawn_blocking`. Only one process may have the file open (redb locks it).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    /// `Some` when `STATE_KEY_FILE` is set: every record is then sealed.
    sealer: Option<Sealer>,
    path: PathBuf,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.inner.path)
            .field("encrypted", &self.inner.sealer.is_some())
            .finish()
    }
}

impl Registry {
    /// Opens `<dir>/registry.redb`, creating `dir` (mode 0700) and the file (mode 0600) if
    /// missing. An existing file with another mode is set back to 0600; an existing `dir`
    /// keeps its mode (it may be a mounted volume whose mode the platform sets).
    ///
    /// Every record is read and checked here, so that a wrong or missing key fails now,
    /// at startup, rather than on some later request:
    /// - sealed records and no `key`: [`RegistryError::KeyRequired`];
    /// - sealed records that do not open with `key`: [`RegistryError::WrongKey`];
    /// - plain records and a `key` (the key was added since they were written): they are
    ///   migrated, re-written sealed into a fresh file that then replaces the old one, so
    ///   the plain API keys are not left behind in the old file's freed pages (the disk
    ///   blocks of the unlinked file are the filesystem's to reuse). A crash before the
    ///   rename leaves the plain registry as it was, to migrate on the next open.
    pub fn open(dir: &Path, key: Option<StateKey>) -> Result<Registry, RegistryError> {
        create_state_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let sealing = dir.join(SEALING_FILE_NAME);
        match fs::remove_file(&sealing) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(RegistryError::File {
                    path: sealing,
                    source: error,
                });
            }
            _ => {}
        }
        let mut inner = Inner {
            db: open_database(&path)?,
            sealer: key.as_ref().map(Sealer::new),
            path,
        };
        // Create the table, so that reads never meet a database without it.
        inner.write(|txn| {
            txn.open_table(REGISTRATIONS)?;
            Ok(())
        })?;
        let (registrations, plain) = inner.read_all()?;
        if inner.sealer.is_some() && plain > 0 {
            inner.db = inner.write_sealed_copy(&sealing, &registrations)?;
            fs::rename(&sealing, &inner.path).map_err(|source| RegistryError::File {
                path: inner.path.clone(),
                source,
            })?;
            sync_dir(dir).map_err(|source| RegistryError::File {
                path: inner.path.clone(),
                source,
            })?;
            tracing::info!(
                path = %inner.path.display(),
                records = plain,
                "feed registry: plain records re-written encrypted with STATE_KEY_FILE's key"
            );
        }
        Ok(Registry {
            inner: Arc::new(inner),
        })
    }

    /// Inserts `registration`, or replaces the one with the same namespace and trigger.
    ///
    /// Durable when it returns `Ok`: one transaction, fsynced before `commit()` returns.
    /// After an `Err` the record may or may not have been written (redb then refuses
    /// further writes until the registry is opened again).
    pub fn put(&self, registration: &Registration) -> Result<(), RegistryError> {
        let value = self.inner.encode(registration)?;
        let key = (
            registration.namespace.as_str(),
            registration.trigger.as_str(),
        );
        self.inner.write(|txn| {
            txn.open_table(REGISTRATIONS)?
                .insert(key, value.as_slice())?;
            Ok(())
        })
    }

    pub fn get(
        &self,
        namespace: &str,
        trigger: &str,
    ) -> Result<Option<Registration>, RegistryError> {
        let inner = &self.inner;
        let read = || -> Result<_, redb::Error> {
            let table = inner.db.begin_read()?.open_table(REGISTRATIONS)?;
            let value = table.get((namespace, trigger))?;
            Ok(value.map(|guard| Zeroizing::new(guard.value().to_vec())))
        };
        match read().map_err(|source| inner.storage(source))? {
            None => Ok(None),
            Some(value) => inner
                .decode(namespace, trigger, &value)
                .map(|(r, _)| Some(r)),
        }
    }

    /// Deletes the registration; `true` if there was one. Durable when it returns `Ok`,
    /// as [`Registry::put`].
    pub fn remove(&self, namespace: &str, trigger: &str) -> Result<bool, RegistryError> {
        self.inner.write(|txn| {
            let mut table = txn.open_table(REGISTRATIONS)?;
            let existed = table.remove((namespace, trigger))?.is_some();
            Ok(existed)
        })
    }

    /// Every registration, ordered by namespace, then trigger.
    pub fn all(&self) -> Result<Vec<Registration>, RegistryError> {
        self.inner
            .read_all()
            .map(|(registrations, _)| registrations)
    }
}

impl Inner {
    fn storage(&self, source: redb::Error) -> RegistryError {
        RegistryError::Storage {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `change` in one write transaction and commits it durably.
    fn write<T>(
        &self,
        change: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, RegistryError> {
        write_durably(&self.db, change).map_err(|source| self.storage(source))
    }

    /// Every registration, and how many of them are stored plain.
    fn read_all(&self) -> Result<(Vec<Registration>, usize), RegistryError> {
        let read = || -> Result<_, redb::Error> {
            let table = self.db.begin_read()?.open_table(REGISTRATIONS)?;
            let mut entries = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (namespace, trigger) = key.value();
                entries.push((
                    namespace.to_owned(),
                    trigger.to_owned(),
                    Zeroizing::new(value.value().to_vec()),
                ));
            }
            Ok(entries)
        };
        let entries = read().map_err(|source| self.storage(source))?;
        let mut registrations = Vec::with_capacity(entries.len());
        let mut plain = 0;
        for (namespace, trigger, value) in &entries {
            let (registration, sealed) = self.decode(namespace, trigger, value)?;
            plain += usize::from(!sealed);
            registrations.push(registration);
        }
        Ok((registrations, plain))
    }

    /// The stored value of `registration`: sealed when there is a key.
    fn encode(&self, registration: &Registration) -> Result<Vec<u8>, RegistryError> {
        let json = Zeroizing::new(
            serde_json::to_vec(&StoredRecord::from(registration))
                .expect("a StoredRecord always serializes"),
        );
        let Some(sealer) = &self.sealer else {
            let mut value = Vec::with_capacity(1 + json.len());
            value.push(PLAIN);
            value.extend_from_slice(&json);
            return Ok(value);
        };
        let aad = associated_data(&registration.namespace, &registration.trigger);
        let sealed = sealer
            .seal(&aad, &json)
            .map_err(|_| RegistryError::Random {
                path: self.path.clone(),
            })?;
        let mut value = Vec::with_capacity(1 + sealed.len());
        value.push(SEALED);
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    /// The registration stored as `value`, and whether it was sealed.
    fn decode(
        &self,
        namespace: &str,
        trigger: &str,
        value: &[u8],
    ) -> Result<(Registration, bool), RegistryError> {
        let record = || format!("{namespace}/{trigger}");
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: self.path.clone(),
            record: record(),
            reason,
        };
        let (sealed, json) = match value.split_first() {
            Some((&PLAIN, json)) => (false, Zeroizing::new(json.to_vec())),
            Some((&SEALED, sealed)) => {
                let Some(sealer) = &self.sealer else {
                    return Err(RegistryError::KeyRequired {
                        path: self.path.clone(),
                    });
                };
                let aad = associated_data(namespace, trigger);
                let json = sealer.open(&aad, sealed).map_err(|error| match error {
                    SealError::Open | SealError::Random => RegistryError::WrongKey {
                        path: self.path.clone(),
                        record: record(),
                    },
                })?;
                (true, json)
            }
            Some((format, _)) => return Err(corrupt(format!("unknown format {format}"))),
            None => return Err(corrupt("empty value".to_owned())),
        };
        // Not serde's message: it can quote a value, and values here are secrets.
        let stored: StoredRecord = serde_json::from_slice(&json).map_err(|error| {
            corrupt(format!(
                "not a registration ({:?} error at line {} column {})",
                error.classify(),
                error.line(),
                error.column()
            ))
        })?;
        Ok((stored.into_registration(namespace, trigger), sealed))
    }

    /// Writes `registrations` sealed into a new database at `path`, in one durable
    /// transaction, and returns it.
    fn write_sealed_copy(
        &self,
        path: &Path,
        registrations: &[Registration],
    ) -> Result<Database, RegistryError> {
        let values = registrations
            .iter()
            .map(|registration| self.encode(registration))
            .collect::<Result<Vec<_>, _>>()?;
        let db = open_database(path)?;
        write_durably(&db, |txn| {
            let mut table = txn.open_table(REGISTRATIONS)?;
            for (registration, value) in registrations.iter().zip(&values) {
                let key = (
                    registration.namespace.as_str(),
                    registration.trigger.as_str(),
                );
                table.insert(key, value.as_slice())?;
            }
            Ok(())
        })
        .map_err(|source| RegistryError::Storage {
            path: path.to_owned(),
            source,
        })?;
        Ok(db)
    }
}

/// One write transaction, committed with `Durability::Immediate` (redb's default, said
/// here because the feed API's 2xx relies on it) and two-phase commit: the registry holds
/// caller-chosen data (topics, names), and redb advises 2PC against crafted input that
/// could forge its non-cryptographic commit checksum in a crash; writes are rare, so the
/// second fsync costs nothing that matters.
fn write_durably<T>(
    db: &Database,
    change: impl FnOnce(&WriteTransaction) -> Result<T, redb::Error>,
) -> Result<T, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    txn.set_two_phase_commit(true);
    let result = change(&txn)?;
    txn.commit()?;
    Ok(result)
}

/// Creates `dir` with mode 0700 when it is missing; an existing one is left as it is.
fn create_state_dir(dir: &Path) -> Result<(), RegistryError> {
    let error = |source| RegistryError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(error(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a directory",
            )));
        }
        Err(source) if source.kind() != io::ErrorKind::NotFound => return Err(error(source)),
        Err(_) => {}
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(error)?;
    // The mode above is filtered by the umask; this one is not.
    fs::set_permissions(dir, Permissions::from_mode(0o700)).map_err(error)?;
    let parent = dir.parent().filter(|parent| !parent.as_os_str().is_empty());
    sync_dir(parent.unwrap_or(Path::new("."))).map_err(error)
}

/// Opens (or creates) the database file with mode 0600, and hands it to redb.
fn open_database(path: &Path) -> Result<Database, RegistryError> {
    let error = |source| RegistryError::File {
        path: path.to_owned(),
        source,
    };
    let (file, created) = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => (file, true),
        Err(source) if source.kind() == io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(error)?;
            (file, false)
        }
        Err(source) => return Err(error(source)),
    };
    ensure_private(&file, path, created).map_err(error)?;
    if created && let Some(dir) = path.parent() {
        // The new file's directory entry must be durable too, not only its contents.
        sync_dir(dir).map_err(error)?;
    }
    let backend = FileBackend::new(file).map_err(|source| open_error(path, source))?;
    Builder::new()
        .create_with_backend(backend)
        .map_err(|source| open_error(path, source))
}

fn open_error(path: &Path, source: redb::DatabaseError) -> RegistryError {
    match source {
        redb::DatabaseError::DatabaseAlreadyOpen => RegistryError::InUse {
            path: path.to_owned(),
        },
        source => RegistryError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Sets the file's mode to 0600 if it is anything else (the umask may have narrowed it,
/// or someone widened it).
fn ensure_private(file: &File, path: &Path, created: bool) -> io::Result<()> {
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))?;
        if !created {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "feed registry: file mode set back to 600"
            );
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A registration as stored: namespace and trigger are the table's key.
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    broker: Option<String>,
    qos: u8,
    uuid: String,
    key: String,
    active: bool,
    changed_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<StoredReason>,
}

#[derive(Serialize, Deserialize)]
struct StoredReason {
    kind: String,
    status_code: Option<u16>,
    message: String,
}

impl Drop for StoredRecord {
    fn drop(&mut self) {
        self.key.zeroize();
        self.broker.zeroize();
    }
}

impl From<&Registration> for StoredRecord {
    fn from(registration: &Registration) -> Self {
        let status = &registration.status;
        StoredRecord {
            topic: registration.topic.clone(),
            broker: registration
                .broker
                .as_ref()
                .map(|broker| broker.expose_secret().to_owned()),
            qos: registration.qos,
            uuid: registration.key.uuid.clone(),
            key: registration.key.key.expose_secret().to_owned(),
            active: status.active,
            changed_at_ms: status.changed_at_ms,
            reason: status.reason.as_ref().map(|reason| StoredReason {
                kind: reason.kind.clone(),
                status_code: reason.status_code,
                message: reason.message.clone(),
            }),
        }
    }
}

impl StoredRecord {
    fn into_registration(mut self, namespace: &str, trigger: &str) -> Registration {
        Registration {
            namespace: namespace.to_owned(),
            trigger: trigger.to_owned(),
            topic: std::mem::take(&mut self.topic),
            broker: self.broker.take().map(SecretString::from),
            qos: self.qos,
            key: ApiKey {
                uuid: std::mem::take(&mut self.uuid),
                key: SecretString::from(std::mem::take(&mut self.key)),
            },
            status: FeedStatus {
                active: self.active,
                changed_at_ms: self.changed_at_ms,
                reason: self.reason.take().map(|reason| Reason {
                    kind: reason.kind,
                    status_code: reason.status_code,
                    message: reason.message,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    const API_KEY: &str = "api-key-0123456789-secret";
    const BROKER_PASSWORD: &str = "broker-pass-s3cret";

    fn key(byte: u8) -> StateKey {
        StateKey::parse(format!("{byte:02x}").repeat(32).as_bytes()).unwrap()
    }

    fn registration(trigger: &str, topic: &str) -> Registration {
        Registration {
            namespace: "guest".to_owned(),
            trigger: trigger.to_owned(),
            topic: topic.to_owned(),
            broker: Some(SecretString::from(format!(
                "mqtts://feeder:{BROKER_PASSWORD}@broker.example:8883"
            ))),
            qos: 1,
            key: ApiKey {
                uuid: "23bc46b1-71f6-4ed5-8c54-816aa4f8c502".to_owned(),
                key: SecretString::from(API_KEY),
            },
            status: FeedStatus {
                active: true,
                changed_at_ms: 1_700_000_000_000,
                reason: None,
            },
        }
    }

    /// Everything but the secrets via `Debug`, and the secrets exposed.
    fn contents(registration: &Registration) -> String {
        format!(
            "{registration:?} broker={:?} uuid={} key={}",
            registration.broker.as_ref().map(|b| b.expose_secret()),
            registration.key.uuid,
            registration.key.key.expose_secret()
        )
    }

    fn file_holds(dir: &Path, needle: &str) -> bool {
        let bytes = fs::read(dir.join(FILE_NAME)).unwrap();
        bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn put_get_remove_and_all_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), None).unwrap();
        assert!(registry.all().unwrap().is_empty());
        assert!(registry.get("guest", "temp").unwrap().is_none());

        let temp = registration("temp", "dc1/sensors/+/temp");
        let mut humidity = registration("humidity", "dc1/sensors/+/humidity");
        humidity.broker = None;
        humidity.qos = 0;
        humidity.status = FeedStatus {
            active: false,
            changed_at_ms: 1_700_000_600_000,
            reason: Some(Reason {
                kind: "AUTO".to_owned(),
                status_code: Some(404),
                message: "the trigger no longer exists".to_owned(),
            }),
        };
        registry.put(&temp).unwrap();
        registry.put(&humidity).unwrap();

        let got = registry.get("guest", "temp").unwrap().unwrap();
        assert_eq!(contents(&got), contents(&temp));
        let all: Vec<String> = registry.all().unwrap().iter().map(contents).collect();
        assert_eq!(all, [contents(&humidity), contents(&temp)]);

        assert!(registry.remove("guest", "temp").unwrap());
        assert!(!registry.remove("guest", "temp").unwrap());
        assert!(registry.get("guest", "temp").unwrap().is_none());
        assert_eq!(registry.all().unwrap().len(), 1);
    }

    #[test]
    fn put_of_the_same_trigger_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), Some(key(7))).unwrap();
        registry.put(&registration("temp", "a/+")).unwrap();
        let other_namespace = Registration {
            namespace: "other".to_owned(),
            ..registration("temp", "c/#")
        };
        registry.put(&other_namespace).unwrap();
        registry.put(&registration("temp", "b/#")).unwrap();
        let all = registry.all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(registry.get("guest", "temp").unwrap().unwrap().topic, "b/#");
        assert_eq!(registry.get("other", "temp").unwrap().unwrap().topic, "c/#");
    }

    #[test]
    fn registrations_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let temp = registration("temp", "dc1/+/temp");
        {
            let registry = Registry::open(dir.path(), None).unwrap();
            registry.put(&temp).unwrap();
            registry.put(&registration("gone", "x")).unwrap();
            registry.remove("guest", "gone").unwrap();
        }
        let registry = Registry::open(dir.path(), None).unwrap();
        let all: Vec<String> = registry.all().unwrap().iter().map(contents).collect();
        assert_eq!(all, [contents(&temp)]);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_while_the_first_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let _registry = Registry::open(dir.path(), None).unwrap();
        let error = Registry::open(dir.path(), None).unwrap_err();
        assert!(matches!(error, RegistryError::InUse { .. }), "{error:?}");
        assert!(error.to_string().contains("registry.redb"), "{error}");
    }

    #[test]
    fn state_dir_is_created_0700_and_the_file_is_0600_even_if_widened() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state").join("feeds");
        drop(Registry::open(&dir, None).unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);

        fs::set_permissions(dir.join(FILE_NAME), Permissions::from_mode(0o644)).unwrap();
        drop(Registry::open(&dir, None).unwrap());
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
    }

    #[test]
    fn with_a_key_the_file_holds_neither_api_key_nor_broker_password() {
        let dir = tempfile::tempdir().unwrap();
        let temp = registration("temp", "dc1/+/temp");
        {
            let registry = Registry::open(dir.path(), Some(key(1))).unwrap();
            registry.put(&temp).unwrap();
        }
        assert!(!file_holds(dir.path(), API_KEY));
        assert!(!file_holds(dir.path(), BROKER_PASSWORD));
        let registry = Registry::open(dir.path(), Some(key(1))).unwrap();
        let got = registry.get("guest", "temp").unwrap().unwrap();
        assert_eq!(contents(&got), contents(&temp));
    }

    #[test]
    fn without_a_key_the_file_holds_them_plain() {
        // The other side of the test above: the grep would find them.
        let dir = tempfile::tempdir().unwrap();
        drop(Registry::open(dir.path(), None).unwrap());
        let registry = Registry::open(dir.path(), None).unwrap();
        registry.put(&registration("temp", "t")).unwrap();
        assert!(file_holds(dir.path(), API_KEY));
        assert!(file_holds(dir.path(), BROKER_PASSWORD));
    }

    #[test]
    fn sealed_records_refuse_to_open_without_their_key() {
        let dir = tempfile::tempdir().unwrap();
        Registry::open(dir.path(), Some(key(1)))
            .unwrap()
            .put(&registration("temp", "t"))
            .unwrap();

        let error = Registry::open(dir.path(), None).unwrap_err();
        assert!(
            matches!(error, RegistryError::KeyRequired { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("STATE_KEY_FILE"), "{message}");
        assert!(message.contains("registry.redb"), "{message}");

        let error = Registry::open(dir.path(), Some(key(2))).unwrap_err();
        assert!(matches!(error, RegistryError::WrongKey { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("STATE_KEY_FILE"), "{message}");
        assert!(message.contains("guest/temp"), "{message}");

        // Neither failed open changed anything.
        let registry = Registry::open(dir.path(), Some(key(1))).unwrap();
        assert_eq!(registry.all().unwrap().len(), 1);
    }

    #[test]
    fn a_sealed_value_moved_to_another_record_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), Some(key(1))).unwrap();
        registry.put(&registration("temp", "t")).unwrap();
        let value = registry
            .inner
            .db
            .begin_read()
            .unwrap()
            .open_table(REGISTRATIONS)
            .unwrap()
            .get(("guest", "temp"))
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        registry
            .inner
            .write(|txn| {
                txn.open_table(REGISTRATIONS)?
                    .insert(("guest", "victim"), value.as_slice())?;
                Ok(())
            })
            .unwrap();
        let error = registry.get("guest", "victim").unwrap_err();
        assert!(matches!(error, RegistryError::WrongKey { .. }), "{error:?}");
        drop(registry);
        assert!(Registry::open(dir.path(), Some(key(1))).is_err());
    }

    #[test]
    fn a_plain_registry_opened_with_a_key_is_rewritten_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let temp = registration("temp", "dc1/+/temp");
        {
            let registry = Registry::open(dir.path(), None).unwrap();
            registry.put(&temp).unwrap();
            registry.put(&registration("humidity", "h")).unwrap();
        }
        assert!(file_holds(dir.path(), API_KEY));

        let registry = Registry::open(dir.path(), Some(key(3))).unwrap();
        assert!(!file_holds(dir.path(), API_KEY));
        assert!(!file_holds(dir.path(), BROKER_PASSWORD));
        assert!(!dir.path().join(SEALING_FILE_NAME).exists());
        assert_eq!(mode(&dir.path().join(FILE_NAME)), 0o600);
        assert_eq!(registry.all().unwrap().len(), 2);
        // The migrated registry is the open one: writes land in the renamed file.
        registry.put(&registration("pressure", "p")).unwrap();
        drop(registry);

        assert!(matches!(
            Registry::open(dir.path(), None).unwrap_err(),
            RegistryError::KeyRequired { .. }
        ));
        let registry = Registry::open(dir.path(), Some(key(3))).unwrap();
        assert_eq!(registry.all().unwrap().len(), 3);
        let got = registry.get("guest", "temp").unwrap().unwrap();
        assert_eq!(contents(&got), contents(&temp));
    }

    #[test]
    fn debug_and_errors_show_no_secret() {
        let temp = registration("temp", "dc1/+/temp");
        for debug in [format!("{temp:?}"), format!("{:?}", temp.clone())] {
            assert!(!debug.contains(API_KEY), "{debug}");
            assert!(!debug.contains(BROKER_PASSWORD), "{debug}");
            assert!(debug.contains("dc1/+/temp"), "{debug}");
        }
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path(), Some(key(1))).unwrap();
        assert!(!format!("{registry:?}").contains("01010101"));
        // A damaged plain record: serde's message would quote the key.
        let damaged = format!(r#"{{"topic":"t","qos":"{API_KEY}"}}"#);
        let error = registry
            .inner
            .decode("guest", "temp", &[&[PLAIN], damaged.as_bytes()].concat())
            .unwrap_err();
        assert!(matches!(error, RegistryError::Corrupt { .. }), "{error:?}");
        assert!(!error.to_string().contains(API_KEY), "{error}");
        assert!(!format!("{error:?}").contains(API_KEY), "{error:?}");
    }

    const CHILD_DIR: &str = "MQTT_WHISK_REGISTRY_TEST_CHILD_DIR";
    const WRITTEN: &str = "registry child: written";

    /// The writer of `a_put_that_returned_survives_sigkill`, run in a child process: puts,
    /// says so, and waits to be killed.
    #[test]
    #[ignore = "run as the child process of a_put_that_returned_survives_sigkill"]
    fn sigkill_child_writer() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let registry = Registry::open(Path::new(&dir), Some(key(9))).unwrap();
        registry.put(&registration("temp", "dc1/+/temp")).unwrap();
        // libtest prints `test <name> ... ` without a newline first: a marker, not a line.
        println!("{WRITTEN}");
        // Blocks until killed: the parent holds our stdin open.
        let _ = std::io::stdin().read_line(&mut String::new());
        panic!("stdin closed before the parent killed this process");
    }

    #[test]
    fn a_put_that_returned_survives_sigkill() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "feed::registry::tests::sigkill_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let written = stdout
            .lines()
            .map_while(Result::ok)
            .any(|line| line.ends_with(WRITTEN));
        assert!(written, "the child exited without writing");
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );

        let registry = Registry::open(dir.path(), Some(key(9))).unwrap();
        let got = registry.get("guest", "temp").unwrap().unwrap();
        assert_eq!(got.topic, "dc1/+/temp");
        assert_eq!(got.key.key.expose_secret(), API_KEY);
    }
}
