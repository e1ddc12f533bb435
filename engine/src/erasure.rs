//! Erasing a person's personal data on request (GDPR) without breaking a hash chain.
//!
//! What counts as the person's data, and how each copy of it is scrubbed; the stores apply it
//! in one transaction ([`crate::store::RetentionStore::erase_person`]). The design, and why
//! salted commitments rather than per-person keys, is in docs/architecture.md ("Erasure").
//!
//! - In the histories of ended instances: the payloads of the task completions the person made
//!   or that were made on their behalf, and of the comments they wrote (form data and free
//!   text). The events stay, with their actor, time and commitment.
//! - In the task read model: the same completions' data and comments, replaced by a mark.
//! - Their notifications (deliveries and in-app) are deleted.
//! - In the directory: their name, contacts, locale, preferences, roles and groups; their id
//!   stays, as a pseudonym in histories, and they become inactive.
//!
//! Running instances that hold such data block the erasure: their state needs it to go on.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::HashSet;

use crate::directory::{Organisation, Person};
use crate::error::EngineError;
use crate::history::{Actor, EventKind, InstanceId, StoredEvent};
use crate::human::HumanTask;
use crate::store::Store;

/// The history tags whose payloads can hold a person's data: HumanTaskCommented and
/// HumanTaskCompleted.
pub const PERSONAL_TAGS: [u16; 2] = [26, 27];

/// What a comment's text becomes.
pub const ERASED_TEXT: &str = "(erased)";

/// A request to erase one person's data.
#[derive(Clone, Debug, PartialEq)]
pub struct Erasure {
    pub person: String,
    /// Who asked, as recorded in the audit trail.
    pub by: Actor,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    /// Find and count, change nothing.
    pub dry_run: bool,
}

/// What an erasure found and did (or would do, on a dry run, or when refused).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureReport {
    pub person: String,
    /// Instances not ended that hold the person's data; while there are any, nothing is erased.
    pub blocking: Vec<InstanceId>,
    /// Ended instances whose histories held the person's data.
    pub instances: Vec<InstanceId>,
    /// History events whose payload was erased.
    pub events: u64,
    /// History events written before schema 2, which hash their payload itself and so are
    /// kept; `baton admin purge` removes their instances when the retention period allows.
    pub kept_events: u64,
    /// Human tasks whose completion data or comments were scrubbed.
    pub tasks: u64,
    /// Notification deliveries (every channel) and in-app notifications deleted.
    pub deliveries: u64,
    pub notifications: u64,
    /// Whether the person had a directory entry, now scrubbed.
    pub directory: bool,
    /// Whether anything was changed (false on a dry run or a refusal).
    pub applied: bool,
}

impl ErasureReport {
    pub fn new(person: &str) -> Self {
        Self { person: person.to_owned(), ..Self::default() }
    }
}

/// Erases through a store ([`crate::store::RetentionStore::erase_person`]), turning the
/// instances that block it into [`EngineError::ErasureRefused`] (a dry run reports them).
pub async fn erase(store: &dyn Store, erasure: &Erasure) -> Result<ErasureReport, EngineError> {
    if erasure.person.trim().is_empty() {
        return Err(EngineError::InvalidArgument("the person to erase has no id".into()));
    }
    let report = store.erase_person(erasure).await?;
    if !erasure.dry_run && !report.blocking.is_empty() {
        return Err(EngineError::ErasureRefused { person: erasure.person.clone(), instances: report.blocking });
    }
    Ok(report)
}

/// Imports a directory (the server's `directory` file at every start, `baton directory import`)
/// without bringing back the data of people who were erased: their scrubbed row stays. Returns
/// the ids left out, for the caller to say so; adding such a person again is a deliberate
/// `putPerson`.
pub async fn import_directory(store: &dyn Store, organisation: &Organisation) -> Result<Vec<String>, EngineError> {
    let erased: HashSet<String> = store.erasures(None).await?.into_iter().map(|record| record.person).collect();
    let (kept, left_out): (Vec<Person>, Vec<Person>) =
        organisation.people.iter().cloned().partition(|person| !erased.contains(&person.id));
    store.import(&Organisation { people: kept, ..organisation.clone() }).await?;
    Ok(left_out.into_iter().map(|person| person.id).collect())
}

