//! The training platform's read models (the seeds' CQRS views), as projections of the domain
//! events the shipped definitions emit ([`baton_engine::projection`]):
//!
//! - [`Documents`] (`documents`): where each tracked document is now, and its custody trail;
//! - [`TrainingProgress`] (`training-progress`): per person and program, how far they are
//!   (assigned, attended or absent, testing, certified or failed);
//! - [`Certifications`] (`certifications`): the versatility matrix, who is certified for what
//!   and until when.
//!
//! Each row keeps the latest fact by the event's time, so the order of events of different
//! instances does not change the rows: a rebuild from history in time order gives the rows the
//! live feed gave in commit order. The events and their fields are listed in
//! docs/definitions.md ("Events").

use std::sync::Arc;

use baton_engine::projection::Projection;
use baton_engine::store::OutboxRow;
use chrono::SecondsFormat;
use serde_json::{Map, Value, json};

const DOCUMENT_EVENT: &str = "com.baton.training.document.";
const ASSIGNED: &str = "com.baton.training.assigned";
const ATTENDANCE: &str = "com.baton.training.attendance.recorded";
const TEST_ASSIGNED: &str = "com.baton.training.test.assigned";
const CERTIFIED: &str = "com.baton.training.operator.certified";
const MATRIX_UPDATED: &str = "com.baton.training.versatility-matrix.updated";

/// The three projections, as the server runs them.
pub fn training_projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(Documents), Arc::new(TrainingProgress), Arc::new(Certifications)]
}

fn data(event: &OutboxRow) -> &Value {
    event.payload.get("data").unwrap_or(&Value::Null)
}

