//! `--dry-run`: every fire is logged instead of sent and answered as accepted, so a
//! newcomer can watch what the provider would fire with nothing but a local broker.

use bytes::Bytes;

use super::{Answer, Pending, Sink, Target, Verdict};

/// The sink of a dry run.
#[derive(Default)]
pub struct DryRun {
    /// The keys of `FIRE_SECRET_PARAMS_FILE`, masked whatever they are called.
    secret_keys: Vec<String>,
}

impl DryRun {
    /// A dry run that masks the values of `secret_keys` in every fire it logs.
    pub fn masking<'k>(secret_keys: impl IntoIterator<Item = &'k str>) -> DryRun {
        DryRun {
            secret_keys: secret_keys.into_iter().map(str::to_owned).collect(),
        }
    }
}

impl Sink for DryRun {
    fn fire<'a>(&'a self, target: &'a Target, body: Bytes) -> Pending<'a, Answer> {
        tracing::info!(
            namespace = %target.namespace,
            trigger = %target.trigger,
            body = loggable_body(&body, &self.secret_keys),
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
/// alarm payloads masked, as `--check` masks them, and the secret parameters, which sit
/// at the top of message and batch fires, masked by key.
fn loggable_body(body: &[u8], secret_keys: &[String]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            crate::redact::redact_credentials(&mut value);
            if let Some(object) = value.as_object_mut() {
                for key in secret_keys {
                    if let Some(secret) = object.get_mut(key) {
                        *secret = crate::redact::MASK.into();
                    }
                }
            }
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
        let answer = DryRun::default()
            .fire(&target, Bytes::from_static(b"{}"))
            .await;
        assert_eq!(answer.verdict, Verdict::Accepted);
        assert_eq!(answer.status, None, "nothing answered: nothing was sent");
        assert!(DryRun::default().check_trigger(&target).await.is_none());
    }

    #[test]
    fn the_logged_body_masks_credential_like_values() {
        let logged = loggable_body(br#"{"topic":"t","influx_token":"S3CRET","dc":"dc1"}"#, &[]);
        assert!(!logged.contains("S3CRET"), "{logged}");
        assert!(
            logged.contains("dc1") && logged.contains("influx_token"),
            "{logged}"
        );
    }

    #[test]
    fn the_logged_body_masks_the_secret_parameters_whatever_their_keys() {
        let body =
            br#"{"type":"batch","messages":[],"org":"S3CRET","nested":{"a":"S3CRET"},"dc":"dc1"}"#;
        let logged = loggable_body(body, &["org".to_owned(), "nested".to_owned()]);
        assert!(!logged.contains("S3CRET"), "{logged}");
        assert!(logged.contains(r#""org":"********""#), "{logged}");
        assert!(logged.contains("dc1"), "{logged}");
    }
}
