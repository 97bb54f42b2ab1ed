//! The one accumulator of configuration problems, and the parsers that report into it.

use serde_json::{Map, Value};

/// One configuration problem, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub variable: String,
    pub message: String,
}

/// Collects problems while parsing goes on, so all are reported together.
#[derive(Debug, Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    /// `Ok(value)` when nothing was recorded, else every problem recorded.
    pub(super) fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError(self.0))
        }
    }

    pub(super) fn push(&mut self, variable: &str, message: &str) {
        self.0.push(Problem {
            variable: variable.to_owned(),
            message: message.to_owned(),
        });
    }

    /// Whether a problem names `variable` already.
    pub(super) fn reported(&self, variable: &str) -> bool {
        self.0.iter().any(|p| p.variable == variable)
    }

    /// Parses `raw` as `T`, or records "expected {expected}" and falls back to `default`.
    pub(super) fn parse<T: std::str::FromStr>(
        &mut self,
        variable: &str,
        raw: Option<&str>,
        default: T,
        expected: &str,
    ) -> T {
        match raw.map(str::trim) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.push(variable, &format!("expected {expected}, got {text:?}"));
                default
            }),
        }
    }

    /// Like [`Problems::parse`], and the value must also lie in `range`.
    pub(super) fn parse_in<T>(
        &mut self,
        variable: &str,
        raw: Option<&str>,
        default: T,
        range: std::ops::RangeInclusive<T>,
        unit: &str,
    ) -> T
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let expected = format!("{unit} from {} to {}", range.start(), range.end());
        let value = self.parse(variable, raw, default, &expected);
        if range.contains(&value) {
            value
        } else {
            self.push(variable, &format!("expected {expected}, got {value}"));
            default
        }
    }

    pub(super) fn required<'a>(
        &mut self,
        variable: &str,
        raw: Option<&'a str>,
        example: &str,
    ) -> Option<&'a str> {
        let value = raw.map(str::trim);
        // A value that could not be read (not UTF-8, set twice) is reported already.
        if value.is_none() && !self.reported(variable) {
            self.push(variable, &format!("required, e.g. {example}"));
        }
        value
    }
}

/// The configuration could not be used; the process exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn render_problems(problems: &[Problem]) -> String {
    let mut text = format!(
        "invalid configuration ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str(&format!("\n  {}: {}", p.variable, p.message));
    }
    text
}

/// Parses a JSON object, naming the variable and what was wrong.
pub(super) fn json_object(
    problems: &mut Problems,
    variable: &str,
    raw: Option<&str>,
) -> Map<String, Value> {
    let Some(text) = raw else {
        return Map::new();
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        Ok(other) => {
            problems.push(
                variable,
                &format!("expected a JSON object, got {}", json_kind(&other)),
            );
            Map::new()
        }
        Err(e) => {
            problems.push(variable, &format!("expected a JSON object: {e}"));
            Map::new()
        }
    }
}

/// A required, non-empty string field of a JSON array entry (`ALARMS`, `ROUTES`),
/// trimmed; a problem on `variable` when missing (with `example`), empty or not a string.
pub(super) fn entry_string(
    entry: &Map<String, Value>,
    key: &str,
    variable: &str,
    example: &str,
    problems: &mut Problems,
) -> Option<String> {
    match entry.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Some(text.trim().to_owned()),
        Some(Value::String(_)) => {
            problems.push(variable, "must not be empty");
            None
        }
        Some(other) => {
            problems.push(
                variable,
                &format!("expected a string, got {}", json_kind(other)),
            );
            None
        }
        None => {
            problems.push(variable, &format!("required, e.g. {example}"));
            None
        }
    }
}

/// How an error message names the kind of a JSON value ("an array").
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
