//! Which received messages may be acknowledged, and how a redelivered copy is recognised.
//!
//! Packet ids belong to a broker *session*, not to a connection. After a reconnect that
//! resumed the session the broker resends its unacknowledged messages with the same ids
//! (DUP set), so acks of messages received earlier stay valid, and a copy of a message
//! still in the pipeline must not be fired again. Only a new session
//! (`session_present = 0`) makes the old ids name other messages (`reference/mqtt.md`,
//! trap E3): the session *epoch* then moves on, and acks from the old one are dropped.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rumqttc::{Publish, QoS};
use tokio::sync::Notify;

/// How many written acks are remembered, to recognise the broker resending a message
/// whose ack was lost with the connection. The broker resends at most its in-flight
/// window (`max_inflight_messages`, 20 by default; README recommends 1000).
const REMEMBERED_ACKS: usize = 1024;

/// A message received from the broker, not yet acknowledged.
pub struct Message {
    pub publish: Publish,
    pub received_at: DateTime<Utc>,
    /// This process's receipt number: with the process's boot id, the message id that
    /// every fire of this receipt carries.
    pub seq: u64,
    epoch: u64,
}

/// An ack to write: the packet id, and what identifies the message behind it.
#[derive(Clone, Copy)]
pub(super) struct Ack {
    pub pkid: u16,
    fingerprint: u64,
}

/// What the source should do with a publish.
pub(super) enum Receipt {
    /// Forward it.
    New(Message),
    /// A copy of a message that is still being fired: its first copy's ack covers both.
    InPipeline,
    /// A copy of a message already accepted, whose ack the connection lost: acked again.
    AlreadyAccepted,
}

/// The session state shared by the source and the fire tasks.
#[derive(Default)]
pub(super) struct Session {
    state: Mutex<State>,
    /// Wakes the source when an ack is queued.
    pub ready: Notify,
}

#[derive(Default)]
struct State {
    epoch: u64,
    /// Acks waiting to be written to the connection.
    queued: Vec<Ack>,
    /// Packet ids of this session's messages that are forwarded and not yet acked.
    in_pipeline: PacketIds,
    /// The last acks written, oldest first.
    written: VecDeque<Ack>,
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The broker started a new session: every packet id received so far is void.
    pub fn start_new(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.queued.clear();
        state.in_pipeline.clear();
        state.written.clear();
    }

    /// Sorts a publish of the current session; `seq` numbers the new ones.
    pub fn receive(&self, publish: Publish, seq: &mut u64) -> Receipt {
        let mut state = self.lock();
        if publish.qos != QoS::AtMostOnce {
            if state.in_pipeline.contains(publish.pkid) {
                return Receipt::InPipeline;
            }
            if publish.dup {
                let fingerprint = fingerprint(&publish);
                let acked = |ack: &Ack| ack.pkid == publish.pkid && ack.fingerprint == fingerprint;
                if state.written.iter().any(acked) {
                    state.queued.push(Ack {
                        pkid: publish.pkid,
                        fingerprint,
                    });
                    return Receipt::AlreadyAccepted;
                }
            }
            state.in_pipeline.insert(publish.pkid);
        }
        *seq += 1;
        Receipt::New(Message {
            publish,
            received_at: Utc::now(),
            seq: *seq,
            epoch: state.epoch,
        })
    }

    /// Queues the ack of `message` if its session is still the current one; otherwise
    /// its packet id names another message now, and the broker never resends it.
    pub fn ack(&self, message: &Message) -> bool {
        if message.publish.qos == QoS::AtMostOnce {
            return false;
        }
        let fingerprint = fingerprint(&message.publish);
        let mut state = self.lock();
        if state.epoch != message.epoch {
            return false;
        }
        let pkid = message.publish.pkid;
        state.in_pipeline.remove(pkid);
        state.queued.push(Ack { pkid, fingerprint });
        true
    }

    /// Moves the queued acks into `into` (empty), to be written.
    pub fn take_queued(&self, into: &mut Vec<Ack>) {
        std::mem::swap(&mut self.lock().queued, into);
    }

    /// Remembers acks just written, so that a redelivery after a lost ack is recognised.
    pub fn remember_written(&self, acks: &[Ack]) {
        let mut state = self.lock();
        state.written.extend(acks.iter().copied());
        let excess = state.written.len().saturating_sub(REMEMBERED_ACKS);
        state.written.drain(..excess);
    }
}

