//! The behaviour every [`Store`] must have, as runnable checks.
//!
//! Each check takes a store, uses its own instance ids (so all of them can share one store),
//! and panics with a message naming the store kind when the store gets something wrong. A new
//! backend passes when [`run_all`] does; other crates reach this module through the `testkit`
//! feature.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{
    DefinitionQuery, DefinitionRow, DeliveryQuery, DeliveryRow, DeliveryStatus, DeliveryUpdate, InAppNotification,
    IncidentKind, InstanceFilter, InstanceRow, InstanceStatus, InstanceWrite, NewDefinition, NewDelivery, NewIncident,
    OutboxRow, ParentRef, PurgeQuery, SlaQuery, SlaRow, SlaStateName, SnapshotRow, Store, StoreError, StoreResult,
    TaskRow, TimerRow,
};
use crate::directory::{Department, Group, Organisation, PeopleQuery, Person, Preferences};
use crate::erasure::Erasure;
use crate::history::{
    Actor, Emitted, EventKind, GENESIS_HASH, HistoryEvent, HumanTaskCommented, InstanceId, Seq, StoredEvent,
    history_time, time_from_ms,
};
use crate::human::{
    Comment, Completion, HumanTask, HumanTaskRow, HumanTaskSpec, HumanTaskStatus, InboxQuery, Principal, RoleGrant,
};

/// Runs every check against one store.
pub async fn run_all(store: &dyn Store) {
    commit_and_load_round_trip(store).await;
    duplicate_seq_is_a_conflict_and_nothing_lands(store).await;
    idempotency_key_is_unique(store).await;
    load_uses_snapshot_and_later_events(store).await;
    load_many_returns_each_instance(store).await;
    tasks_lifecycle(store).await;
    timers_by_due_time(store).await;
    incidents_raise_list_resolve(store).await;
    outbox_pending_and_ack(store).await;
    settings_round_trip(store).await;
    event_dedup(store).await;
    list_instances_filters_and_pages(store).await;
    list_instances_limit_is_capped(store).await;
    instance_search_fields_are_kept_from_creation(store).await;
    list_instances_by_search_fields(store).await;
    definitions_deploy_once_per_version(store).await;
    definitions_latest_and_lists(store).await;
    times_keep_milliseconds(store).await;
    writes_that_need_their_row_are_refused_without_it(store).await;
    human_tasks_round_trip(store).await;
    human_task_access_follows_upserts(store).await;
    inbox_scopes_roles_by_department(store).await;
    inbox_filters(store).await;
    inbox_pages(store).await;
    slas_by_state(store).await;
    deliveries_are_idempotent(store).await;
    deliveries_come_due(store).await;
    in_app_notifications(store).await;
    directory_people_and_managers(store).await;
    sequence_numbers_beyond_storage_find_nothing(store).await;
    ended_instances_are_purged_with_their_rows(store).await;
    a_namespace_administrator_lists_the_tasks_of_their_namespaces(store).await;
    instances_are_found_by_their_initiator(store).await;
    a_person_s_data_is_erased_from_ended_instances_only(store).await;
    projections_move_rows_and_position_together(store).await;
    own_preferences_outlive_an_import_and_go_with_an_erasure(store).await;
}

/// Preferences a person sets for themselves are read in place of their directory entry's, an
/// import of the directory does not undo them, they can be dropped, and an erasure removes
/// them.
pub async fn own_preferences_outlive_an_import_and_go_with_an_erasure(store: &dyn Store) {
    let kind = store.kind();
    let from_directory = Preferences { quiet_hours: Some("office".into()), ..Preferences::default() };
    let entry = Person { preferences: from_directory.clone(), ..person("pref-ann", "pref-dept") };
    let organisation = Organisation { people: vec![entry.clone()], ..Organisation::default() };
    ok(store, store.import(&organisation).await, "import");
    let own = Preferences {
        channels: [("email".to_owned(), false)].into_iter().collect(),
        quiet_hours: None,
        digest: Some("08:30".into()),
    };
    assert!(ok(store, store.set_preferences("pref-ann", Some(&own)).await, "set"), "[{kind}] set");
    assert!(!ok(store, store.set_preferences("pref-nobody", Some(&own)).await, "set"), "[{kind}] unknown person");
    let seen = ok(store, store.person("pref-ann").await, "person").expect("ann");
    assert_eq!(seen.preferences, own, "[{kind}] their own preferences win");
    assert_eq!(seen.name, entry.name, "[{kind}] the rest of the entry stays");
    let query = PeopleQuery { department: Some("pref-dept".into()), ..PeopleQuery::default() };
    let listed = ok(store, store.people(&query).await, "people");
    assert_eq!(listed.iter().map(|p| &p.preferences).collect::<Vec<_>>(), vec![&own], "[{kind}] listed too");

    ok(store, store.import(&organisation).await, "import again");
    let seen = ok(store, store.person("pref-ann").await, "person").expect("ann");
    assert_eq!(seen.preferences, own, "[{kind}] a new import keeps them");

    assert!(ok(store, store.set_preferences("pref-ann", None).await, "drop"), "[{kind}] dropped");
    let seen = ok(store, store.person("pref-ann").await, "person").expect("ann");
    assert_eq!(seen.preferences, from_directory, "[{kind}] the directory's apply again");

    ok(store, store.set_preferences("pref-ann", Some(&own)).await, "set");
    let erasure = Erasure {
        person: "pref-ann".into(),
        by: Actor::User { id: "pref-admin".into() },
        reason: Some("contract".into()),
        at: at(100),
        dry_run: false,
    };
    ok(store, store.erase_person(&erasure).await, "erase");
    let seen = ok(store, store.person("pref-ann").await, "person").expect("the id stays");
    assert_ne!(seen.preferences, own, "[{kind}] an erasure removes them");
}

/// The read models' store: rows and position move together, and a batch from a position that
/// moved meanwhile writes nothing; lists filter by top-level fields and page by key; the
/// outbox is read after a position.
pub async fn projections_move_rows_and_position_together(store: &dyn Store) {
    let kind = store.kind();
    let name = "contract.projection";
    assert_eq!(ok(store, store.projection_position(name).await, "position"), 0, "[{kind}] a new projection is at 0");
    let rows = vec![
        ("b".to_owned(), Some(json!({"dept": "x", "n": 1}))),
        ("a".to_owned(), Some(json!({"dept": "y"}))),
        ("c".to_owned(), Some(json!({"dept": "x"}))),
    ];
    ok(store, store.apply_projection(name, 0, 5, &rows, at(1)).await, "apply_projection");
    assert_eq!(ok(store, store.projection_position(name).await, "position"), 5, "[{kind}] the position moved");
    let stale = store.apply_projection(name, 0, 6, &[("d".to_owned(), Some(json!({})))], at(2)).await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "[{kind}] a stale position is a conflict: {stale:?}");
    let asked = ["a".to_owned(), "zz".to_owned(), "c".to_owned(), "d".to_owned()];
    let found = ok(store, store.projection_rows(name, &asked).await, "projection_rows");
    assert_eq!(
        found,
        [("a".to_owned(), json!({"dept": "y"})), ("c".to_owned(), json!({"dept": "x"}))],
        "[{kind}] the rows asked for that exist; the conflicting batch wrote nothing"
    );
    assert_eq!(ok(store, store.projection_position(name).await, "position"), 5, "[{kind}] nor moved the position");
    ok(store, store.apply_projection(name, 5, 7, &[("a".to_owned(), None)], at(3)).await, "delete");
    let keys = async |filters: &[(&str, &str)], after: Option<&str>, limit: u32| -> Vec<String> {
        let query = super::ProjectionQuery {
            projection: name.to_owned(),
            filters: filters.iter().map(|(f, v)| ((*f).to_owned(), (*v).to_owned())).collect(),
            after: after.map(str::to_owned),
            limit,
        };
        ok(store, store.list_projection(&query).await, "list_projection").into_iter().map(|(key, _)| key).collect()
    };
    assert_eq!(keys(&[], None, 0).await, ["b", "c"], "[{kind}] a deleted row is gone");
    assert_eq!(keys(&[("dept", "x")], Some("b"), 0).await, ["c"], "[{kind}] after a key");
    assert_eq!(keys(&[("dept", "x")], None, 1).await, ["b"], "[{kind}] a limit");
    assert!(keys(&[("dept", "y")], None, 0).await.is_empty(), "[{kind}] filtered by a field");
    assert!(keys(&[("dept", "x"), ("n", "1")], None, 0).await.is_empty(), "[{kind}] a number is not the string");
    let all = ok(store, store.all_projection_rows(name).await, "all_projection_rows");
    assert_eq!(all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["b", "c"], "[{kind}] every row");
    assert!(ok(store, store.all_projection_rows("contract.other").await, "rows").is_empty(), "[{kind}] by name");

    let mut write = touch(&instance_row("proj-out", "contract.projection", InstanceStatus::Running));
    write.outbox = vec![outbox("proj-out", 1, "p1"), outbox("proj-out", 2, "p2"), outbox("proj-out", 3, "p3")];
    commit_ok(store, &[write], "outbox for a projection").await;
    let ours = |rows: Vec<(i64, OutboxRow)>| -> Vec<(i64, String)> {
        rows.into_iter()
            .filter(|(_, row)| row.instance.as_str() == "proj-out")
            .map(|(id, row)| (id, row.kind))
            .collect()
    };
    let every = ours(ok(store, store.outbox_after(0, 100_000).await, "outbox_after"));
    assert_eq!(every.iter().map(|(_, k)| k.as_str()).collect::<Vec<_>>(), ["p1", "p2", "p3"], "[{kind}] in order");
    let later = ours(ok(store, store.outbox_after(every[0].0, 100_000).await, "outbox_after"));
    assert_eq!(later, every[1..], "[{kind}] after a position");
    let first = ok(store, store.outbox_after(every[0].0, 1).await, "outbox_after");
    assert_eq!(first.len(), 1, "[{kind}] a limit");
}

/// An instance whose history holds `person`'s comment (seq 1, after one system event), with
/// its human task row carrying the same comment.
async fn commented_instance(store: &dyn Store, instance: &str, status: InstanceStatus, person: &str) {
    let row = instance_row(instance, "contract/erase", status);
    let first = chained_events(&row.id, 0, 1, GENESIS_HASH);
    let comment = HistoryEvent {
        seq: 1,
        at: at(1),
        actor: Actor::User { id: person.to_owned() },
        kind: EventKind::HumanTaskCommented(HumanTaskCommented { task: 0, text: format!("{person}: call 0470") }),
    }
    .encode(&row.id, &first[0].hash);
    let mut task = human_task(instance, 0, "contract/erase", for_role("erase_role", None));
    let words = format!("{person}: call 0470");
    task.task.comments = vec![Comment { by: person.to_owned(), at: at(1), text: words, erased: false }];
    let mut write = step(&row, vec![first[0].clone(), comment]);
    write.human_tasks = vec![task];
    commit_ok(store, &[write], "an instance with a comment").await;
}

/// Erasing a person: refused (nothing changed) while an instance not ended holds their words;
/// then their comment's payload is erased in history with the chain intact, the task's
/// comment scrubbed, their notifications deleted, their directory entry reduced to the id, and
/// the erasure recorded. Another person's data is untouched.
pub async fn a_person_s_data_is_erased_from_ended_instances_only(store: &dyn Store) {
    let kind = store.kind();
    commented_instance(store, "erase-ended", InstanceStatus::Completed, "erase-ana").await;
    commented_instance(store, "erase-running", InstanceStatus::Waiting, "erase-ana").await;
    commented_instance(store, "erase-other", InstanceStatus::Completed, "erase-bob").await;
    let mut ana = person("erase-ana", "erase-dept");
    ana.email = Some("ana@example.com".into());
    ana.roles = vec![RoleGrant::new("operator", Some("erase-dept"))];
    ok(store, store.put_person(&ana).await, "a person");
    let sent =
        ok(store, store.enqueue_deliveries(&[delivery("erase-ended", 5, "erase-ana", "email", at(0))]).await, "d");
    ok(store, store.put_in_app(&notification("erase-ana", sent[0].id, "hello")).await, "in-app");
    let erasure = Erasure {
        person: "erase-ana".into(),
        by: Actor::User { id: "erase-admin".into() },
        reason: Some("request 1".into()),
        at: at(100),
        dry_run: false,
    };
    let refused = ok(store, store.erase_person(&erasure).await, "a refused erasure");
    assert_eq!(refused.blocking, vec![id("erase-running")], "[{kind}] the running instance blocks");
    assert_eq!((refused.instances.clone(), refused.events, refused.applied), (vec![id("erase-ended")], 1, false));
    let history = ok(store, store.history(&id("erase-ended"), 0, 10).await, "history");
    assert!(!history[1].is_erased(), "[{kind}] a refusal changes nothing");
    assert!(ok(store, store.erasures(Some("erase-ana")).await, "audit").is_empty(), "[{kind}] nor records");

    let mut ended = instance_row("erase-running", "contract/erase", InstanceStatus::Cancelled);
    let head = ok(store, store.history(&ended.id, 0, 10).await, "history");
    (ended.next_seq, ended.last_hash) = (2, head[1].hash.clone());
    commit_ok(store, &[touch(&ended)], "the running instance ends").await;
    let report = ok(store, store.erase_person(&erasure).await, "the erasure");
    assert_eq!(report.instances, vec![id("erase-ended"), id("erase-running")], "[{kind}] both, sorted");
    assert_eq!((report.events, report.tasks, report.deliveries, report.notifications), (2, 2, 1, 1), "[{kind}]");
    assert!(report.directory && report.applied && report.blocking.is_empty(), "[{kind}] {report:?}");
    for instance in ["erase-ended", "erase-running"] {
        let history = ok(store, store.history(&id(instance), 0, 10).await, "history");
        assert!(history[1].is_erased() && history[1].payload.is_empty(), "[{kind}] {instance}: the payload is gone");
        assert_eq!(history[1].check(Some(&history[0].hash)), Ok(()), "[{kind}] {instance}: the chain holds");
        let task = ok(store, store.human_task(&id(instance), 0).await, "task").expect("the task stays");
        assert_eq!(task.task.comments[0].text, crate::erasure::ERASED_TEXT, "[{kind}] {instance}: scrubbed");
    }
    let other = ok(store, store.history(&id("erase-other"), 0, 10).await, "history");
    assert!(!other[1].is_erased(), "[{kind}] bob's words stay");
    let left = ok(store, store.person("erase-ana").await, "person").expect("the id stays");
    assert_eq!(left, Person { department: Some("erase-dept".into()), active: false, ..Person::new("erase-ana", "") });
    let principal = ok(store, store.principal("erase-ana").await, "principal");
    assert!(principal.is_none_or(|p| p.roles.is_empty()), "[{kind}] no role grant stays");
    assert!(ok(store, store.in_app("erase-ana", false, None, 10).await, "in-app").is_empty(), "[{kind}]");
    let query = DeliveryQuery { recipient: Some("erase-ana".into()), ..DeliveryQuery::default() };
    assert!(ok(store, store.deliveries(&query).await, "deliveries").is_empty(), "[{kind}] deliveries deleted");
    let audit = ok(store, store.erasures(Some("erase-ana")).await, "audit");
    assert_eq!(audit.len(), 1, "[{kind}] one record");
    assert_eq!((audit[0].reason.as_deref(), audit[0].at, audit[0].report.events), (Some("request 1"), at(100), 2));
    let again = ok(store, store.erase_person(&erasure).await, "again");
    assert_eq!((again.events, again.tasks, again.instances.len()), (0, 0, 0), "[{kind}] nothing left to erase");
}

/// The initiator is kept from the row that created the instance, and lists filter by it.
pub async fn instances_are_found_by_their_initiator(store: &dyn Store) {
    let kind = store.kind();
    let mut ann = instance_row("init-1", "contract/init", InstanceStatus::Waiting);
    ann.initiator = Some("init-ann".into());
    let mut bob = instance_row("init-2", "contract/init", InstanceStatus::Waiting);
    bob.initiator = Some("init-bob".into());
    commit_ok(store, &[touch(&ann), touch(&bob)], "two instances").await;
    let later = InstanceRow { initiator: None, status: InstanceStatus::Completed, ..ann.clone() };
    commit_ok(store, &[touch(&later)], "a later row without the initiator").await;
    let filter = InstanceFilter { initiator: Some("init-ann".into()), ..InstanceFilter::default() };
    let found = ok(store, store.list_instances(&filter).await, "by initiator");
    let ids: Vec<&str> = found.iter().map(|row| row.id.as_str()).collect();
    assert_eq!(ids, vec!["init-1"], "[{kind}] only ann's");
    assert_eq!(found[0].initiator.as_deref(), Some("init-ann"), "[{kind}] the initiator stays");
    assert_eq!(found[0].status, InstanceStatus::Completed, "[{kind}] the rest is replaced");
}

