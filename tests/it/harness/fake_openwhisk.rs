//! A fake OpenWhisk controller that behaves like the real one for everything the provider
//! touches (see `shared/reference/openwhisk.md`, "Checklist: a faithful fake controller"),
//! records every fire, and can inject faults or stop listening.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::wait::poll_until;

/// OpenWhisk's default payload limit (`whisk.activation.payload.max = 1 m`).
const MAX_PAYLOAD_BYTES: u64 = 1_048_576;
/// How long `accept_connections` may wait for the port to be free again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// A misbehaviour injected into trigger fires (POST only, after the auth check).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Fault {
    /// Behave normally.
    #[default]
    None,
    /// Answer this status with an OpenWhisk JSON error body.
    Status(u16),
    /// Answer this status with nginx's HTML error page (e.g. 502 when the controller is away).
    NginxHtml(u16),
    /// 429 with OpenWhisk's throttle body, and a `Retry-After` header if given.
    TooManyRequests {
        /// Value of the `Retry-After` header, if any.
        retry_after_secs: Option<u64>,
    },
    /// Answer normally, after this delay.
    Slow(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer this redirect status (301, 302, 303, 307, 308) with nginx's page and a
    /// `Location` naming the same trigger on this fake, as an nginx that moves `http` to
    /// `https` would. A client that follows it GETs the trigger, which answers 200, and
    /// may take that for an accepted fire.
    Redirect(u16),
    /// Answer this status (with a JSON error body) to fires whose body contains the string;
    /// other fires are handled normally.
    RejectBodiesContaining(String, u16),
}

/// One fire attempt (POST on a trigger), whatever its outcome.
#[derive(Clone, Debug)]
pub struct RecordedFire {
    /// Namespace as written in the path (so possibly `_`), percent-decoded.
    pub namespace: String,
    /// Trigger name, percent-decoded.
    pub trigger: String,
    /// The request body parsed as JSON; `Null` if it is empty or not JSON.
    pub body: Value,
    /// The request body as received.
    pub raw_body: Vec<u8>,
    /// Request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The status answered; 0 when the connection was closed without an answer.
    pub status: u16,
    /// When the request arrived.
    pub at: SystemTime,
}

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

/// A running accept loop and the way to stop it.
struct Server {
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
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
    /// Triggers of `namespace`, by name.
    triggers: HashMap<String, Trigger>,
    /// Shared with snapshots, so that copying them out holds the lock only briefly.
    fires: Vec<Arc<RecordedFire>>,
    /// `delivered_sequence_numbers` of the accepted fires, kept up to date.
    delivered: BTreeSet<u64>,
    duplicates: usize,
    fault: Fault,
    fires_per_minute: Option<u32>,
    /// Larger bodies are answered 413 (`allowedMaxPayloadSize` of the namespace).
    max_payload_bytes: u64,
    /// The throttle's fixed window: (epoch minute, fires counted in it).
    window: (u64, u32),
}

struct Trigger {
    active_rule: bool,
    parameters: Value,
    annotations: Value,
    updated: u64,
}

/// The service error that makes hyper drop the connection without answering.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for ResetConnection {}

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
            state: Mutex::new(State {
                max_payload_bytes: MAX_PAYLOAD_BYTES,
                ..State::default()
            }),
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
        let trigger = Trigger::new(active_rule, json!([]), json!([]));
        self.state().triggers.insert(name.to_string(), trigger);
    }

    /// Deletes a trigger; fires on it then get 404.
    pub fn delete_trigger(&self, name: &str) {
        self.state().triggers.remove(name);
    }

    /// Sets the fires allowed per wall-clock minute and starts counting afresh.
    ///
    /// `None`, the harness default, means unlimited; a real OpenWhisk allows **60**
    /// (`limits.triggers.fires.perMinute`). Every fire that passes auth and entitlement
    /// counts, including the ones then answered 429, 413, 400, 415, 404 or 204; fires
    /// answered by an injected [`Fault`] do not.
    pub fn set_fires_per_minute(&self, limit: Option<u32>) {
        let mut state = self.state();
        state.fires_per_minute = limit;
        state.window = (current_minute(), 0);
    }

    /// Sets the namespace's payload limit: fires with a larger `Content-Length` get 413.
    ///
    /// A real controller's limit is per namespace (`allowedMaxPayloadSize`, at most the
    /// system's `whisk.activation.payload.max`); the default is 1048576, as there.
    pub fn set_max_payload_bytes(&self, limit: u64) {
        self.state().max_payload_bytes = limit;
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
            let _ = server.stop_tx.send(());
            let _ = server.task.await;
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
            std::future::ready(listener.is_some())
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
        let snapshot = self.state().fires.clone();
        snapshot
            .iter()
            .map(|fire| RecordedFire::clone(fire))
            .collect()
    }

    /// The fires OpenWhisk accepted (202 or 204).
    pub fn accepted(&self) -> Vec<RecordedFire> {
        let snapshot = self.state().fires.clone();
        let accepted = snapshot.iter().filter(|fire| is_accepted(fire));
        accepted.map(|fire| RecordedFire::clone(fire)).collect()
    }

    /// What [`delivered_sequence_numbers`] says about [`FakeOpenWhisk::accepted`], but kept
    /// up to date as fires arrive: cheap to poll even with 100,000 fires.
    pub fn delivered(&self) -> (BTreeSet<u64>, usize) {
        let state = self.state();
        (state.delivered.clone(), state.duplicates)
    }

    /// How many fires were answered with `status`.
    pub fn count_status(&self, status: u16) -> usize {
        self.state()
            .fires
            .iter()
            .filter(|f| f.status == status)
            .count()
    }

    /// Requests being handled right now (see [`Fault::Slow`]).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
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

