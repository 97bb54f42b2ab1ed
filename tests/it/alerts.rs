//! The Prometheus rules and the Grafana dashboard in `deploy/`, checked against the real
//! provider: promtool validates and unit-tests the rules and lints a real `/metrics`
//! scrape, and every metric the rules and the dashboard query must be in that scrape, so
//! a renamed metric cannot leave an alert silently never firing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use test_support::{find_binary, guarded_command};
use tokio::io::AsyncWriteExt;

use crate::harness::{Daemon, feed_request, wait_until_async};
use crate::scenario::{Scenario, publish_readings};

const DEADLINE: Duration = Duration::from_secs(60);
const RULES: &str = "deploy/prometheus-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus-rules.test.yml";
const DASHBOARD: &str = "deploy/grafana-dashboard.json";
/// Metrics the rules and the dashboard may name that Prometheus makes, not the provider.
const NOT_THE_PROVIDERS: &[&str] = &["up"];
/// An alarm whose trigger does not exist: every tick is retried until the next one and
/// given up, so the scrape has `alarm_fires_total{outcome="gave_up"}`.
const MISSING_TRIGGER: &str = "noSuchAggregatesTrigger";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `promtool`, or a failure that says how to get it: a test that passes without it would
/// check nothing.
fn promtool() -> PathBuf {
    let path = find_binary("promtool");
    assert!(
        path.is_file(),
        "promtool not found on PATH: install Debian's `prometheus` package \
         (apt-get install --no-install-recommends prometheus), as .ci/run does"
    );
    path
}

/// Runs promtool with `args` in the repository, feeding it `stdin`; returns its exit code
/// and what it printed.
async fn run_promtool(args: &[&str], stdin: Option<&str>) -> (Option<i32>, String) {
    let mut child = guarded_command(promtool())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes())
            .await
            .expect("write to promtool");
        drop(pipe);
    }
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("promtool finished in time")
        .expect("promtool's output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

#[tokio::test]
async fn the_rules_pass_promtool_and_their_unit_tests_fire_and_spare_every_alert() {
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let (code, printed) = run_promtool(&args, None).await;
        assert_eq!(code, Some(0), "promtool {}:\n{printed}", args.join(" "));
    }

    let rules = std::fs::read_to_string(repo(RULES)).unwrap();
    let tests = std::fs::read_to_string(repo(RULE_TESTS)).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "alerts found: {alerts:?}");
    let (firing, quiet) = unit_test_cases(&tests);
    for tested in firing.union(&quiet) {
        assert!(
            alerts.contains(tested),
            "{RULE_TESTS} tests {tested}, not a rule"
        );
    }
    for alert in &alerts {
        assert!(firing.contains(*alert), "no unit test where {alert} fires");
        assert!(
            quiet.contains(*alert),
            "no unit test where {alert} stays quiet"
        );
    }
}

/// The alerts that `tests` expects to fire at some evaluation, and those it expects not
/// to (`exp_alerts: []`).
fn unit_test_cases(tests: &str) -> (BTreeSet<&str>, BTreeSet<&str>) {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut lines = tests.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(alert) = line.strip_prefix("alertname: ") else {
            continue;
        };
        match lines.next() {
            Some("exp_alerts: []") => quiet.insert(alert),
            Some("exp_alerts:") => firing.insert(alert),
            other => panic!("alertname {alert} followed by {other:?}, not exp_alerts"),
        };
    }
    (firing, quiet)
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_and_has_every_metric_the_rules_and_dashboard_query() {
    let state = TempDir::new().unwrap();
    let mut scenario = Scenario::start().await;
    scenario.extra_env.extend([
        ("STATE_DIR", state.path().display().to_string()),
        ("SPOOL", "true".to_owned()),
        ("ALARM_CRON", "* * * * * *".to_owned()),
        ("ALARM_TRIGGER", MISSING_TRIGGER.to_owned()),
    ]);
    let provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..5).await;
    scenario.wait_delivered(5, DEADLINE).await;
    register_feed_trigger(&scenario, &provider).await;
    let families = [
        r#"mqtt_whisk_alarm_fires_total{alarm="default",outcome="gave_up"}"#,
        r#"mqtt_whisk_fires_total{kind="alarm",outcome="retried",status="404"}"#,
        r#"mqtt_whisk_fires_total{kind="message",outcome="accepted",status="202"}"#,
        r#"mqtt_whisk_messages_received_total{filter="dc1/sensors/#"}"#,
        r#"mqtt_whisk_fire_duration_seconds_count{kind="message"}"#,
        "mqtt_whisk_feed_trigger_state{",
    ];
    wait_until_async("a series of every labelled metric", DEADLINE, || async {
        let (_, text) = provider.get("/metrics").await;
        families.iter().all(|series| text.contains(series))
    })
    .await;
    let (status, scrape) = provider.get("/metrics").await;
    assert_eq!(status, 200);

    // 0: clean; 3: lint findings only (1 would be a scrape it cannot parse).
    let (code, printed) = run_promtool(&["check", "metrics"], Some(&scrape)).await;
    let findings: Vec<&str> = printed
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !openmetrics_counter_help(line, &scrape))
        .collect();
    assert!(
        matches!(code, Some(0 | 3)) && findings.is_empty(),
        "promtool check metrics ({code:?}):\n{printed}\non this scrape:\n{scrape}"
    );

    let exported = sample_names(&scrape);
    let rules = std::fs::read_to_string(repo(RULES)).unwrap();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo(DASHBOARD)).unwrap()).unwrap();
    let rule_exprs = rule_expressions(&rules);
    let dashboard_exprs = dashboard_queries(&dashboard);
    assert!(dashboard_exprs.len() >= 10, "{dashboard_exprs:?}");
    for (source, exprs) in [(RULES, rule_exprs), (DASHBOARD, dashboard_exprs)] {
        for expr in exprs {
            let names = metric_names(&expr);
            assert!(!names.is_empty(), "{source}: no metric in {expr:?}");
            for name in names {
                let known = match name.starts_with("mqtt_whisk_") {
                    true => exported.contains(&name),
                    false => NOT_THE_PROVIDERS.contains(&name.as_str()),
                };
                assert!(
                    known,
                    "{source}: {name} (in {expr:?}) is not in the provider's /metrics:\n{scrape}"
                );
            }
        }
    }
}

