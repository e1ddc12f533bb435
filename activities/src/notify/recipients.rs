//! Who a notification goes to: the `to` of the notify input, resolved through the directory.

use std::collections::HashSet;

use baton_engine::Store;
use baton_engine::directory::{PeopleQuery, Person};
use baton_engine::store::StoreResult;
use serde_json::Value;

/// The most people one notify call reaches.
pub(crate) const MAX_RECIPIENTS: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    User(String),
    ManagerOf(String),
    People { role: Option<String>, department: Option<String>, group: Option<String> },
}

impl Target {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::User(id) => format!("user {id:?}"),
            Self::ManagerOf(id) => format!("the manager of {id:?}"),
            Self::People { role, department, group } => {
                let mut parts = Vec::new();
                if let Some(role) = role {
                    parts.push(format!("role {role:?}"));
                }
                if let Some(department) = department {
                    parts.push(format!("department {department:?}"));
                }
                if let Some(group) = group {
                    parts.push(format!("group {group:?}"));
                }
                parts.join(" in ")
            }
        }
    }
}

const EXPECTED: &str =
    "a user id, or a mapping with user, managerOf, or role / department / group (or a list of those)";

/// Reads `to`: one recipient or a list of them.
pub(crate) fn parse(value: &Value) -> Result<Vec<Target>, String> {
    match value {
        Value::Array(items) => items.iter().map(parse_one).collect(),
        other => parse_one(other).map(|target| vec![target]),
    }
}

fn parse_one(value: &Value) -> Result<Target, String> {
    let text = |key: &str, v: &Value| match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        other => Err(format!("to.{key}: expected a non-empty string, found {other}")),
    };
    match value {
        Value::String(_) => Ok(Target::User(text("user", value)?)),
        Value::Object(fields) => {
            if let Some(unknown) =
                fields.keys().find(|k| !["user", "managerOf", "role", "department", "group"].contains(&k.as_str()))
            {
                return Err(format!("to: unknown field {unknown:?}, expected {EXPECTED}"));
            }
            let get = |key: &str| fields.get(key).filter(|v| !v.is_null()).map(|v| text(key, v)).transpose();
            let (user, manager_of) = (get("user")?, get("managerOf")?);
            let (role, department, group) = (get("role")?, get("department")?, get("group")?);
            let query = role.is_some() || department.is_some() || group.is_some();
            match (user, manager_of, query) {
                (Some(user), None, false) => Ok(Target::User(user)),
                (None, Some(user), false) => Ok(Target::ManagerOf(user)),
                (None, None, true) => Ok(Target::People { role, department, group }),
                (None, None, false) => Err(format!("to: an empty recipient, expected {EXPECTED}")),
                _ => Err("to: user and managerOf stand alone; role, department and group go together".into()),
            }
        }
        other => Err(format!("to: expected {EXPECTED}, found {other}")),
    }
}

/// The active people the targets name, each once, in the order first named, and the targets
/// that named nobody.
pub(crate) async fn resolve(
    store: &dyn Store,
    targets: &[Target],
) -> StoreResult<Result<(Vec<Person>, Vec<String>), String>> {
    let mut seen = HashSet::new();
    let mut people = Vec::new();
    let mut unresolved = Vec::new();
    for target in targets {
        let found: Vec<Person> = match target {
            Target::User(id) => store.person(id).await?.into_iter().collect(),
            Target::ManagerOf(id) => store.manager_of(id).await?.into_iter().collect(),
            Target::People { role, department, group } => {
                let mut found = Vec::new();
                let mut query = PeopleQuery {
                    role: role.clone(),
                    department: department.clone(),
                    group: group.clone(),
                    after: None,
                    limit: PeopleQuery::MAX_LIMIT,
                };
                loop {
                    let page = store.people(&query).await?;
                    let full = page.len() >= query.effective_limit() as usize;
                    query.after = page.last().map(|p| p.id.clone());
                    found.extend(page);
                    if !full || found.len() > MAX_RECIPIENTS {
                        break;
                    }
                }
                found
            }
        };
        let mut named_anyone = false;
        for person in found.into_iter().filter(|p| p.active) {
            named_anyone = true;
            if seen.insert(person.id.clone()) {
                people.push(person);
            }
        }
        if !named_anyone {
            unresolved.push(target.describe());
        }
        if people.len() > MAX_RECIPIENTS {
            return Ok(Err(format!("more than {MAX_RECIPIENTS} recipients; narrow the recipients down")));
        }
    }
    Ok(Ok((people, unresolved)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn recipients_in_every_form() {
        let targets = parse(&json!(["ana", { "user": "bob" }, { "role": "manager", "department": "assembly" },
            { "group": "reviewers" }, { "managerOf": "ana" }]))
        .expect("valid");
        assert_eq!(targets[0], Target::User("ana".into()));
        assert_eq!(targets[1], Target::User("bob".into()));
        assert_eq!(
            targets[2],
            Target::People { role: Some("manager".into()), department: Some("assembly".into()), group: None }
        );
        assert_eq!(targets[4], Target::ManagerOf("ana".into()));
        assert_eq!(parse(&json!({ "user": "ana" })).expect("one"), vec![Target::User("ana".into())]);
        assert!(parse(&json!({ "user": "ana", "role": "x" })).is_err());
        assert!(parse(&json!({ "usr": "ana" })).expect_err("unknown").contains("usr"));
        assert!(parse(&json!(42)).is_err());
        assert!(parse(&json!({})).is_err());
    }
}