/// The sequence numbers delivered by accepted message fires, and how many came twice.
///
/// Reads `{"seq": n, ...}` from the `body` string of each `"type":"message"` fire and of
/// each message of a `"type":"batch"` fire.
pub fn delivered_sequence_numbers(fires: &[RecordedFire]) -> (BTreeSet<u64>, usize) {
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    for fire in fires.iter().filter(|f| is_accepted(f)) {
        for seq in sequence_numbers(&fire.body) {
            if !seen.insert(seq) {
                duplicates += 1;
            }
        }
    }
    (seen, duplicates)
}

/// The `seq` of a message fire's payload, or of each message of a batch fire.
fn sequence_numbers(fire_body: &Value) -> Vec<u64> {
    let messages = match fire_body.get("messages").and_then(Value::as_array) {
        Some(batch) => batch.iter().collect(),
        None => vec![fire_body],
    };
    let seq = |message: &Value| {
        let payload: Value = serde_json::from_str(message.get("body")?.as_str()?).ok()?;
        payload.get("seq")?.as_u64()
    };
    messages.into_iter().filter_map(seq).collect()
}

fn is_accepted(fire: &RecordedFire) -> bool {
    matches!(fire.status, 202 | 204)
}

impl Server {
    fn spawn(runtime: &Runtime, listener: std::net::TcpListener, shared: Arc<Shared>) -> Server {
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("register the listener");
            accept_loop(listener, shared, stop_rx).await;
        });
        Server { stop_tx, task }
    }
}

/// Serves connections until told to stop; then closes the listener and every connection.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop_rx => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |request| {
        // The handler runs in its own task, so a fire is processed to the end even if the
        // client goes away, as a real controller would.
        let handler = tokio::spawn(handle(Arc::clone(&shared), request));
        async move {
            let response = handler.await.expect("fake OpenWhisk handler panicked");
            response.ok_or(ResetConnection)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Counts a request as in flight while alive.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers one request; `None` closes the connection without an answer.
async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Option<Response<Body>> {
    let _in_flight = InFlight::enter(&shared.in_flight);
    let at = SystemTime::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    route(&shared, &parts, &body, at)
        .await
        .into_response(&random_alphanumeric(32))
}

async fn route(shared: &Shared, parts: &Parts, body: &Bytes, at: SystemTime) -> Answer {
    let Some(segments) = decode_path(parts.uri.path()) else {
        return Answer::error(400, "The request content was malformed:\nbad path encoding");
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["ping"] | ["api", "v1"]) => Answer::Text("pong"),
        (&Method::GET, ["api", "v1", "namespaces"]) => match check_auth(shared, parts) {
            Ok(()) => Answer::Json(200, json!([shared.namespace])),
            Err(denied) => denied,
        },
        (method, ["api", "v1", "namespaces", namespace, "triggers", name]) => {
            let request = TriggerRequest {
                shared,
                parts,
                namespace,
                name,
                body,
            };
            match *method {
                Method::POST => {
                    let answer = fire(&request).await;
                    request.record(answer.status(), at);
                    answer
                }
                Method::GET | Method::PUT | Method::DELETE => {
                    manage_trigger(&request).unwrap_or_else(|rejection| rejection)
                }
                _ => Answer::error(
                    405,
                    "HTTP method not allowed, supported methods: GET, PUT, DELETE, POST",
                ),
            }
        }
        _ => Answer::error(404, NOT_FOUND),
    }
}

