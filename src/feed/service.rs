//! The feed's registrations and their routes: CREATE, READ, UPDATE and DELETE as SPEC
//! section 8 defines them, each verified with OpenWhisk before anything is stored, made
//! durable in the registry before it is answered, and applied to the connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use super::registry::{FeedStatus, Reason, Registration, Registry, RegistryError};
use crate::config::{
    ApiKey, BrokerUrl, Credentials, FeedConfig, MqttConfig, Spellings, filter_error,
};
use crate::connections::{Connections, broker_at};
use crate::delivery::events::Events;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::openwhisk::{Sink, Target};
use crate::routes::{Destination, DisableNotice, Origin, Routes, Subscription};

/// A request the feed could not carry out: the HTTP status to answer and why, naming the
/// field at fault. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedError {
    pub status: StatusCode,
    pub message: String,
}

impl FeedError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> FeedError {
        FeedError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> FeedError {
        FeedError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<RegistryError> for FeedError {
    fn from(error: RegistryError) -> FeedError {
        tracing::error!(error = %error, "feed registry");
        FeedError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the provider could not store the registration: {error}"),
        )
    }
}

/// The fields a CREATE sets, or an UPDATE changes.
#[derive(Debug, Default)]
pub struct Params {
    pub topic: Option<String>,
    /// The broker URL as given (may hold a password).
    pub url: Option<SecretString>,
    pub qos: Option<u8>,
    pub active: Option<bool>,
}

/// The registrations and what they route; one operation at a time.
pub struct Feed {
    registry: Registry,
    connections: Arc<Connections>,
    sink: Arc<dyn Sink>,
    config: FeedConfig,
    events: Events,
    metrics: Metrics,
    disabled_tx: mpsc::UnboundedSender<DisableNotice>,
    /// The route of each active registration, by (namespace, trigger).
    active: Mutex<HashMap<(String, String), ActiveRoute>>,
}

struct ActiveRoute {
    broker: MqttConfig,
    filter: String,
    destination: Arc<Destination>,
    /// The routes of its connection, which know what the broker answered.
    routes: Arc<Routes>,
}

/// How long a CREATE or UPDATE waits for the broker to confirm the subscription, so that
/// what is published after the answer is fired. Longer (broker unreachable), the
/// registration stands and is subscribed once the broker is back.
const SUBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a caller asked about: a trigger, and the key they asked with.
pub struct Caller<'a> {
    pub namespace: &'a str,
    pub trigger: &'a str,
    pub key: &'a ApiKey,
}

impl Feed {
    /// The feed over `registry`; its registrations are routed by [`Feed::start`].
    pub fn new(
        registry: Registry,
        connections: Arc<Connections>,
        sink: Arc<dyn Sink>,
        config: FeedConfig,
        health: Health,
        metrics: Metrics,
    ) -> (Arc<Feed>, mpsc::UnboundedReceiver<DisableNotice>) {
        let (disabled_tx, disabled_rx) = mpsc::unbounded_channel();
        let feed = Feed {
            registry,
            connections,
            sink,
            config,
            events: Events::new(health, metrics.clone()),
            metrics,
            disabled_tx,
            active: Mutex::new(HashMap::new()),
        };
        (Arc::new(feed), disabled_rx)
    }

    /// Routes every active registration of the registry, as the last run left it.
    pub async fn start(&self) -> Result<(), FeedError> {
        let registry = self.registry.clone();
        let registrations = blocking(move || registry.all()).await?;
        let mut active = self.active.lock().await;
        for registration in &registrations {
            if !registration.status.active {
                self.show_inactive(registration);
                continue;
            }
            // One registration the configuration no longer allows (its broker was taken
            // off FEED_ALLOWED_BROKERS) must not stop the others.
            match self.route(registration) {
                Ok(route) => {
                    active.insert(key_of(registration), route);
                    self.events.feed_trigger_routed(
                        &registration.namespace.as_str().into(),
                        &registration.trigger.as_str().into(),
                    );
                }
                Err(error) => {
                    let problem = format!("not routed: {error:#}");
                    tracing::error!(
                        namespace = registration.namespace,
                        trigger = registration.trigger,
                        problem,
                        "feed trigger"
                    );
                    self.events.feed_trigger(
                        &registration.namespace.as_str().into(),
                        &registration.trigger.as_str().into(),
                        Some(&problem),
                    );
                }
            }
        }
        self.metrics.feed_registrations(registrations.len());
        tracing::info!(
            registrations = registrations.len(),
            active = active.len(),
            "feed registry loaded"
        );
        Ok(())
    }