/// The inbox of an administrator of some namespaces holds every task of those namespaces'
/// definitions, beside the tasks their own keys open.
pub async fn a_namespace_administrator_lists_the_tasks_of_their_namespaces(store: &dyn Store) {
    let kind = store.kind();
    for (instance, definition) in [("ht-ns-1", "ns-a/flow"), ("ht-ns-2", "ns-b/flow"), ("ht-ns-3", "ns-ab/flow")] {
        let row = human_task(instance, 1, definition, for_role("ht_ns_nobody", None));
        commit_human_tasks(store, instance, vec![row], "a namespaced task").await;
    }
    let admin = Principal { admin_namespaces: vec!["ns-a".into()], ..Principal::user("ht-ns-ada") };
    let seen = inbox_of(store, &InboxQuery::default(), &admin, "ht-ns-").await;
    assert_eq!(seen, vec!["ht-ns-1:1"], "[{kind}] the tasks of ns-a only (not ns-ab)");
    let both = Principal { admin_namespaces: vec!["ns-a".into(), "ns-b".into()], ..admin };
    let seen = inbox_of(store, &InboxQuery::default(), &both, "ht-ns-").await;
    assert_eq!(seen, vec!["ht-ns-1:1", "ht-ns-2:1"], "[{kind}] of each namespace, once");
    let nobody = inbox_of(store, &InboxQuery::default(), &Principal::user("ht-ns-ada"), "ht-ns-").await;
    assert!(nobody.is_empty(), "[{kind}] without the grant, nothing");
}

/// A purge deletes ended instances that ended before the given time, of the given definition,
/// with their rows; running, faulted and recent ones stay; a dry run deletes nothing.
pub async fn ended_instances_are_purged_with_their_rows(store: &dyn Store) {
    let kind = store.kind();
    let ended = |name: &str, definition: &str, status: InstanceStatus, ended_ms: i64| {
        let mut row = instance_row(name, definition, status);
        row.updated_at = at(ended_ms);
        row
    };
    let old = ended("purge-old", "contract/purge", InstanceStatus::Completed, 1_000);
    let older = ended("purge-older", "contract/purge", InstanceStatus::Cancelled, 500);
    let recent = ended("purge-recent", "contract/purge", InstanceStatus::Completed, 9_000);
    let faulted = ended("purge-faulted", "contract/purge", InstanceStatus::Faulted, 1_000);
    let running = ended("purge-running", "contract/purge", InstanceStatus::Waiting, 1_000);
    let other = ended("purge-other", "contract/other", InstanceStatus::Completed, 1_000);
    for row in [&old, &older, &recent, &faulted, &running, &other] {
        let mut write = step(row, chained_events(&row.id, 0, 3, ""));
        write.tasks_added.push(task(row.id.as_str(), 1, at(0)));
        write.timers_added.push(timer(row.id.as_str(), 2, at(0)));
        commit_ok(store, &[write], "an instance to purge or keep").await;
    }
    let query =
        PurgeQuery { definition: Some("contract/purge".into()), ended_before: at(5_000), limit: 0, dry_run: true };
    let named = ok(store, store.purge(&query).await, "a dry run");
    assert_eq!(named, vec![older.id.clone(), old.id.clone()], "[{kind}] the oldest end first");
    assert!(ok(store, store.instance(&old.id).await, "still there").is_some(), "[{kind}] a dry run deletes nothing");

    let purged = ok(store, store.purge(&PurgeQuery { dry_run: false, limit: 1, ..query.clone() }).await, "one");
    assert_eq!(purged, vec![older.id.clone()], "[{kind}] at most the limit");
    let purged = ok(store, store.purge(&PurgeQuery { dry_run: false, ..query }).await, "the rest");
    assert_eq!(purged, vec![old.id.clone()]);
    for gone in [&older, &old] {
        assert!(ok(store, store.instance(&gone.id).await, "row").is_none(), "[{kind}] {} is gone", gone.id);
        assert!(ok(store, store.history(&gone.id, 0, 10).await, "history").is_empty(), "[{kind}] its history too");
        assert!(ok(store, store.tasks_of(&gone.id).await, "tasks").is_empty(), "[{kind}] its tasks too");
        assert!(ok(store, store.timers_of(&gone.id).await, "timers").is_empty(), "[{kind}] its timers too");
    }
    for kept in [&recent, &faulted, &running, &other] {
        assert!(ok(store, store.instance(&kept.id).await, "row").is_some(), "[{kind}] {} stays", kept.id);
        assert_eq!(ok(store, store.history(&kept.id, 0, 10).await, "history").len(), 3, "[{kind}] with its history");
    }
}

/// Reads given a sequence number no store can hold (from a client) find nothing; they never
/// fail.
pub async fn sequence_numbers_beyond_storage_find_nothing(store: &dyn Store) {
    let kind = store.kind();
    let row = instance_row("huge-seq", "contract.huge", InstanceStatus::Waiting);
    commit_ok(store, &[touch(&row)], "an instance").await;
    let task = store.human_task(&id("huge-seq"), u64::MAX).await;
    assert!(matches!(task, Ok(None)), "[{kind}] a task at u64::MAX: {task:?}");
    let history = store.history(&id("huge-seq"), u64::MAX, 10).await;
    assert!(matches!(&history, Ok(events) if events.is_empty()), "[{kind}] history from u64::MAX: {history:?}");
    let inbox = InboxQuery { after: Some((id("huge-seq"), u64::MAX)), ..InboxQuery::default() };
    let page = store.inbox(&inbox, &Principal { admin: true, ..Principal::user("root") }).await;
    assert!(page.is_ok(), "[{kind}] an inbox after u64::MAX: {page:?}");
}

// ---------------------------------------------------------------------------------------------
// Builders. Times are whole milliseconds unless a check is about precision.

const EPOCH_MS: i64 = 1_700_000_000_000;

fn at(offset_ms: i64) -> DateTime<Utc> {
    time_from_ms(EPOCH_MS + offset_ms)
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s)
}

fn instance_row(instance: &str, orchestration: &str, status: InstanceStatus) -> InstanceRow {
    InstanceRow {
        id: id(instance),
        orchestration: orchestration.to_owned(),
        version: "1.0.0".to_owned(),
        status,
        next_seq: 0,
        last_hash: GENESIS_HASH.to_owned(),
        run_start: 0,
        idempotency_key: None,
        parent: None,
        created_at: at(0),
        updated_at: at(0),
        result: None,
        business_key: None,
        tags: Vec::new(),
        namespace: None,
        initiator: None,
    }
}

/// `count` events of `instance` from `from` on, hash-chained after `prev_hash`.
fn chained_events(instance: &InstanceId, from: Seq, count: u64, prev_hash: &str) -> Vec<StoredEvent> {
    let mut prev = prev_hash.to_owned();
    (from..from + count)
        .map(|seq| {
            let event = HistoryEvent {
                seq,
                at: at(i64::try_from(seq).unwrap_or(i64::MAX)),
                actor: Actor::System,
                kind: EventKind::Emitted(Emitted { kind: "contract.step".into(), payload: json!({ "seq": seq }) }),
            };
            let stored = event.encode(instance, &prev);
            prev = stored.hash.clone();
            stored
        })
        .collect()
}

/// A write appending `events` to `row`, with the row moved to the new chain head.
fn step(row: &InstanceRow, events: Vec<StoredEvent>) -> InstanceWrite {
    let mut row = row.clone();
    if let Some(last) = events.last() {
        row.next_seq = last.seq + 1;
        row.last_hash = last.hash.clone();
    }
    InstanceWrite { instance: Some(row), events, ..InstanceWrite::default() }
}

/// A write that only carries the row (the instance exists; nothing is appended).
fn touch(row: &InstanceRow) -> InstanceWrite {
    InstanceWrite { instance: Some(row.clone()), ..InstanceWrite::default() }
}

fn task(instance: &str, seq: Seq, visible_at: DateTime<Utc>) -> TaskRow {
    TaskRow {
        instance: id(instance),
        seq,
        name: "contract.activity".into(),
        input: json!({ "text": "hello", "n": 1, "f": 0.1, "list": [true, null, "x"] }),
        // A JSON string that looks like a number must come back as a string.
        options: json!("5"),
        attempt: 0,
        visible_at,
        parked: false,
        last_error: None,
    }
}

fn timer(instance: &str, seq: Seq, due_at: DateTime<Utc>) -> TimerRow {
    TimerRow { instance: id(instance), seq, due_at }
}

fn outbox(instance: &str, seq: Seq, kind: &str) -> OutboxRow {
    OutboxRow {
        instance: id(instance),
        seq,
        kind: kind.to_owned(),
        payload: json!({ "kind": kind, "nested": { "a": [1, 2, 3] } }),
        created_at: at(seq as i64),
    }
}

fn new_incident(kind: IncidentKind, task_seq: Option<Seq>, created_at: DateTime<Utc>) -> NewIncident {
    NewIncident {
        kind,
        reason: format!("contract: {}", kind.as_str()),
        task_seq,
        pending_input: Some(json!({ "input": "kept" })),
        created_at,
    }
}

async fn commit_ok(store: &dyn Store, writes: &[InstanceWrite], what: &str) {
    if let Err(err) = store.commit(writes).await {
        panic!("[{}] {what}: commit failed: {err}", store.kind());
    }
}

fn expect_conflict(store: &dyn Store, result: StoreResult<()>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        Err(other) => panic!("[{}] {what}: expected a conflict, got {other}", store.kind()),
        Ok(()) => panic!("[{}] {what}: expected a conflict, but the commit succeeded", store.kind()),
    }
}

/// Unwraps a store result, naming the store and the operation on failure.
fn ok<T>(store: &dyn Store, result: StoreResult<T>, what: &str) -> T {
    result.unwrap_or_else(|err| panic!("[{}] {what}: {err}", store.kind()))
}

fn seqs_of_tasks(tasks: &[TaskRow]) -> Vec<Seq> {
    tasks.iter().map(|task| task.seq).collect()
}