/// Identifies a message within a session beyond its packet id, which the broker reuses.
fn fingerprint(publish: &Publish) -> u64 {
    let mut hasher = DefaultHasher::new();
    publish.topic.hash(&mut hasher);
    publish.payload.hash(&mut hasher);
    hasher.finish()
}

/// A set of packet ids (1 to 65535) as a bitmap: 8 KiB, no allocation per message.
struct PacketIds(Box<[u64]>);

impl Default for PacketIds {
    fn default() -> Self {
        PacketIds(vec![0; 1 << 10].into_boxed_slice())
    }
}

impl PacketIds {
    fn insert(&mut self, pkid: u16) {
        self.0[usize::from(pkid >> 6)] |= 1 << (pkid & 63);
    }

    fn remove(&mut self, pkid: u16) {
        self.0[usize::from(pkid >> 6)] &= !(1 << (pkid & 63));
    }

    fn contains(&self, pkid: u16) -> bool {
        self.0[usize::from(pkid >> 6)] & (1 << (pkid & 63)) != 0
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16, payload: &str, dup: bool) -> Publish {
        let mut publish = Publish::new("dc1/t", QoS::AtLeastOnce, payload);
        publish.pkid = pkid;
        publish.dup = dup;
        publish
    }

    fn new_message(session: &Session, publish: Publish, seq: &mut u64) -> Message {
        match session.receive(publish, seq) {
            Receipt::New(message) => message,
            _ => panic!("expected a new message"),
        }
    }

    fn queued(session: &Session) -> Vec<u16> {
        let mut acks = Vec::new();
        session.take_queued(&mut acks);
        acks.iter().map(|ack| ack.pkid).collect()
    }

    #[test]
    fn a_copy_of_a_message_in_the_pipeline_is_not_forwarded_again() {
        let (session, mut seq) = (Session::default(), 0);
        session.start_new();
        let first = new_message(&session, publish(7, "a", false), &mut seq);
        assert!(matches!(
            session.receive(publish(7, "a", true), &mut seq),
            Receipt::InPipeline
        ));
        assert!(session.ack(&first));
        assert_eq!(queued(&session), [7]);
        assert_eq!(seq, 1, "the copy got no receipt number of its own");
    }

    #[test]
    fn acks_survive_a_resumed_session_but_not_a_new_one() {
        let (session, mut seq) = (Session::default(), 0);
        session.start_new();
        let before = new_message(&session, publish(1, "a", false), &mut seq);
        // A reconnect that resumed the session changes nothing here.
        assert!(session.ack(&before));
        assert_eq!(queued(&session), [1]);

        let old = new_message(&session, publish(2, "b", false), &mut seq);
        session.start_new();
        let new = new_message(&session, publish(2, "c", false), &mut seq);
        assert!(!session.ack(&old), "packet id 2 names another message now");
        assert!(queued(&session).is_empty());
        assert!(session.ack(&new));
        assert_eq!(queued(&session), [2]);
    }

    #[test]
    fn a_redelivery_after_a_lost_ack_is_acked_again_only_if_it_is_the_same_message() {
        let (session, mut seq) = (Session::default(), 0);
        session.start_new();
        let message = new_message(&session, publish(3, "a", false), &mut seq);
        session.ack(&message);
        let mut written = Vec::new();
        session.take_queued(&mut written);
        session.remember_written(&written);

        assert!(matches!(
            session.receive(publish(3, "a", true), &mut seq),
            Receipt::AlreadyAccepted
        ));
        assert_eq!(queued(&session), [3]);
        // The broker reused packet id 3 for another message.
        assert!(matches!(
            session.receive(publish(3, "other", true), &mut seq),
            Receipt::New(_)
        ));
    }

    #[test]
    fn packet_ids_cover_the_whole_range() {
        let mut ids = PacketIds::default();
        for pkid in [1, 63, 64, 65535] {
            ids.insert(pkid);
            assert!(ids.contains(pkid));
        }
        ids.remove(64);
        assert!(!ids.contains(64) && ids.contains(63) && ids.contains(65535));
        ids.clear();
        assert!(!ids.contains(1));
    }
}
