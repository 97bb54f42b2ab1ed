//! A fake OpenWhisk controller that behaves like the real one for everything the provider
//! touches (see `shared/reference/openwhisk.md`, "Checklist: a faithful fake controller"),
//! records every fire, and can inject faults or stop listening.
//!
//! - `server`: the HTTP server, which can refuse connections for a while;
//! - `fault`: misbehaviour injected into fires ([`Fault`]);
//! - `controller`: routes and the controller's checks, in its order, with the throttle
//!   window and the payload limit;
//! - `entities`: the namespace's triggers;
//! - `answers`: OpenWhisk's (and nginx's) responses and texts;
//! - `records`: the fires seen ([`RecordedFire`]) and the readings they delivered.

mod answers;
mod controller;
mod entities;
mod fault;
mod records;
mod server;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::runtime::Runtime;

use self::controller::Limits;
use self::entities::Triggers;
use self::records::Records;
use self::server::Server;
use test_support::poll_until;

pub use self::fault::Fault;
pub use self::records::{RecordedFire, delivered_sequence_numbers};

/// How long `accept_connections` may wait for the port to be free again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The fake controller: a real HTTP server on `127.0.0.1`; stops serving on drop.
pub struct FakeOpenWhisk {
    shared: Arc<Shared>,
    port: u16,
    /// The server's own runtime (one worker thread), so that a test busy polling cannot
    /// stall it; `None` only while dropping.
    runtime: Option<Runtime>,
    /// The accept loop; `None` while connections are refused.
    server: Mutex<Option<Server>>,
}

/// What the request handlers share with the test.
struct Shared {
    /// `uuid:key`.
    auth: String,
    namespace: String,
    /// Requests being handled right now.
    in_flight: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    triggers: Triggers,
    records: Records,
    fault: Fault,
    limits: Limits,
}

impl FakeOpenWhisk {
    /// Starts listening on a free loopback port with a random key and namespace.
    pub async fn start() -> FakeOpenWhisk {
        let uuid: u128 = rand::random();
        let uuid = format!("{uuid:032x}");
        let auth = format!(
            "{}-{}-{}-{}-{}:{}",
            &uuid[0..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..32],
            random_alphanumeric(64)
        );
        let shared = Arc::new(Shared {
            auth,
            namespace: format!("ns_{}", random_alphanumeric(10).to_lowercase()),
            in_flight: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake OpenWhisk");
        let port = listener
            .local_addr()
            .expect("fake OpenWhisk address")
            .port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-openwhisk")
            .enable_all()
            .build()
            .expect("start the fake OpenWhisk's runtime");
        let server = Server::spawn(&runtime, listener, Arc::clone(&shared));
        FakeOpenWhisk {
            shared,
            port,
            runtime: Some(runtime),
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:<port>`, for `OW_API_HOST`.
    pub fn api_host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The only valid key, `<uuid>:<64 alphanumerics>`, for `OW_AUTH`.
    pub fn auth(&self) -> String {
        self.shared.auth.clone()
    }

    /// The key's own namespace (random, so `_` must really be resolved by the controller).
    pub fn namespace(&self) -> &str {
        &self.shared.namespace
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
    /// (`limits.triggers.fires.perMinute`). Every fire that passes auth and entitlement
    /// counts, including the ones then answered 429, 413, 400, 415, 404 or 204; fires
    /// answered by an injected [`Fault`] do not.
    pub fn set_fires_per_minute(&self, limit: Option<u32>) {
        self.state().limits.set_fires_per_minute(limit);
    }

    /// Sets the namespace's payload limit: fires with a larger `Content-Length` get 413.
    ///
    /// A real controller's limit is per namespace (`allowedMaxPayloadSize`, at most the
    /// system's `whisk.activation.payload.max`); the default is 1048576, as there.
    pub fn set_max_payload_bytes(&self, limit: u64) {
        self.state().limits.set_max_payload_bytes(limit);
    }

    /// Injects a fault into every following fire (until `Fault::None` is set).
    pub fn set_fault(&self, fault: Fault) {
        self.state().fault = fault;
    }

    /// Stops listening (connects get ECONNREFUSED) and closes every open connection.
    ///
    /// Fires already being handled (see [`Fault::Slow`]) still complete and are recorded,
    /// but their answers are lost, as when a controller's replies never arrive.
    pub async fn refuse_connections(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.stop().await;
        }
    }

    /// Listens again, on the same port.
    pub async fn accept_connections(&self) {
        if self.server.lock().unwrap().is_some() {
            return;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut listener = None;
        let bound = poll_until(REBIND_TIMEOUT, || {
            listener = std::net::TcpListener::bind(addr).ok();
            listener.is_some()
        })
        .await;
        assert!(
            bound,
            "fake OpenWhisk could not listen on {addr} again within {REBIND_TIMEOUT:?}"
        );
        let runtime = self.runtime.as_ref().expect("the fake OpenWhisk's runtime");
        let server = Server::spawn(runtime, listener.unwrap(), Arc::clone(&self.shared));
        *self.server.lock().unwrap() = Some(server);
    }

    /// Every fire attempt so far, in arrival order, failed ones included.
    pub fn fires(&self) -> Vec<RecordedFire> {
        let snapshot = self.state().records.snapshot();
        snapshot
            .iter()
            .map(|fire| RecordedFire::clone(fire))
            .collect()
    }

    /// The fires OpenWhisk accepted (202 or 204).
    pub fn accepted(&self) -> Vec<RecordedFire> {
        let snapshot = self.state().records.snapshot();
        let accepted = snapshot.iter().filter(|fire| fire.is_accepted());
        accepted.map(|fire| RecordedFire::clone(fire)).collect()
    }

    /// What [`delivered_sequence_numbers`] says about [`FakeOpenWhisk::accepted`], but kept
    /// up to date as fires arrive: cheap to poll even with 100,000 fires.
    pub fn delivered(&self) -> (BTreeSet<u64>, usize) {
        self.state().records.delivered()
    }

    /// How many fires were answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.state().records.count_status(status)
    }

    /// Requests being handled right now (see [`Fault::Slow`]).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

impl Drop for FakeOpenWhisk {
    fn drop(&mut self) {
        // Stops every task: the accept loop, the connections and the handlers.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `len` random ASCII letters and digits (keys, transaction ids).
fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