fn seqs_of_timers(timers: &[TimerRow]) -> Vec<Seq> {
    timers.iter().map(|timer| timer.seq).collect()
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// Everything a step writes comes back as written.
pub async fn commit_and_load_round_trip(store: &dyn Store) {
    let kind = store.kind();
    let instance = id("rt-1");
    let mut row = instance_row("rt-1", "contract.roundtrip", InstanceStatus::Running);
    row.idempotency_key = Some("rt-key".into());
    row.parent = Some(ParentRef { instance: id("rt-parent"), seq: 3 });
    let events = chained_events(&instance, 0, 4, GENESIS_HASH);
    let mut first = step(&row, events.clone());
    first.tasks_added = vec![task("rt-1", 1, at(10))];
    first.timers_added = vec![timer("rt-1", 2, at(20))];
    first.outbox = vec![outbox("rt-1", 3, "rt.emitted")];
    first.received_event_ids = vec!["rt-event".into()];
    let row = first.instance.clone().expect("the step carries its row");
    commit_ok(store, &[first], "round trip").await;

    assert_eq!(ok(store, store.instance(&instance).await, "instance"), Some(row.clone()), "[{kind}] instance row");
    let loaded = ok(store, store.load(&instance).await, "load").unwrap_or_else(|| panic!("[{kind}] rt-1 loads"));
    assert_eq!(loaded.row, row, "[{kind}] loaded row");
    assert_eq!(loaded.snapshot, None, "[{kind}] no snapshot yet");
    assert_eq!(loaded.events, events, "[{kind}] loaded events");
    assert_eq!(ok(store, store.history(&instance, 2, 10).await, "history"), events[2..], "[{kind}] history from 2");
    assert_eq!(ok(store, store.history(&instance, 0, 2).await, "history"), events[..2], "[{kind}] history limit");
    assert_eq!(ok(store, store.tasks_of(&instance).await, "tasks_of"), vec![task("rt-1", 1, at(10))], "[{kind}] tasks");
    assert_eq!(
        ok(store, store.timers_of(&instance).await, "timers_of"),
        vec![timer("rt-1", 2, at(20))],
        "[{kind}] timers"
    );
    assert_eq!(
        ok(store, store.find_by_idempotency_key("rt-key").await, "find_by_idempotency_key"),
        Some(instance.clone()),
        "[{kind}] idempotency key"
    );
    assert!(ok(store, store.event_seen(&instance, "rt-event").await, "event_seen"), "[{kind}] received event");
    let pending = ok(store, store.outbox_pending(10_000).await, "outbox_pending");
    let mine: Vec<OutboxRow> = pending.into_iter().map(|(_, row)| row).filter(|row| row.instance == instance).collect();
    assert_eq!(mine, vec![outbox("rt-1", 3, "rt.emitted")], "[{kind}] outbox");

    // The next step replaces the row and appends to the chain.
    let more = chained_events(&instance, 4, 2, &row.last_hash);
    let mut second = step(&row, more.clone());
    let second_row = second.instance.as_mut().expect("the step carries its row");
    second_row.status = InstanceStatus::Completed;
    second_row.updated_at = at(99);
    second_row.result = Some(json!({ "ok": [1, 2.5, "x", null], "s": "text" }));
    let completed = second_row.clone();
    second.tasks_removed = vec![1];
    second.timers_removed = vec![2];
    commit_ok(store, &[second], "second step").await;
    let loaded = ok(store, store.load(&instance).await, "load").unwrap_or_else(|| panic!("[{kind}] rt-1 loads"));
    assert_eq!(loaded.row, completed, "[{kind}] updated row");
    assert_eq!(loaded.events, [events, more].concat(), "[{kind}] appended events");
    assert!(ok(store, store.tasks_of(&instance).await, "tasks_of").is_empty(), "[{kind}] task removed");
    assert!(ok(store, store.timers_of(&instance).await, "timers_of").is_empty(), "[{kind}] timer removed");

    assert_eq!(ok(store, store.instance(&id("rt-missing")).await, "instance"), None, "[{kind}] missing instance");
    assert_eq!(ok(store, store.load(&id("rt-missing")).await, "load"), None, "[{kind}] missing load");
    ok(store, store.commit(&[]).await, "empty commit");
}

/// The fence: appending an existing sequence number fails, and takes the whole batch with it.
pub async fn duplicate_seq_is_a_conflict_and_nothing_lands(store: &dyn Store) {
    let kind = store.kind();
    let a = id("dup-a");
    let a_row = instance_row("dup-a", "contract.dup", InstanceStatus::Running);
    let a_events = chained_events(&a, 0, 3, GENESIS_HASH);
    let a_write = step(&a_row, a_events.clone());
    let a_row = a_write.instance.clone().expect("the step carries its row");
    commit_ok(store, &[a_write], "dup-a").await;

    let b = id("dup-b");
    let mut b_write =
        step(&instance_row("dup-b", "contract.dup", InstanceStatus::Running), chained_events(&b, 0, 2, GENESIS_HASH));
    b_write.tasks_added = vec![task("dup-b", 1, at(0))];
    b_write.timers_added = vec![timer("dup-b", 1, at(0))];
    b_write.outbox = vec![outbox("dup-b", 1, "dup.b")];
    b_write.snapshot = Some(SnapshotRow { instance: b.clone(), seq: 1, state: json!({}) });
    b_write.incident = Some(new_incident(IncidentKind::OrchestrationFault, None, at(0)));
    b_write.received_event_ids = vec!["dup-b-event".into()];
    b_write.human_tasks = vec![human_task("dup-b", 1, "contract.dup", for_role("dup_role", None))];
    b_write.slas = vec![sla("dup-b", None)];
    b_write.instance.as_mut().expect("row").idempotency_key = Some("dup-b-key".into());
    // A second writer appends seq 2 to dup-a, which already has it (with other content).
    let mut stale = a_row.clone();
    stale.last_hash = a_events[1].hash.clone();
    let mut a_again = step(&stale, chained_events(&a, 2, 1, "someone-else"));
    a_again.instance.as_mut().expect("row").status = InstanceStatus::Completed;

    expect_conflict(store, store.commit(&[b_write, a_again]).await, "appending an existing seq");
    assert_eq!(ok(store, store.instance(&b).await, "instance"), None, "[{kind}] dup-b row must not land");
    assert!(ok(store, store.history(&b, 0, 100).await, "history").is_empty(), "[{kind}] dup-b history must not land");
    assert!(ok(store, store.tasks_of(&b).await, "tasks_of").is_empty(), "[{kind}] dup-b task must not land");
    assert!(ok(store, store.timers_of(&b).await, "timers_of").is_empty(), "[{kind}] dup-b timer must not land");
    assert!(ok(store, store.incidents(Some(&b), false).await, "incidents").is_empty(), "[{kind}] dup-b incident");
    assert!(!ok(store, store.event_seen(&b, "dup-b-event").await, "event_seen"), "[{kind}] dup-b received event");
    assert_eq!(ok(store, store.find_by_idempotency_key("dup-b-key").await, "find"), None, "[{kind}] dup-b key");
    assert!(ok(store, store.human_tasks_of(&b).await, "human_tasks_of").is_empty(), "[{kind}] dup-b human task");
    let b_slas = SlaQuery { instance: Some(b.clone()), ..SlaQuery::default() };
    assert!(ok(store, store.slas(&b_slas).await, "slas").is_empty(), "[{kind}] dup-b SLA");
    let b_inbox = InboxQuery { instance: Some(b.clone()), ..InboxQuery::default() };
    assert!(ok(store, store.inbox(&b_inbox, &administrator()).await, "inbox").is_empty(), "[{kind}] dup-b inbox");
    let pending = ok(store, store.outbox_pending(10_000).await, "outbox_pending");
    assert!(pending.iter().all(|(_, row)| row.instance != b), "[{kind}] dup-b outbox must not land");
    assert_eq!(ok(store, store.instance(&a).await, "instance"), Some(a_row.clone()), "[{kind}] dup-a row unchanged");
    assert_eq!(ok(store, store.history(&a, 0, 100).await, "history"), a_events, "[{kind}] dup-a history unchanged");

    // The same key twice inside one batch is a conflict too.
    let c = id("dup-c");
    let c_row = instance_row("dup-c", "contract.dup", InstanceStatus::Running);
    let c_events = chained_events(&c, 0, 2, GENESIS_HASH);
    let first = step(&c_row, c_events.clone());
    let second = step(&c_row, c_events[1..].to_vec());
    expect_conflict(store, store.commit(&[first, second]).await, "the same seq twice in one batch");
    assert_eq!(ok(store, store.instance(&c).await, "instance"), None, "[{kind}] dup-c must not land");

    // So is a task or a timer that already exists.
    let mut with_task = touch(&a_row);
    with_task.tasks_added = vec![task("dup-a", 7, at(0))];
    with_task.timers_added = vec![timer("dup-a", 8, at(0))];
    commit_ok(store, &[with_task.clone()], "dup-a task").await;
    let mut task_again = touch(&a_row);
    task_again.tasks_added = with_task.tasks_added.clone();
    expect_conflict(store, store.commit(&[task_again]).await, "adding an existing task");
    let mut timer_again = touch(&a_row);
    timer_again.timers_added = with_task.timers_added.clone();
    expect_conflict(store, store.commit(&[timer_again]).await, "adding an existing timer");
}

/// An idempotency key names at most one instance.
pub async fn idempotency_key_is_unique(store: &dyn Store) {
    let kind = store.kind();
    let mut a = instance_row("idem-a", "contract.idem", InstanceStatus::Running);
    a.idempotency_key = Some("idem-key".into());
    commit_ok(store, &[touch(&a)], "idem-a").await;

    let mut b = instance_row("idem-b", "contract.idem", InstanceStatus::Running);
    b.idempotency_key = Some("idem-key".into());
    let b_write = step(&b, chained_events(&b.id, 0, 1, GENESIS_HASH));
    expect_conflict(store, store.commit(&[b_write]).await, "reusing another instance's idempotency key");
    assert_eq!(ok(store, store.instance(&b.id).await, "instance"), None, "[{kind}] idem-b must not land");
    assert!(ok(store, store.history(&b.id, 0, 10).await, "history").is_empty(), "[{kind}] idem-b history");
    assert_eq!(
        ok(store, store.find_by_idempotency_key("idem-key").await, "find"),
        Some(a.id.clone()),
        "[{kind}] the key stays with idem-a"
    );

    // The holder itself may be written again with its key.
    a.status = InstanceStatus::Waiting;
    commit_ok(store, &[touch(&a)], "idem-a again").await;
    assert_eq!(ok(store, store.find_by_idempotency_key("idem-none").await, "find"), None, "[{kind}] unknown key");

    // Two new instances with one key in one batch: neither lands.
    let mut c = instance_row("idem-c", "contract.idem", InstanceStatus::Running);
    c.idempotency_key = Some("idem-shared".into());
    let mut d = instance_row("idem-d", "contract.idem", InstanceStatus::Running);
    d.idempotency_key = Some("idem-shared".into());
    expect_conflict(store, store.commit(&[touch(&c), touch(&d)]).await, "one key for two new instances");
    assert_eq!(ok(store, store.instance(&c.id).await, "instance"), None, "[{kind}] idem-c must not land");
    assert_eq!(ok(store, store.find_by_idempotency_key("idem-shared").await, "find"), None, "[{kind}] idem-shared");
}

/// A load replays from the newest snapshot of the current run, or from the run's start.
pub async fn load_uses_snapshot_and_later_events(store: &dyn Store) {
    let kind = store.kind();
    let a = id("snap-a");
    let events = chained_events(&a, 0, 6, GENESIS_HASH);
    let mut write = step(&instance_row("snap-a", "contract.snap", InstanceStatus::Running), events.clone());
    write.snapshot = Some(SnapshotRow { instance: a.clone(), seq: 3, state: json!({ "at": 3 }) });
    let row = write.instance.clone().expect("row");
    commit_ok(store, &[write], "snap-a").await;
    let loaded = ok(store, store.load(&a).await, "load").unwrap_or_else(|| panic!("[{kind}] snap-a loads"));
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.seq), Some(3), "[{kind}] snapshot used");
    assert_eq!(loaded.snapshot.as_ref().map(|s| &s.state), Some(&json!({ "at": 3 })), "[{kind}] snapshot state");
    assert_eq!(loaded.events, events[4..], "[{kind}] only events after the snapshot");

    // An older snapshot never replaces a newer one.
    let mut older = touch(&row);
    older.snapshot = Some(SnapshotRow { instance: a.clone(), seq: 1, state: json!({ "at": 1 }) });
    commit_ok(store, &[older], "older snapshot").await;
    let loaded = ok(store, store.load(&a).await, "load").unwrap_or_else(|| panic!("[{kind}] snap-a loads"));
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.seq), Some(3), "[{kind}] the newer snapshot stays");
    let mut newest = touch(&row);
    newest.snapshot = Some(SnapshotRow { instance: a.clone(), seq: 5, state: json!({ "at": 5 }) });
    commit_ok(store, &[newest], "newest snapshot").await;
    let loaded = ok(store, store.load(&a).await, "load").unwrap_or_else(|| panic!("[{kind}] snap-a loads"));
    assert_eq!(loaded.snapshot.as_ref().map(|s| s.seq), Some(5), "[{kind}] the newest snapshot wins");
    assert!(loaded.events.is_empty(), "[{kind}] nothing after the newest snapshot");

    // No snapshot: from the start of the current run (continue-as-new at seq 3).
    let b = id("snap-b");
    let events = chained_events(&b, 0, 6, GENESIS_HASH);
    let mut write = step(&instance_row("snap-b", "contract.snap", InstanceStatus::Running), events.clone());
    write.instance.as_mut().expect("row").run_start = 3;
    commit_ok(store, &[write], "snap-b").await;
    let loaded = ok(store, store.load(&b).await, "load").unwrap_or_else(|| panic!("[{kind}] snap-b loads"));
    assert_eq!(loaded.snapshot, None, "[{kind}] snap-b has no snapshot");
    assert_eq!(loaded.events, events[3..], "[{kind}] events from run_start");

    // A snapshot of an earlier run is not used.
    let c = id("snap-c");
    let events = chained_events(&c, 0, 6, GENESIS_HASH);
    let mut write = step(&instance_row("snap-c", "contract.snap", InstanceStatus::Running), events.clone());
    write.instance.as_mut().expect("row").run_start = 4;
    write.snapshot = Some(SnapshotRow { instance: c.clone(), seq: 2, state: json!({ "run": 1 }) });
    commit_ok(store, &[write], "snap-c").await;
    let loaded = ok(store, store.load(&c).await, "load").unwrap_or_else(|| panic!("[{kind}] snap-c loads"));
    assert_eq!(loaded.snapshot, None, "[{kind}] a snapshot from before run_start is ignored");
    assert_eq!(loaded.events, events[4..], "[{kind}] events from run_start despite the old snapshot");
}

/// A batched load gives each instance its own row, snapshot and events, in the order asked.
pub async fn load_many_returns_each_instance(store: &dyn Store) {
    let kind = store.kind();
    let mut writes = Vec::new();
    let mut expected_events = Vec::new();
    for (n, name) in ["many-1", "many-2", "many-3"].into_iter().enumerate() {
        let instance = id(name);
        let events = chained_events(&instance, 0, n as u64 + 1, GENESIS_HASH);
        let mut write = step(&instance_row(name, "contract.many", InstanceStatus::Running), events.clone());
        if name == "many-3" {
            write.snapshot = Some(SnapshotRow { instance: instance.clone(), seq: 0, state: json!({ "n": 3 }) });
            expected_events.push(events[1..].to_vec());
        } else {
            expected_events.push(events);
        }
        writes.push(write);
    }
    commit_ok(store, &writes, "many").await;

    let ids = [id("many-3"), id("many-missing"), id("many-1"), id("many-2"), id("many-1")];
    let loaded = ok(store, store.load_many(&ids).await, "load_many");
    let order: Vec<&str> = loaded.iter().map(|l| l.row.id.as_str()).collect();
    assert_eq!(order, ["many-3", "many-1", "many-2"], "[{kind}] load_many order (missing and repeated ids dropped)");
    assert_eq!(loaded[0].events, expected_events[2], "[{kind}] many-3 events after its snapshot");
    assert_eq!(loaded[0].snapshot.as_ref().map(|s| s.seq), Some(0), "[{kind}] many-3 snapshot");
    assert_eq!(loaded[1].events, expected_events[0], "[{kind}] many-1 events");
    assert_eq!(loaded[1].snapshot, None, "[{kind}] many-1 has no snapshot");
    assert_eq!(loaded[2].events, expected_events[1], "[{kind}] many-2 events");
    for (loaded, write) in loaded.iter().zip([&writes[2], &writes[0], &writes[1]]) {
        assert_eq!(Some(&loaded.row), write.instance.as_ref(), "[{kind}] load_many row");
    }
    assert!(ok(store, store.load_many(&[]).await, "load_many").is_empty(), "[{kind}] empty load_many");
}

/// Tasks: added with a step, retried, parked and unparked, removed when finished.
pub async fn tasks_lifecycle(store: &dyn Store) {
    let kind = store.kind();
    let a = id("task-a");
    let row = instance_row("task-a", "contract.tasks", InstanceStatus::Running);
    let mut write = touch(&row);
    write.tasks_added = vec![task("task-a", 1, at(30)), task("task-a", 2, at(10)), task("task-a", 3, at(20))];
    commit_ok(store, &[write], "tasks").await;
    let open_of_a = async || -> Vec<Seq> {
        let open = ok(store, store.open_tasks(100_000).await, "open_tasks");
        open.iter().filter(|task| task.instance == a).map(|task| task.seq).collect()
    };
    assert_eq!(seqs_of_tasks(&ok(store, store.tasks_of(&a).await, "tasks_of")), [1, 2, 3], "[{kind}] tasks_of by seq");
    assert_eq!(open_of_a().await, [2, 3, 1], "[{kind}] open tasks by visible_at");

    // A failed attempt is recorded as an update of the task row (the runtime's retry path).
    let mut retried = task("task-a", 1, at(30));
    retried.attempt = 2;
    retried.visible_at = at(5);
    retried.last_error = Some("boom".into());
    let mut write = touch(&row);
    write.tasks_updated = vec![retried];
    commit_ok(store, &[write], "retry").await;
    let tasks = ok(store, store.tasks_of(&a).await, "tasks_of");
    assert_eq!(tasks[0].attempt, 2, "[{kind}] attempt recorded");
    assert_eq!(tasks[0].visible_at, at(5), "[{kind}] visible_at recorded");
    assert_eq!(tasks[0].last_error.as_deref(), Some("boom"), "[{kind}] error recorded");
    assert_eq!(open_of_a().await, [1, 2, 3], "[{kind}] open tasks after the retry is scheduled");

    // Park task 2; an update of a task that no longer exists changes nothing.
    let mut parked = task("task-a", 2, at(10));
    parked.parked = true;
    parked.last_error = Some("gave up".into());
    let mut write = touch(&row);
    write.tasks_updated = vec![parked.clone(), task("task-a", 9, at(0))];
    commit_ok(store, &[write], "park").await;
    assert_eq!(open_of_a().await, [1, 3], "[{kind}] a parked task is not open");
    let tasks = ok(store, store.tasks_of(&a).await, "tasks_of");
    assert_eq!(seqs_of_tasks(&tasks), [1, 2, 3], "[{kind}] update does not create tasks");
    assert_eq!(tasks[1], parked, "[{kind}] parked row replaced");

    // Unpark it and finish task 1.
    let mut write = touch(&row);
    write.tasks_updated = vec![task("task-a", 2, at(40))];
    write.tasks_removed = vec![1];
    commit_ok(store, &[write], "unpark and finish").await;
    assert_eq!(open_of_a().await, [3, 2], "[{kind}] unparked task is open again");
    assert_eq!(seqs_of_tasks(&ok(store, store.tasks_of(&a).await, "tasks_of")), [2, 3], "[{kind}] task removed");

    let open = ok(store, store.open_tasks(1).await, "open_tasks");
    assert_eq!(open.len(), 1, "[{kind}] open_tasks honours its limit");
}

/// Timers come back earliest first, strictly before the given time.
pub async fn timers_by_due_time(store: &dyn Store) {
    let kind = store.kind();
    let a = id("timer-a");
    let row = instance_row("timer-a", "contract.timers", InstanceStatus::Waiting);
    let mut write = touch(&row);
    write.timers_added =
        vec![timer("timer-a", 1, at(-700)), timer("timer-a", 2, at(-900)), timer("timer-a", 3, at(-800))];
    commit_ok(store, &[write], "timers").await;
    let due_of_a = async |before: DateTime<Utc>| -> Vec<Seq> {
        let due = ok(store, store.timers_due_before(before, 100_000).await, "timers_due_before");
        due.iter().filter(|timer| timer.instance == a).map(|timer| timer.seq).collect()
    };
    assert_eq!(seqs_of_timers(&ok(store, store.timers_of(&a).await, "timers_of")), [1, 2, 3], "[{kind}] by seq");
    assert_eq!(due_of_a(at(-750)).await, [2, 3], "[{kind}] due timers earliest first");
    assert_eq!(due_of_a(at(-800)).await, [2], "[{kind}] a timer due exactly then is not due before");
    let due = ok(store, store.timers_due_before(at(-750), 100_000).await, "timers_due_before");
    assert!(due.windows(2).all(|pair| pair[0].due_at <= pair[1].due_at), "[{kind}] due timers are ordered");

    let mut write = touch(&row);
    write.timers_removed = vec![2];
    commit_ok(store, &[write], "timer removed").await;
    assert_eq!(due_of_a(at(0)).await, [3, 1], "[{kind}] removed timer is gone");
    assert_eq!(ok(store, store.timers_due_before(at(0), 1).await, "timers").len(), 1, "[{kind}] timers limit");
}

