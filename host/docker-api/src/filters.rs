//! Docker's `filters` query parameter, and matching containers and events
//! against it.
//!
//! The value is JSON: `{"label":["k","k=v"],"status":["running"]}`, or the
//! legacy map-of-bool form `{"label":{"k=v":true}}` (still sent by the
//! `docker` CLI). Values of one key are alternatives (OR), except `label`,
//! where every value must match; different keys must all match (AND).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::backend::{ContainerSummary, Event};
use crate::error::ApiError;

/// Parsed filters: key to values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(HashMap<String, Vec<String>>);

impl Filters {
    /// Parses the `filters` query value; absent or empty means none.
    pub fn parse(raw: Option<&str>) -> Result<Filters, ApiError> {
        let raw = raw.unwrap_or("").trim();
        if raw.is_empty() {
            return Ok(Filters::default());
        }
        let bad = |why: String| ApiError::BadRequest(format!("invalid filters: {why}"));
        let value: Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        let mut out = HashMap::new();
        for (key, v) in map {
            let values: Vec<String> = match v {
                Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        Value::String(s) => Ok(s),
                        other => Err(bad(format!("{key}: {other} is not a string"))),
                    })
                    .collect::<Result<_, _>>()?,
                Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k)
                    .collect(),
                Value::String(s) => vec![s],
                other => return Err(bad(format!("{key}: unexpected {other}"))),
            };
            out.insert(key, values);
        }
        Ok(Filters(out))
    }

    /// The values of `key`, empty when absent.
    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Refuses keys not in `allowed`, as Docker does.
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        match keys.into_iter().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::BadRequest(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(Vec::is_empty)
    }
}

/// Whether `labels` satisfies every `k` / `k=v` filter value.
pub fn labels_match(filters: &[String], labels: &BTreeMap<String, String>) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(f.as_str()),
    })
}

/// Docker's name filter is a regular expression; we support its common
/// uses: a substring, optionally anchored with `^` and `$`.
fn name_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_start_matches('/');
    let mut p = pattern;
    let start = p.starts_with('^');
    if start {
        p = &p[1..];
    }
    let p = p.trim_start_matches('/');
    let end = p.ends_with('$');
    let p = p.strip_suffix('$').unwrap_or(p);
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

const CONTAINER_STATES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// The filter keys `GET /containers/json` accepts.
pub const CONTAINER_KEYS: &[&str] = &["label", "name", "id", "status", "exited", "ancestor"];

/// Checks container filter values that Docker validates up front.
pub fn validate_container_filters(f: &Filters) -> Result<(), ApiError> {
    f.only(CONTAINER_KEYS)?;
    for s in f.get("status") {
        if !CONTAINER_STATES.contains(&s.as_str()) {
            return Err(ApiError::BadRequest(format!("invalid filter 'status={s}'")));
        }
    }
    for e in f.get("exited") {
        if e.parse::<i64>().is_err() {
            return Err(ApiError::BadRequest(format!("invalid filter 'exited={e}'")));
        }
    }
    Ok(())
}

/// Whether a container passes the filters.
pub fn container_matches(f: &Filters, c: &ContainerSummary) -> bool {
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        let v = f.get(key);
        v.is_empty() || v.iter().any(|x| pred(x))
    };
    labels_match(f.get("label"), &c.labels)
        && any("name", &|p| name_matches(p, &c.name))
        && any("id", &|p| c.id.starts_with(p))
        && any("status", &|s| s == c.status.as_str())
        && any("exited", &|e| {
            c.status == crate::backend::ContainerStatus::Exited
                && e.parse::<i64>().is_ok_and(|e| e == c.exit_code)
        })
        && any("ancestor", &|a| {
            c.image == a
                || c.image_id == a
                || c.image_id.trim_start_matches("sha256:").starts_with(a)
                || c.image == format!("{a}:latest")
        })
}

/// The filter keys `GET /events` accepts.
pub const EVENT_KEYS: &[&str] = &["type", "event", "container", "label", "image"];

