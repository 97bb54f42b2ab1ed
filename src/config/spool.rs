//! `SPOOL` and `SPOOL_MAX_BYTES` (SPEC section 9): whether messages are made durable on
//! the provider's own disk before the broker is acknowledged, and how much disk that may
//! take.

use super::Problems;
use super::raw::RawEnv;

/// The spool's settings; it lives in `STATE_DIR/spool`.
#[derive(Debug, Clone, Copy)]
pub struct SpoolConfig {
    /// What the spool's files may take in all; past it the broker is not acknowledged.
    pub max_bytes: u64,
}

/// 1 GiB: hours of a data center's readings (about 200 bytes each at 50/s is 36 MB/h).
const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Below this the spool would be little more than the broker's in-flight window.
const MIN_MAX_BYTES: u64 = 64 << 10;

/// `Some` with `SPOOL=true`, which needs `STATE_DIR`.
pub(super) fn parse(raw: &RawEnv, state_dir: bool, problems: &mut Problems) -> Option<SpoolConfig> {
    let on = problems.parse("SPOOL", raw.get("SPOOL"), false, "true or false");
    let max_bytes = problems.parse_in(
        "SPOOL_MAX_BYTES",
        raw.get("SPOOL_MAX_BYTES"),
        DEFAULT_MAX_BYTES,
        MIN_MAX_BYTES..=u64::MAX,
        "bytes",
    );
    if on && !state_dir {
        problems.push(
            "SPOOL",
            "the spool lives in STATE_DIR: set STATE_DIR (a persistent volume) or SPOOL=false",
        );
    }
    on.then_some(SpoolConfig { max_bytes })
}