    /// Records every disabling the destinations report, until the channel closes.
    pub async fn record_disabled(&self, mut disabled_rx: mpsc::UnboundedReceiver<DisableNotice>) {
        while let Some(notice) = disabled_rx.recv().await {
            if let Err(error) = self.disable(notice).await {
                tracing::error!(error = %error.message, "could not record a disabled feed trigger");
            }
        }
    }

    /// CREATE: registers (or replaces) the caller's trigger.
    pub async fn create(&self, caller: &Caller<'_>, params: Params) -> Result<Value, FeedError> {
        let topic = params.topic.ok_or_else(|| {
            FeedError::bad_request(
                "topic is required: the MQTT topic filter whose messages fire the trigger",
            )
        })?;
        let registration = Registration {
            namespace: caller.namespace.to_owned(),
            trigger: caller.trigger.to_owned(),
            topic,
            broker: params.url,
            qos: params.qos.unwrap_or(1),
            key: clone_key(caller.key),
            status: FeedStatus {
                active: params.active.unwrap_or(true),
                changed_at_ms: Utc::now().timestamp_millis(),
                reason: None,
            },
        };
        self.check(&registration)?;
        self.verify(caller, false).await?;
        self.store(registration).await
    }

    /// READ: the registration's config and status.
    pub async fn read(&self, caller: &Caller<'_>) -> Result<Value, FeedError> {
        self.verify(caller, false).await?;
        let registration = self.stored(caller).await?;
        Ok(self.document(&registration))
    }

    /// UPDATE (and PAUSE / UNPAUSE): changes the fields given.
    pub async fn update(&self, caller: &Caller<'_>, params: Params) -> Result<Value, FeedError> {
        self.verify(caller, false).await?;
        let mut registration = self.stored(caller).await?;
        if let Some(topic) = params.topic {
            registration.topic = topic;
        }
        if let Some(url) = params.url {
            registration.broker = Some(url);
        }
        if let Some(qos) = params.qos {
            registration.qos = qos;
        }
        if let Some(active) = params.active
            && active != registration.status.active
        {
            registration.status = FeedStatus {
                active,
                changed_at_ms: Utc::now().timestamp_millis(),
                reason: (!active).then(|| Reason {
                    kind: "USER".to_owned(),
                    status_code: None,
                    message: "paused".to_owned(),
                }),
            };
        }
        registration.key = clone_key(caller.key);
        self.check(&registration)?;
        self.store(registration).await
    }

    /// DELETE: unregisters; no fire reaches OpenWhisk once answered. A trigger already
    /// deleted in OpenWhisk (404) may be unregistered with the key it was registered with.
    pub async fn delete(&self, caller: &Caller<'_>) -> Result<Value, FeedError> {
        let gone = self.verify(caller, true).await?;
        if gone {
            let stored = self.stored(caller).await?;
            let same_key = stored.key.uuid == caller.key.uuid
                && stored.key.key.expose_secret() == caller.key.key.expose_secret();
            if !same_key {
                return Err(FeedError::new(
                    StatusCode::NOT_FOUND,
                    "the trigger does not exist in OpenWhisk, and the key is not the one it was registered with",
                ));
            }
        }
        self.remove(caller.namespace, caller.trigger).await?;
        Ok(
            json!({"status": "deleted", "trigger": format!("/{}/{}", caller.namespace, caller.trigger)}),
        )
    }

    /// The legacy API's DELETE, which carries no credentials (see README, security).
    pub async fn delete_unverified(&self, namespace: &str, trigger: &str) -> Result<(), FeedError> {
        self.remove(namespace, trigger).await
    }

    async fn remove(&self, namespace: &str, trigger: &str) -> Result<(), FeedError> {
        let mut active = self.active.lock().await;
        let registry = self.registry.clone();
        let (ns, name) = (namespace.to_owned(), trigger.to_owned());
        let existed = blocking(move || registry.remove(&ns, &name)).await?;
        let key = (namespace.to_owned(), trigger.to_owned());
        if let Some(route) = active.remove(&key) {
            self.unroute(route, None).await;
        }
        if !existed {
            return Err(not_registered(namespace, trigger));
        }
        self.events
            .feed_trigger_deleted(&namespace.into(), &trigger.into());
        self.metrics.feed_registrations_changed(-1);
        tracing::info!(namespace, trigger, "feed trigger deleted");
        Ok(())
    }

