//! What a forwarder takes: messages straight from the broker, or (with `SPOOL=true`)
//! records read back from the spool; and how each is let go once its fires are final.

use tokio::sync::mpsc;

use crate::fire_body::MessageFields;
use crate::mqtt::{Acker, Message};
use crate::spool::{Spool, Spooled};

/// Where a forwarder's messages come from.
pub enum Intake {
    /// From the source: each is acknowledged to the broker when final.
    Broker(mpsc::Receiver<Message>, Acker),
    /// From the spool's reader: each is completed in the spool when final.
    Spool(mpsc::Receiver<Spooled>, Spool),
}

impl Intake {
    /// The next message; `None` once its sender is gone.
    pub async fn recv(&mut self) -> Option<Incoming> {
        match self {
            Intake::Broker(rx, acker) => rx.recv().await.map(|message| Incoming::Broker {
                message,
                acker: acker.clone(),
            }),
            Intake::Spool(rx, spool) => rx.recv().await.map(|record| Incoming::Spooled {
                record,
                spool: spool.clone(),
            }),
        }
    }
}

/// One message, with what lets it go.
pub enum Incoming {
    Broker { message: Message, acker: Acker },
    Spooled { record: Spooled, spool: Spool },
}

impl Incoming {
    pub fn topic(&self) -> &str {
        match self {
            Incoming::Broker { message, .. } => &message.publish.topic,
            Incoming::Spooled { record, .. } => &record.topic,
        }
    }

    pub fn payload_len(&self) -> usize {
        match self {
            Incoming::Broker { message, .. } => message.publish.payload.len(),
            Incoming::Spooled { record, .. } => record.payload.len(),
        }
    }

    /// What the fire says of it; `boot` is this process's boot id, which a spooled
    /// record replaces with that of the process that received it.
    pub fn fields(&self, boot: u64) -> MessageFields<'_> {
        match self {
            Incoming::Broker { message, .. } => MessageFields {
                topic: &message.publish.topic,
                payload: &message.publish.payload,
                qos: message.publish.qos as u8,
                retain: message.publish.retain,
                received_at: message.received_at,
                boot,
                seq: message.seq,
            },
            Incoming::Spooled { record, .. } => MessageFields {
                topic: &record.topic,
                payload: &record.payload,
                qos: record.qos,
                retain: record.retain,
                received_at: record.received_at,
                boot: record.boot,
                seq: record.seq,
            },
        }
    }

    /// Its fires are all final: acknowledged to the broker, or gone from the spool.
    pub fn settle(&self) {
        match self {
            Incoming::Broker { message, acker } => acker.ack(message),
            Incoming::Spooled { record, spool } => spool.complete(record.id),
        }
    }
}
