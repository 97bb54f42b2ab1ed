//! Routes (SPEC section 7): which triggers a message fires. A route is a topic filter and
//! a [`Destination`] (a trigger with the key it is fired with). Each MQTT connection has
//! its own [`Routes`]: the forwarder looks a message's destinations up in it, and the
//! source subscribes what it holds, told of every change.
//!
//! Lookup walks a topic trie, so a message costs the same with one filter or ten
//! thousand.

mod destination;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::topic_trie::FilterTrie;

pub use destination::{Destination, DisableNotice, Origin};

/// One connection's routes, shared by its source and its forwarder.
pub struct Routes {
    table: RwLock<RouteTable>,
    /// Wakes the source when filters were added or removed, to (un)subscribe them.
    pub changed: Notify,
    /// What the broker answered to each filter's SUBSCRIBE on this connection, so that a
    /// feed CREATE can answer once its messages are really coming.
    answered: Mutex<BTreeMap<String, Subscription>>,
    /// Wakes those waiting for a SUBACK.
    suback: Notify,
}

/// What the broker answered to the SUBSCRIBE of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    Subscribed,
    /// The broker refused it (its ACL).
    Refused,
    /// No answer came in time (the broker is unreachable): it is subscribed once it is.
    Pending,
}

/// Filters and their destinations.
pub struct RouteTable {
    filters: FilterTrie<Filter>,
    metrics: Metrics,
}

struct Filter {
    destinations: Vec<Arc<Destination>>,
    /// `messages_received_total` of this filter, looked up once.
    received: Counter,
}

impl Routes {
    pub fn new(metrics: Metrics) -> Routes {
        Routes {
            table: RwLock::new(RouteTable {
                filters: FilterTrie::default(),
                metrics,
            }),
            changed: Notify::new(),
            answered: Mutex::new(BTreeMap::new()),
            suback: Notify::new(),
        }
    }

    /// The source's record of what the broker answered to the SUBSCRIBE of `filter`.
    pub fn answered(&self, filter: &str, subscription: Subscription) {
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        answered.insert(filter.to_owned(), subscription);
        drop(answered);
        self.suback.notify_waiters();
    }

    /// Waits up to `timeout` for the broker's answer to the SUBSCRIBE of `filter`.
    pub async fn subscription(&self, filter: &str, timeout: Duration) -> Subscription {
        let deadline = Instant::now() + timeout;
        loop {
            let suback = self.suback.notified();
            tokio::pin!(suback);
            suback.as_mut().enable();
            let answer = {
                let answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
                answered.get(filter).copied()
            };
            if let Some(answer @ (Subscription::Subscribed | Subscription::Refused)) = answer {
                return answer;
            }
            if tokio::time::timeout_at(deadline, suback).await.is_err() {
                return Subscription::Pending;
            }
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, RouteTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, RouteTable> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `filter` to `destination` (once, however often it is added).
    pub fn add(&self, filter: &str, destination: &Arc<Destination>) {
        let mut table = self.write();
        let metrics = table.metrics.clone();
        let entry = table.filters.entry_or_insert_with(filter, || Filter {
            destinations: Vec::new(),
            received: metrics.received_counter(filter),
        });
        let new_filter = entry.destinations.is_empty();
        if !entry
            .destinations
            .iter()
            .any(|d| Arc::ptr_eq(d, destination))
        {
            entry.destinations.push(destination.clone());
        }
        drop(table);
        if new_filter {
            self.changed.notify_one();
        }
    }

    /// Stops routing `filter` to `destination`; a filter no route uses any more is
    /// unsubscribed.
    pub fn remove(&self, filter: &str, destination: &Arc<Destination>) {
        let mut table = self.write();
        let Some(entry) = table.filters.get_mut(filter) else {
            return;
        };
        entry.destinations.retain(|d| !Arc::ptr_eq(d, destination));
        if entry.destinations.is_empty() {
            table.filters.remove(filter);
            drop(table);
            let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
            answered.remove(filter);
            drop(answered);
            self.changed.notify_one();
        }
    }
}

impl RouteTable {
    /// The destinations of a message on `topic`, each once however many of its filters
    /// match, into `out` (cleared first); counts the message for every matching filter.
    pub fn route(&self, topic: &str, out: &mut Vec<Arc<Destination>>) {
        out.clear();
        self.filters.for_each_match(topic, |_, filter| {
            filter.received.inc();
            for destination in &filter.destinations {
                if !out.iter().any(|d| Arc::ptr_eq(d, destination)) {
                    out.push(destination.clone());
                }
            }
        });
    }

    /// Every filter routed, to subscribe.
    pub fn filters(&self) -> Vec<String> {
        self.filters.filters().map(str::to_owned).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openwhisk::Target;

    fn destination(trigger: &str) -> Arc<Destination> {
        Arc::new(Destination::new(
            Target::new(None, "_", trigger),
            Origin::Static,
        ))
    }

    fn triggers(routes: &Routes, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        routes.read().route(topic, &mut out);
        let mut names: Vec<String> = out.iter().map(|d| d.target.trigger.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_message_fires_every_matching_destination_once() {
        let metrics = Metrics::default();
        let routes = Routes::new(metrics.clone());
        let (a, b) = (destination("a"), destination("b"));
        routes.add("dc1/#", &a);
        routes.add("dc1/sensors/+", &a);
        routes.add("dc1/sensors/+", &b);
        assert_eq!(triggers(&routes, "dc1/sensors/t1"), ["a", "b"]);
        assert_eq!(triggers(&routes, "dc1/status"), ["a"]);
        assert!(triggers(&routes, "dc2/sensors/t1").is_empty());
        let counted = r#"messages_received_total{filter="dc1/sensors/+"}"#;
        assert_eq!(metrics.sample(counted), 1.0);
    }

    #[test]
    fn a_filter_is_unsubscribed_once_no_route_uses_it() {
        let routes = Routes::new(Metrics::default());
        let (a, b) = (destination("a"), destination("b"));
        routes.add("dc1/#", &a);
        routes.add("dc1/#", &b);
        routes.remove("dc1/#", &a);
        assert_eq!(routes.read().filters(), ["dc1/#"]);
        assert_eq!(triggers(&routes, "dc1/x"), ["b"]);
        routes.remove("dc1/#", &b);
        assert!(routes.read().is_empty());
        assert!(triggers(&routes, "dc1/x").is_empty());
    }
}
