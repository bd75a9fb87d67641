//! The event feed: the container store watched for changes, so that containers the
//! berth CLI creates, starts and removes show up in `docker events` too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use berth_docker_api::Event;
use berth_engine::{ContainerRecord, Engine, Status};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::broadcast;

/// How often the store is looked at.
const POLL: Duration = Duration::from_millis(200);
/// Events kept for a slow subscriber before it misses some.
const BACKLOG: usize = 1024;

/// What the feed remembers of a container between looks.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: Status,
    started_at: Option<u64>,
    record: ContainerRecord,
}

/// Live container events for every subscriber.
#[derive(Debug)]
pub struct Feed {
    tx: broadcast::Sender<Event>,
}

impl Feed {
    /// Starts watching `engine`'s containers.
    pub fn start(engine: Arc<Engine>) -> Self {
        let (tx, _) = broadcast::channel(BACKLOG);
        let sender = tx.clone();
        tokio::spawn(async move {
            // Reading every record is file work: it runs off the async threads.
            let look = |engine: Arc<Engine>| async move {
                crate::blocking(move || Ok(snapshot(&engine)))
                    .await
                    .ok()
                    .flatten()
            };
            let mut seen = look(engine.clone()).await.unwrap_or_default();
            loop {
                tokio::time::sleep(POLL).await;
                // Nobody listens: keep the snapshot fresh without building events.
                let Some(now) = look(engine.clone()).await else {
                    continue;
                };
                if sender.receiver_count() > 0 {
                    for e in diff(&seen, &now) {
                        let _ = sender.send(e);
                    }
                }
                seen = now;
            }
        });
        Self { tx }
    }

    /// Events from now on; a subscriber too slow for the backlog skips what it missed.
    pub fn subscribe(&self) -> BoxStream<'static, Event> {
        let rx = self.tx.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("an events subscriber missed {n} events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

fn snapshot(engine: &Engine) -> Option<HashMap<String, Seen>> {
    let records = engine.containers().ok()?;
    Some(
        records
            .into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    Seen {
                        status: r.status(),
                        started_at: r.state.started_at,
                        record: r,
                    },
                )
            })
            .collect(),
    )
}

fn event(action: &str, r: &ContainerRecord) -> Event {
    let mut attributes = r.spec.labels.clone();
    attributes.insert("name".into(), r.name.clone());
    attributes.insert("image".into(), r.spec.image.clone());
    if action == "die" {
        attributes.insert(
            "exitCode".into(),
            r.state.exit_code.unwrap_or(0).to_string(),
        );
    }
    Event {
        typ: "container".into(),
        action: action.into(),
        id: r.id.clone(),
        attributes,
        time_ns: chrono::Utc::now()
            .timestamp_nanos_opt()
            .map(|n| n as u64)
            .unwrap_or(0),
    }
}

/// The events between two looks at the store, in the order docker sends them.
fn diff(before: &HashMap<String, Seen>, after: &HashMap<String, Seen>) -> Vec<Event> {
    let mut out = Vec::new();
    for (id, now) in after {
        let r = &now.record;
        match before.get(id) {
            None => {
                out.push(event("create", r));
                if now.started_at.is_some() {
                    out.push(event("start", r));
                }
                if now.status == Status::Exited && now.started_at.is_some() {
                    out.push(event("die", r));
                }
            }
            Some(was) => {
                let restarted = now.started_at != was.started_at && now.started_at.is_some();
                if restarted && was.status == Status::Running {
                    out.push(event("die", &was.record));
                }
                if restarted || (was.status != Status::Running && now.status == Status::Running) {
                    out.push(event("start", r));
                }
                if now.status == Status::Exited && (was.status == Status::Running || restarted) {
                    out.push(event("die", r));
                }
            }
        }
    }
    for (id, was) in before {
        if !after.contains_key(id) {
            if was.status == Status::Running {
                out.push(event("die", &was.record));
            }
            out.push(event("destroy", &was.record));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, status: Status, started_at: Option<u64>) -> (String, Seen) {
        let record = ContainerRecord {
            id: id.into(),
            name: format!("n-{id}"),
            created: 0,
            spec: Default::default(),
            state: berth_engine::State {
                started_at,
                exit_code: Some(3),
                ..Default::default()
            },
        };
        (
            id.to_string(),
            Seen {
                status,
                started_at,
                record,
            },
        )
    }

    fn actions(before: Vec<(String, Seen)>, after: Vec<(String, Seen)>) -> Vec<String> {
        let b: HashMap<_, _> = before.into_iter().collect();
        let a: HashMap<_, _> = after.into_iter().collect();
        diff(&b, &a)
            .into_iter()
            .map(|e| format!("{} {}", e.action, e.id))
            .collect()
    }

    #[test]
    fn a_container_life_becomes_docker_events() {
        let created = seen("a", Status::Created, None);
        let running = seen("a", Status::Running, Some(5));
        let exited = seen("a", Status::Exited, Some(5));
        assert_eq!(actions(vec![], vec![created.clone()]), ["create a"]);
        assert_eq!(actions(vec![created], vec![running.clone()]), ["start a"]);
        assert_eq!(
            actions(vec![running.clone()], vec![exited.clone()]),
            ["die a"]
        );
        assert_eq!(actions(vec![exited.clone()], vec![]), ["destroy a"]);
        assert_eq!(
            actions(vec![running], vec![]),
            ["die a", "destroy a"],
            "rm -f of a running container"
        );
        let again = seen("a", Status::Exited, Some(9));
        assert_eq!(
            actions(vec![exited.clone()], vec![again]),
            ["start a", "die a"],
            "a run too short to be seen running"
        );
        assert!(actions(vec![exited.clone()], vec![exited]).is_empty());
        let e = diff(
            &HashMap::new(),
            &[seen("b", Status::Exited, Some(1))].into_iter().collect(),
        );
        let die = e.iter().find(|e| e.action == "die").unwrap();
        assert_eq!(die.attributes["exitCode"], "3");
        assert_eq!(die.attributes["name"], "n-b");
    }
}
