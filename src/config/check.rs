//! `--check`: the effective configuration as an operator reads it, secrets masked.

use std::fmt::Write;

use super::Config;
use super::variables::VARIABLES;

/// Renders the effective configuration: one `NAME = value` line per variable of the
/// table, then one `ALARM` line per alarm with its next fire time.
pub fn render_check(config: &Config) -> String {
    let mut out = String::new();
    let mut line = |name: &str, value: &str| {
        let _ = writeln!(out, "{name:24} = {value}");
    };
    for variable in VARIABLES {
        line(variable.name, &(variable.shown)(config));
    }
    let now = chrono::Utc::now();
    for alarm in &config.alarms {
        line("ALARM", &alarm.describe(now));
    }
    out
}