/// Incidents raised outside a step fault the instance; resolving sets its status back.
pub async fn incidents_raise_list_resolve(store: &dyn Store) {
    let kind = store.kind();
    let a = id("inc-a");
    commit_ok(store, &[touch(&instance_row("inc-a", "contract.incidents", InstanceStatus::Running))], "inc-a").await;

    let raised = new_incident(IncidentKind::DefinitionMissing, None, at(50));
    let incident_id = ok(store, store.raise_incident(&a, &raised).await, "raise_incident");
    let row = ok(store, store.instance(&a).await, "instance").unwrap_or_else(|| panic!("[{kind}] inc-a exists"));
    assert_eq!(row.status, InstanceStatus::Faulted, "[{kind}] raising faults the instance");
    let incident =
        ok(store, store.incident(incident_id).await, "incident").unwrap_or_else(|| panic!("[{kind}] incident exists"));
    assert_eq!(incident.id, incident_id, "[{kind}] incident id");
    assert_eq!(incident.instance, a, "[{kind}] incident instance");
    assert_eq!(incident.kind, IncidentKind::DefinitionMissing, "[{kind}] incident kind");
    assert_eq!(incident.reason, raised.reason, "[{kind}] incident reason");
    assert_eq!(incident.task_seq, None, "[{kind}] incident task");
    assert_eq!(incident.pending_input, raised.pending_input, "[{kind}] incident pending input");
    assert_eq!(incident.created_at, at(50), "[{kind}] incident created_at");
    assert_eq!(incident.resolved_at, None, "[{kind}] incident open");
    assert_eq!(
        ok(store, store.incidents(Some(&a), true).await, "incidents"),
        std::slice::from_ref(&incident),
        "[{kind}] open list"
    );
    let all_open = ok(store, store.incidents(None, true).await, "incidents");
    assert!(all_open.iter().any(|i| i.id == incident_id), "[{kind}] open incidents of all instances");

    ok(store, store.resolve_incident(incident_id, at(60), InstanceStatus::Running).await, "resolve_incident");
    let row = ok(store, store.instance(&a).await, "instance").unwrap_or_else(|| panic!("[{kind}] inc-a exists"));
    assert_eq!(row.status, InstanceStatus::Running, "[{kind}] resolving sets the status");
    let resolved = ok(store, store.incident(incident_id).await, "incident").expect("incident exists");
    assert_eq!(resolved.resolved_at, Some(at(60)), "[{kind}] resolved_at");
    assert!(ok(store, store.incidents(Some(&a), true).await, "incidents").is_empty(), "[{kind}] none open");
    assert_eq!(
        ok(store, store.incidents(Some(&a), false).await, "incidents"),
        std::slice::from_ref(&resolved),
        "[{kind}] all"
    );
    let all_open = ok(store, store.incidents(None, true).await, "incidents");
    assert!(all_open.iter().all(|i| i.id != incident_id), "[{kind}] resolved is not open");

    // Resolving twice keeps the first resolution and leaves the instance alone.
    ok(store, store.resolve_incident(incident_id, at(70), InstanceStatus::Cancelled).await, "resolve again");
    let again = ok(store, store.incident(incident_id).await, "incident").expect("incident exists");
    assert_eq!(again.resolved_at, Some(at(60)), "[{kind}] first resolution kept");
    let row = ok(store, store.instance(&a).await, "instance").expect("inc-a exists");
    assert_eq!(row.status, InstanceStatus::Running, "[{kind}] a second resolve changes nothing");
    assert!(store.resolve_incident(i64::MAX, at(0), InstanceStatus::Running).await.is_err(), "[{kind}] unknown id");
    assert_eq!(ok(store, store.incident(i64::MAX).await, "incident"), None, "[{kind}] unknown incident");

    // An incident opened and later closed by steps.
    let b = id("inc-b");
    let mut row = instance_row("inc-b", "contract.incidents", InstanceStatus::Faulted);
    let mut write = touch(&row);
    write.tasks_added = vec![task("inc-b", 4, at(0))];
    write.incident = Some(new_incident(IncidentKind::ActivityFailed, Some(4), at(80)));
    commit_ok(store, &[write], "incident in a step").await;
    let open = ok(store, store.incidents(Some(&b), true).await, "incidents");
    assert_eq!(open.len(), 1, "[{kind}] incident opened by a step");
    assert_eq!(open[0].instance, b, "[{kind}] a step's incident belongs to its instance");
    assert_eq!(open[0].task_seq, Some(4), "[{kind}] a step's incident task");
    assert!(open[0].id > incident_id, "[{kind}] incident ids grow");
    row.status = InstanceStatus::Running;
    row.updated_at = at(90);
    let mut write = touch(&row);
    write.incidents_resolved = vec![open[0].id];
    commit_ok(store, &[write], "incident resolved by a step").await;
    let closed = ok(store, store.incident(open[0].id).await, "incident").expect("incident exists");
    assert_eq!(closed.resolved_at, Some(at(90)), "[{kind}] a step resolves at its row's updated_at");
}

/// The outbox hands out messages in commit order until they are acknowledged.
pub async fn outbox_pending_and_ack(store: &dyn Store) {
    let kind = store.kind();
    let a = id("out-a");
    let mut write = touch(&instance_row("out-a", "contract.outbox", InstanceStatus::Running));
    write.outbox = vec![outbox("out-a", 1, "k1"), outbox("out-a", 2, "k2"), outbox("out-a", 3, "k3")];
    commit_ok(store, &[write], "outbox").await;
    let pending_of_a = async || -> Vec<(i64, OutboxRow)> {
        let pending = ok(store, store.outbox_pending(100_000).await, "outbox_pending");
        pending.into_iter().filter(|(_, row)| row.instance == a).collect()
    };
    let pending = pending_of_a().await;
    let kinds: Vec<&str> = pending.iter().map(|(_, row)| row.kind.as_str()).collect();
    assert_eq!(kinds, ["k1", "k2", "k3"], "[{kind}] outbox in commit order");
    assert!(pending.windows(2).all(|pair| pair[0].0 < pair[1].0), "[{kind}] outbox ids grow");
    assert_eq!(pending[1].1, outbox("out-a", 2, "k2"), "[{kind}] outbox row round trip");
    let all = ok(store, store.outbox_pending(100_000).await, "outbox_pending");
    assert!(all.windows(2).all(|pair| pair[0].0 < pair[1].0), "[{kind}] outbox ordered by id");

    ok(store, store.outbox_ack(&[pending[0].0, pending[1].0]).await, "outbox_ack");
    let kinds: Vec<String> = pending_of_a().await.into_iter().map(|(_, row)| row.kind).collect();
    assert_eq!(kinds, ["k3"], "[{kind}] acknowledged messages are gone");
    ok(store, store.outbox_ack(&[]).await, "empty outbox_ack");
    assert_eq!(ok(store, store.outbox_pending(1).await, "outbox_pending").len(), 1, "[{kind}] outbox limit");
}

pub async fn settings_round_trip(store: &dyn Store) {
    let kind = store.kind();
    assert_eq!(ok(store, store.setting("contract.missing").await, "setting"), None, "[{kind}] missing setting");
    ok(store, store.set_setting("contract.clock", "manual:0").await, "set_setting");
    assert_eq!(
        ok(store, store.setting("contract.clock").await, "setting").as_deref(),
        Some("manual:0"),
        "[{kind}] setting"
    );
    ok(store, store.set_setting("contract.clock", "system").await, "set_setting");
    assert_eq!(
        ok(store, store.setting("contract.clock").await, "setting").as_deref(),
        Some("system"),
        "[{kind}] setting overwritten"
    );
}

/// Accepted external event ids are remembered per instance, and accepting one twice fails.
pub async fn event_dedup(store: &dyn Store) {
    let kind = store.kind();
    let a = id("dedup-a");
    let row = instance_row("dedup-a", "contract.dedup", InstanceStatus::Waiting);
    let mut write = touch(&row);
    write.received_event_ids = vec!["e1".into(), "e2".into()];
    commit_ok(store, &[write], "dedup").await;
    assert!(ok(store, store.event_seen(&a, "e1").await, "event_seen"), "[{kind}] e1 seen");
    assert!(ok(store, store.event_seen(&a, "e2").await, "event_seen"), "[{kind}] e2 seen");
    assert!(!ok(store, store.event_seen(&a, "e3").await, "event_seen"), "[{kind}] e3 not seen");
    assert!(!ok(store, store.event_seen(&id("dedup-b"), "e1").await, "event_seen"), "[{kind}] per instance");

    let mut again = touch(&row);
    again.received_event_ids = vec!["e3".into(), "e1".into()];
    expect_conflict(store, store.commit(&[again]).await, "accepting an event id twice");
    assert!(!ok(store, store.event_seen(&a, "e3").await, "event_seen"), "[{kind}] e3 must not land");
}

/// Lists filter by status and orchestration and page by id.
pub async fn list_instances_filters_and_pages(store: &dyn Store) {
    let kind = store.kind();
    let writes: Vec<InstanceWrite> = (0..10)
        .map(|n| {
            let orchestration = if n < 7 { "contract.list" } else { "contract.list2" };
            let status = if n % 3 == 0 { InstanceStatus::Waiting } else { InstanceStatus::Running };
            touch(&instance_row(&format!("list-{n:02}"), orchestration, status))
        })
        .collect();
    commit_ok(store, &writes, "list").await;
    let list = async |filter: InstanceFilter| -> Vec<String> {
        let rows = ok(store, store.list_instances(&filter).await, "list_instances");
        rows.into_iter().map(|row| row.id.0).collect()
    };
    let by_orchestration = |after: Option<&str>| InstanceFilter {
        orchestration: Some("contract.list".into()),
        after: after.map(id),
        limit: 3,
        ..InstanceFilter::default()
    };
    assert_eq!(list(by_orchestration(None)).await, ["list-00", "list-01", "list-02"], "[{kind}] page 1");
    assert_eq!(list(by_orchestration(Some("list-02"))).await, ["list-03", "list-04", "list-05"], "[{kind}] page 2");
    assert_eq!(list(by_orchestration(Some("list-05"))).await, ["list-06"], "[{kind}] page 3");
    assert!(list(by_orchestration(Some("list-06"))).await.is_empty(), "[{kind}] past the last page");

    let both = |orchestration: &str| InstanceFilter {
        status: Some(InstanceStatus::Waiting),
        orchestration: Some(orchestration.into()),
        limit: 100,
        ..InstanceFilter::default()
    };
    assert_eq!(list(both("contract.list")).await, ["list-00", "list-03", "list-06"], "[{kind}] status + orchestration");
    assert_eq!(list(both("contract.list2")).await, ["list-09"], "[{kind}] status + other orchestration");

    let waiting = InstanceFilter {
        status: Some(InstanceStatus::Waiting),
        after: Some(id("list-")),
        limit: 1000,
        ..InstanceFilter::default()
    };
    let waiting: Vec<String> = list(waiting).await.into_iter().filter(|id| id.starts_with("list-")).collect();
    assert_eq!(waiting, ["list-00", "list-03", "list-06", "list-09"], "[{kind}] status only");
    for id in
        list(InstanceFilter { status: Some(InstanceStatus::Waiting), limit: 1000, ..InstanceFilter::default() }).await
    {
        let row = ok(store, store.instance(&InstanceId(id.clone())).await, "instance").expect("listed instance exists");
        assert_eq!(row.status, InstanceStatus::Waiting, "[{kind}] {id} listed as waiting");
    }

    let plain = InstanceFilter { after: Some(id("list-04")), limit: 2, ..InstanceFilter::default() };
    assert_eq!(list(plain).await, ["list-05", "list-06"], "[{kind}] no filter, cursor and limit");
    let default_limit = list(InstanceFilter::default()).await;
    assert!(!default_limit.is_empty() && default_limit.len() <= 100, "[{kind}] limit 0 means the default page");
    assert!(default_limit.windows(2).all(|pair| pair[0] < pair[1]), "[{kind}] lists are ordered by id");
}

/// A list never returns more than 1,000 rows, and 0 asks for the default page of 100.
pub async fn list_instances_limit_is_capped(store: &dyn Store) {
    let kind = store.kind();
    let writes: Vec<InstanceWrite> = (0..1001)
        .map(|n| touch(&instance_row(&format!("cap-{n:04}"), "contract.cap", InstanceStatus::Running)))
        .collect();
    commit_ok(store, &writes, "cap").await;
    let filter =
        |limit| InstanceFilter { orchestration: Some("contract.cap".into()), limit, ..InstanceFilter::default() };
    assert_eq!(ok(store, store.list_instances(&filter(5000)).await, "list").len(), 1000, "[{kind}] capped at 1000");
    assert_eq!(ok(store, store.list_instances(&filter(0)).await, "list").len(), 100, "[{kind}] default 100");
    assert_eq!(ok(store, store.list_instances(&filter(7)).await, "list").len(), 7, "[{kind}] explicit limit");
}

/// An instance row with what searches find it by.
fn searchable(
    instance: &str,
    business_key: Option<&str>,
    tags: &[&str],
    namespace: Option<&str>,
    created_ms: i64,
) -> InstanceRow {
    let mut row = instance_row(instance, "contract.search", InstanceStatus::Running);
    row.business_key = business_key.map(str::to_owned);
    row.tags = tags.iter().map(|tag| (*tag).to_owned()).collect();
    row.namespace = namespace.map(str::to_owned);
    row.created_at = at(created_ms);
    row.updated_at = at(created_ms);
    row
}

/// Business key, tags and namespace come back as written (tags sorted, each once), and stay
/// what the creating write had: later writes of the row change the rest only. So does the
/// creation time.
pub async fn instance_search_fields_are_kept_from_creation(store: &dyn Store) {
    let kind = store.kind();
    // Its own orchestration, out of the way of the list check below.
    let searchable = |instance, business_key, tags, namespace, created_ms| InstanceRow {
        orchestration: "contract.keep".into(),
        ..searchable(instance, business_key, tags, namespace, created_ms)
    };
    let a = id("keep-a");
    let created = searchable("keep-a", Some("order-1"), &["vip", "eu", "vip"], Some("sales"), 5);
    commit_ok(store, &[touch(&created)], "create keep-a").await;
    let stored = ok(store, store.instance(&a).await, "instance").unwrap_or_else(|| panic!("[{kind}] keep-a exists"));
    assert_eq!(stored.business_key.as_deref(), Some("order-1"), "[{kind}] business key");
    assert_eq!(stored.tags, ["eu", "vip"], "[{kind}] tags sorted, each once");
    assert_eq!(stored.namespace.as_deref(), Some("sales"), "[{kind}] namespace");

    let mut later = searchable("keep-a", Some("order-2"), &["other"], Some("hr"), 50);
    later.status = InstanceStatus::Completed;
    commit_ok(store, &[touch(&later)], "update keep-a").await;
    let loaded = ok(store, store.load(&a).await, "load").unwrap_or_else(|| panic!("[{kind}] keep-a loads"));
    assert_eq!(loaded.row.status, InstanceStatus::Completed, "[{kind}] the rest is replaced");
    assert_eq!(loaded.row.updated_at, at(50), "[{kind}] updated_at is replaced");
    assert_eq!(loaded.row.created_at, at(5), "[{kind}] created_at stays");
    assert_eq!(loaded.row.business_key.as_deref(), Some("order-1"), "[{kind}] business key stays");
    assert_eq!(loaded.row.tags, ["eu", "vip"], "[{kind}] tags stay");
    assert_eq!(loaded.row.namespace.as_deref(), Some("sales"), "[{kind}] namespace stays");
    let by_old_tag = InstanceFilter { tag: Some("vip".into()), after: Some(id("keep-")), ..InstanceFilter::default() };
    let listed = ok(store, store.list_instances(&by_old_tag).await, "list_instances");
    assert!(listed.iter().any(|row| row.id == a), "[{kind}] found by its first tags");
    let by_new_tag = InstanceFilter { tag: Some("other".into()), ..InstanceFilter::default() };
    let listed = ok(store, store.list_instances(&by_new_tag).await, "list_instances");
    assert!(listed.iter().all(|row| row.id != a), "[{kind}] not found by a later write's tags");

    // Two writes creating one instance in one batch: the first one's tags are kept.
    let b = id("keep-b");
    let first = touch(&searchable("keep-b", None, &["first"], None, 1));
    let second = touch(&searchable("keep-b", None, &["second"], None, 2));
    commit_ok(store, &[first, second], "create keep-b twice in a batch").await;
    let stored = ok(store, store.instance(&b).await, "instance").unwrap_or_else(|| panic!("[{kind}] keep-b exists"));
    assert_eq!(stored.tags, ["first"], "[{kind}] the creating write's tags");
    assert_eq!(stored.created_at, at(1), "[{kind}] the creating write's time");

    let many = ok(store, store.load_many(&[a.clone(), b.clone()]).await, "load_many");
    let tags: Vec<&[String]> = many.iter().map(|loaded| loaded.row.tags.as_slice()).collect();
    assert_eq!(tags, [&["eu".to_owned(), "vip".to_owned()][..], &["first".to_owned()][..]], "[{kind}] load_many");
}

