//! A fake OpenWhisk controller that behaves like the real one for everything the provider
//! touches (see `shared/reference/openwhisk.md`, "Checklist: a faithful fake controller"),
//! records every fire, and can inject faults or stop listening.
//!
//! It starts with one namespace, the default, which the methods of [`FakeOpenWhisk`] act
//! on; [`FakeOpenWhisk::add_namespace`] adds more, each with its own key, triggers,
//! limits, fault and records.
//!
//! - `server`: the HTTP server, which can refuse connections for a while;
//! - `fault`: misbehaviour injected into fires ([`Fault`]);
//! - `controller`: routes, who a request is from, and the controller's checks in its
//!   order, with the throttle window and the payload limit;
//! - `namespace`: one namespace, its key and its state ([`Namespace`]);
//! - `entities`: a namespace's triggers;
//! - `answers`: OpenWhisk's (and nginx's) responses and texts;
//! - `records`: the fires seen ([`RecordedFire`]) and the readings they delivered.

mod answers;
mod controller;
mod entities;
mod fault;
mod namespace;
mod records;
mod server;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::runtime::Runtime;

use self::server::Server;
use test_support::poll_until;

pub use self::fault::Fault;
pub use self::namespace::Namespace;
pub use self::records::{RecordedFire, delivered_sequence_numbers, delivered_to};

/// How long `accept_connections` may wait for the port to be free again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The fake controller: a real HTTP server on `127.0.0.1`; stops serving on drop.
pub struct FakeOpenWhisk {
    shared: Arc<Shared>,
    /// What the namespace-level methods of the fake act on.
    default: Namespace,
    port: u16,
    /// The server's own runtime (one worker thread), so that a test busy polling cannot
    /// stall it; `None` only while dropping.
    runtime: Option<Runtime>,
    /// The accept loop; `None` while connections are refused.
    server: Mutex<Option<Server>>,
}

/// What the request handlers share with the test.
struct Shared {
    /// Every namespace, the default first. Only ever grows; each has its own lock, so this
    /// one is held just long enough to find one.
    namespaces: Mutex<Vec<Namespace>>,
    /// Requests being handled right now.
    in_flight: AtomicUsize,
}

impl Shared {
    fn find(&self, matches: impl Fn(&Namespace) -> bool) -> Option<Namespace> {
        let namespaces = self.namespaces.lock().unwrap();
        namespaces
            .iter()
            .find(|namespace| matches(namespace))
            .cloned()
    }

    fn default_namespace(&self) -> Namespace {
        self.namespaces.lock().unwrap()[0].clone()
    }
}

impl FakeOpenWhisk {
    /// Starts listening on a free loopback port, with a default namespace of random name
    /// and key.
    pub async fn start() -> FakeOpenWhisk {
        let default = Namespace::random();
        let shared = Arc::new(Shared {
            namespaces: Mutex::new(vec![default.clone()]),
            in_flight: AtomicUsize::new(0),
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
            default,
            port,
            runtime: Some(runtime),
            server: Mutex::new(Some(server)),
        }
    }

    /// `http://127.0.0.1:<port>`, for `OW_API_HOST`.
    pub fn api_host(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Adds a namespace with its own random name and key; requests with that key see only
    /// its triggers, limits and fault.
    pub fn add_namespace(&self) -> Namespace {
        let namespace = Namespace::random();
        self.shared
            .namespaces
            .lock()
            .unwrap()
            .push(namespace.clone());
        namespace
    }

    /// The default namespace's key, `<uuid>:<64 alphanumerics>`, for `OW_AUTH`.
    pub fn auth(&self) -> String {
        self.default.auth()
    }

    /// The default namespace (random, so `_` must really be resolved by the controller).
    pub fn namespace(&self) -> &str {
        self.default.name()
    }

    /// [`Namespace::create_trigger`] in the default namespace.
    pub fn create_trigger(&self, name: &str, active_rule: bool) {
        self.default.create_trigger(name, active_rule);
    }

    /// [`Namespace::delete_trigger`] in the default namespace.
    pub fn delete_trigger(&self, name: &str) {
        self.default.delete_trigger(name);
    }

    /// [`Namespace::set_fires_per_minute`] for the default namespace.
    pub fn set_fires_per_minute(&self, limit: Option<u32>) {
        self.default.set_fires_per_minute(limit);
    }

    /// [`Namespace::set_max_payload_bytes`] for the default namespace.
    pub fn set_max_payload_bytes(&self, limit: u64) {
        self.default.set_max_payload_bytes(limit);
    }

    /// [`Namespace::set_fault`] for the default namespace.
    pub fn set_fault(&self, fault: Fault) {
        self.default.set_fault(fault);
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

    /// [`Namespace::fires`] of the default namespace.
    pub fn fires(&self) -> Vec<RecordedFire> {
        self.default.fires()
    }

    /// [`Namespace::accepted`] of the default namespace.
    pub fn accepted(&self) -> Vec<RecordedFire> {
        self.default.accepted()
    }

    /// [`Namespace::delivered`] of the default namespace.
    pub fn delivered(&self) -> (BTreeSet<u64>, usize) {
        self.default.delivered()
    }

    /// [`Namespace::count_status`] of the default namespace.
    pub fn count_status(&self, status: u16) -> usize {
        self.default.count_status(status)
    }

    /// Requests being handled right now, in every namespace (see [`Fault::Slow`]).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
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
