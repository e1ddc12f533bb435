//! Directory lookups as activities, for workflows that route work by the organisation:
//!
//! - `baton.directory.managerOf`: input `{"user": "ana"}`, output the person `ana` escalates to
//!   (her manager, else the head of her department or of the nearest ancestor department), or
//!   `null`.
//! - `baton.directory.people`: input `{"role"?, "department"?, "group"?, "limit"?}`, output the
//!   list of active people matching all that is given (a role with a department: only grants in
//!   that department), at most `limit` (default 100, at most 10,000).
//!
//! People are returned as the directory holds them (`id`, `name`, `email`, `phone`, `locale`,
//! `department`, `manager`, `roles`, `groups`, `preferences`).

use std::sync::Arc;

use baton_engine::directory::PeopleQuery;
use baton_engine::{ActivityError, ActivityRegistry, Store};
use serde_json::{Map, Value, json};

use crate::auth::Sensitive;
use crate::problem::Problem;

/// The name of the manager-of lookup.
pub const MANAGER_OF_ACTIVITY: &str = "baton.directory.managerOf";
/// The name of the people lookup.
pub const PEOPLE_ACTIVITY: &str = "baton.directory.people";

/// Registers `baton.directory.managerOf` and `baton.directory.people` over `store`.
pub fn register_directory(registry: &mut ActivityRegistry, store: Arc<dyn Store>) {
    let managers = Arc::clone(&store);
    registry.register(MANAGER_OF_ACTIVITY, move |_ctx, input| {
        let store = Arc::clone(&managers);
        async move { manager_of(store.as_ref(), &input).await }
    });
    registry.register(PEOPLE_ACTIVITY, move |_ctx, input| {
        let store = Arc::clone(&store);
        async move { people(store.as_ref(), &input).await }
    });
}

fn invalid(detail: String) -> ActivityError {
    Problem::validation(detail).into_activity_error(&Sensitive::default())
}

fn unavailable(error: baton_engine::StoreError) -> ActivityError {
    ActivityError::Retryable(format!("the directory: {error}"))
}

fn fields<'a>(input: &'a Value, known: &[&str]) -> Result<&'a Map<String, Value>, ActivityError> {
    let Value::Object(fields) = input else {
        return Err(invalid(format!("expected a mapping with {}, found {input}", known.join(", "))));
    };
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(format!("unknown field {unknown:?}, expected {}", known.join(", "))));
    }
    Ok(fields)
}

fn string(fields: &Map<String, Value>, key: &str) -> Result<Option<String>, ActivityError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!("{key}: expected a non-empty string, found {other}"))),
    }
}

/// The `baton.directory.managerOf` activity.
pub async fn manager_of(store: &dyn Store, input: &Value) -> Result<Value, ActivityError> {
    let fields = fields(input, &["user"])?;
    let user = string(fields, "user")?.ok_or_else(|| invalid("user: missing".into()))?;
    let manager = store.manager_of(&user).await.map_err(unavailable)?;
    Ok(manager.map_or(Value::Null, |person| json!(person)))
}

/// The `baton.directory.people` activity.
pub async fn people(store: &dyn Store, input: &Value) -> Result<Value, ActivityError> {
    let fields = fields(input, &["role", "department", "group", "limit"])?;
    let limit = match fields.get("limit") {
        None | Some(Value::Null) => PeopleQuery::DEFAULT_LIMIT,
        Some(value) => value
            .as_u64()
            .filter(|n| *n > 0)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX).min(PeopleQuery::MAX_LIMIT))
            .ok_or_else(|| invalid(format!("limit: expected a positive integer, found {value}")))?,
    };
    let query = PeopleQuery {
        role: string(fields, "role")?,
        department: string(fields, "department")?,
        group: string(fields, "group")?,
        after: None,
        limit,
    };
    let found = store.people(&query).await.map_err(unavailable)?;
    Ok(json!(found.into_iter().filter(|p| p.active).collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use baton_engine::directory::{Department, Directory, Organisation, Person};
    use baton_engine::human::RoleGrant;
    use baton_engine::store::memory::MemoryStore;

    use super::*;

    async fn store() -> MemoryStore {
        let store = MemoryStore::new();
        let mut ana = Person::new("ana", "Ana");
        ana.department = Some("assembly".into());
        let mut head = Person::new("hal", "Hal");
        head.roles = vec![RoleGrant::new("manager", Some("assembly"))];
        let mut left = Person::new("old", "Old");
        left.roles = vec![RoleGrant::new("manager", Some("assembly"))];
        left.active = false;
        let organisation = Organisation {
            departments: vec![Department {
                id: "assembly".into(),
                name: "Assembly".into(),
                parent: None,
                head: Some("hal".into()),
            }],
            groups: vec![],
            people: vec![ana, head, left],
        };
        store.import(&organisation).await.expect("imported");
        store
    }

    #[tokio::test]
    async fn manager_of_climbs_to_the_department_head() {
        let store = store().await;
        let manager = manager_of(&store, &json!({ "user": "ana" })).await.expect("found");
        assert_eq!(manager["id"], "hal");
        assert_eq!(manager_of(&store, &json!({ "user": "nobody" })).await, Ok(Value::Null));
        assert!(matches!(manager_of(&store, &json!({})).await, Err(ActivityError::Failed(_))));
        assert!(matches!(manager_of(&store, &json!({ "usr": "ana" })).await, Err(ActivityError::Failed(_))));
    }

    #[tokio::test]
    async fn people_by_role_and_department_only_the_active() {
        let store = store().await;
        let found = people(&store, &json!({ "role": "manager", "department": "assembly" })).await.expect("found");
        let ids: Vec<&str> = found.as_array().expect("a list").iter().filter_map(|p| p["id"].as_str()).collect();
        assert_eq!(ids, ["hal"]);
        let found = people(&store, &json!({ "department": "assembly", "limit": 1 })).await.expect("found");
        assert_eq!(found.as_array().expect("a list").len(), 1);
        assert!(matches!(people(&store, &json!({ "limit": 0 })).await, Err(ActivityError::Failed(_))));
    }

    #[test]
    fn both_are_registered() {
        let mut registry = ActivityRegistry::new();
        register_directory(&mut registry, Arc::new(MemoryStore::new()));
        assert!(registry.contains(MANAGER_OF_ACTIVITY) && registry.contains(PEOPLE_ACTIVITY));
    }
}
