//! The message path: message -> fire -> ack. At most `FIRE_CONCURRENCY` fires are in
//! flight; while all are busy the forwarder stops taking messages, which in turn stops
//! the MQTT source from reading (back-pressure instead of an unbounded buffer).

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::delivery::{Deliverer, Fire};
use crate::fire_body::{MessageBodies, MessageFields};
use crate::metrics::FireKind;
use crate::mqtt::{Acker, Message};

/// Turns messages into fires and acks each once its fire got a final answer.
pub struct Forwarder {
    pub deliverer: Arc<Deliverer>,
    pub acker: Acker,
    pub bodies: Arc<MessageBodies>,
    pub trigger: Arc<str>,
    pub url: Arc<Url>,
    pub concurrency: usize,
}

impl Forwarder {
    /// Forwards until the source closes `messages_rx`; returns the tracker of fires still
    /// in flight so shutdown can wait for them. Cancelling `abandon` stops retrying: the
    /// unacknowledged messages stay with the broker.
    pub async fn run(
        self,
        mut messages_rx: mpsc::Receiver<Message>,
        abandon: CancellationToken,
        fires: TaskTracker,
    ) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        while let Some(message) = messages_rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let deliverer = self.deliverer.clone();
            let acker = self.acker.clone();
            let bodies = self.bodies.clone();
            let trigger = self.trigger.clone();
            let url = self.url.clone();
            let abandon = abandon.clone();
            fires.spawn(async move {
                let _in_flight = deliverer.metrics.in_flight();
                let publish = &message.publish;
                let body = bodies.render(&MessageFields {
                    topic: &publish.topic,
                    payload: &publish.payload,
                    qos: publish.qos as u8,
                    retain: publish.retain,
                    received_at: message.received_at,
                });
                let fire = Fire {
                    kind: FireKind::Message,
                    trigger: &trigger,
                    url: &url,
                    body,
                    subject: &publish.topic,
                    deadline: None,
                };
                tokio::select! {
                    delivered = deliverer.deliver(fire) => if delivered.is_final() {
                        acker.ack(&message);
                    },
                    _ = abandon.cancelled() => {}
                }
                drop(permit);
            });
        }
    }
}
