//! `--dry-run`: every fire is logged instead of sent and answered as accepted, so a
//! newcomer can watch what the provider would fire with nothing but a local broker.

use bytes::Bytes;

use super::{Answer, Pending, Sink, Target, Verdict};

/// The sink of a dry run.
pub struct DryRun;

impl Sink for DryRun {
    fn fire<'a>(&'a self, target: &'a Target, body: Bytes) -> Pending<'a, Answer> {
        tracing::info!(
            namespace = %target.namespace,
            trigger = %target.trigger,
            body = loggable_body(&body),
            "dry run: would fire"
        );
        Box::pin(std::future::ready(Answer {
            verdict: Verdict::Accepted,
            status: None,
            detail: String::new(),
        }))
    }

    fn check_trigger<'a>(&'a self, _: &'a Target) -> Pending<'a, Option<Answer>> {
        Box::pin(std::future::ready(None))
    }
}

/// The fire's body as the log shows it.
fn loggable_body(body: &[u8]) -> String {
    // TODO(merge): redact with crate::redact::redact_credentials (parse the body as a
    // serde_json::Value, redact it, log its text), so FIRE_PARAMS secrets stay out of logs.
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dry_run_accepts_every_fire_and_checks_nothing() {
        let target = Target::new(None, "_", "t");
        let answer = DryRun.fire(&target, Bytes::from_static(b"{}")).await;
        assert_eq!(answer.verdict, Verdict::Accepted);
        assert_eq!(answer.status, None, "nothing answered: nothing was sent");
        assert!(DryRun.check_trigger(&target).await.is_none());
    }
}