/// A request on `/api/v1/namespaces/{namespace}/triggers/{name}`, segments decoded.
struct TriggerRequest<'a> {
    shared: &'a Shared,
    parts: &'a Parts,
    namespace: &'a str,
    name: &'a str,
    body: &'a Bytes,
}

impl TriggerRequest<'_> {
    /// 401, then 400 for an illegal name, then 403 for a foreign namespace.
    fn check_access(&self) -> Result<(), Answer> {
        check_auth(self.shared, self.parts)?;
        if !is_entity_name(self.name) {
            return Err(Answer::error(
                400,
                "The name of the entity contains illegal characters.",
            ));
        }
        if self.namespace != "_" && self.namespace != self.shared.namespace {
            let resource = format!("{}/{}", self.namespace, self.name);
            let message =
                format!("The supplied authentication is not authorized to access '{resource}'.");
            return Err(Answer::error(403, message));
        }
        Ok(())
    }

    /// A non-empty body must be a JSON object sent as `application/json`: else 415 or 400.
    fn json_body(&self) -> Result<Map<String, Value>, Answer> {
        if self.body.is_empty() {
            return Ok(Map::new());
        }
        let media_type = header(self.parts, CONTENT_TYPE.as_str()).unwrap_or_default();
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            let message =
                "The request's Content-Type is not supported. Expected:\napplication/json";
            return Err(Answer::error(415, message));
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(fields)) => Ok(fields),
            Ok(_) => Err(Answer::error(
                400,
                "The request content was malformed:\nObject expected",
            )),
            Err(e) => Err(Answer::error(
                400,
                format!("The request content was malformed:\n{e}"),
            )),
        }
    }

    fn record(&self, status: u16, at: SystemTime) {
        let headers = self.parts.headers.iter().map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        });
        let fire = RecordedFire {
            namespace: self.namespace.to_string(),
            trigger: self.name.to_string(),
            body: serde_json::from_slice(self.body).unwrap_or(Value::Null),
            raw_body: self.body.to_vec(),
            headers: headers.collect(),
            status,
            at,
        };
        let mut state = self.shared.state.lock().unwrap();
        if is_accepted(&fire) {
            for seq in sequence_numbers(&fire.body) {
                if !state.delivered.insert(seq) {
                    state.duplicates += 1;
                }
            }
        }
        state.fires.push(Arc::new(fire));
    }
}

/// POST on a trigger: auth, the injected fault, then the controller's checks.
async fn fire(request: &TriggerRequest<'_>) -> Answer {
    if let Err(denied) = check_auth(request.shared, request.parts) {
        return denied;
    }
    let fault = request.shared.state.lock().unwrap().fault.clone();
    match fault {
        Fault::None => {}
        Fault::Status(status) => return Answer::error(status, status_message(status)),
        Fault::NginxHtml(status) => return Answer::NginxPage(status),
        Fault::TooManyRequests { retry_after_secs } => {
            return Answer::Throttled(too_many_requests(61, 60), retry_after_secs);
        }
        Fault::Slow(delay) => tokio::time::sleep(delay).await,
        Fault::Reset => return Answer::Reset,
        Fault::Redirect(status) => {
            let host = header(request.parts, "host").unwrap_or_else(|| "127.0.0.1".into());
            let location = format!("http://{host}{}", request.parts.uri.path());
            return Answer::Redirect(status, location);
        }
        Fault::RejectBodiesContaining(needle, status) => {
            let needle = needle.as_bytes();
            let body = request.body;
            if needle.is_empty() || body.windows(needle.len()).any(|part| part == needle) {
                return Answer::error(status, status_message(status));
            }
        }
    }
    accept_fire(request).unwrap_or_else(|rejection| rejection)
}

