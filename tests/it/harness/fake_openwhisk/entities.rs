//! A namespace's triggers: whether a fire finds one and has an active rule, and the
//! trigger's own GET, PUT and DELETE.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::{Map, Value, json};

use super::answers::{Answer, NOT_FOUND};
use super::controller::TriggerRequest;

/// The triggers of one namespace, by name.
#[derive(Default)]
pub(super) struct Triggers(HashMap<String, Trigger>);

struct Trigger {
    active_rule: bool,
    parameters: Value,
    annotations: Value,
    updated: u64,
}

impl Triggers {
    /// Creates or replaces a trigger, with one active rule or with none.
    pub fn create(&mut self, name: &str, active_rule: bool) {
        let trigger = Trigger::new(active_rule, json!([]), json!([]));
        self.0.insert(name.to_string(), trigger);
    }

    pub fn delete(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// What a fire that passed every check gets: 404 without the trigger, 204 without an
    /// active rule, else 202.
    pub fn fire(&self, name: &str) -> Result<Answer, Answer> {
        match self.0.get(name) {
            None => Err(Answer::error(404, NOT_FOUND)),
            Some(trigger) if trigger.active_rule => Ok(Answer::activation()),
            Some(_) => Ok(Answer::NoContent),
        }
    }

    /// GET, PUT (`?overwrite=true` to replace) or DELETE of the trigger `request` names in
    /// `namespace` (these triggers' own), once the controller let it through.
    pub fn manage(
        &mut self,
        namespace: &str,
        request: &TriggerRequest<'_>,
    ) -> Result<Answer, Answer> {
        let name = request.name;
        let found = |trigger: Option<&Trigger>| match trigger {
            Some(trigger) => Ok(Answer::Json(200, trigger.to_json(namespace, name))),
            None => Err(Answer::error(404, NOT_FOUND)),
        };
        match request.parts.method {
            Method::GET => found(self.0.get(name)),
            Method::DELETE => found(self.0.remove(name).as_ref()),
            _ => {
                let query = request.parts.uri.query().unwrap_or_default();
                let overwrite = query.split('&').any(|pair| pair == "overwrite=true");
                let existing = self.0.get(name);
                if existing.is_some() && !overwrite {
                    return Err(Answer::error(409, "resource already exists"));
                }
                let fields = request.json_body()?;
                let field = |key: &str| fields.get(key).cloned().unwrap_or_else(|| json!([]));
                // An update keeps the trigger's rules, as OpenWhisk does.
                let active_rule = existing.is_some_and(|t| t.active_rule);
                let trigger = Trigger::new(active_rule, field("parameters"), field("annotations"));
                let answer = Answer::Json(200, trigger.to_json(namespace, name));
                self.0.insert(name.to_string(), trigger);
                Ok(answer)
            }
        }
    }
}

impl Trigger {
    fn new(active_rule: bool, parameters: Value, annotations: Value) -> Self {
        let updated = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        Trigger {
            active_rule,
            parameters,
            annotations,
            updated,
        }
    }

    /// The trigger as `GET` returns it; `rules` only when it has one.
    fn to_json(&self, namespace: &str, name: &str) -> Value {
        let mut trigger = json!({
            "namespace": namespace, "name": name, "version": "0.0.1", "publish": false,
            "parameters": self.parameters, "annotations": self.annotations,
            "limits": {}, "updated": self.updated,
        });
        if self.active_rule {
            let action = json!({ "path": namespace, "name": format!("{name}-action") });
            let rule = json!({ "action": action, "status": "active" });
            let rules = Map::from_iter([(format!("{namespace}/{name}-rule"), rule)]);
            trigger["rules"] = Value::Object(rules);
        }
        trigger
    }
}
