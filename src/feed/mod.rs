//! Triggers registered at run time through OpenWhisk's feed protocol
//! (`wsk trigger create T --feed mqtt/mqtt_feed`), SPEC section 8.
//!
//! - [`api`]: the HTTP routes the feed action calls (and the legacy ones);
//! - [`service`]: what each request does: verify with OpenWhisk, store, route;
//! - [`registry`]: the durable registrations under `STATE_DIR`, their keys sealed at rest
//!   when `STATE_KEY_FILE` is given (the cipher lives in `sealed`).

pub(crate) mod api;
pub(crate) mod registry;
mod sealed;
pub(crate) mod service;

pub use registry::StateKey;