/// Lists filter by business key, tag, creation time and namespaces, alone and together, with
/// the id cursor and limit as ever.
pub async fn list_instances_by_search_fields(store: &dyn Store) {
    let kind = store.kind();
    let rows = [
        searchable("search-00", Some("po-1"), &["urgent", "eu"], Some("sales"), 0),
        searchable("search-01", Some("po-1"), &["eu"], Some("sales"), 1_000),
        searchable("search-02", Some("po-2"), &["urgent"], Some("hr"), 2_000),
        searchable("search-03", None, &["urgent"], None, 3_000),
        searchable("search-04", Some("po-1"), &[], Some("hr"), 4_000),
        searchable("search-05", Some("po-3"), &["urgent", "us"], Some("finance"), 5_000),
        searchable("search-06", None, &[], Some("sales"), 6_000),
    ];
    let mut writes: Vec<InstanceWrite> = rows.iter().map(touch).collect();
    if let Some(row) = writes[5].instance.as_mut() {
        row.status = InstanceStatus::Waiting;
    }
    commit_ok(store, &writes, "searchable instances").await;
    let list = async |filter: InstanceFilter| -> Vec<String> {
        let filter =
            InstanceFilter { orchestration: filter.orchestration.or_else(|| Some("contract.search".into())), ..filter };
        let rows = ok(store, store.list_instances(&filter).await, "list_instances");
        rows.into_iter().map(|row| row.id.0).collect()
    };
    let names = |list: &[&str]| Some(list.iter().map(|n| (*n).to_owned()).collect::<Vec<String>>());
    let fine = |ms: i64| at(ms) + Duration::microseconds(700);
    let cases: Vec<(&str, InstanceFilter, Vec<&str>)> = vec![
        (
            "business key",
            InstanceFilter { business_key: Some("po-1".into()), ..InstanceFilter::default() },
            vec!["search-00", "search-01", "search-04"],
        ),
        (
            "unknown business key",
            InstanceFilter { business_key: Some("po-9".into()), ..InstanceFilter::default() },
            vec![],
        ),
        (
            "tag",
            InstanceFilter { tag: Some("urgent".into()), ..InstanceFilter::default() },
            vec!["search-00", "search-02", "search-03", "search-05"],
        ),
        ("another tag", InstanceFilter { tag: Some("us".into()), ..InstanceFilter::default() }, vec!["search-05"]),
        (
            "created at or after",
            InstanceFilter { created_after: Some(at(4_000)), ..InstanceFilter::default() },
            vec!["search-04", "search-05", "search-06"],
        ),
        (
            "created before",
            InstanceFilter { created_before: Some(at(2_000)), ..InstanceFilter::default() },
            vec!["search-00", "search-01"],
        ),
        (
            "created in a range",
            InstanceFilter {
                created_after: Some(at(1_000)),
                created_before: Some(at(4_000)),
                ..InstanceFilter::default()
            },
            vec!["search-01", "search-02", "search-03"],
        ),
        (
            "created range in milliseconds",
            InstanceFilter {
                created_after: Some(fine(1_000)),
                created_before: Some(fine(3_000)),
                ..InstanceFilter::default()
            },
            vec!["search-01", "search-02"],
        ),
        (
            "one namespace",
            InstanceFilter { namespaces: names(&["hr"]), ..InstanceFilter::default() },
            vec!["search-02", "search-04"],
        ),
        (
            "several namespaces",
            InstanceFilter { namespaces: names(&["sales", "finance", "nowhere"]), ..InstanceFilter::default() },
            vec!["search-00", "search-01", "search-05", "search-06"],
        ),
        ("no namespace at all", InstanceFilter { namespaces: names(&[]), ..InstanceFilter::default() }, vec![]),
        (
            "every namespace",
            InstanceFilter::default(),
            vec!["search-00", "search-01", "search-02", "search-03", "search-04", "search-05", "search-06"],
        ),
        (
            "business key and tag",
            InstanceFilter { business_key: Some("po-1".into()), tag: Some("eu".into()), ..InstanceFilter::default() },
            vec!["search-00", "search-01"],
        ),
        (
            "tag and namespaces",
            InstanceFilter {
                tag: Some("urgent".into()),
                namespaces: names(&["sales", "hr"]),
                ..InstanceFilter::default()
            },
            vec!["search-00", "search-02"],
        ),
        (
            "tag, status and time",
            InstanceFilter {
                tag: Some("urgent".into()),
                status: Some(InstanceStatus::Waiting),
                created_after: Some(at(1)),
                ..InstanceFilter::default()
            },
            vec!["search-05"],
        ),
        (
            "everything at once",
            InstanceFilter {
                status: Some(InstanceStatus::Running),
                business_key: Some("po-1".into()),
                tag: Some("eu".into()),
                created_after: Some(at(500)),
                created_before: Some(at(5_000)),
                namespaces: names(&["sales"]),
                ..InstanceFilter::default()
            },
            vec!["search-01"],
        ),
        (
            "another orchestration",
            InstanceFilter {
                orchestration: Some("contract.elsewhere".into()),
                tag: Some("urgent".into()),
                ..InstanceFilter::default()
            },
            vec![],
        ),
    ];
    for (what, filter, expected) in cases {
        assert_eq!(list(filter).await, expected, "[{kind}] {what}");
    }

    // Pages of a filtered list.
    let urgent = |after: Option<&str>| InstanceFilter {
        tag: Some("urgent".into()),
        after: after.map(id),
        limit: 2,
        ..InstanceFilter::default()
    };
    assert_eq!(list(urgent(None)).await, ["search-00", "search-02"], "[{kind}] tag page 1");
    assert_eq!(list(urgent(Some("search-02"))).await, ["search-03", "search-05"], "[{kind}] tag page 2");
    assert!(list(urgent(Some("search-05"))).await.is_empty(), "[{kind}] past the last tag page");
    let sales = |after: Option<&str>| InstanceFilter {
        namespaces: names(&["sales"]),
        after: after.map(id),
        limit: 1,
        ..InstanceFilter::default()
    };
    assert_eq!(list(sales(Some("search-00"))).await, ["search-01"], "[{kind}] namespace page");

    // Without the orchestration filter, a filter alone finds the whole row.
    let alone = InstanceFilter { business_key: Some("po-3".into()), ..InstanceFilter::default() };
    let found = ok(store, store.list_instances(&alone).await, "list_instances");
    let expected =
        writes[5].instance.clone().map(|row| InstanceRow { tags: vec!["urgent".into(), "us".into()], ..row });
    assert_eq!(found, expected.into_iter().collect::<Vec<_>>(), "[{kind}] business key alone, whole row");
}

fn new_definition(name: &str, version: &str, namespace: Option<&str>, hash: &str) -> NewDefinition {
    NewDefinition {
        name: name.to_owned(),
        version: version.to_owned(),
        namespace: namespace.map(str::to_owned),
        content_hash: hash.to_owned(),
        source: format!("document:\n  name: {name}\n  version: '{version}'\n# {hash}\n"),
        deployed_by: Actor::User { id: "deployer".into() },
        deployed_at: at(7),
    }
}

/// Deploys `definition`, which must be new.
async fn deploy_new(store: &dyn Store, definition: &NewDefinition) -> DefinitionRow {
    let what = format!("deploying {}@{}", definition.name, definition.version);
    let (row, created) = ok(store, store.deploy_definition(definition).await, &what);
    assert!(created, "[{}] {what}: created", store.kind());
    row
}

/// A deployed version is immutable: the same text again is accepted and changes nothing,
/// another text under it is a conflict naming it.
pub async fn definitions_deploy_once_per_version(store: &dyn Store) {
    let kind = store.kind();
    let mut new = new_definition("contract.def.once", "1.0.0", Some("sales"), "hash-1");
    new.deployed_at = at(7) + Duration::microseconds(700);
    let row = deploy_new(store, &new).await;
    assert!(row.seq > 0, "[{kind}] seqs start at 1");
    let expected = DefinitionRow {
        seq: row.seq,
        name: new.name.clone(),
        version: new.version.clone(),
        namespace: new.namespace.clone(),
        content_hash: new.content_hash.clone(),
        source: new.source.clone(),
        deployed_by: new.deployed_by.clone(),
        deployed_at: at(7),
    };
    assert_eq!(row, expected, "[{kind}] the deployed row (time in milliseconds)");
    assert_eq!(row.key(), "contract.def.once@1.0.0", "[{kind}] key");

    let again = NewDefinition { deployed_by: Actor::System, deployed_at: at(99), ..new.clone() };
    let (same, created) = ok(store, store.deploy_definition(&again).await, "deploying the same text again");
    assert!(!created, "[{kind}] the same text again creates nothing");
    assert_eq!(same, expected, "[{kind}] the same text again returns the first row as it was");

    let changed = NewDefinition { content_hash: "hash-2".into(), source: "changed".into(), ..new.clone() };
    match store.deploy_definition(&changed).await {
        Err(StoreError::Conflict(message)) => {
            assert!(
                message.contains("contract.def.once") && message.contains("1.0.0"),
                "[{kind}] the conflict names the definition and version: {message}"
            );
        }
        other => panic!("[{kind}] another text under a deployed version: expected a conflict, got {other:?}"),
    }
    let stored = ok(store, store.definition("contract.def.once", Some("1.0.0")).await, "definition");
    assert_eq!(stored, Some(expected), "[{kind}] the conflict changed nothing");
    let listed = ok(
        store,
        store
            .definitions(&DefinitionQuery { name: Some("contract.def.once".into()), ..DefinitionQuery::default() })
            .await,
        "definitions",
    );
    assert_eq!(listed.len(), 1, "[{kind}] one row per version");
}

/// `definition` finds a version, or the most recently deployed one; lists filter by name and
/// namespaces and page by seq.
pub async fn definitions_latest_and_lists(store: &dyn Store) {
    let kind = store.kind();
    let a1 = deploy_new(store, &new_definition("contract.def.a", "1", Some("sales"), "a1")).await;
    let a2 = deploy_new(store, &new_definition("contract.def.a", "2", Some("sales"), "a2")).await;
    let b1 = deploy_new(store, &new_definition("contract.def.b", "1", Some("hr"), "b1")).await;
    let c1 = deploy_new(store, &new_definition("contract.def.c", "1", None, "c1")).await;
    // Deployed last, so the most recent, though its version number is lower.
    let a0 = deploy_new(store, &new_definition("contract.def.a", "0.5", Some("sales"), "a0")).await;
    assert!(a1.seq < a2.seq && a2.seq < b1.seq && b1.seq < c1.seq && c1.seq < a0.seq, "[{kind}] seqs follow deploys");

    let find = async |name: &str, version: Option<&str>| {
        ok(store, store.definition(name, version).await, "definition").map(|row| row.seq)
    };
    assert_eq!(find("contract.def.a", Some("1")).await, Some(a1.seq), "[{kind}] a version");
    assert_eq!(find("contract.def.a", Some("2")).await, Some(a2.seq), "[{kind}] another version");
    assert_eq!(find("contract.def.a", None).await, Some(a0.seq), "[{kind}] the most recently deployed");
    assert_eq!(find("contract.def.b", None).await, Some(b1.seq), "[{kind}] the only version");
    assert_eq!(find("contract.def.a", Some("9")).await, None, "[{kind}] unknown version");
    assert_eq!(find("contract.def.none", None).await, None, "[{kind}] unknown name");

    let list = async |query: DefinitionQuery| -> Vec<i64> {
        // Only this check's rows: they come after a1.
        let query = DefinitionQuery { after: query.after.or(Some(a1.seq - 1)), ..query };
        ok(store, store.definitions(&query).await, "definitions").iter().map(|row| row.seq).collect()
    };
    let names = |list: &[&str]| Some(list.iter().map(|n| (*n).to_owned()).collect::<Vec<String>>());
    let cases: Vec<(&str, DefinitionQuery, Vec<i64>)> = vec![
        ("everything", DefinitionQuery::default(), vec![a1.seq, a2.seq, b1.seq, c1.seq, a0.seq]),
        (
            "by name",
            DefinitionQuery { name: Some("contract.def.a".into()), ..DefinitionQuery::default() },
            vec![a1.seq, a2.seq, a0.seq],
        ),
        ("one namespace", DefinitionQuery { namespaces: names(&["hr"]), ..DefinitionQuery::default() }, vec![b1.seq]),
        (
            "several namespaces",
            DefinitionQuery { namespaces: names(&["hr", "sales"]), ..DefinitionQuery::default() },
            vec![a1.seq, a2.seq, b1.seq, a0.seq],
        ),
        ("no namespace at all", DefinitionQuery { namespaces: names(&[]), ..DefinitionQuery::default() }, vec![]),
        (
            "name and namespace",
            DefinitionQuery {
                name: Some("contract.def.a".into()),
                namespaces: names(&["hr"]),
                ..DefinitionQuery::default()
            },
            vec![],
        ),
        (
            "a page",
            DefinitionQuery { after: Some(a2.seq), limit: 2, ..DefinitionQuery::default() },
            vec![b1.seq, c1.seq],
        ),
        (
            "a page by name",
            DefinitionQuery {
                name: Some("contract.def.a".into()),
                after: Some(a1.seq),
                limit: 1,
                ..DefinitionQuery::default()
            },
            vec![a2.seq],
        ),
        ("past the end", DefinitionQuery { after: Some(a0.seq), ..DefinitionQuery::default() }, vec![]),
    ];
    for (what, query, expected) in cases {
        assert_eq!(list(query).await, expected, "[{kind}] {what}");
    }
    let listed = ok(
        store,
        store.definitions(&DefinitionQuery { after: Some(b1.seq - 1), limit: 1, ..DefinitionQuery::default() }).await,
        "definitions",
    );
    assert_eq!(listed, vec![b1.clone()], "[{kind}] whole rows come back");
    let bound = |limit| DefinitionQuery { limit, ..DefinitionQuery::default() }.effective_limit();
    assert_eq!((bound(0), bound(7), bound(5000)), (100, 7, 1000), "the bound rule");
}

/// Stored times have millisecond precision, in every store, so memory and disk agree.
pub async fn times_keep_milliseconds(store: &dyn Store) {
    let kind = store.kind();
    let fine = |ms: i64| at(ms) + Duration::microseconds(700);
    let a = id("ms-a");
    let mut row = instance_row("ms-a", "contract.ms", InstanceStatus::Running);
    row.created_at = fine(1);
    row.updated_at = fine(2);
    let mut write = touch(&row);
    write.tasks_added = vec![task("ms-a", 1, fine(3))];
    write.timers_added = vec![timer("ms-a", 2, fine(-600))];
    write.outbox = vec![OutboxRow { created_at: fine(5), ..outbox("ms-a", 3, "ms") }];
    commit_ok(store, &[write], "fine times").await;

    let stored = ok(store, store.instance(&a).await, "instance").expect("ms-a exists");
    assert_eq!((stored.created_at, stored.updated_at), (at(1), at(2)), "[{kind}] row times truncated");
    assert_eq!(ok(store, store.tasks_of(&a).await, "tasks_of")[0].visible_at, at(3), "[{kind}] task time");
    assert_eq!(ok(store, store.timers_of(&a).await, "timers_of")[0].due_at, at(-600), "[{kind}] timer time");
    let pending = ok(store, store.outbox_pending(100_000).await, "outbox_pending");
    let message = pending.iter().find(|(_, row)| row.instance == a).expect("ms-a message");
    assert_eq!(message.1.created_at, at(5), "[{kind}] outbox time");
    // "Before" compares milliseconds too: a timer due at -600 ms is not due before -599.3 ms.
    let due = ok(store, store.timers_due_before(fine(-600), 100_000).await, "timers_due_before");
    assert!(due.iter().all(|timer| timer.instance != a), "[{kind}] sub-millisecond 'before' is truncated");
    assert_eq!(history_time(fine(0)), at(0), "history_time truncates");
}

/// Bare sequence numbers and ids mean nothing without the instance row they belong to.
pub async fn writes_that_need_their_row_are_refused_without_it(store: &dyn Store) {
    let kind = store.kind();
    let events = chained_events(&id("bare-a"), 0, 1, GENESIS_HASH);
    let cases = [
        InstanceWrite { events: events.clone(), tasks_removed: vec![1], ..InstanceWrite::default() },
        InstanceWrite { events: events.clone(), timers_removed: vec![1], ..InstanceWrite::default() },
        InstanceWrite {
            events: events.clone(),
            incident: Some(new_incident(IncidentKind::Nondeterminism, None, at(0))),
            ..InstanceWrite::default()
        },
        InstanceWrite { events: events.clone(), incidents_resolved: vec![1], ..InstanceWrite::default() },
        InstanceWrite { events: events.clone(), received_event_ids: vec!["x".into()], ..InstanceWrite::default() },
    ];
    for write in cases {
        assert!(
            store.commit(std::slice::from_ref(&write)).await.is_err(),
            "[{kind}] a write without its row is refused"
        );
    }
    assert!(ok(store, store.history(&id("bare-a"), 0, 10).await, "history").is_empty(), "[{kind}] nothing landed");
    // Events alone carry their instance and may be written without a row.
    commit_ok(store, &[InstanceWrite { events: events.clone(), ..InstanceWrite::default() }], "events only").await;
    assert_eq!(ok(store, store.history(&id("bare-a"), 0, 10).await, "history"), events, "[{kind}] events only");
}

// ---------------------------------------------------------------------------------------------
// People and deadlines: human tasks and inboxes, SLA clocks, notifications, the directory.

fn human_task(instance: &str, seq: Seq, definition: &str, spec: HumanTaskSpec) -> HumanTaskRow {
    let created = at(seq as i64);
    HumanTaskRow {
        instance: id(instance),
        seq,
        definition: definition.to_owned(),
        task: HumanTask::new(spec, created),
        updated_at: created,
    }
}