/// Whether this event's payload holds the person's data (see the module documentation).
pub fn event_holds(event: &StoredEvent, person: &str) -> bool {
    if !PERSONAL_TAGS.contains(&event.tag) || event.is_erased() {
        return false;
    }
    let by_person = serde_json::from_str::<Actor>(&event.actor)
        .is_ok_and(|actor| matches!(actor, Actor::User { id } if id == person));
    by_person
        || matches!(
            EventKind::decode(event.tag, event.schema, &event.payload),
            Ok(EventKind::HumanTaskCompleted(done)) if done.on_behalf_of.as_deref() == Some(person)
        )
}

/// Whether a task holds the person's data: a completion by them or for them, or a comment.
pub fn task_holds(task: &HumanTask, person: &str) -> bool {
    let completion = task.completion.as_ref().is_some_and(|done| {
        !done.erased && (done.completed_by == person || done.on_behalf_of.as_deref() == Some(person))
    });
    completion || task.comments.iter().any(|comment| !comment.erased && comment.by == person)
}

/// Scrubs the person's data from a task; answers whether anything changed.
pub fn scrub_task(task: &mut HumanTask, person: &str) -> bool {
    let held = task_holds(task, person);
    if let Some(done) = task.completion.as_mut()
        && (done.completed_by == person || done.on_behalf_of.as_deref() == Some(person))
    {
        done.data = serde_json::Value::Null;
        done.erased = true;
    }
    for comment in task.comments.iter_mut().filter(|comment| comment.by == person) {
        comment.text = ERASED_TEXT.to_owned();
        comment.erased = true;
    }
    held
}

/// The directory entry that remains: the id (a pseudonym in histories) and the department
/// (for reports by department), inactive, nothing else.
pub fn scrub_person(person: &Person) -> Person {
    Person { id: person.id.clone(), department: person.department.clone(), active: false, ..Person::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HistoryEvent, HumanTaskCommented, HumanTaskCompleted, time_from_ms};
    use crate::human::{Comment, Completion};

    fn stored(actor: &str, kind: EventKind) -> StoredEvent {
        HistoryEvent { seq: 3, at: time_from_ms(0), actor: Actor::User { id: actor.into() }, kind }
            .encode(&InstanceId::new("i"), crate::history::GENESIS_HASH)
    }

    fn completed(on_behalf_of: Option<&str>) -> EventKind {
        EventKind::HumanTaskCompleted(HumanTaskCompleted {
            task: 1,
            outcome: "done".into(),
            data: serde_json::json!({"score": 17}),
            on_behalf_of: on_behalf_of.map(Into::into),
        })
    }

    #[test]
    fn events_of_the_person_or_on_their_behalf_hold_their_data() {
        assert!(event_holds(&stored("ana", completed(None)), "ana"));
        assert!(event_holds(&stored("tom", completed(Some("ana"))), "ana"), "a team leader acting for ana");
        assert!(!event_holds(&stored("tom", completed(None)), "ana"));
        let comment = EventKind::HumanTaskCommented(HumanTaskCommented { task: 1, text: "call me".into() });
        assert!(event_holds(&stored("ana", comment.clone()), "ana"));
        assert!(!event_holds(&stored("ana", comment), "anabel"));
        let mut erased = stored("ana", completed(None));
        erased.erase();
        assert!(!event_holds(&erased, "ana"), "already erased");
    }

    #[test]
    fn scrubbing_a_task_keeps_other_people_s_words() {
        let at = time_from_ms(0);
        let mut task: HumanTask = serde_json::from_value(serde_json::json!({
            "spec": {"name": "review", "title": "Review"},
            "status": "completed",
            "candidates": {},
            "createdAt": 0,
        }))
        .expect("a task");
        task.comments = vec![
            Comment { by: "ana".into(), at, text: "my phone is 0470".into(), erased: false },
            Comment { by: "tom".into(), at, text: "ok".into(), erased: false },
        ];
        task.completion = Some(Completion {
            outcome: "done".into(),
            data: serde_json::json!({"score": 17}),
            completed_by: "tom".into(),
            completed_at: at,
            on_behalf_of: Some("ana".into()),
            erased: false,
        });
        assert!(task_holds(&task, "ana") && task_holds(&task, "tom"));
        assert!(scrub_task(&mut task, "ana"));
        assert_eq!(task.comments[0].text, ERASED_TEXT);
        assert_eq!(task.comments[1].text, "ok");
        let done = task.completion.as_ref().expect("completion");
        assert_eq!(
            (done.data.clone(), done.erased, done.completed_by.as_str()),
            (serde_json::Value::Null, true, "tom")
        );
        assert!(!task_holds(&task, "ana"), "nothing of ana's is left");
        assert!(!scrub_task(&mut task, "ana"));
    }
}