/// Entitlement, throttle, size, body and lookup, in the controller's order; then 204 or 202.
fn accept_fire(request: &TriggerRequest<'_>) -> Result<Answer, Answer> {
    request.check_access()?;
    let mut state = request.shared.state.lock().unwrap();
    let minute = current_minute();
    if state.window.0 != minute {
        state.window = (minute, 0);
    }
    state.window.1 += 1;
    if let Some(allowed) = state.fires_per_minute
        && state.window.1 > allowed
    {
        return Err(Answer::Throttled(
            too_many_requests(state.window.1, allowed),
            None,
        ));
    }
    let content_length = header(request.parts, CONTENT_LENGTH.as_str())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if content_length > state.max_payload_bytes {
        let message = too_large(content_length, state.max_payload_bytes);
        return Err(Answer::error(413, message));
    }
    request.json_body()?;
    match state.triggers.get(request.name) {
        None => Err(Answer::error(404, NOT_FOUND)),
        Some(trigger) if trigger.active_rule => Ok(Answer::Activation(format!(
            "{:032x}",
            rand::random::<u128>()
        ))),
        Some(_) => Ok(Answer::NoContent),
    }
}

/// GET, PUT (`?overwrite=true` to replace) or DELETE a trigger.
fn manage_trigger(request: &TriggerRequest<'_>) -> Result<Answer, Answer> {
    request.check_access()?;
    let (namespace, name) = (&request.shared.namespace, request.name);
    let mut state = request.shared.state.lock().unwrap();
    let found = |trigger: Option<&Trigger>| match trigger {
        Some(trigger) => Ok(Answer::Json(200, trigger.to_json(namespace, name))),
        None => Err(Answer::error(404, NOT_FOUND)),
    };
    match request.parts.method {
        Method::GET => found(state.triggers.get(name)),
        Method::DELETE => found(state.triggers.remove(name).as_ref()),
        _ => {
            let query = request.parts.uri.query().unwrap_or_default();
            let overwrite = query.split('&').any(|pair| pair == "overwrite=true");
            let existing = state.triggers.get(name);
            if existing.is_some() && !overwrite {
                return Err(Answer::error(409, "resource already exists"));
            }
            let fields = request.json_body()?;
            let field = |key: &str| fields.get(key).cloned().unwrap_or_else(|| json!([]));
            // An update keeps the trigger's rules, as OpenWhisk does.
            let active_rule = existing.is_some_and(|t| t.active_rule);
            let trigger = Trigger::new(active_rule, field("parameters"), field("annotations"));
            let answer = Answer::Json(200, trigger.to_json(namespace, name));
            state.triggers.insert(name.to_string(), trigger);
            Ok(answer)
        }
    }
}

impl Trigger {
    fn new(active_rule: bool, parameters: Value, annotations: Value) -> Self {
        let updated = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Trigger {
            active_rule,
            parameters,
            annotations,
            updated,
        }
    }

    /// The trigger as `GET` returns it; `rules` only when it has one.
    fn to_json(&self, namespace: &str, name: &str) -> Value {
        let mut trigger = json!({
            "namespace": namespace, "name": name, "version": "0.0.1", "publish": false,
            "parameters": self.parameters, "annotations": self.annotations,
            "limits": {}, "updated": self.updated,
        });
        if self.active_rule {
            let action = json!({ "path": namespace, "name": format!("{name}-action") });
            let rule = json!({ "action": action, "status": "active" });
            let rules = Map::from_iter([(format!("{namespace}/{name}-rule"), rule)]);
            trigger["rules"] = Value::Object(rules);
        }
        trigger
    }
}

/// Basic auth against the one valid key: 401 "missing" or "invalid" otherwise.
fn check_auth(shared: &Shared, parts: &Parts) -> Result<(), Answer> {
    let Some(value) = header(parts, "authorization") else {
        return Err(Answer::error(
            401,
            "The resource requires authentication, which was not supplied with the request",
        ));
    };
    let credentials = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| BASE64_STANDARD.decode(encoded.trim()).ok());
    if credentials.as_deref() == Some(shared.auth.as_bytes()) {
        Ok(())
    } else {
        Err(Answer::error(401, "The supplied authentication is invalid"))
    }
}

/// What to answer, before it becomes a response (with the request's transaction id).
enum Answer {
    /// `{"error": message, "code": tid}`, with the Basic challenge on 401.
    Error(u16, String),
    /// 429 with OpenWhisk's body and, if given, a `Retry-After` header.
    Throttled(String, Option<u64>),
    Json(u16, Value),
    /// 202 with this activation id in the body and a header.
    Activation(String),
    NoContent,
    Text(&'static str),
    /// nginx's HTML error page.
    NginxPage(u16),
    /// nginx's page for a redirect, with this `Location`.
    Redirect(u16, String),
    /// Close the connection without answering.
    Reset,
}

impl Answer {
    fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer::Error(status, message.into())
    }

