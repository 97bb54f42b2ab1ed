//! A private Mosquitto on a free loopback port: no persistence, no queue limit (so the
//! broker never drops what a slow subscriber has not taken yet), the in-flight window
//! under test, and `$SYS` counts every second.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use test_support::{find_binary, free_port, guarded_command, poll_until_async};
use tokio::process::Child;

/// How often Mosquitto publishes its `$SYS` topics (`sys_interval`).
pub const SYS_INTERVAL: Duration = Duration::from_secs(1);
/// How long Mosquitto may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a free port (another process may take the one we picked before we bind).
const PORT_ATTEMPTS: usize = 10;

/// A running Mosquitto, killed on drop.
pub struct Broker {
    port: u16,
    child: Child,
    /// Holds `mosquitto.conf` and `mosquitto.log`.
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts Mosquitto with `max_inflight_messages` set to `window` (`None`: Mosquitto's
    /// default of 20) and waits until it accepts connections.
    pub async fn start(window: Option<u32>) -> anyhow::Result<Broker> {
        let dir = tempfile::Builder::new()
            .prefix("bench-mosquitto-")
            .tempdir()
            .context("create a directory for mosquitto")?;
        let log_path = dir.path().join("mosquitto.log");
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let conf_path = dir.path().join("mosquitto.conf");
            std::fs::write(&conf_path, config(port, window, &log_path))?;
            let mut child = guarded_command(find_binary("mosquitto"))
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start mosquitto (is it installed? apt-get install mosquitto)")?;
            let mut exited = false;
            let listening = poll_until_async(START_TIMEOUT, || {
                exited = !matches!(child.try_wait(), Ok(None));
                async move {
                    exited
                        || tokio::net::TcpStream::connect(("127.0.0.1", port))
                            .await
                            .is_ok()
                }
            })
            .await;
            if listening && !exited {
                return Ok(Broker {
                    port,
                    child,
                    _dir: dir,
                });
            }
            if !log().contains("Address already in use") {
                bail!(
                    "mosquitto did not start on port {port}; its log:\n{}",
                    log()
                );
            }
        }
        bail!("mosquitto found no free port; its log:\n{}", log())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// `mosquitto.conf` for a broker on `127.0.0.1:<port>`.
fn config(port: u16, window: Option<u32>, log_path: &std::path::Path) -> String {
    let mut conf = format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_queued_messages 0\n\
         sys_interval {}\n\
         log_dest file {}\n",
        SYS_INTERVAL.as_secs(),
        log_path.display()
    );
    if let Some(window) = window {
        writeln!(conf, "max_inflight_messages {window}").expect("write to a String");
    }
    // Started as root, Mosquitto would switch to the user `mosquitto`, who cannot write
    // the log here.
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        conf.push_str("user root\n");
    }
    conf
}
