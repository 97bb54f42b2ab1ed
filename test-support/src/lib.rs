//! What the end-to-end tests (`tests/it/harness/`) and the throughput benchmark
//! (`benches/throughput/`) both need, in one place:
//!
//! - [`guarded_command`] and [`find_binary`]: child processes (Mosquitto, nats-server,
//!   the provider) that die with their handle and with us, and where their binaries are;
//! - [`free_port`] and [`port_is_free`]: loopback ports for them;
//! - [`poll_until`], [`wait_until`] and friends: waiting on a condition with a deadline,
//!   never a fixed sleep;
//! - [`unique_id`]: client ids and names no concurrent test or run shares;
//! - [`rss_bytes`] and [`RssSampler`]: a process's resident memory, and its peak;
//! - [`http_client`]: a reqwest client for loopback HTTP;
//! - [`SmallDisk`]: a small tmpfs, a disk that fills;
//! - [`metric_sum`]: a metric summed over its series, from `/metrics` text.

mod http;
mod ids;
mod metrics;
mod ports;
mod process;
mod rss;
mod small_disk;
mod wait;

pub use http::http_client;
pub use ids::unique_id;
pub use metrics::metric_sum;
pub use ports::{free_port, port_is_free};
pub use process::{find_binary, guarded_command};
pub use rss::{RssSampler, rss_bytes};
pub use small_disk::SmallDisk;
pub use wait::{poll_until, poll_until_async, wait_until, wait_until_async};