    /// Checks that the caller's key works and the trigger exists, with a GET of the
    /// trigger. With `gone_ok`, a 404 is an answer (`Ok(true)`) rather than an error.
    async fn verify(&self, caller: &Caller<'_>, gone_ok: bool) -> Result<bool, FeedError> {
        let target = Target::new(Some(caller.key), caller.namespace, caller.trigger);
        let Some(answer) = self.sink.check_trigger(&target).await else {
            // A dry run sends nothing to OpenWhisk, so there is nothing to check against.
            return Ok(false);
        };
        match answer.status.map(|s| s.as_u16()) {
            Some(200) => Ok(false),
            Some(404) if gone_ok => Ok(true),
            Some(code @ (401 | 403 | 404)) => Err(FeedError::new(
                StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN),
                format!(
                    "OpenWhisk answered {code} for /{}/{}: {}",
                    caller.namespace, caller.trigger, answer.detail
                ),
            )),
            Some(code) => Err(FeedError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cannot verify the trigger with OpenWhisk, which answered {code}: {}",
                    answer.detail
                ),
            )),
            None => Err(FeedError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cannot verify the trigger with OpenWhisk: {}",
                    answer.detail
                ),
            )),
        }
    }

    /// Stores `registration` (durably, before answering) and routes it in place of what
    /// was there.
    async fn store(&self, registration: Registration) -> Result<Value, FeedError> {
        let key = key_of(&registration);
        let (previous, waiting) = {
            let mut active = self.active.lock().await;
            let previous = self.get(&key).await?;
            self.put(&registration).await?;
            match self.activate(&mut active, &registration).await {
                Ok(waiting) => (previous, waiting),
                Err(error) => {
                    // Not routable (its connection could not be built): as before.
                    match &previous {
                        Some(previous) => self.put(previous).await?,
                        None => {
                            let registry = self.registry.clone();
                            let (ns, name) = key.clone();
                            blocking(move || registry.remove(&ns, &name)).await?;
                        }
                    }
                    return Err(error);
                }
            }
        };
        // Without the lock: a broker that does not answer must not hold up every other
        // registration for the SUBACK's timeout.
        if let Some((routes, filter, destination)) = waiting {
            match routes.subscription(&filter, SUBACK_TIMEOUT).await {
                Subscription::Subscribed => {}
                Subscription::Refused => {
                    self.undo(&key, &destination, previous).await?;
                    return Err(FeedError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "topic: the broker refused to subscribe {filter:?} (its ACL); the registration is as it was before"
                        ),
                    ));
                }
                Subscription::Pending => tracing::warn!(
                    namespace = registration.namespace,
                    trigger = registration.trigger,
                    timeout_secs = SUBACK_TIMEOUT.as_secs(),
                    "feed trigger registered, but the broker has not confirmed the subscription yet; it is subscribed once the broker answers"
                ),
            }
        }
        if previous.is_none() {
            self.metrics.feed_registrations_changed(1);
        }
        tracing::info!(
            namespace = registration.namespace,
            trigger = registration.trigger,
            topic = registration.topic,
            active = registration.status.active,
            replaced = previous.is_some(),
            "feed trigger registered"
        );
        Ok(self.document(&registration))
    }

    /// Routes `registration` (if active) in place of what `active` held for it: the new
    /// route first, so that the same filter on the same connection is never unsubscribed
    /// in between, and the old destination hands its messages in flight to the new one.
    /// Returns what to wait on for the new route's SUBACK.
    async fn activate(
        &self,
        active: &mut HashMap<(String, String), ActiveRoute>,
        registration: &Registration,
    ) -> Result<Option<(Arc<Routes>, String, Arc<Destination>)>, FeedError> {
        let key = key_of(registration);
        let route = match registration.status.active {
            true => Some(self.route(registration).map_err(|error| {
                FeedError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))
            })?),
            false => None,
        };
        let waiting = route
            .as_ref()
            .map(|r| (r.routes.clone(), r.filter.clone(), r.destination.clone()));
        let old = match route {
            Some(route) => active.insert(key, route),
            None => active.remove(&key),
        };
        if let Some(old) = old {
            self.unroute(old, waiting.as_ref().map(|(_, _, d)| d)).await;
        }
        if registration.status.active {
            self.events.feed_trigger_routed(
                &registration.namespace.as_str().into(),
                &registration.trigger.as_str().into(),
            );
        } else {
            self.show_inactive(registration);
        }
        Ok(waiting)
    }

    /// Puts back what a CREATE or UPDATE replaced, unless another request has replaced
    /// `ours` since: nothing half-registered.
    async fn undo(
        &self,
        key: &(String, String),
        ours: &Arc<Destination>,
        previous: Option<Registration>,
    ) -> Result<(), FeedError> {
        let mut active = self.active.lock().await;
        let still_ours = active
            .get(key)
            .is_some_and(|route| Arc::ptr_eq(&route.destination, ours));
        if !still_ours {
            return Ok(());
        }
        match previous {
            Some(previous) => {
                self.put(&previous).await?;
                self.activate(&mut active, &previous).await?;
            }
            None => {
                let registry = self.registry.clone();
                let (ns, name) = key.clone();
                blocking(move || registry.remove(&ns, &name)).await?;
                if let Some(route) = active.remove(key) {
                    self.unroute(route, None).await;
                }
                self.events
                    .feed_trigger_deleted(&key.0.as_str().into(), &key.1.as_str().into());
            }
        }
        Ok(())
    }

    async fn get(&self, key: &(String, String)) -> Result<Option<Registration>, FeedError> {
        let registry = self.registry.clone();
        let (ns, name) = key.clone();
        blocking(move || registry.get(&ns, &name)).await
    }

    async fn put(&self, registration: &Registration) -> Result<(), FeedError> {
        let registry = self.registry.clone();
        let stored = registration.clone();
        blocking(move || registry.put(&stored)).await
    }

    /// Records a disabling: the registration stays, inactive, with the reason.
    async fn disable(&self, notice: DisableNotice) -> Result<(), FeedError> {
        let mut active = self.active.lock().await;
        let key = (notice.namespace.clone(), notice.trigger.clone());
        // Only the route that reported it: a re-CREATE since then replaced it.
        let Some(route) = active.get(&key) else {
            return Ok(());
        };
        if !route.destination.is_retired() {
            return Ok(());
        }
        if let Some(route) = active.remove(&key) {
            // Unrouted first: a failed write below must not leave its filter subscribed.
            self.unroute(route, None).await;
        }
        let registry = self.registry.clone();
        let (ns, name) = key.clone();
        let Some(mut registration) = blocking(move || registry.get(&ns, &name)).await? else {
            return Ok(());
        };
        let message = format!(
            "Automatically disabled after receiving a {} status code when firing the trigger: {}",
            notice.status, notice.message
        );
        registration.status = FeedStatus {
            active: false,
            changed_at_ms: Utc::now().timestamp_millis(),
            reason: Some(Reason {
                kind: "AUTO".to_owned(),
                status_code: Some(notice.status),
                message: message.clone(),
            }),
        };
        let registry = self.registry.clone();
        let stored = registration.clone();
        blocking(move || registry.put(&stored)).await?;
        tracing::error!(
            namespace = notice.namespace,
            trigger = notice.trigger,
            status = notice.status,
            after_secs = self.config.disable_after.as_secs(),
            "feed trigger disabled: OpenWhisk kept refusing its fires (deleted or key revoked?); its messages no longer wait for it. Re-create it to enable it again"
        );
        self.metrics.feed_trigger_disabled();
        self.show_inactive(&registration);
        Ok(())
    }

    async fn stored(&self, caller: &Caller<'_>) -> Result<Registration, FeedError> {
        let registry = self.registry.clone();
        let (ns, name) = (caller.namespace.to_owned(), caller.trigger.to_owned());
        blocking(move || registry.get(&ns, &name))
            .await?
            .ok_or_else(|| not_registered(caller.namespace, caller.trigger))
    }

    /// Every field of `registration` a caller may set, checked (SPEC section 8).
    fn check(&self, registration: &Registration) -> Result<(), FeedError> {
        if let Some(error) = filter_error(&registration.topic) {
            return Err(FeedError::bad_request(format!(
                "topic {:?} is {error}",
                registration.topic
            )));
        }
        if registration.qos > 2 {
            return Err(FeedError::bad_request(format!(
                "qos must be 0, 1 or 2, got {}",
                registration.qos
            )));
        }
        self.broker_of(registration).map(|_| ())
    }

    /// The broker a registration names, or `MQTT_URL`'s; refused unless it is that one
    /// or in `FEED_ALLOWED_BROKERS`.
    fn broker_of(&self, registration: &Registration) -> Result<MqttConfig, FeedError> {
        let base = self.connections.base();
        let Some(url) = &registration.broker else {
            return Ok(base.clone());
        };
        let url = BrokerUrl::parse(url.expose_secret(), Spellings::Feed)
            .map_err(|error| FeedError::bad_request(format!("url: {error}")))?;
        let own = url.host == base.host.to_ascii_lowercase() && url.port == base.port;
        let allowed = self
            .config
            .allowed_brokers
            .iter()
            .any(|(host, port)| *host == url.host && *port == url.port);
        if !own && !allowed {
            return Err(FeedError::bad_request(format!(
                "url: broker {}:{} is neither MQTT_URL's nor in FEED_ALLOWED_BROKERS",
                url.host, url.port
            )));
        }
        let credentials = match url.credentials {
            Some((username, password)) => Some(Credentials {
                username,
                password: password.map(SecretString::from),
            }),
            // The provider's own broker, named without credentials: its own ones.
            None if own => base.credentials.clone(),
            None => None,
        };
        Ok(broker_at(base, &url.host, url.port, url.tls, credentials))
    }

    fn route(&self, registration: &Registration) -> anyhow::Result<ActiveRoute> {
        let broker = self
            .broker_of(registration)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let target = Target::new(
            Some(&registration.key),
            &registration.namespace,
            &registration.trigger,
        );
        let origin = Origin::Feed {
            disable_after: self.config.disable_after,
            disabled: self.disabled_tx.clone(),
        };
        let destination = Arc::new(Destination::new(target, origin));
        let routes = self
            .connections
            .add_route(&broker, &registration.topic, &destination)?;
        Ok(ActiveRoute {
            broker,
            filter: registration.topic.clone(),
            destination,
            routes,
        })
    }

    /// Removes `route`; with a `successor`, its messages in flight go there.
    async fn unroute(&self, route: ActiveRoute, successor: Option<&Arc<Destination>>) {
        self.connections
            .remove_route(&route.broker, &route.filter, &route.destination, successor)
            .await;
    }

    /// An inactive registration is shown in `/readyz`, with why.
    fn show_inactive(&self, registration: &Registration) {
        let why = match &registration.status.reason {
            Some(reason) if reason.kind == "AUTO" => format!("disabled: {}", reason.message),
            _ => "paused".to_owned(),
        };
        self.events.feed_trigger(
            &registration.namespace.as_str().into(),
            &registration.trigger.as_str().into(),
            Some(&why),
        );
    }

    /// READ's answer, in the shape of OpenWhisk's alarms feed; the broker URL without
    /// its password, never the key.
    fn document(&self, registration: &Registration) -> Value {
        let url = match &registration.broker {
            Some(url) => shown_url(url.expose_secret()),
            None => {
                let base = self.connections.base();
                let scheme = if base.tls.is_some() { "mqtts" } else { "mqtt" };
                format!("{scheme}://{}:{}", base.host, base.port)
            }
        };
        let status = &registration.status;
        let changed =
            DateTime::<Utc>::from_timestamp_millis(status.changed_at_ms).unwrap_or_default();
        let mut shown = json!({
            "active": status.active,
            "dateChanged": status.changed_at_ms,
            "dateChangedISO": changed.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        if let Some(reason) = &status.reason {
            shown["reason"] = json!({
                "kind": reason.kind,
                "statusCode": reason.status_code,
                "message": reason.message,
            });
        }
        json!({
            "config": {
                "namespace": registration.namespace,
                "name": registration.trigger,
                "topic": registration.topic,
                "url": url,
                "qos": registration.qos,
            },
            "status": shown,
        })
    }
}

/// `url` without its password (`mqtt://user@host:port`); a URL that does not parse
/// (it was checked when stored) is shown as nothing rather than risk the password.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string().trim_end_matches('/').to_owned()
        }
        Err(_) => String::new(),
    }
}

fn key_of(registration: &Registration) -> (String, String) {
    (registration.namespace.clone(), registration.trigger.clone())
}

fn clone_key(key: &ApiKey) -> ApiKey {
    ApiKey {
        uuid: key.uuid.clone(),
        key: key.key.clone(),
    }
}

fn not_registered(namespace: &str, trigger: &str) -> FeedError {
    FeedError::new(
        StatusCode::NOT_FOUND,
        format!("no feed registration for /{namespace}/{trigger}"),
    )
}

/// Runs a registry call off the async thread: a durable write waits for fsync.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, FeedError> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(FeedError::from),
        Err(error) => Err(FeedError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the registry call failed: {error}"),
        )),
    }
}
