//! One namespace of the fake: its key, triggers, limits, fault and records, behind a
//! handle the test keeps ([`Namespace`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::controller::Limits;
use super::entities::Triggers;
use super::fault::Fault;
use super::random_alphanumeric;
use super::records::{RecordedFire, Records};

/// A namespace of the fake controller and its own key, as a real OpenWhisk has one per
/// user: nothing set here touches another namespace.
///
/// A handle: clones share the namespace; it lives as long as the fake serves.
#[derive(Clone)]
pub struct Namespace(Arc<Inner>);

struct Inner {
    name: String,
    /// The user part of the key, `8-4-4-4-12` hex; it names the namespace a request
    /// claims to be from even when the key is wrong.
    uuid: String,
    /// 64 alphanumerics, as `ent/Secret.scala` requires.
    key: String,
    revoked: AtomicBool,
    state: Mutex<State>,
}

/// What requests change and the test reads, under one lock per namespace.
#[derive(Default)]
pub(super) struct State {
    pub triggers: Triggers,
    pub records: Records,
    pub fault: Fault,
    pub limits: Limits,
}

impl Namespace {
    /// A namespace with a random name and key, so that `_` and the entitlement check must
    /// really be done by the controller.
    pub(super) fn random() -> Namespace {
        let uuid = format!("{:032x}", rand::random::<u128>());
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &uuid[0..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..32]
        );
        Namespace(Arc::new(Inner {
            name: format!("ns_{}", random_alphanumeric(10).to_lowercase()),
            uuid,
            key: random_alphanumeric(64),
            revoked: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        }))
    }

    /// The namespace's name, what `_` stands for with its key.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The namespace's key, `<uuid>:<64 alphanumerics>`, for `OW_AUTH` or a feed's `authKey`.
    pub fn auth(&self) -> String {
        format!("{}:{}", self.0.uuid, self.0.key)
    }

    /// Makes the key invalid: every later request with it gets 401 "The supplied
    /// authentication is invalid", as once a user's key is deleted or regenerated.
    pub fn revoke_key(&self) {
        self.0.revoked.store(true, Ordering::SeqCst);
    }

    /// Creates (or replaces) a trigger, with one active rule or with none.
    pub fn create_trigger(&self, name: &str, active_rule: bool) {
        self.state().triggers.create(name, active_rule);
    }

    /// Deletes a trigger; fires on it then get 404.
    pub fn delete_trigger(&self, name: &str) {
        self.state().triggers.delete(name);
    }

    /// Sets the fires allowed per wall-clock minute and starts counting afresh.
    ///
    /// `None`, the harness default, means unlimited; a real OpenWhisk allows **60**
    /// (`limits.triggers.fires.perMinute`), counted per namespace. Every fire that passes
    /// auth and entitlement counts, including the ones then answered 429, 413, 400, 415,
    /// 404 or 204; fires answered by an injected [`Fault`] do not.
    pub fn set_fires_per_minute(&self, limit: Option<u32>) {
        self.state().limits.set_fires_per_minute(limit);
    }

    /// Sets the payload limit: fires with a larger `Content-Length` get 413.
    ///
    /// A real controller's limit is per namespace (`allowedMaxPayloadSize`, at most the
    /// system's `whisk.activation.payload.max`); the default is 1048576, as there.
    pub fn set_max_payload_bytes(&self, limit: u64) {
        self.state().limits.set_max_payload_bytes(limit);
    }

    /// Injects a fault into every following fire made with this namespace's key (until
    /// `Fault::None` is set).
    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }

    /// Every fire attempt recorded here so far, in arrival order, failed ones included.
    ///
    /// A fire is recorded in the namespace whose uuid its credentials name, right key or
    /// not (so a 403 for a foreign namespace is the caller's); without such credentials,
    /// in the namespace its path names; failing both, in the fake's default namespace.
    pub fn fires(&self) -> Vec<RecordedFire> {
        let snapshot = self.state().records.snapshot();
        snapshot
            .iter()
            .map(|fire| RecordedFire::clone(fire))
            .collect()
    }

    /// The fires of [`Namespace::fires`] OpenWhisk accepted (202 or 204).
    pub fn accepted(&self) -> Vec<RecordedFire> {
        let snapshot = self.state().records.snapshot();
        let accepted = snapshot.iter().filter(|fire| fire.is_accepted());
        accepted.map(|fire| RecordedFire::clone(fire)).collect()
    }

    /// What [`delivered_sequence_numbers`](super::delivered_sequence_numbers) says about
    /// [`Namespace::accepted`], but kept up to date as fires arrive: cheap to poll even
    /// with 100,000 fires.
    pub fn delivered(&self) -> (BTreeSet<u64>, usize) {
        self.state().records.delivered()
    }

    /// How many of [`Namespace::fires`] were answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.state().records.count_status(status)
    }

    pub(super) fn uuid(&self) -> &str {
        &self.0.uuid
    }

    /// Whether `key` authenticates this namespace's uuid: its own key, not revoked.
    pub(super) fn accepts(&self, key: &str) -> bool {
        key == self.0.key && !self.0.revoked.load(Ordering::SeqCst)
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap()
    }
}
