//! The provider's own variables as the environment gives them, read by the table in
//! `variables`: each table name is looked up exactly as spelled there, so nothing else in
//! the environment can stop the provider (a lower-case `mqtt_url` is not `MQTT_URL`, and
//! an unrelated value that is not UTF-8 is never looked at). Blank values count as unset,
//! so a ConfigMap key left blank takes its default. A secret may come from the file named
//! by `NAME_FILE`, as Kubernetes mounts a Secret.

#[cfg(test)]
use std::cell::RefCell;
#[cfg(test)]
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};

use super::Problems;
use super::files::read_bounded;
use super::variables::VARIABLES;

/// The values of the table's variables, secrets already read from their files.
pub(super) struct RawEnv {
    values: HashMap<&'static str, String>,
    /// Every name looked up, so a test can check that every table variable is read.
    #[cfg(test)]
    read: RefCell<BTreeSet<&'static str>>,
}

impl RawEnv {
    /// Reads every variable of the table from `vars`, recording what cannot be used.
    pub(super) fn read(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        problems: &mut Problems,
    ) -> RawEnv {
        let mut given: HashMap<OsString, Vec<OsString>> = HashMap::new();
        for (name, value) in vars {
            given.entry(name).or_default().push(value);
        }
        let mut take = |name: &str, problems: &mut Problems| {
            text(name, given.remove(OsStr::new(name)), problems)
        };
        let mut values = HashMap::new();
        for variable in VARIABLES {
            let mut value = take(variable.name, problems);
            if variable.secret {
                let file_variable = format!("{}_FILE", variable.name);
                let file = take(&file_variable, problems);
                value = secret(variable.name, value, file, problems);
            }
            if let Some(value) = value {
                values.insert(variable.name, value);
            }
        }
        RawEnv {
            values,
            #[cfg(test)]
            read: RefCell::default(),
        }
    }

    /// The value of the table variable `name`, or `None` when unset or blank.
    pub(super) fn get(&self, name: &'static str) -> Option<&str> {
        debug_assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "{name} is not in the table of variables"
        );
        #[cfg(test)]
        self.read.borrow_mut().insert(name);
        self.values.get(name).map(String::as_str)
    }

    /// The names looked up so far.
    #[cfg(test)]
    pub(super) fn names_read(&self) -> BTreeSet<&'static str> {
        self.read.borrow().clone()
    }
}

/// One variable as text. A process environment can hold a name twice (`std::env` hands
/// both over); two different values are a problem, since which one is meant is a guess.
fn text(name: &str, values: Option<Vec<OsString>>, problems: &mut Problems) -> Option<String> {
    let mut values = values?.into_iter();
    let first = values.next()?;
    if values.any(|other| other != first) {
        problems.push(
            name,
            "is set more than once, with different values; keep one",
        );
        return None;
    }
    match first.into_string() {
        Ok(text) if text.trim().is_empty() => None,
        Ok(text) => Some(text),
        Err(_) => {
            problems.push(name, "is not valid UTF-8");
            None
        }
    }
}

/// A secret file holds one value: an API key, a password (at most 65535 bytes in MQTT).
const SECRET_FILE_MAX_BYTES: u64 = 65_536;

/// A secret from `NAME` or from the file named by `NAME_FILE` (one trailing newline
/// removed). Setting both is a problem: which one wins would be a guess.
fn secret(
    name: &str,
    value: Option<String>,
    file: Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problems.push(name, &format!("set both {name} and {name}_FILE; keep one"));
            None
        }
        (Some(value), None) => Some(value),
        (None, Some(path)) => {
            let text = read_bounded(&path, SECRET_FILE_MAX_BYTES).and_then(|bytes| {
                String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))
            });
            match text {
                Ok(text) => Some(
                    text.strip_suffix('\n')
                        .unwrap_or(&text)
                        .trim_end_matches('\r')
                        .to_owned(),
                ),
                Err(message) => {
                    problems.push(&format!("{name}_FILE"), &message);
                    None
                }
            }
        }
        (None, None) => None,
    }
}
