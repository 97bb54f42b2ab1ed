//! Talking to the provider's feed API the two ways OpenWhisk's users do: through the
//! project's own feed action (`actions/mqtt_feed.js`), run by `node` as OpenWhisk's
//! Node runtime runs it, and over plain HTTP.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use test_support::{find_binary, guarded_command, http_client};

/// Far above what one action run takes (the provider answers in milliseconds, or after
/// waiting for a SUBACK).
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the feed action's `main` with `params` (`lifecycleEvent`, `triggerName`,
/// `authKey`, `provider_endpoint` and the user's `-p` parameters), with `__OW_NAMESPACE`
/// set as OpenWhisk sets it; returns the activation's result.
pub async fn run_feed_action(params: &Value, ow_namespace: &str) -> Value {
    let action = Path::new(env!("CARGO_MANIFEST_DIR")).join("actions/mqtt_feed.js");
    let script = "require(process.argv[1]).main(JSON.parse(process.argv[2]))\
        .then(r => process.stdout.write(JSON.stringify(r)), e => { console.error(e); process.exit(1); })";
    let output = guarded_command(find_binary("node"))
        .arg("-e")
        .arg(script)
        .arg(&action)
        .arg(params.to_string())
        .env("__OW_NAMESPACE", ow_namespace)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(ACTION_TIMEOUT, output)
        .await
        .expect("the feed action finished in time")
        .expect("node runs the feed action");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the feed action failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("feed action result {stdout:?}: {e}"))
}

/// One plain HTTP request to the provider: status and JSON body (`Value::Null` when the
/// body is not JSON). `auth` is `uuid:key`, sent as HTTP Basic auth.
pub async fn feed_request(
    method: reqwest::Method,
    url: &str,
    auth: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut request = http_client(ACTION_TIMEOUT).request(method, url);
    if let Some(auth) = auth {
        let encoded = base64::engine::general_purpose::STANDARD.encode(auth);
        request = request.header("authorization", format!("Basic {encoded}"));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("the provider answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