    /// The status recorded for this answer; 0 for no answer.
    fn status(&self) -> u16 {
        match self {
            Answer::Error(status, _)
            | Answer::Json(status, _)
            | Answer::NginxPage(status)
            | Answer::Redirect(status, _) => *status,
            Answer::Throttled(..) => 429,
            Answer::Activation(_) => 202,
            Answer::NoContent => 204,
            Answer::Text(_) => 200,
            Answer::Reset => 0,
        }
    }

    fn into_response(self, tid: &str) -> Option<Response<Body>> {
        let status = self.status();
        let response = Response::builder().status(status);
        let json = |response: hyper::http::response::Builder, body: Value| {
            response
                .header(CONTENT_TYPE, "application/json")
                .header("x-request-id", tid)
                .body(Body::from(body.to_string()))
        };
        let error_body = |message: String| json!({ "error": message, "code": tid });
        let response = match self {
            Answer::Reset => return None,
            Answer::Error(401, message) => json(
                response.header("www-authenticate", "Basic realm=\"OpenWhisk secure realm\""),
                error_body(message),
            ),
            Answer::Error(_, message) => json(response, error_body(message)),
            Answer::Throttled(message, retry_after_secs) => match retry_after_secs {
                Some(secs) => json(response.header("retry-after", secs), error_body(message)),
                None => json(response, error_body(message)),
            },
            Answer::Json(_, body) => json(response, body),
            Answer::Activation(id) => json(
                response.header("x-openwhisk-activation-id", &id),
                json!({ "activationId": id }),
            ),
            Answer::NoContent => response.header("x-request-id", tid).body(Body::empty()),
            Answer::Text(text) => response
                .header(CONTENT_TYPE, "text/plain; charset=UTF-8")
                .header("x-request-id", tid)
                .body(Body::from(text)),
            Answer::NginxPage(_) => response
                .header(CONTENT_TYPE, "text/html")
                .body(Body::from(nginx_page(status))),
            Answer::Redirect(_, location) => response
                .header(CONTENT_TYPE, "text/html")
                .header("location", location)
                .body(Body::from(nginx_page(status))),
        };
        Some(response.expect("a valid response"))
    }
}

/// OpenWhisk's entity name rule: `\A([\w]|[\w][\w@ .&-]{0,254}[\w@.&-])\z`.
fn is_entity_name(name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = name.chars().collect();
    match chars.as_slice() {
        [] => false,
        [only] => word(*only),
        [first, middle @ .., last] => {
            chars.len() <= 256
                && word(*first)
                && middle.iter().all(|&c| word(c) || "@ .&-".contains(c))
                && (word(*last) || "@.&-".contains(*last))
        }
    }
}

/// The path's segments, percent-decoded; `None` if one is not UTF-8 once decoded.
fn decode_path(path: &str) -> Option<Vec<String>> {
    let decode = |segment: &str| {
        let mut bytes = Vec::with_capacity(segment.len());
        let mut rest = segment.as_bytes();
        while let Some((&byte, tail)) = rest.split_first() {
            let escaped = tail
                .get(..2)
                .filter(|_| byte == b'%')
                .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
            match escaped {
                Some(decoded) => {
                    bytes.push(decoded);
                    rest = &tail[2..];
                }
                None => {
                    bytes.push(byte);
                    rest = tail;
                }
            }
        }
        String::from_utf8(bytes).ok()
    };
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(decode)
        .collect()
}

fn header(parts: &Parts, name: &str) -> Option<String> {
    let value = parts.headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// OpenWhisk's message for an injected status.
fn status_message(status: u16) -> String {
    match status {
        400 => "The request content was malformed:\ninjected by the test".to_string(),
        401 => "The supplied authentication is invalid".to_string(),
        404 => NOT_FOUND.to_string(),
        413 => too_large(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES),
        429 => too_many_requests(61, 60),
        500 => "There was an internal server error.".to_string(),
        503 => "System is overloaded, try again later.".to_string(),
        _ => reason(status).to_string(),
    }
}

const NOT_FOUND: &str = "The requested resource does not exist.";

fn too_many_requests(count: u32, allowed: u32) -> String {
    format!("Too many requests in the last minute (count: {count}, allowed: {allowed}).")
}

fn too_large(content_length: u64, limit: u64) -> String {
    format!("Request larger than allowed: {content_length} > {limit} bytes.")
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The error page nginx sends when the controller behind it fails.
fn nginx_page(status: u16) -> String {
    let title = format!("{status} {}", reason(status));
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
         <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}

fn current_minute() -> u64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    millis / 60_000
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