/// A task offered to holders of `role`, scoped to `department`.
fn for_role(role: &str, department: Option<&str>) -> HumanTaskSpec {
    let mut spec = HumanTaskSpec::new("review", "Review");
    spec.candidates.roles = vec![role.to_owned()];
    spec.department = department.map(str::to_owned);
    spec
}

fn role_holder(user: &str, role: &str, department: Option<&str>) -> Principal {
    Principal { roles: vec![RoleGrant::new(role, department)], ..Principal::user(user) }
}

fn administrator() -> Principal {
    Principal { admin: true, ..Principal::user("contract-admin") }
}

/// Commits `rows` with their instance's row, as a step that changes human tasks does.
async fn commit_human_tasks(store: &dyn Store, instance: &str, rows: Vec<HumanTaskRow>, what: &str) {
    let mut write = touch(&instance_row(instance, "contract.human", InstanceStatus::Waiting));
    write.human_tasks = rows;
    commit_ok(store, &[write], what).await;
}

fn references(rows: &[HumanTaskRow]) -> Vec<String> {
    rows.iter().map(HumanTaskRow::reference).collect()
}

/// The references of `principal`'s inbox for `query`, only of instances starting with `prefix`
/// (other checks share the store).
async fn inbox_of(store: &dyn Store, query: &InboxQuery, principal: &Principal, prefix: &str) -> Vec<String> {
    let rows = ok(store, store.inbox(query, principal).await, "inbox");
    references(&rows).into_iter().filter(|reference| reference.starts_with(prefix)).collect()
}

/// A task written by a step comes back whole, with its times in milliseconds.
pub async fn human_tasks_round_trip(store: &dyn Store) {
    let kind = store.kind();
    let instance = id("ht-rt");
    let mut spec = for_role("ht_rt_role", Some("ht-rt-dept"));
    spec.description = Some("Check the «request» ✓".into());
    spec.candidates.users = vec!["ht-rt-ana".into()];
    spec.candidates.groups = vec!["ht-rt-group".into()];
    spec.candidates.departments = vec!["ht-rt-other".into()];
    spec.form = Some(json!({ "type": "object", "required": ["ok"] }));
    spec.outcomes = vec!["approve".into(), "reject".into()];
    spec.priority = 7;
    spec.due_at = Some(at(5000));
    spec.initiator = Some("ht-rt-olga".into());
    spec.on_behalf.roles = vec!["ht_rt_lead".into()];
    spec.supervisors.users = vec!["ht-rt-boss".into()];
    spec.data = json!({ "big": 9_007_199_254_740_993_u64, "text": "é \"q\" \\" });
    let mut review = human_task("ht-rt", 2, "contract.human", spec);
    review.task.comments =
        vec![Comment { by: "ht-rt-ana".into(), at: at(3), text: "looks fine".into(), erased: false }];
    let intake = human_task("ht-rt", 1, "contract.human", HumanTaskSpec::new("intake", "Intake"));
    commit_human_tasks(store, "ht-rt", vec![review.clone(), intake.clone()], "human tasks").await;

    let stored = ok(store, store.human_task(&instance, 2).await, "human_task");
    assert_eq!(stored, Some(review.clone()), "[{kind}] a human task round trip");
    let of = ok(store, store.human_tasks_of(&instance).await, "human_tasks_of");
    assert_eq!(of, [intake, review], "[{kind}] human_tasks_of, by seq");
    assert_eq!(ok(store, store.human_task(&instance, 9).await, "human_task"), None, "[{kind}] unknown seq");
    assert!(ok(store, store.human_tasks_of(&id("ht-none")).await, "of").is_empty(), "[{kind}] unknown instance");

    let fine = Duration::microseconds(700);
    let mut precise = human_task("ht-rt", 3, "contract.human", HumanTaskSpec::new("precise", "Precise"));
    precise.updated_at = at(7) + fine;
    precise.task.created_at = at(6) + fine;
    precise.task.spec.due_at = Some(at(8) + fine);
    commit_human_tasks(store, "ht-rt", vec![precise], "fine times").await;
    let stored = ok(store, store.human_task(&instance, 3).await, "human_task").expect("ht-rt:3 exists");
    assert_eq!(stored.updated_at, at(7), "[{kind}] updated_at in milliseconds");
    assert_eq!(stored.task.created_at, at(6), "[{kind}] created_at in milliseconds");
    assert_eq!(stored.task.spec.due_at, Some(at(8)), "[{kind}] due_at in milliseconds");
}

/// A task's access keys are replaced whenever it is written: a claimed task leaves the other
/// candidates' inboxes, and a finished one stays visible to whoever could see it last.
pub async fn human_task_access_follows_upserts(store: &dyn Store) {
    let kind = store.kind();
    let leader = |user: &str| role_holder(user, "ht_claim_lead", Some("ht-claim-dept"));
    let (ana, dan, eve) = (leader("ht-claim-ana"), leader("ht-claim-dan"), Principal::user("ht-claim-eve"));
    let open = human_task("ht-claim", 1, "contract.claim", for_role("ht_claim_lead", Some("ht-claim-dept")));
    commit_human_tasks(store, "ht-claim", vec![open.clone()], "open task").await;
    let inbox = async |principal: &Principal, status: Option<HumanTaskStatus>| {
        let query = InboxQuery { status, ..InboxQuery::default() };
        inbox_of(store, &query, principal, "ht-claim").await
    };
    assert_eq!(inbox(&ana, None).await, ["ht-claim:1"], "[{kind}] a candidate sees an open task");
    assert_eq!(inbox(&dan, None).await, ["ht-claim:1"], "[{kind}] every candidate sees it");

    let mut claimed = open.clone();
    claimed.task.assignee = Some("ht-claim-ana".into());
    claimed.updated_at = at(10);
    commit_human_tasks(store, "ht-claim", vec![claimed.clone()], "claim").await;
    assert_eq!(inbox(&ana, None).await, ["ht-claim:1"], "[{kind}] the owner sees a claimed task");
    assert!(inbox(&dan, None).await.is_empty(), "[{kind}] a claimed task leaves the other candidates");
    let stored = ok(store, store.human_task(&id("ht-claim"), 1).await, "human_task");
    assert_eq!(stored, Some(claimed.clone()), "[{kind}] the claimed row replaced the open one");

    // Two versions of the task in one batch: the last one counts, keys included.
    let mut to_dan = claimed.clone();
    to_dan.task.assignee = Some("ht-claim-dan".into());
    let mut write = touch(&instance_row("ht-claim", "contract.human", InstanceStatus::Waiting));
    write.human_tasks = vec![to_dan, claimed.clone()];
    commit_ok(store, &[write], "two versions in one batch").await;
    assert_eq!(inbox(&ana, None).await, ["ht-claim:1"], "[{kind}] the batch's last version wins");
    assert!(inbox(&dan, None).await.is_empty(), "[{kind}] an earlier version of the batch leaves no keys");

    let mut delegated = claimed.clone();
    delegated.task.delegate = Some("ht-claim-eve".into());
    commit_human_tasks(store, "ht-claim", vec![delegated.clone()], "delegate").await;
    assert_eq!(inbox(&eve, None).await, ["ht-claim:1"], "[{kind}] the delegate sees the task");

    let mut completed = delegated;
    completed.task.status = HumanTaskStatus::Completed;
    completed.task.completion = Some(Completion {
        outcome: "done".into(),
        data: json!({ "ok": true }),
        completed_by: "ht-claim-eve".into(),
        completed_at: at(20),
        on_behalf_of: None,
        erased: false,
    });
    commit_human_tasks(store, "ht-claim", vec![completed], "complete").await;
    for principal in [&ana, &dan, &eve] {
        assert!(inbox(principal, None).await.is_empty(), "[{kind}] a completed task is in no open inbox");
    }
    let done = Some(HumanTaskStatus::Completed);
    assert_eq!(inbox(&ana, done).await, ["ht-claim:1"], "[{kind}] the owner still sees it completed");
    assert_eq!(inbox(&eve, done).await, ["ht-claim:1"], "[{kind}] who completed it still sees it");
    assert!(inbox(&dan, done).await.is_empty(), "[{kind}] the other candidate does not");
}

/// Role candidates are scoped by the task's department; administrators see everything.
pub async fn inbox_scopes_roles_by_department(store: &dyn Store) {
    let kind = store.kind();
    let role = "ht_scope_lead";
    let in_a = human_task("ht-scope-a", 1, "contract.scope", for_role(role, Some("ht-scope-A")));
    let in_b = human_task("ht-scope-b", 1, "contract.scope", for_role(role, Some("ht-scope-B")));
    let anywhere = human_task("ht-scope-c", 1, "contract.scope", for_role(role, None));
    let mut for_members = HumanTaskSpec::new("notice", "Notice");
    for_members.candidates.departments = vec!["ht-scope-A".into()];
    let members = human_task("ht-scope-d", 1, "contract.scope", for_members);
    for row in [&in_a, &in_b, &anywhere, &members] {
        commit_human_tasks(store, row.instance.as_str(), vec![row.clone()], "scoped tasks").await;
    }
    let everything = InboxQuery::default();
    let inbox = async |principal: &Principal| inbox_of(store, &everything, principal, "ht-scope").await;
    let leader_a = role_holder("ht-scope-ana", role, Some("ht-scope-A"));
    assert_eq!(inbox(&leader_a).await, ["ht-scope-a:1", "ht-scope-c:1"], "[{kind}] leader of A");
    let leader_b = role_holder("ht-scope-bob", role, Some("ht-scope-B"));
    assert_eq!(inbox(&leader_b).await, ["ht-scope-b:1", "ht-scope-c:1"], "[{kind}] leader of B");
    let everywhere = role_holder("ht-scope-cy", role, None);
    assert_eq!(
        inbox(&everywhere).await,
        ["ht-scope-a:1", "ht-scope-b:1", "ht-scope-c:1"],
        "[{kind}] an organisation-wide grant opens every department"
    );
    let member = Principal { departments: vec!["ht-scope-A".into()], ..Principal::user("ht-scope-dee") };
    assert_eq!(inbox(&member).await, ["ht-scope-d:1"], "[{kind}] a department member");
    assert!(inbox(&Principal::user("ht-scope-nobody")).await.is_empty(), "[{kind}] a stranger sees nothing");
    assert_eq!(
        inbox(&administrator()).await,
        ["ht-scope-a:1", "ht-scope-b:1", "ht-scope-c:1", "ht-scope-d:1"],
        "[{kind}] an administrator sees every task"
    );
}

/// Every inbox filter, for an administrator and for a person who may see every task, agrees
/// with [`InboxQuery::matches`].
pub async fn inbox_filters(store: &dyn Store) {
    let kind = store.kind();
    let definition = "contract.filters";
    let mut rows = Vec::new();
    let mut spec = for_role("ht_f_r1", Some("ht-f-D1"));
    spec.priority = 1;
    spec.due_at = Some(at(100));
    rows.push(human_task("ht-f-1", 1, definition, spec));
    let mut spec = HumanTaskSpec::new("approve", "Approve");
    spec.assignee = Some("ht-f-ana".into());
    spec.department = Some("ht-f-D1".into());
    spec.candidates.groups = vec!["ht-f-g1".into()];
    spec.priority = 5;
    spec.due_at = Some(at(200));
    rows.push(human_task("ht-f-1", 2, definition, spec));
    let mut spec = HumanTaskSpec::new("check", "Check");
    spec.assignee = Some("ht-f-bob".into());
    spec.department = Some("ht-f-D2".into());
    spec.priority = 3;
    let mut delegated = human_task("ht-f-1", 3, definition, spec);
    delegated.task.delegate = Some("ht-f-ana".into());
    rows.push(delegated);
    let mut spec = for_role("ht_f_r2", None);
    spec.candidates.departments = vec!["ht-f-D2".into()];
    rows.push(human_task("ht-f-2", 1, definition, spec));
    let mut spec = HumanTaskSpec::new("file", "File");
    spec.candidates.groups = vec!["ht-f-g1".into()];
    spec.department = Some("ht-f-D2".into());
    spec.priority = 9;
    let mut done = human_task("ht-f-2", 2, definition, spec);
    done.task.status = HumanTaskStatus::Completed;
    rows.push(done);
    let mut spec = for_role("ht_f_r1", Some("ht-f-D2"));
    spec.priority = -1;
    spec.due_at = Some(at(50));
    rows.push(human_task("ht-f-3", 1, "contract.filters2", spec));
    for instance in ["ht-f-1", "ht-f-2", "ht-f-3"] {
        let mine: Vec<HumanTaskRow> = rows.iter().filter(|row| row.instance.as_str() == instance).cloned().collect();
        commit_human_tasks(store, instance, mine, "filter tasks").await;
    }

    let seer = Principal {
        user: "ht-f-ana".into(),
        roles: vec![RoleGrant::new("ht_f_r1", None), RoleGrant::new("ht_f_r2", None)],
        groups: vec!["ht-f-g1".into()],
        departments: vec!["ht-f-D2".into()],
        admin: false,
        admin_namespaces: Vec::new(),
    };
    let cases: Vec<(InboxQuery, Vec<&str>)> = vec![
        (InboxQuery::default(), vec!["ht-f-1:1", "ht-f-1:2", "ht-f-1:3", "ht-f-2:1", "ht-f-3:1"]),
        (InboxQuery { assignee: Some("ht-f-ana".into()), ..InboxQuery::default() }, vec!["ht-f-1:2", "ht-f-1:3"]),
        (InboxQuery { role: Some("ht_f_r1".into()), ..InboxQuery::default() }, vec!["ht-f-1:1", "ht-f-3:1"]),
        (InboxQuery { group: Some("ht-f-g1".into()), ..InboxQuery::default() }, vec!["ht-f-1:2"]),
        (
            InboxQuery { department: Some("ht-f-D2".into()), ..InboxQuery::default() },
            vec!["ht-f-1:3", "ht-f-2:1", "ht-f-3:1"],
        ),
        (InboxQuery { status: Some(HumanTaskStatus::Completed), ..InboxQuery::default() }, vec!["ht-f-2:2"]),
        (InboxQuery { status: Some(HumanTaskStatus::Cancelled), ..InboxQuery::default() }, vec![]),
        (InboxQuery { due_before: Some(at(150)), ..InboxQuery::default() }, vec!["ht-f-1:1", "ht-f-3:1"]),
        (InboxQuery { due_before: Some(at(100)), ..InboxQuery::default() }, vec!["ht-f-3:1"]),
        (InboxQuery { min_priority: Some(3), ..InboxQuery::default() }, vec!["ht-f-1:2", "ht-f-1:3"]),
        (InboxQuery { definition: Some("contract.filters2".into()), ..InboxQuery::default() }, vec!["ht-f-3:1"]),
        (InboxQuery { instance: Some(id("ht-f-2")), ..InboxQuery::default() }, vec!["ht-f-2:1"]),
        (
            InboxQuery { role: Some("ht_f_r1".into()), department: Some("ht-f-D1".into()), ..InboxQuery::default() },
            vec!["ht-f-1:1"],
        ),
        (
            InboxQuery { after: Some((id("ht-f-1"), 2)), ..InboxQuery::default() },
            vec!["ht-f-1:3", "ht-f-2:1", "ht-f-3:1"],
        ),
        (InboxQuery { instance: Some(id("ht-f-1")), limit: 2, ..InboxQuery::default() }, vec!["ht-f-1:1", "ht-f-1:2"]),
    ];
    for (query, expected) in &cases {
        let oracle: Vec<String> =
            references(&rows.iter().filter(|row| query.matches(row)).cloned().collect::<Vec<_>>())
                .into_iter()
                .take(query.effective_limit() as usize)
                .collect();
        assert_eq!(&oracle, expected, "the expectation of {query:?} agrees with InboxQuery::matches");
        for principal in [&administrator(), &seer] {
            let found = inbox_of(store, query, principal, "ht-f-").await;
            assert_eq!(&found, expected, "[{kind}] inbox of {} for {query:?}", principal.user);
        }
    }
    // A sub-millisecond "due before" compares milliseconds, like every stored time.
    let query = InboxQuery { due_before: Some(at(100) + Duration::microseconds(700)), ..InboxQuery::default() };
    assert_eq!(inbox_of(store, &query, &seer, "ht-f-").await, ["ht-f-3:1"], "[{kind}] due_before in milliseconds");
}

