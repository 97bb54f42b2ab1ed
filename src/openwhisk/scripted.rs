//! A sink for unit tests: answers every fire by a rule of the test's, at once, and
//! records when it was sent and to which namespace.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use reqwest::StatusCode;
use tokio::time::Instant;

use super::{Answer, Pending, Sink, Target, classify};

type Rule = dyn Fn(&Target) -> Answer + Send + Sync;

pub struct Scripted {
    rule: Box<Rule>,
    fires: Mutex<Vec<(Instant, Arc<str>)>>,
}

impl Scripted {
    pub fn new(rule: impl Fn(&Target) -> Answer + Send + Sync + 'static) -> Arc<Scripted> {
        Arc::new(Scripted {
            rule: Box::new(rule),
            fires: Mutex::default(),
        })
    }

    /// When each fire was sent, and its namespace.
    pub fn fires(&self) -> Vec<(Instant, Arc<str>)> {
        self.fires.lock().unwrap().clone()
    }
}

/// OpenWhisk's answer with `code`, classified as the client does.
pub fn status(code: u16) -> Answer {
    let status = StatusCode::from_u16(code).unwrap();
    Answer {
        verdict: classify(status, None, true),
        status: Some(status),
        detail: format!("scripted {code}"),
    }
}

impl Sink for Scripted {
    fn fire<'a>(&'a self, target: &'a Target, _: Bytes) -> Pending<'a, Answer> {
        let fire = (Instant::now(), target.namespace.clone());
        self.fires.lock().unwrap().push(fire);
        Box::pin(std::future::ready((self.rule)(target)))
    }

    fn check_trigger<'a>(&'a self, _: &'a Target) -> Pending<'a, Option<Answer>> {
        Box::pin(std::future::ready(None))
    }
}
