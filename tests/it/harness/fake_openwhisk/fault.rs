//! Misbehaviour injected into trigger fires: what an OpenWhisk, or the nginx in front of
//! it, does on a bad day.

use std::time::Duration;

use super::answers::{Answer, status_message, too_many_requests};
use super::controller::TriggerRequest;

/// A misbehaviour injected into the trigger fires made with one namespace's key (POST
/// only, after the auth check).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Fault {
    /// Behave normally.
    #[default]
    None,
    /// Answer this status with an OpenWhisk JSON error body.
    Status(u16),
    /// Answer this status with nginx's HTML error page (e.g. 502 when the controller is away).
    NginxHtml(u16),
    /// 429 with OpenWhisk's throttle body, and a `Retry-After` header if given.
    TooManyRequests {
        /// Value of the `Retry-After` header, if any.
        retry_after_secs: Option<u64>,
    },
    /// Answer normally, after this delay.
    Slow(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer this redirect status (301, 302, 303, 307, 308) with nginx's page and a
    /// `Location` naming the same trigger on this fake, as an nginx that moves `http` to
    /// `https` would. A client that follows it GETs the trigger, which answers 200, and
    /// may take that for an accepted fire.
    Redirect(u16),
    /// Answer this status (with a JSON error body) to fires whose body contains the string;
    /// other fires are handled normally.
    RejectBodiesContaining(String, u16),
}

impl Fault {
    /// The answer this fault gives to `request` instead of the controller's, if any
    /// (after the delay of [`Fault::Slow`]).
    pub(super) async fn answer(&self, request: &TriggerRequest<'_>) -> Option<Answer> {
        match self {
            Fault::None => None,
            Fault::Status(status) => Some(Answer::error(*status, status_message(*status))),
            Fault::NginxHtml(status) => Some(Answer::NginxPage(*status)),
            Fault::TooManyRequests { retry_after_secs } => Some(Answer::Throttled(
                too_many_requests(61, 60),
                *retry_after_secs,
            )),
            Fault::Slow(delay) => {
                tokio::time::sleep(*delay).await;
                None
            }
            Fault::Reset => Some(Answer::Reset),
            Fault::Redirect(status) => {
                let host = request.header("host").unwrap_or_else(|| "127.0.0.1".into());
                let location = format!("http://{host}{}", request.parts.uri.path());
                Some(Answer::Redirect(*status, location))
            }
            Fault::RejectBodiesContaining(needle, status) => {
                let needle = needle.as_bytes();
                let body = request.body;
                let contains =
                    needle.is_empty() || body.windows(needle.len()).any(|part| part == needle);
                contains.then(|| Answer::error(*status, status_message(*status)))
            }
        }
    }
}