/// Paging an inbox by `after` gives every row once, in order, even when a person holds several
/// of a task's keys.
pub async fn inbox_pages(store: &dyn Store) {
    let kind = store.kind();
    let role = "ht_page_lead";
    let leader = role_holder("ht-page-tl", role, Some("ht-page-A"));
    let mut expected = Vec::new();
    for n in 0..12 {
        let instance = format!("ht-page-{n:02}");
        let mut mine = for_role(role, Some("ht-page-A"));
        if n % 3 == 0 {
            // Open to the leader by name and by role: two of their keys.
            mine.candidates.users = vec!["ht-page-tl".into()];
        }
        let mut supervised = HumanTaskSpec::new("supervised", "Supervised");
        supervised.assignee = Some("ht-page-op".into());
        supervised.department = Some("ht-page-A".into());
        supervised.supervisors.roles = vec![role.into()];
        let rows = vec![
            human_task(&instance, 1, "contract.pages", mine),
            human_task(&instance, 2, "contract.pages", for_role(role, Some("ht-page-B"))),
            human_task(&instance, 3, "contract.pages", supervised),
        ];
        commit_human_tasks(store, &instance, rows, "paged tasks").await;
        expected.push(format!("{instance}:1"));
        expected.push(format!("{instance}:3"));
    }
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let query = InboxQuery { after: after.clone(), limit: 5, ..InboxQuery::default() };
        let page = ok(store, store.inbox(&query, &leader).await, "inbox");
        assert!(page.len() <= 5, "[{kind}] a page holds at most its limit");
        let Some(last) = page.last() else { break };
        after = Some((last.instance.clone(), last.seq));
        pages.extend(references(&page));
    }
    assert_eq!(pages, expected, "[{kind}] pages give each visible row once, in order");
    let whole = inbox_of(store, &InboxQuery { limit: 500, ..InboxQuery::default() }, &leader, "ht-page").await;
    assert_eq!(whole, expected, "[{kind}] one big page");
}

fn sla(instance: &str, department: Option<&str>) -> SlaRow {
    SlaRow {
        instance: id(instance),
        seq: 1,
        definition: "contract.sla".into(),
        name: "review".into(),
        human_task: Some(2),
        department: department.map(str::to_owned),
        calendar: Some("contract-calendar".into()),
        within_ms: 3_600_000,
        started_at: at(0),
        target_at: Some(at(3000)),
        at_risk_at: Some(at(2000)),
        elapsed_ms: 120,
        running_since: Some(at(0)),
        escalations: 0,
        breached_at: None,
        stopped_at: None,
    }
}

/// SLA rows are upserted by steps and filtered by state as of a given time.
pub async fn slas_by_state(store: &dyn Store) {
    let kind = store.kind();
    let (a, b) = (Some("sla-dept-A"), Some("sla-dept-B"));
    let on_track = sla("sla-1", a);
    let at_risk = SlaRow { at_risk_at: Some(at(500)), target_at: Some(at(1500)), ..sla("sla-2", a) };
    let breached = SlaRow { at_risk_at: Some(at(400)), breached_at: Some(at(900)), escalations: 2, ..sla("sla-3", a) };
    let met = SlaRow { stopped_at: Some(at(800)), running_since: None, ..sla("sla-4", b) };
    let late = SlaRow { breached_at: Some(at(700)), stopped_at: Some(at(950)), running_since: None, ..sla("sla-5", b) };
    let paused = SlaRow { target_at: None, at_risk_at: None, running_since: None, ..sla("sla-6", b) };
    let due_now = SlaRow {
        definition: "hr/contract.sla2".into(),
        at_risk_at: Some(at(1000)),
        human_task: None,
        calendar: None,
        ..sla("sla-7", None)
    };
    let rows = [on_track, at_risk.clone(), breached, met, late, paused, due_now];
    let writes: Vec<InstanceWrite> = rows
        .iter()
        .map(|row| {
            let mut write = touch(&instance_row(row.instance.as_str(), "contract.sla", InstanceStatus::Waiting));
            write.slas = vec![row.clone()];
            write
        })
        .collect();
    commit_ok(store, &writes, "SLA rows").await;
    let of = |query: &SlaQuery| -> Vec<String> {
        let query = SlaQuery { now: query.now.or(Some(at(1000))), ..query.clone() };
        let found: Vec<&SlaRow> = rows.iter().filter(|row| query.matches(row)).collect();
        found.iter().take(query.effective_limit() as usize).map(|row| row.instance.0.clone()).collect()
    };
    let listed = async |query: &SlaQuery| -> Vec<String> {
        let query = SlaQuery { now: query.now.or(Some(at(1000))), ..query.clone() };
        let found = ok(store, store.slas(&query).await, "slas");
        found.into_iter().map(|row| row.instance.0).filter(|instance| instance.starts_with("sla-")).collect()
    };
    let state = |state, now: i64| SlaQuery { state: Some(state), now: Some(at(now)), ..SlaQuery::default() };
    let cases: Vec<(SlaQuery, Vec<&str>)> = vec![
        (SlaQuery::default(), vec!["sla-1", "sla-2", "sla-3", "sla-4", "sla-5", "sla-6", "sla-7"]),
        (state(SlaStateName::OnTrack, 1000), vec!["sla-1", "sla-6"]),
        (state(SlaStateName::AtRisk, 1000), vec!["sla-2", "sla-7"]),
        (state(SlaStateName::Breached, 1000), vec!["sla-3", "sla-5"]),
        (state(SlaStateName::Met, 1000), vec!["sla-4"]),
        (state(SlaStateName::OnTrack, 2500), vec!["sla-6"]),
        (state(SlaStateName::AtRisk, 2500), vec!["sla-1", "sla-2", "sla-7"]),
        (state(SlaStateName::AtRisk, 999), vec!["sla-2"]),
        (SlaQuery { open_only: true, ..SlaQuery::default() }, vec!["sla-1", "sla-2", "sla-3", "sla-6", "sla-7"]),
        (SlaQuery { department: Some("sla-dept-A".into()), ..SlaQuery::default() }, vec!["sla-1", "sla-2", "sla-3"]),
        (SlaQuery { definition: Some("hr/contract.sla2".into()), ..SlaQuery::default() }, vec!["sla-7"]),
        (SlaQuery { namespaces: Some(vec!["hr".into(), "it".into()]), ..SlaQuery::default() }, vec!["sla-7"]),
        (SlaQuery { namespaces: Some(vec!["contract.sla".into()]), ..SlaQuery::default() }, vec![]),
        (SlaQuery { namespaces: Some(vec![]), ..SlaQuery::default() }, vec![]),
        (SlaQuery { instance: Some(id("sla-3")), ..SlaQuery::default() }, vec!["sla-3"]),
        (SlaQuery { department: Some("sla-dept-B".into()), open_only: true, ..SlaQuery::default() }, vec!["sla-6"]),
        (SlaQuery { after: Some((id("sla-5"), 1)), ..SlaQuery::default() }, vec!["sla-6", "sla-7"]),
        (SlaQuery { after: Some((id("sla-"), 0)), limit: 2, ..SlaQuery::default() }, vec!["sla-1", "sla-2"]),
    ];
    for (query, expected) in &cases {
        assert_eq!(&of(query), expected, "the expectation of {query:?} agrees with SlaQuery::matches");
        assert_eq!(&listed(query).await, expected, "[{kind}] slas for {query:?}");
    }
    // Compliance counts the same states per definition and department.
    let compliance = async |query: SlaQuery| -> Vec<(Option<String>, [u64; 4])> {
        let query = SlaQuery { now: Some(at(1000)), ..query };
        let groups = ok(store, store.sla_compliance(&query).await, "sla_compliance");
        groups
            .into_iter()
            .filter(|g| g.definition.contains("contract.sla"))
            .map(|g| (g.department, [g.on_track, g.at_risk, g.breached, g.met]))
            .collect()
    };
    let dept = |d: &str| Some(d.to_owned());
    assert_eq!(
        compliance(SlaQuery { definition: Some("contract.sla".into()), ..SlaQuery::default() }).await,
        [(dept("sla-dept-A"), [1, 1, 1, 0]), (dept("sla-dept-B"), [1, 0, 1, 1])],
        "[{kind}] compliance per department"
    );
    assert_eq!(
        compliance(SlaQuery { department: dept("sla-dept-B"), ..SlaQuery::default() }).await,
        [(dept("sla-dept-B"), [1, 0, 1, 1])],
        "[{kind}] compliance of one department"
    );
    assert_eq!(
        compliance(SlaQuery { namespaces: Some(vec!["hr".into()]), ..SlaQuery::default() }).await,
        [(None, [0, 1, 0, 0])],
        "[{kind}] compliance of a namespace's definitions, without a department"
    );
    let decided = super::SlaCompliance { met: 1, breached: 3, ..Default::default() };
    assert_eq!((decided.compliance(), super::SlaCompliance::default().compliance()), (Some(0.25), None));
    let stored = ok(store, store.slas(&SlaQuery { instance: Some(id("sla-2")), ..SlaQuery::default() }).await, "slas");
    assert_eq!(stored, std::slice::from_ref(&at_risk), "[{kind}] an SLA row round trip");

    // A later step stops the clock: the row is replaced.
    let stopped = SlaRow { stopped_at: Some(at(1200)), running_since: None, elapsed_ms: 999, ..at_risk };
    let mut write = touch(&instance_row("sla-2", "contract.sla", InstanceStatus::Waiting));
    write.slas = vec![stopped.clone()];
    commit_ok(store, &[write], "stop a clock").await;
    assert_eq!(listed(&state(SlaStateName::Met, 1000)).await, ["sla-2", "sla-4"], "[{kind}] a stopped clock is met");
    let stored = ok(store, store.slas(&SlaQuery { instance: Some(id("sla-2")), ..SlaQuery::default() }).await, "slas");
    assert_eq!(stored, [stopped], "[{kind}] the row was replaced");
}

fn delivery(instance: &str, seq: Seq, recipient: &str, channel: &str, not_before: DateTime<Utc>) -> NewDelivery {
    NewDelivery {
        instance: id(instance),
        seq,
        recipient: recipient.to_owned(),
        channel: channel.to_owned(),
        status: DeliveryStatus::Pending,
        message: json!({ "subject": "Task waiting", "body": "«Review» ✓", "to": format!("{recipient}@example.com") }),
        not_before,
        digest: false,
        last_error: None,
        created_at: at(0),
    }
}

fn expect_delivery(store: &dyn Store, row: &DeliveryRow, new: &NewDelivery, what: &str) {
    let kind = store.kind();
    let written = (&new.instance, new.seq, &new.recipient, &new.channel, new.status, &new.message);
    let stored = (&row.instance, row.seq, &row.recipient, &row.channel, row.status, &row.message);
    assert_eq!(stored, written, "[{kind}] {what}");
    assert_eq!(
        (row.not_before, row.digest, &row.last_error),
        (new.not_before, new.digest, &new.last_error),
        "[{kind}] {what}"
    );
    assert_eq!(
        (row.attempts, row.created_at, row.sent_at),
        (0, new.created_at, None),
        "[{kind}] {what}: a new delivery"
    );
}

/// A delivery's key is `(instance, seq, recipient, channel)`: enqueueing it again returns the
/// stored row unchanged, so a retried notify sends nothing twice.
pub async fn deliveries_are_idempotent(store: &dyn Store) {
    let kind = store.kind();
    let email = delivery("dl-a", 1, "dl-ana", "email", at(0));
    let in_app = delivery("dl-a", 1, "dl-ana", "inApp", at(0));
    let first = ok(store, store.enqueue_deliveries(&[email.clone(), in_app.clone()]).await, "enqueue");
    assert_eq!(first.len(), 2, "[{kind}] one row per delivery");
    expect_delivery(store, &first[0], &email, "the email delivery");
    expect_delivery(store, &first[1], &in_app, "the in-app delivery");
    assert!(first[0].id < first[1].id, "[{kind}] delivery ids follow the order given");

    let mut retried = email.clone();
    retried.message = json!({ "subject": "changed" });
    retried.status = DeliveryStatus::Skipped;
    let sms =
        NewDelivery { digest: true, last_error: Some("later".into()), ..delivery("dl-a", 1, "dl-bob", "sms", at(5)) };
    let again = ok(store, store.enqueue_deliveries(&[retried.clone(), sms.clone(), retried]).await, "enqueue again");
    assert_eq!(again.len(), 3, "[{kind}] one row per delivery given");
    assert_eq!(again[0], first[0], "[{kind}] an existing delivery is returned unchanged");
    assert_eq!(again[2], first[0], "[{kind}] a key given twice is the same row");
    expect_delivery(store, &again[1], &sms, "a new delivery beside an existing one");
    assert!(again[1].id > first[1].id, "[{kind}] delivery ids grow");
    assert!(ok(store, store.enqueue_deliveries(&[]).await, "enqueue nothing").is_empty(), "[{kind}] nothing");

    let log = async |query: DeliveryQuery| -> Vec<i64> {
        ok(store, store.deliveries(&query).await, "deliveries").iter().map(|row| row.id).collect()
    };
    let (e, i, s) = (first[0].id, first[1].id, again[1].id);
    let of_a = || DeliveryQuery { instance: Some(id("dl-a")), ..DeliveryQuery::default() };
    assert_eq!(log(of_a()).await, [s, i, e], "[{kind}] the log, newest first");
    let to_ana = DeliveryQuery { recipient: Some("dl-ana".into()), ..DeliveryQuery::default() };
    assert_eq!(log(to_ana).await, [i, e], "[{kind}] the log of one recipient");
    assert_eq!(log(DeliveryQuery { before: Some(s), ..of_a() }).await, [i, e], "[{kind}] the log before an id");
    assert_eq!(log(DeliveryQuery { limit: 1, ..of_a() }).await, [s], "[{kind}] the log's limit");
    let sent = DeliveryUpdate {
        id: e,
        status: DeliveryStatus::Sent,
        attempts: 1,
        not_before: at(0),
        last_error: None,
        sent_at: Some(at(3)),
    };
    ok(store, store.update_delivery(&sent).await, "update_delivery");
    let only_sent = DeliveryQuery { status: Some(DeliveryStatus::Sent), ..of_a() };
    assert_eq!(log(only_sent).await, [e], "[{kind}] the log by status");
    let stored = ok(store, store.enqueue_deliveries(std::slice::from_ref(&email)).await, "enqueue after sending");
    assert_eq!(stored[0].status, DeliveryStatus::Sent, "[{kind}] a sent delivery stays sent");
    assert_eq!((stored[0].attempts, stored[0].sent_at), (1, Some(at(3))), "[{kind}] the attempt is recorded");
}

/// Pending deliveries come due at `not_before`, oldest first; updates move or finish them.
pub async fn deliveries_come_due(store: &dyn Store) {
    let kind = store.kind();
    let new = [
        delivery("due-a", 1, "due-ana", "email", at(300)),
        delivery("due-a", 2, "due-ana", "email", at(100)),
        delivery("due-a", 3, "due-ana", "email", at(100)),
        NewDelivery { status: DeliveryStatus::Skipped, ..delivery("due-a", 4, "due-ana", "email", at(200)) },
        delivery("due-a", 5, "due-ana", "email", at(5000)),
    ];
    let rows = ok(store, store.enqueue_deliveries(&new).await, "enqueue");
    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let due = async |now: i64| -> Vec<i64> {
        let due = ok(store, store.deliveries_due(at(now), 100_000).await, "deliveries_due");
        assert!(
            due.windows(2).all(|pair| (pair[0].not_before, pair[0].id) < (pair[1].not_before, pair[1].id)),
            "[{kind}] due deliveries are ordered by not_before, then id"
        );
        due.iter().filter(|row| row.instance == id("due-a")).map(|row| row.id).collect()
    };
    assert_eq!(due(300).await, [ids[1], ids[2], ids[0]], "[{kind}] due, oldest first");
    assert!(due(99).await.is_empty(), "[{kind}] nothing due before its time");
    assert_eq!(due(100).await, [ids[1], ids[2]], "[{kind}] due at exactly not_before");

    let update = |id: i64, status, not_before: i64| DeliveryUpdate {
        id,
        status,
        attempts: 1,
        not_before: at(not_before),
        last_error: None,
        sent_at: None,
    };
    let sent = DeliveryUpdate { sent_at: Some(at(110)), ..update(ids[1], DeliveryStatus::Sent, 100) };
    ok(store, store.update_delivery(&sent).await, "sent");
    let retry = DeliveryUpdate { last_error: Some("timeout".into()), ..update(ids[2], DeliveryStatus::Pending, 400) };
    ok(store, store.update_delivery(&retry).await, "retry later");
    assert_eq!(due(300).await, [ids[0]], "[{kind}] sent is done, the retry waits");
    assert_eq!(due(400).await, [ids[0], ids[2]], "[{kind}] the retry comes due");
    let failed = DeliveryUpdate { last_error: Some("gave up".into()), ..update(ids[0], DeliveryStatus::Failed, 300) };
    ok(store, store.update_delivery(&failed).await, "failed");
    assert_eq!(due(400).await, [ids[2]], "[{kind}] a failed delivery is not due");
    let log = ok(
        store,
        store.deliveries(&DeliveryQuery { instance: Some(id("due-a")), ..DeliveryQuery::default() }).await,
        "log",
    );
    let retried = log.iter().find(|row| row.id == ids[2]).expect("the retried delivery is logged");
    assert_eq!(
        (retried.status, retried.attempts, retried.not_before, retried.last_error.as_deref()),
        (DeliveryStatus::Pending, 1, at(400), Some("timeout")),
        "[{kind}] an update is recorded"
    );
    assert!(store.update_delivery(&update(i64::MAX, DeliveryStatus::Sent, 0)).await.is_err(), "[{kind}] unknown id");
    assert_eq!(ok(store, store.deliveries_due(at(10_000), 1).await, "due").len(), 1, "[{kind}] due limit");
}