/// Whether an event passes the filters.
pub fn event_matches(f: &Filters, e: &Event) -> bool {
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        let v = f.get(key);
        v.is_empty() || v.iter().any(|x| pred(x))
    };
    let attr = |k: &str| e.attributes.get(k).map(String::as_str).unwrap_or("");
    any("type", &|t| t == e.typ)
        && any("event", &|a| {
            // "exec_start" events carry the command: "exec_start: sh -c x".
            a == e.action || e.action.split(':').next() == Some(a)
        })
        && any("container", &|c| {
            e.typ == "container" && (e.id.starts_with(c) || attr("name") == c)
        })
        && any("image", &|i| {
            attr("image") == i || (e.typ == "image" && (e.id == i || e.id.starts_with(i)))
        })
        && labels_match(f.get("label"), &e.attributes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ContainerStatus;

    fn container() -> ContainerSummary {
        ContainerSummary {
            id: "abcdef0123".into(),
            name: "web-1".into(),
            image: "busybox:latest".into(),
            image_id: "sha256:1234".into(),
            status: ContainerStatus::Exited,
            exit_code: 3,
            labels: [("x".to_string(), "y".to_string()), ("z".into(), "".into())].into(),
            ..ContainerSummary::default()
        }
    }

    #[test]
    fn parses_both_forms() {
        let a = Filters::parse(Some(r#"{"label":["x=y"]}"#)).unwrap();
        let b = Filters::parse(Some(r#"{"label":{"x=y":true,"q":false}}"#)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.get("label"), ["x=y"]);
        assert!(Filters::parse(None).unwrap().is_empty());
        assert!(Filters::parse(Some("")).unwrap().is_empty());
    }

    #[test]
    fn refuses_malformed() {
        assert!(matches!(
            Filters::parse(Some("{nope")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(Filters::parse(Some("[1]")).is_err());
        assert!(Filters::parse(Some(r#"{"label":[1]}"#)).is_err());
        let f = Filters::parse(Some(r#"{"bogus":["1"]}"#)).unwrap();
        assert!(validate_container_filters(&f).is_err());
        let f = Filters::parse(Some(r#"{"status":["sleeping"]}"#)).unwrap();
        assert!(validate_container_filters(&f).is_err());
    }

    #[test]
    fn matches_containers() {
        let c = container();
        let m = |s: &str| container_matches(&Filters::parse(Some(s)).unwrap(), &c);
        assert!(m(r#"{"label":["x=y"]}"#));
        assert!(m(r#"{"label":["x"]}"#));
        assert!(m(r#"{"label":["x=y","z"]}"#));
        assert!(!m(r#"{"label":["x=n"]}"#));
        assert!(!m(r#"{"label":["x=y","w"]}"#));
        assert!(m(r#"{"name":["web"]}"#));
        assert!(m(r#"{"name":["^/web-1$"]}"#));
        assert!(!m(r#"{"name":["^eb"]}"#));
        assert!(m(r#"{"id":["abc"]}"#));
        assert!(!m(r#"{"id":["bcd"]}"#));
        assert!(m(r#"{"status":["running","exited"]}"#));
        assert!(!m(r#"{"status":["running"]}"#));
        assert!(m(r#"{"exited":["3"]}"#));
        assert!(!m(r#"{"exited":["0"]}"#));
        assert!(m(r#"{"ancestor":["busybox"]}"#));
        assert!(m(r#"{"status":["exited"],"label":["x=y"]}"#));
        assert!(!m(r#"{"status":["exited"],"label":["x=q"]}"#));
    }

    #[test]
    fn matches_events() {
        let e = Event {
            typ: "container".into(),
            action: "exec_start: sh -c true".into(),
            id: "abc123".into(),
            attributes: [
                ("name".to_string(), "web".to_string()),
                ("image".into(), "busybox".into()),
                ("x".into(), "y".into()),
            ]
            .into(),
            time_ns: 0,
        };
        let m = |s: &str| event_matches(&Filters::parse(Some(s)).unwrap(), &e);
        assert!(m(r#"{"type":["container"],"event":["exec_start"]}"#));
        assert!(!m(r#"{"type":["image"]}"#));
        assert!(m(r#"{"container":["web"]}"#));
        assert!(m(r#"{"container":["abc"]}"#));
        assert!(!m(r#"{"container":["other"]}"#));
        assert!(m(r#"{"image":["busybox"]}"#));
        assert!(m(r#"{"label":["x=y"]}"#));
        assert!(!m(r#"{"event":["die"]}"#));
    }
}