/// Whether `finding` is promtool's "no help text" for a counter's `_total` samples whose
/// help the scrape does give, on the OpenMetrics family name without `_total`: promtool
/// 2.42 reads the scrape as the older text format, where the family is named like its
/// samples. Prometheus scrapes OpenMetrics and sees the help.
fn openmetrics_counter_help(finding: &str, scrape: &str) -> bool {
    let Some(family) = finding
        .strip_suffix(" no help text")
        .and_then(|name| name.strip_suffix("_total"))
    else {
        return false;
    };
    scrape.contains(&format!("# HELP {family} "))
        && scrape.contains(&format!("# TYPE {family} counter\n"))
}

/// A feed registration over plain HTTP, so that `feed_trigger_state` has a series.
async fn register_feed_trigger(scenario: &Scenario, provider: &Daemon) {
    let tenant = scenario.ow.add_namespace();
    tenant.create_trigger("feedTrigger", true);
    let url = format!(
        "http://127.0.0.1:{}/feed/v1/namespaces/{}/triggers/feedTrigger",
        provider.http_port(),
        tenant.name()
    );
    let body = json!({"topic": "dc1/feed/+"}).to_string().into_bytes();
    let (status, answer) = feed_request(Method::PUT, &url, Some(&tenant.auth()), Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The name of every sample in a scrape (`_total`, `_bucket`, ... included).
fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Every `expr:` of the rules file, inline or as an indented block (`|`, `>`), checked to
/// be one per rule so that a layout this reader does not know fails instead of skipping.
fn rule_expressions(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !matches!(rest, "|" | "|-" | ">" | ">-") {
            exprs.push(rest.trim_matches(['\'', '"']).to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .copied()
            .collect();
        exprs.push(block.join("\n"));
    }
    let rule_count = lines
        .iter()
        .filter(|l| matches!(l.trim_start().get(..8), Some("- alert:" | "- record")))
        .count();
    assert_eq!(exprs.len(), rule_count, "one expr per rule in {RULES}");
    exprs
}

/// The PromQL of the dashboard: every panel target's `expr`, and the variables' queries
/// (only the metric of `label_values(metric, label)`).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    collect_exprs(&dashboard["panels"], &mut exprs);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .expect("a query variable has a query");
        let query = match query.strip_prefix("label_values(") {
            Some(args) => {
                args.rsplit_once(',')
                    .expect("label_values(metric, label)")
                    .0
            }
            None => query,
        };
        exprs.push(query.to_owned());
    }
    exprs
}

fn collect_exprs(value: &Value, exprs: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(expr)) = fields.get("expr") {
                exprs.push(expr.clone());
            }
            fields.values().for_each(|v| collect_exprs(v, exprs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, exprs)),
        _ => {}
    }
}

/// The metric names a PromQL expression selects: identifiers outside label matchers,
/// ranges and strings that are neither a function, a keyword, nor a label of a `by`,
/// `without`, `on`, `ignoring` or `group_*` list.
fn metric_names(expr: &str) -> Vec<String> {
    // Aggregations too: `sum without (...) (...)` puts a label list before the `(`.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_to(&chars, i, '}'),
            '[' => i = skip_to(&chars, i, ']'),
            '0'..='9' | '.' => {
                // A number or a duration (`1h`, `0.99`), not the start of a name.
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    if called {
                        i = skip_to(&chars, next, ')');
                    }
                } else if !called && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index after the string literal opening at `open`.
fn skip_string(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index after the `close` that ends what opens at `open` (quotes respected).
fn skip_to(chars: &[char], open: usize, close: char) -> usize {
    let mut i = open + 1;
    while i < chars.len() && chars[i] != close {
        i = match chars[i] {
            '"' | '\'' | '`' => skip_string(chars, i),
            _ => i + 1,
        };
    }
    i + 1
}

#[test]
fn metric_names_skip_functions_labels_durations_and_keywords() {
    let expr = r#"sum without (kind, outcome) (rate(a_total{status!="429",x=~"a|b"}[5m])) > 0
        unless on (job) histogram_quantile(0.99, sum by (le) (rate(b_bucket[$__rate_interval])))
        or (c * 0 unless ignoring (filter) d offset 1h) == bool 1"#;
    assert_eq!(metric_names(expr), ["a_total", "b_bucket", "c", "d"]);
}