fn notification(user: &str, delivery: i64, subject: &str) -> InAppNotification {
    InAppNotification {
        id: 0,
        user: user.to_owned(),
        delivery,
        subject: subject.to_owned(),
        body: format!("{subject}: «details» ✓"),
        link: Some(format!("/tasks/{delivery}")),
        created_at: at(delivery % 1000),
        read_at: None,
    }
}

/// The in-app inbox: one notification per delivery, newest first, read only by its user.
pub async fn in_app_notifications(store: &dyn Store) {
    let kind = store.kind();
    for (user, delivery, subject) in [
        ("ia-u1", 9_100_001, "first"),
        ("ia-u1", 9_100_002, "second"),
        ("ia-u2", 9_100_003, "other"),
        ("ia-u1", 9_100_004, "third"),
    ] {
        ok(store, store.put_in_app(&notification(user, delivery, subject)).await, "put_in_app");
    }
    ok(store, store.put_in_app(&notification("ia-u1", 9_100_001, "again")).await, "put_in_app again");
    let list = async |user: &str, unread_only: bool, before: Option<i64>, limit: u32| {
        ok(store, store.in_app(user, unread_only, before, limit).await, "in_app")
    };
    let mine = list("ia-u1", false, None, 100).await;
    let subjects: Vec<&str> = mine.iter().map(|n| n.subject.as_str()).collect();
    assert_eq!(subjects, ["third", "second", "first"], "[{kind}] newest first; a second put is ignored");
    assert!(mine.windows(2).all(|pair| pair[0].id > pair[1].id), "[{kind}] by id, descending");
    let expected = InAppNotification { id: mine[2].id, ..notification("ia-u1", 9_100_001, "first") };
    assert_eq!(mine[2], expected, "[{kind}] an in-app notification round trip");
    let older = list("ia-u1", false, Some(mine[0].id), 100).await;
    assert_eq!(older, mine[1..], "[{kind}] paged by id");
    assert_eq!(list("ia-u1", false, None, 1).await, mine[..1], "[{kind}] in_app limit");
    let theirs = list("ia-u2", false, None, 100).await;
    assert_eq!(theirs.len(), 1, "[{kind}] another user's inbox");

    let ids = [mine[0].id, mine[1].id, theirs[0].id];
    assert_eq!(ok(store, store.mark_read("ia-u1", &ids, at(50)).await, "mark_read"), 2, "[{kind}] only own rows");
    assert_eq!(ok(store, store.mark_read("ia-u1", &ids, at(60)).await, "mark_read"), 0, "[{kind}] already read");
    assert_eq!(ok(store, store.mark_read("ia-u1", &[], at(60)).await, "mark_read"), 0, "[{kind}] nothing to mark");
    let unread = list("ia-u1", true, None, 100).await;
    assert_eq!(unread, mine[2..], "[{kind}] unread only");
    let read = list("ia-u1", false, None, 100).await;
    assert_eq!((read[0].read_at, read[1].read_at), (Some(at(50)), Some(at(50))), "[{kind}] read_at kept");
    assert_eq!(list("ia-u2", true, None, 100).await, theirs, "[{kind}] another user's row stays unread");
}

fn person(id: &str, department: &str) -> Person {
    Person { department: Some(department.to_owned()), ..Person::new(id, id.trim_start_matches("dir-")) }
}

/// The directory over the store's tables: import, lookups, manager-of and principals.
pub async fn directory_people_and_managers(store: &dyn Store) {
    let kind = store.kind();
    let department = |id: &str, parent: Option<&str>, head: Option<&str>| Department {
        id: id.to_owned(),
        name: id.to_uppercase(),
        parent: parent.map(str::to_owned),
        head: head.map(str::to_owned),
    };
    let pia = Person {
        email: Some("pia@example.com".into()),
        roles: vec![RoleGrant::new("dir_manager", None)],
        ..person("dir-pia", "dir-plant")
    };
    let mut ana = Person {
        email: Some("ana@example.com".into()),
        phone: Some("+32 470 00 00 00".into()),
        locale: Some("fr-BE".into()),
        roles: vec![RoleGrant::new("dir_lead", Some("dir-assembly"))],
        groups: vec!["dir-reviewers".into()],
        ..person("dir-ana", "dir-assembly")
    };
    ana.preferences.channels.insert("sms".into(), false);
    ana.preferences.quiet_hours = Some("contract-calendar".into());
    ana.preferences.digest = Some("08:00".into());
    let bob = Person {
        manager: Some("dir-carl".into()),
        roles: vec![RoleGrant::new("dir_operator", Some("dir-assembly"))],
        groups: vec!["dir-reviewers".into(), "dir-safety".into(), "dir-safety".into()],
        ..person("dir-bob", "dir-assembly")
    };
    let carl = Person { roles: vec![RoleGrant::new("dir_lead", Some("dir-paint"))], ..person("dir-carl", "dir-paint") };
    let dora = Person { roles: vec![RoleGrant::new("dir_lead", None)], ..person("dir-dora", "dir-plant") };
    let eve = Person {
        roles: vec![RoleGrant::new("dir_lead", Some("dir-assembly"))],
        active: false,
        ..person("dir-eve", "dir-assembly")
    };
    let fay = person("dir-fay", "dir-paint");
    let organisation = Organisation {
        departments: vec![
            department("dir-plant", None, Some("dir-pia")),
            department("dir-assembly", Some("dir-plant"), Some("dir-ana")),
            department("dir-paint", Some("dir-plant"), None),
        ],
        groups: vec![
            Group { id: "dir-reviewers".into(), name: "Reviewers".into() },
            Group { id: "dir-safety".into(), name: "Safety".into() },
        ],
        people: vec![pia, ana.clone(), bob.clone(), carl, dora, eve.clone(), fay],
    };
    organisation.check().unwrap_or_else(|problems| panic!("the contract organisation is valid: {problems:?}"));
    ok(store, store.import(&organisation).await, "import");

    assert_eq!(ok(store, store.person("dir-ana").await, "person"), Some(ana.clone()), "[{kind}] a person round trip");
    assert_eq!(ok(store, store.person("dir-eve").await, "person"), Some(eve), "[{kind}] an inactive person is kept");
    assert_eq!(ok(store, store.person("dir-none").await, "person"), None, "[{kind}] unknown person");
    let departments: Vec<Department> =
        ok(store, store.departments().await, "departments").into_iter().filter(|d| d.id.starts_with("dir-")).collect();
    let mut declared = organisation.departments.clone();
    declared.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(departments, declared, "[{kind}] departments, by id");
    assert_eq!(
        ok(store, store.department("dir-paint").await, "department"),
        Some(organisation.departments[2].clone()),
        "[{kind}] one department"
    );
    let groups: Vec<Group> =
        ok(store, store.groups().await, "groups").into_iter().filter(|g| g.id.starts_with("dir-")).collect();
    assert_eq!(groups, organisation.groups, "[{kind}] groups, by id");

    let people = async |query: PeopleQuery| -> Vec<String> {
        let found = ok(store, store.people(&query).await, "people");
        found.into_iter().map(|person| person.id).filter(|id| id.starts_with("dir-")).collect()
    };
    let role = |role: &str, department: Option<&str>| PeopleQuery {
        role: Some(role.into()),
        department: department.map(str::to_owned),
        ..PeopleQuery::default()
    };
    assert_eq!(people(role("dir_lead", Some("dir-assembly"))).await, ["dir-ana"], "[{kind}] role in a department");
    assert_eq!(people(role("dir_lead", None)).await, ["dir-ana", "dir-carl", "dir-dora"], "[{kind}] every holder");
    let members = PeopleQuery { department: Some("dir-assembly".into()), ..PeopleQuery::default() };
    assert_eq!(people(members).await, ["dir-ana", "dir-bob"], "[{kind}] a department's active members");
    let reviewers = || PeopleQuery { group: Some("dir-reviewers".into()), ..PeopleQuery::default() };
    assert_eq!(people(reviewers()).await, ["dir-ana", "dir-bob"], "[{kind}] a group's members");
    let safe_operators = PeopleQuery { group: Some("dir-safety".into()), ..role("dir_operator", None) };
    assert_eq!(people(safe_operators).await, ["dir-bob"], "[{kind}] role and group");
    let page = PeopleQuery { limit: 2, ..role("dir_lead", None) };
    assert_eq!(people(page).await, ["dir-ana", "dir-carl"], "[{kind}] people limit");
    let page = PeopleQuery { after: Some("dir-carl".into()), ..role("dir_lead", None) };
    assert_eq!(people(page).await, ["dir-dora"], "[{kind}] people after");

    let manager = async |id: &str| ok(store, store.manager_of(id).await, "manager_of").map(|person| person.id);
    assert_eq!(manager("dir-bob").await.as_deref(), Some("dir-carl"), "[{kind}] one's own manager");
    assert_eq!(manager("dir-ana").await.as_deref(), Some("dir-pia"), "[{kind}] a head's manager is the parent's head");
    assert_eq!(manager("dir-fay").await.as_deref(), Some("dir-pia"), "[{kind}] no head: the parent's head");
    assert_eq!(manager("dir-pia").await, None, "[{kind}] the top has no manager");
    assert_eq!(manager("dir-none").await, None, "[{kind}] an unknown person has no manager");
    let principal = ok(store, store.principal("dir-ana").await, "principal");
    let expected = Principal {
        user: "dir-ana".into(),
        roles: vec![RoleGrant::new("dir_lead", Some("dir-assembly"))],
        groups: vec!["dir-reviewers".into()],
        departments: vec!["dir-assembly".into()],
        admin: false,
        admin_namespaces: Vec::new(),
    };
    assert_eq!(principal, Some(expected), "[{kind}] a person's principal");

    // Replacing a person replaces their roles and groups.
    let demoted = Person { roles: Vec::new(), groups: Vec::new(), ..ana };
    ok(store, store.put_person(&demoted).await, "put_person");
    assert!(people(role("dir_lead", Some("dir-assembly"))).await.is_empty(), "[{kind}] the role is gone");
    assert_eq!(people(reviewers()).await, ["dir-bob"], "[{kind}] the membership is gone");
    assert_eq!(ok(store, store.person("dir-ana").await, "person"), Some(demoted), "[{kind}] the person replaced");
    ok(store, store.put_department(&department("dir-paint", Some("dir-plant"), Some("dir-fay"))).await, "department");
    assert_eq!(manager("dir-carl").await.as_deref(), Some("dir-fay"), "[{kind}] a new head");
    let auditors = Group { id: "dir-auditors".into(), name: "Auditors".into() };
    ok(store, store.put_group(&auditors).await, "put_group");
    let groups = ok(store, store.groups().await, "groups");
    assert!(groups.contains(&auditors), "[{kind}] a group added");
    // A second import changes what it names and keeps the rest.
    let unmanaged = Person { manager: None, ..bob };
    let again = Organisation { people: vec![unmanaged.clone()], ..Organisation::default() };
    ok(store, store.import(&again).await, "import again");
    assert_eq!(manager("dir-bob").await.as_deref(), Some("dir-ana"), "[{kind}] the department's head");
    assert_eq!(people(role("dir_lead", None)).await, ["dir-carl", "dir-dora"], "[{kind}] the others are kept");
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use serde_json::Value;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
    use crate::store::{HistoryStore, OutboxStore, SettingsStore, StepStore, TaskStore, TimerStore};

    /// JSON that text encodings like to mangle: escapes, non-ASCII, integers beyond f64.
    fn sample_json() -> Value {
        json!({ "text": "é ✓ \"quoted\" \\ slash", "big": 9_007_199_254_740_993_u64, "neg": -1, "f": 1.5e-7 })
    }

    async fn open_sqlite(dir: &TempDir) -> SqliteStore {
        let path = dir.path().join("baton.db");
        SqliteStore::open(path.to_str().expect("utf-8 temp path"), SqliteOptions::default())
            .await
            .expect("opens the SQLite store")
    }

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        run_all(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn sqlite_store_passes_the_contract() {
        let dir = TempDir::new().expect("temp dir");
        let store = open_sqlite(&dir).await;
        run_all(&store).await;
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_data_survives_close_and_reopen() {
        let dir = TempDir::new().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("nested/dir/baton.db").display());
        let options = SqliteOptions { synchronous: Synchronous::Normal, read_connections: 2 };
        let store = SqliteStore::open(&url, options.clone()).await.expect("opens");
        let instance = id("reopen-a");
        let events = chained_events(&instance, 0, 3, GENESIS_HASH);
        let mut write = step(&instance_row("reopen-a", "contract.reopen", InstanceStatus::Running), events.clone());
        write.tasks_added = vec![task("reopen-a", 1, at(0))];
        write.outbox = vec![OutboxRow { payload: sample_json(), ..outbox("reopen-a", 2, "reopen") }];
        let row = write.instance.clone().expect("row");
        store.commit(&[write]).await.expect("commits");
        store.set_setting("clock", "manual").await.expect("setting");
        store.close().await;

        let store = SqliteStore::open(&url, options).await.expect("reopens (migrations are not re-run)");
        let loaded = store.load(&instance).await.expect("loads").expect("reopen-a exists");
        assert_eq!(loaded.row, row);
        assert_eq!(loaded.events, events);
        assert_eq!(store.tasks_of(&instance).await.expect("tasks"), [task("reopen-a", 1, at(0))]);
        let pending = store.outbox_pending(10).await.expect("outbox");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.payload, sample_json(), "JSON survives byte for byte");
        assert_eq!(store.setting("clock").await.expect("setting").as_deref(), Some("manual"));
        store.close().await;
    }

    #[tokio::test]
    async fn sqlite_commits_and_loads_a_thousand_instance_batch() {
        let dir = TempDir::new().expect("temp dir");
        let store = open_sqlite(&dir).await;
        let ids: Vec<InstanceId> = (0..1000).map(|n| id(&format!("bulk-{n:04}"))).collect();
        let writes: Vec<InstanceWrite> = ids
            .iter()
            .map(|instance| {
                let mut write = step(
                    &instance_row(instance.as_str(), "contract.bulk", InstanceStatus::Running),
                    chained_events(instance, 0, 4, GENESIS_HASH),
                );
                write.tasks_added = vec![task(instance.as_str(), 1, at(0)), task(instance.as_str(), 2, at(1))];
                write.timers_added = vec![timer(instance.as_str(), 3, at(5))];
                write.outbox = vec![outbox(instance.as_str(), 3, "bulk")];
                write.snapshot = Some(SnapshotRow { instance: instance.clone(), seq: 1, state: json!({ "n": 1 }) });
                write.received_event_ids = vec!["bulk-event".into()];
                write
            })
            .collect();
        store.commit(&writes).await.expect("a 1,000-instance batch commits");
        let loaded = store.load_many(&ids).await.expect("load_many");
        assert_eq!(loaded.len(), 1000);
        for (loaded, write) in loaded.iter().zip(&writes) {
            assert_eq!(Some(&loaded.row), write.instance.as_ref());
            assert_eq!(loaded.snapshot.as_ref().map(|s| s.seq), Some(1));
            assert_eq!(loaded.events, write.events[2..], "events after the snapshot");
        }
        assert_eq!(store.open_tasks(5000).await.expect("open tasks").len(), 2000);
        assert_eq!(store.timers_due_before(at(10), 5000).await.expect("timers").len(), 1000);
        assert_eq!(store.outbox_pending(5000).await.expect("outbox").len(), 1000);

        // Finishing every task of the batch in one commit is a handful of statements too.
        let finish: Vec<InstanceWrite> = writes
            .iter()
            .map(|write| InstanceWrite {
                instance: write.instance.clone(),
                tasks_removed: vec![1, 2],
                timers_removed: vec![3],
                ..InstanceWrite::default()
            })
            .collect();
        store.commit(&finish).await.expect("finishing commits");
        assert!(store.open_tasks(5000).await.expect("open tasks").is_empty());
        assert!(store.timers_due_before(at(10), 5000).await.expect("timers").is_empty());
        store.close().await;
    }
}
