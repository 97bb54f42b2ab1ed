//! With `SPOOL=true`, what sits between a connection's source and its forwarder: the
//! spooler appends each message from the broker to the spool and acknowledges it once
//! its batch is durable; the feeder hands the spool's records to the forwarder in order.
//! So the broker is emptied as fast as messages arrive, whatever OpenWhisk does, and
//! only a full spool (or a failing disk) holds it back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::{Health, REMINDER_INTERVAL};
use crate::metrics::Metrics;
use crate::mqtt::{Acker, Message};
use crate::spool::{Budget, Reader, Record, Spool, Spooled, WriteError, Writer};

/// Messages made durable with one fsync at most (more wait for the next one).
const BATCH_MESSAGES: usize = 1024;
/// Bytes made durable with one fsync at most, besides the first message (a fraction of
/// `SPOOL_MAX_BYTES` when that is small: see `Spooler::batch_bytes`).
const BATCH_MAX_BYTES: usize = 4 << 20;
/// How often done entries are written out and the age gauge set.
const TICK: Duration = Duration::from_millis(200);
/// How `/readyz` and the log begin to say that the spool is full.
const FULL: &str = "spool is full";
/// How long a failed write waits before the batch is written again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Appends a connection's messages to its spool and acknowledges them once durable.
pub struct Spooler {
    /// Shared with the blocking thread each append runs on.
    pub writer: Arc<Mutex<Writer>>,
    pub spool: Spool,
    pub acker: Acker,
    pub budget: Arc<Budget>,
    /// The connection's client id, for `/readyz` and the logs.
    pub name: Arc<str>,
    /// This process's boot id, recorded with each message (see `fire_body`).
    pub boot: u64,
    pub health: Health,
    pub metrics: Metrics,
}

/// What keeps the spool from taking messages, as last reported.
#[derive(Default)]
struct Problem {
    text: Option<String>,
    logged: Option<Instant>,
}

impl Problem {
    fn is_full(&self) -> bool {
        self.text
            .as_deref()
            .is_some_and(|text| text.starts_with(FULL))
    }
}

impl Spooler {
    /// Runs until the source is gone and every message it handed over is durable and
    /// acknowledged (or, with a failing disk, left with the broker).
    pub async fn run(self, mut messages_rx: mpsc::Receiver<Message>) {
        let mut tick = tokio::time::interval(TICK);
        let mut problem = Problem::default();
        loop {
            let full = self.budget.is_full();
            if !full && problem.is_full() {
                self.report(&mut problem, None, tracing::Level::INFO);
            }
            if full {
                if messages_rx.is_closed() {
                    break;
                }
                self.report(
                    &mut problem,
                    Some(self.full_problem()),
                    tracing::Level::WARN,
                );
                tokio::select! {
                    () = self.budget.freed() => {}
                    _ = tick.tick() => self.spool.flush_done(),
                }
                continue;
            }
            let first = tokio::select! {
                message = messages_rx.recv() => message,
                _ = tick.tick() => {
                    self.spool.flush_done();
                    continue;
                }
            };
            let Some(first) = first else { break };
            let mut bytes = size(&first);
            let mut batch = vec![first];
            while batch.len() < BATCH_MESSAGES
                && bytes < self.batch_bytes()
                && let Ok(message) = messages_rx.try_recv()
            {
                bytes += size(&message);
                batch.push(message);
            }
            loop {
                match self.append(batch).await {
                    Ok(written) => {
                        written.iter().for_each(|message| self.acker.ack(message));
                        self.report(&mut problem, None, tracing::Level::INFO);
                        break;
                    }
                    Err((unwritten, error)) => {
                        let level = match error.is_disk_full() {
                            true => tracing::Level::WARN,
                            false => tracing::Level::ERROR,
                        };
                        let text = format!(
                            "spool cannot be written ({error}): the broker is not acknowledged and keeps the messages"
                        );
                        self.report(&mut problem, Some(text), level);
                        if messages_rx.is_closed() {
                            // Shutting down: they stay with the broker.
                            self.spool.flush_done();
                            return;
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                        batch = unwritten;
                    }
                }
            }
        }
        self.spool.flush_done();
    }

    /// Appends `batch` with one fsync, on a blocking thread.
    async fn append(
        &self,
        batch: Vec<Message>,
    ) -> Result<Vec<Message>, (Vec<Message>, WriteError)> {
        let boot = self.boot;
        let writer = self.writer.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut records: Vec<Record<'_>> = batch.iter().map(|m| record(m, boot)).collect();
            let result = writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut records);
            drop(records);
            (batch, result)
        })
        .await;
        // A panic there is one of this task, as if the append had run inline.
        let (batch, result) =
            joined.unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        match result {
            Ok(fsync) => {
                self.metrics.spool_fsync(fsync.as_secs_f64());
                Ok(batch)
            }
            Err(error) => Err((batch, error)),
        }
    }

    /// A batch stops growing here, so that one batch takes a small part of
    /// `SPOOL_MAX_BYTES` (which it may overshoot by that much) and of a segment.
    fn batch_bytes(&self) -> usize {
        usize::try_from(self.budget.max_bytes / 16)
            .unwrap_or(usize::MAX)
            .min(BATCH_MAX_BYTES)
    }

    fn full_problem(&self) -> String {
        format!(
            "{FULL} (SPOOL_MAX_BYTES={}): the broker is not acknowledged and keeps the rest until fires free space",
            self.budget.max_bytes
        )
    }

    /// Sets the spool's state in `/readyz` and the metrics when it changes; a problem is
    /// logged when it begins and then once per interval, its end once.
    fn report(&self, problem: &mut Problem, text: Option<String>, level: tracing::Level) {
        let due = problem
            .logged
            .is_none_or(|at| at.elapsed() >= REMINDER_INTERVAL);
        match &text {
            Some(text) if due || problem.text.as_ref() != Some(text) => {
                problem.logged = Some(Instant::now());
                match level {
                    tracing::Level::ERROR => tracing::error!(connection = %self.name, "{text}"),
                    _ => tracing::warn!(connection = %self.name, "{text}"),
                }
            }
            None if problem.text.is_some() => {
                problem.logged = None;
                tracing::info!(connection = %self.name, "the spool takes messages again");
            }
            _ => {}
        }
        if problem.text != text {
            problem.text = text;
            self.metrics.spool_full(problem.is_full());
            self.health.spool_problem(&self.name, problem.text.clone());
        }
    }
}

/// What a message adds to a batch, about.
fn size(message: &Message) -> usize {
    message.publish.topic.len() + message.publish.payload.len()
}

/// A message as the spool keeps it (its id is given by the writer).
fn record(message: &Message, boot: u64) -> Record<'_> {
    Record {
        id: 0,
        boot,
        seq: message.seq,
        received_at: message.received_at,
        qos: message.publish.qos as u8,
        retain: message.publish.retain,
        topic: &message.publish.topic,
        payload: &message.publish.payload,
    }
}

/// Hands the spool's records to the forwarder in order until `stop`; the rest stay in
/// the spool for the next start.
pub async fn feed(mut reader: Reader, records_tx: mpsc::Sender<Spooled>, stop: CancellationToken) {
    loop {
        let next = async {
            match reader.next().await {
                Ok(record) => records_tx.send(record).await.is_ok(),
                Err(error) => {
                    tracing::error!(%error, spool = %reader.dir().display(), "cannot read the spool; trying again");
                    tokio::time::sleep(RETRY_AFTER).await;
                    true
                }
            }
        };
        match stop.run_until_cancelled(next).await {
            Some(true) => {}
            Some(false) | None => return,
        }
    }
}
