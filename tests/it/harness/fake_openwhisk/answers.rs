//! What the controller (or the nginx in front of it) answers, and the texts it uses.

use axum::body::Body;
use hyper::header::CONTENT_TYPE;
use hyper::http::response::Builder;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::random_alphanumeric;

/// OpenWhisk's default payload limit (`whisk.activation.payload.max = 1 m`).
pub(super) const MAX_PAYLOAD_BYTES: u64 = 1_048_576;

pub(super) const NOT_FOUND: &str = "The requested resource does not exist.";

/// What to answer, before it becomes a response (with the request's transaction id).
pub(super) enum Answer {
    /// `{"error": message, "code": tid}`, with the Basic challenge on 401.
    Error(u16, String),
    /// 429 with OpenWhisk's body and, if given, a `Retry-After` header.
    Throttled(String, Option<u64>),
    Json(u16, Value),
    /// 202 with this activation id in the body and a header.
    Activation(String),
    NoContent,
    Text(&'static str),
    /// nginx's HTML error page.
    NginxPage(u16),
    /// nginx's page for a redirect, with this `Location`.
    Redirect(u16, String),
    /// Close the connection without answering.
    Reset,
}

impl Answer {
    pub fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer::Error(status, message.into())
    }

    /// 202 with a fresh activation id.
    pub fn activation() -> Answer {
        Answer::Activation(format!("{:032x}", rand::random::<u128>()))
    }

    /// The status recorded for this answer; 0 for no answer.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Error(status, _)
            | Answer::Json(status, _)
            | Answer::NginxPage(status)
            | Answer::Redirect(status, _) => *status,
            Answer::Throttled(..) => 429,
            Answer::Activation(_) => 202,
            Answer::NoContent => 204,
            Answer::Text(_) => 200,
            Answer::Reset => 0,
        }
    }

    /// The response, with a fresh transaction id; `None` closes the connection instead.
    pub fn into_response(self) -> Option<Response<Body>> {
        let tid = random_alphanumeric(32);
        let status = self.status();
        let response = Response::builder().status(status);
        let json = |response: Builder, body: Value| {
            response
                .header(CONTENT_TYPE, "application/json")
                .header("x-request-id", &tid)
                .body(Body::from(body.to_string()))
        };
        let error_body = |message: String| json!({ "error": message, "code": tid });
        let response = match self {
            Answer::Reset => return None,
            Answer::Error(401, message) => json(
                response.header("www-authenticate", "Basic realm=\"OpenWhisk secure realm\""),
                error_body(message),
            ),
            Answer::Error(_, message) => json(response, error_body(message)),
            Answer::Throttled(message, retry_after_secs) => match retry_after_secs {
                Some(secs) => json(response.header("retry-after", secs), error_body(message)),
                None => json(response, error_body(message)),
            },
            Answer::Json(_, body) => json(response, body),
            Answer::Activation(id) => json(
                response.header("x-openwhisk-activation-id", &id),
                json!({ "activationId": id }),
            ),
            Answer::NoContent => response.header("x-request-id", &tid).body(Body::empty()),
            Answer::Text(text) => response
                .header(CONTENT_TYPE, "text/plain; charset=UTF-8")
                .header("x-request-id", &tid)
                .body(Body::from(text)),
            Answer::NginxPage(_) => response
                .header(CONTENT_TYPE, "text/html")
                .body(Body::from(nginx_page(status))),
            Answer::Redirect(_, location) => response
                .header(CONTENT_TYPE, "text/html")
                .header("location", location)
                .body(Body::from(nginx_page(status))),
        };
        Some(response.expect("a valid response"))
    }
}

/// OpenWhisk's message for an injected status.
pub(super) fn status_message(status: u16) -> String {
    match status {
        400 => "The request content was malformed:\ninjected by the test".to_string(),
        401 => "The supplied authentication is invalid".to_string(),
        404 => NOT_FOUND.to_string(),
        413 => too_large(MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES),
        429 => too_many_requests(61, 60),
        500 => "There was an internal server error.".to_string(),
        503 => "System is overloaded, try again later.".to_string(),
        _ => reason(status).to_string(),
    }
}

pub(super) fn too_many_requests(count: u32, allowed: u32) -> String {
    format!("Too many requests in the last minute (count: {count}, allowed: {allowed}).")
}

pub(super) fn too_large(content_length: u64, limit: u64) -> String {
    format!("Request larger than allowed: {content_length} > {limit} bytes.")
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The error page nginx sends when the controller behind it fails.
fn nginx_page(status: u16) -> String {
    let title = format!("{status} {}", reason(status));
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
         <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
}