fn text<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The event's time as the rows keep it (RFC 3339, milliseconds, UTC), which sorts as text.
fn at(event: &OutboxRow) -> String {
    event.created_at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether the event is at least as recent as the fact the row holds under `field`.
fn newer(row: &Map<String, Value>, field: &str, at: &str) -> bool {
    row.get(field).and_then(Value::as_str).is_none_or(|held| at >= held)
}

/// Copies the fields the event's data has (and are not null) into the row.
fn copy(row: &mut Map<String, Value>, data: &Value, fields: &[&str]) {
    for field in fields {
        if let Some(value) = data.get(*field).filter(|v| !v.is_null()) {
            row.insert((*field).to_owned(), value.clone());
        }
    }
}

fn object(row: Option<Value>) -> Map<String, Value> {
    match row {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// What a document row holds once, rather than on each leg of its trail.
const DOCUMENT_FIELDS: [&str; 8] =
    ["instance", "trackingCode", "documentId", "documentType", "sha256", "person", "department", "digital"];

/// Documents in transit: one row per tracking code, with the leg it is at (`state`: issued,
/// printed, sent, signed, refused, returned, scanned, archived, lost...) and the custody trail
/// in time order.
#[derive(Debug)]
pub struct Documents;

impl Projection for Documents {
    fn name(&self) -> &str {
        "documents"
    }

    fn keys(&self, event: &OutboxRow) -> Vec<String> {
        if !event.kind.starts_with(DOCUMENT_EVENT) {
            return Vec::new();
        }
        let code = text(data(event), "trackingCode").or_else(|| text(&event.payload, "subject"));
        code.map(|code| vec![code.to_owned()]).unwrap_or_default()
    }

    fn apply(&self, event: &OutboxRow, key: &str, row: Option<Value>) -> Option<Value> {
        let mut row = object(row);
        let state = event.kind.trim_start_matches(DOCUMENT_EVENT).to_owned();
        let data = data(event);
        let at = at(event);
        row.insert("trackingCode".into(), json!(key));
        copy(&mut row, data, &DOCUMENT_FIELDS[2..]);
        if let Some(instance) = text(data, "instance") {
            row.insert("instance".into(), json!(instance));
        }
        // The leg keeps what the event says about it (who, how, where), not the document's
        // own fields, which the row holds once.
        let mut leg: Map<String, Value> = data
            .as_object()
            .map(|fields| {
                fields
                    .iter()
                    .filter(|(field, value)| !value.is_null() && !DOCUMENT_FIELDS.contains(&field.as_str()))
                    .map(|(field, value)| (field.clone(), value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        leg.insert("state".into(), json!(state));
        leg.insert("at".into(), json!(at));
        leg.insert("instance".into(), json!(event.instance.as_str()));
        leg.insert("seq".into(), json!(event.seq));
        let mut trail: Vec<Value> = row.remove("trail").and_then(|t| t.as_array().cloned()).unwrap_or_default();
        // The same event again (a rebuild over rows it already holds) changes nothing.
        trail.retain(|old| !(old["instance"] == leg["instance"] && old["seq"] == leg["seq"]));
        trail.push(Value::Object(leg));
        trail.sort_by(|a, b| {
            let key = |v: &Value| (v["at"].as_str().unwrap_or_default().to_owned(), v["seq"].as_u64().unwrap_or(0));
            key(a).cmp(&key(b))
        });
        if newer(&row, "since", &at) {
            row.insert("state".into(), json!(state));
            row.insert("since".into(), json!(at));
        }
        row.insert("trail".into(), Value::Array(trail));
        Some(Value::Object(row))
    }
}

/// Training progress: one row per person and program (`person/program`), with the latest
/// status and the time of each milestone.
#[derive(Debug)]
pub struct TrainingProgress;

impl TrainingProgress {
    /// The people an event is about.
    fn people(event: &OutboxRow) -> Vec<String> {
        let data = data(event);
        let list = |field: &str| -> Vec<String> {
            data.get(field)
                .and_then(Value::as_array)
                .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        match event.kind.as_str() {
            ASSIGNED => {
                let mut people = list("userIds");
                people.extend(text(data, "userId").map(str::to_owned));
                people
            }
            ATTENDANCE => [list("attendees"), list("absentees")].concat(),
            TEST_ASSIGNED | CERTIFIED | MATRIX_UPDATED => {
                text(data, "operatorId").map(str::to_owned).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    fn program(event: &OutboxRow) -> Option<&str> {
        let data = data(event);
        text(data, "programId").or_else(|| text(data, "trainingId"))
    }
}

impl Projection for TrainingProgress {
    fn name(&self) -> &str {
        "training-progress"
    }

    fn keys(&self, event: &OutboxRow) -> Vec<String> {
        let Some(program) = Self::program(event) else { return Vec::new() };
        let mut people = Self::people(event);
        people.sort();
        people.dedup();
        people.into_iter().map(|person| format!("{person}/{program}")).collect()
    }

    fn apply(&self, event: &OutboxRow, key: &str, row: Option<Value>) -> Option<Value> {
        let mut row = object(row);
        let (person, program) = key.split_once('/').unwrap_or((key, ""));
        let data = data(event);
        let at = at(event);
        row.insert("person".into(), json!(person));
        row.insert("program".into(), json!(program));
        copy(&mut row, data, &["department", "programTitle", "title", "dueDate"]);
        let absent = data
            .get("absentees")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(person)));
        let (status, milestone) = match event.kind.as_str() {
            ASSIGNED => ("assigned", "assignedAt"),
            ATTENDANCE if absent => ("absent", "attendanceAt"),
            ATTENDANCE => ("attended", "attendanceAt"),
            TEST_ASSIGNED => ("testing", "testAssignedAt"),
            CERTIFIED => ("certified", "certifiedAt"),
            MATRIX_UPDATED if text(data, "status") == Some("certified") => ("certified", "certifiedAt"),
            MATRIX_UPDATED => ("failed", "failedAt"),
            _ => return Some(Value::Object(row)),
        };
        if newer(&row, milestone, &at) {
            row.insert(milestone.into(), json!(at));
        }
        if let Some(score) = data.get("score").filter(|v| !v.is_null()) {
            row.insert("score".into(), score.clone());
        }
        // The latest fact wins; at the same time, a later step of the process does.
        let rank = |status: &str| {
            ["assigned", "absent", "attended", "testing", "failed", "certified"].iter().position(|s| *s == status)
        };
        let held = (
            row.get("updatedAt").and_then(Value::as_str).map(str::to_owned),
            row.get("status").and_then(Value::as_str).and_then(rank),
        );
        let wins = match held {
            (Some(held_at), held_rank) => at > held_at || (at == held_at && rank(status) >= held_rank),
            (None, _) => true,
        };
        if wins {
            row.insert("status".into(), json!(status));
            row.insert("updatedAt".into(), json!(at));
        }
        Some(Value::Object(row))
    }
}

/// The versatility matrix: one row per operator and program (`operator/program`) once a result
/// came in: `certified` (with the score, when, and until when) or `failed`.
#[derive(Debug)]
pub struct Certifications;

impl Projection for Certifications {
    fn name(&self) -> &str {
        "certifications"
    }

    fn keys(&self, event: &OutboxRow) -> Vec<String> {
        if event.kind != CERTIFIED && event.kind != MATRIX_UPDATED {
            return Vec::new();
        }
        let data = data(event);
        match (text(data, "operatorId"), text(data, "programId")) {
            (Some(operator), Some(program)) => vec![format!("{operator}/{program}")],
            _ => Vec::new(),
        }
    }

    fn apply(&self, event: &OutboxRow, key: &str, row: Option<Value>) -> Option<Value> {
        let mut row = object(row);
        let data = data(event);
        let at = at(event);
        let (operator, program) = key.split_once('/').unwrap_or((key, ""));
        row.insert("operatorId".into(), json!(operator));
        row.insert("programId".into(), json!(program));
        copy(&mut row, data, &["programTitle", "department"]);
        // OperatorCertified and VersatilityMatrixUpdated of one result come together; the
        // latest result (a retake) replaces an earlier one.
        if !newer(&row, "resultAt", &at) {
            return Some(Value::Object(row));
        }
        let status = if event.kind == CERTIFIED { "certified" } else { text(data, "status").unwrap_or("failed") };
        let same_result = row.get("resultAt").and_then(Value::as_str) == Some(at.as_str());
        row.insert("resultAt".into(), json!(at));
        row.insert("status".into(), json!(status));
        copy(&mut row, data, &["score", "sessionId", "testId"]);
        if status == "certified" {
            // OperatorCertified says when; the matrix update of the same result does not.
            if event.kind == CERTIFIED {
                let certified_at = text(data, "certifiedAt").unwrap_or(&at).to_owned();
                row.insert("certifiedAt".into(), json!(certified_at));
            } else if !same_result || !row.contains_key("certifiedAt") {
                row.insert("certifiedAt".into(), json!(at));
            }
            match data.get("validUntil").filter(|v| !v.is_null()) {
                Some(until) => row.insert("validUntil".into(), until.clone()),
                None if same_result => None,
                None => row.remove("validUntil"),
            };
        } else {
            for field in ["certifiedAt", "validUntil"] {
                row.remove(field);
            }
        }
        Some(Value::Object(row))
    }
}

#[cfg(test)]
mod tests {
    use baton_engine::InstanceId;
    use chrono::{TimeZone, Utc};

    use super::*;

    fn event(instance: &str, seq: u64, minute: u32, kind: &str, data: Value) -> OutboxRow {
        OutboxRow {
            instance: InstanceId::new(instance),
            seq,
            kind: kind.to_owned(),
            payload: json!({"type": kind, "data": data}),
            created_at: Utc.with_ymd_and_hms(2026, 12, 7, 9, minute, 0).single().expect("a time"),
        }
    }

    /// The rows of a projection after the events, in the order given.
    fn rows(projection: &dyn Projection, events: &[OutboxRow]) -> std::collections::BTreeMap<String, Value> {
        let mut rows = std::collections::BTreeMap::new();
        for event in events {
            for key in projection.keys(event) {
                if let Some(row) = projection.apply(event, &key, rows.remove(&key)) {
                    rows.insert(key, row);
                }
            }
        }
        rows
    }

    /// Every order of the events gives the same rows.
    fn same_in_every_order(
        projection: &dyn Projection,
        events: &[OutboxRow],
    ) -> std::collections::BTreeMap<String, Value> {
        let expected = rows(projection, events);
        let mut order: Vec<usize> = (0..events.len()).collect();
        // Heap's algorithm over at most 6 events: 720 orders.
        fn permute(k: usize, order: &mut Vec<usize>, each: &mut dyn FnMut(&[usize])) {
            if k <= 1 {
                each(order);
                return;
            }
            for i in 0..k {
                permute(k - 1, order, each);
                let j = if k.is_multiple_of(2) { i } else { 0 };
                order.swap(j, k - 1);
            }
        }
        let len = order.len();
        permute(len, &mut order, &mut |order| {
            let shuffled: Vec<OutboxRow> = order.iter().map(|i| events[*i].clone()).collect();
            assert_eq!(rows(projection, &shuffled), expected, "{} in the order {order:?}", projection.name());
        });
        expected
    }

    #[test]
    fn a_retake_replaces_the_certification_whatever_the_order() {
        let result = |seq, minute, kind: &str, status: &str, score| {
            let data = json!({"operatorId": "olga", "programId": "forklift", "department": "assembly",
                "status": status, "score": score, "validUntil": "2028-12-31", "certifiedAt": "2026-12-07T09:00:00Z"});
            event("test-1", seq, minute, kind, data)
        };
        let passed = [result(4, 0, CERTIFIED, "certified", 92), result(5, 0, MATRIX_UPDATED, "certified", 92)];
        let rows = same_in_every_order(&Certifications, &passed);
        let olga = &rows["olga/forklift"];
        assert_eq!(
            (olga["status"].clone(), olga["certifiedAt"].clone(), olga["validUntil"].clone()),
            (json!("certified"), json!("2026-12-07T09:00:00Z"), json!("2028-12-31"))
        );
        let mut retake = passed.to_vec();
        retake.push(result(9, 30, MATRIX_UPDATED, "failed", 41));
        let rows = same_in_every_order(&Certifications, &retake);
        let olga = &rows["olga/forklift"];
        assert_eq!((olga["status"].clone(), olga["score"].clone()), (json!("failed"), json!(41)));
        assert!(olga.get("validUntil").is_none() && olga.get("certifiedAt").is_none(), "{olga}");
    }

    #[test]
    fn progress_follows_the_latest_step_of_each_person() {
        let events = [
            event(
                "assign",
                1,
                0,
                ASSIGNED,
                json!({"trainingId": "forklift", "userIds": ["olga", "omar"], "dueDate": "2026-12-31"}),
            ),
            event(
                "session",
                3,
                10,
                ATTENDANCE,
                json!({"programId": "forklift", "department": "assembly", "attendees": ["olga"], "absentees": ["omar"]}),
            ),
            event("test", 2, 10, TEST_ASSIGNED, json!({"programId": "forklift", "operatorId": "olga"})),
            event("test", 6, 20, CERTIFIED, json!({"programId": "forklift", "operatorId": "olga", "score": 90})),
            event("other", 1, 5, "com.example.unrelated", json!({"programId": "forklift", "operatorId": "olga"})),
        ];
        let rows = same_in_every_order(&TrainingProgress, &events);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let (olga, omar) = (&rows["olga/forklift"], &rows["omar/forklift"]);
        assert_eq!((olga["status"].clone(), olga["score"].clone()), (json!("certified"), json!(90)));
        assert_eq!((omar["status"].clone(), omar["dueDate"].clone()), (json!("absent"), json!("2026-12-31")));
        assert_eq!(olga["assignedAt"], "2026-12-07T09:00:00.000Z");
    }

    #[test]
    fn a_document_s_trail_is_in_time_order_and_its_state_the_latest_leg() {
        let leg = |seq, minute, kind: &str, extra: Value| {
            let mut data =
                json!({"trackingCode": "BTN-1", "documentId": "d-1", "person": "olga", "department": "assembly"});
            data.as_object_mut().expect("an object").extend(extra.as_object().cloned().unwrap_or_default());
            event("doc", seq, minute, &format!("{DOCUMENT_EVENT}{kind}"), data)
        };
        let events = [
            leg(2, 0, "issued", json!({"documentType": "certificate"})),
            leg(5, 10, "printed", json!({"printer": "P2"})),
            leg(8, 20, "sent", json!({"via": "internal-mail"})),
            leg(12, 40, "signed", json!({"signer": "olga", "recordedBy": "tom"})),
        ];
        let rows = same_in_every_order(&Documents, &events);
        let document = &rows["BTN-1"];
        assert_eq!(
            (document["state"].clone(), document["documentType"].clone()),
            (json!("signed"), json!("certificate"))
        );
        let trail = document["trail"].as_array().expect("a trail");
        let states: Vec<&str> = trail.iter().filter_map(|leg| leg["state"].as_str()).collect();
        assert_eq!(states, ["issued", "printed", "sent", "signed"]);
        assert_eq!((trail[1]["printer"].clone(), trail[3]["recordedBy"].clone()), (json!("P2"), json!("tom")));
        assert!(trail[0].get("trackingCode").is_none(), "the document's own fields are on the row: {trail:?}");
    }
}
