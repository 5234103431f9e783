//! Kubernetes Events (events.k8s.io/v1) for `kubectl describe`.
//!
//! kube's `Recorder` folds repeats by (type, action, reason) and keeps the first
//! note, so "registered web:2" would show as another count of "registered web:1".
//! This writer folds only exact repeats (same note too) into an Event series.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::Mutex;

use super::{Note, shorten};
use crate::api::common::Reason;

/// Repeats within this time join the earlier Event's series.
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    warning: bool,
    reason: Reason,
    action: &'static str,
    note: String,
}

struct Sent {
    name: String,
    count: i32,
    last: Timestamp,
}

pub struct EventWriter {
    client: Client,
    controller: String,
    instance: String,
    sent: Mutex<HashMap<Key, Sent>>,
}

/// Event notes are limited to 1 KiB (bytes) by the API.
const NOTE_BYTES: usize = 1024;

impl EventWriter {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        EventWriter {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            sent: Mutex::new(HashMap::new()),
        }
    }

    pub async fn publish(
        &self,
        note: &Note,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key = Key {
            regarding: (
                regarding.uid.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
            ),
            warning: note.warning,
            reason: note.reason.clone(),
            action: note.action,
            note: shorten(&note.message, NOTE_BYTES),
        };
        let mut sent = self.sent.lock().await;
        sent.retain(|_, s| s.last + SERIES_TTL > now);
        if let Some(s) = sent.get_mut(&key) {
            let count = s.count + 1;
            let patch = json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) }
            });
            match api
                .patch(&s.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    s.count = count;
                    s.last = now;
                    return Ok(());
                }
                // The Event expired (or was deleted): start a new one below.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    sent.remove(&key);
                }
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some(note.action.to_string()),
            reason: Some(note.reason.as_str().to_string()),
            note: Some(key.note.clone()),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.to_string()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        sent.insert(
            key,
            Sent {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_to_1024_bytes_on_a_character_boundary() {
        assert_eq!(shorten("short", NOTE_BYTES), "short");
        let long = "é".repeat(700); // 1400 bytes
        let t = shorten(&long, NOTE_BYTES);
        assert!(t.len() <= 1024, "{}", t.len());
        assert!(t.ends_with('…'));
    }
}
