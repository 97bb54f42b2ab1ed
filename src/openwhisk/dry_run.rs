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

/// The fire's body as the log shows it: credential-like values of `FIRE_PARAMS` and
/// alarm payloads masked, as `--check` masks them.
fn loggable_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            crate::redact::redact_credentials(&mut value);
            value.to_string()
        }
        // Every body is rendered as JSON; this only guards the log against a bug.
        Err(_) => format!("<{} bytes, not JSON>", body.len()),
    }
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

    #[test]
    fn the_logged_body_masks_credential_like_values() {
        let logged = loggable_body(br#"{"topic":"t","influx_token":"S3CRET","dc":"dc1"}"#);
        assert!(!logged.contains("S3CRET"), "{logged}");
        assert!(
            logged.contains("dc1") && logged.contains("influx_token"),
            "{logged}"
        );
    }
}
