//! The directory: who people are in the organisation.
//!
//! People, the organisation's roles they hold (operator, team_leader, manager, super_admin,
//! hr, it...; what tasks are assigned to, not the platform's permissions), groups,
//! departments with their heads and parents, manager-of relations, contact addresses, locale
//! and notification preferences. [`Directory`] is the trait the engine, the notify activity,
//! the API and the CLI use; the stores implement it over their own tables, and an external
//! identity source can implement it later behind the same trait.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::human::{Principal, RoleGrant};
use crate::store::StoreResult;

/// One person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// BCP 47 language tag (`fr-BE`, `nl`, `en`); notifications pick their template by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// The person's home department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// The person's manager; without one, the head of their department is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleGrant>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub preferences: Preferences,
    /// A person who left keeps their id in histories but receives nothing.
    #[serde(default = "yes", skip_serializing_if = "Clone::clone")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl Person {
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self { id: id.into(), name: name.into(), active: true, ..Self::default() }
    }

    /// What this person may see of human tasks (not the platform's permissions).
    pub fn principal(&self) -> Principal {
        Principal {
            user: self.id.clone(),
            roles: self.roles.clone(),
            groups: self.groups.clone(),
            departments: self.department.iter().cloned().collect(),
            admin: false,
            admin_namespaces: Vec::new(),
        }
    }

    pub fn holds(&self, role: &str, department: Option<&str>) -> bool {
        self.roles.iter().any(|g| g.role == role && (department.is_none() || g.department.as_deref() == department))
    }
}

/// How a person wants to be told.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preferences {
    /// Channels turned on or off by name (`email`, `sms`, `webhook`, `inApp`); a channel not
    /// listed is on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, bool>,
    /// A business calendar: outside its working time the person is in quiet hours, and email
    /// and SMS wait for the next working time (in-app is stored at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<String>,
    /// Collect email into one digest a day at this local time (`HH:MM`, in the quiet-hours
    /// calendar's zone, UTC without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Preferences {
    pub fn channel_on(&self, channel: &str) -> bool {
        self.channels.get(channel).copied().unwrap_or(true)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Department {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The person at the head of the department: the manager of whoever has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// A whole organisation, as a YAML import or an export holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Organisation {
    #[serde(default)]
    pub departments: Vec<Department>,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub people: Vec<Person>,
}

impl Organisation {
    /// Checks references inside the organisation: unique ids, departments, managers, heads
    /// and parents that exist, no department its own ancestor. Every problem is listed.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut departments = BTreeMap::new();
        for d in &self.departments {
            if departments.insert(d.id.as_str(), d).is_some() {
                problems.push(format!("department {:?} is declared twice", d.id));
            }
        }
        let mut people = BTreeMap::new();
        for p in &self.people {
            if p.id.trim().is_empty() {
                problems.push("a person has an empty id".into());
            }
            if people.insert(p.id.as_str(), p).is_some() {
                problems.push(format!("person {:?} is declared twice", p.id));
            }
        }
        let groups: Vec<&str> = self.groups.iter().map(|g| g.id.as_str()).collect();
        for p in &self.people {
            let who = &p.id;
            if let Some(d) = &p.department
                && !departments.contains_key(d.as_str())
            {
                problems.push(format!("person {who:?}: department {d:?} is not declared"));
            }
            if let Some(m) = &p.manager
                && !people.contains_key(m.as_str())
            {
                problems.push(format!("person {who:?}: manager {m:?} is not a person"));
            }
            for grant in &p.roles {
                if let Some(d) = &grant.department
                    && !departments.contains_key(d.as_str())
                {
                    problems.push(format!(
                        "person {who:?}: role {} in department {d:?}, which is not declared",
                        grant.role
                    ));
                }
            }
            for g in &p.groups {
                if !groups.contains(&g.as_str()) {
                    problems.push(format!("person {who:?}: group {g:?} is not declared"));
                }
            }
        }
        for d in &self.departments {
            if let Some(h) = &d.head
                && !people.contains_key(h.as_str())
            {
                problems.push(format!("department {:?}: head {h:?} is not a person", d.id));
            }
            let mut seen = vec![d.id.as_str()];
            let mut parent = d.parent.as_deref();
            while let Some(p) = parent {
                if seen.contains(&p) {
                    problems.push(format!("department {:?} is its own ancestor", d.id));
                    break;
                }
                seen.push(p);
                match departments.get(p) {
                    Some(next) => parent = next.parent.as_deref(),
                    None => {
                        problems.push(format!("department {:?}: parent {p:?} is not declared", d.id));
                        break;
                    }
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// Which people a lookup wants. Bounded by `limit`, paged by id.
#[derive(Clone, Debug, Default)]
pub struct PeopleQuery {
    /// Holders of this role. With `department`, only grants in that department; without, every
    /// holder.
    pub role: Option<String>,
    /// Members of this department (with `role`: the role's department instead).
    pub department: Option<String>,
    pub group: Option<String>,
    /// Only ids greater than this one.
    pub after: Option<String>,
    pub limit: u32,
}

impl PeopleQuery {
    pub const DEFAULT_LIMIT: u32 = 100;
    pub const MAX_LIMIT: u32 = 10_000;

    pub fn effective_limit(&self) -> u32 {
        crate::store::bounded(self.limit, Self::DEFAULT_LIMIT, Self::MAX_LIMIT)
    }

    /// Does `person` pass the query? Memory stores filter with it; SQL stores agree with it.
    pub fn matches(&self, person: &Person) -> bool {
        let by_role = match (&self.role, &self.department) {
            (Some(role), department) => person.holds(role, department.as_deref()),
            (None, Some(department)) => person.department.as_deref() == Some(department.as_str()),
            (None, None) => true,
        };
        person.active
            && by_role
            && self.group.as_ref().is_none_or(|g| person.groups.contains(g))
            && self.after.as_ref().is_none_or(|after| person.id.as_str() > after.as_str())
    }
}

/// How deep a manager-of lookup climbs the department tree before it gives up.
const MAX_DEPARTMENT_DEPTH: usize = 32;

/// Who people are. Implemented by the stores; every list is bounded.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn person(&self, id: &str) -> StoreResult<Option<Person>>;
    async fn people(&self, query: &PeopleQuery) -> StoreResult<Vec<Person>>;
    async fn department(&self, id: &str) -> StoreResult<Option<Department>>;
    async fn departments(&self) -> StoreResult<Vec<Department>>;
    async fn groups(&self) -> StoreResult<Vec<Group>>;
    /// Adds or replaces one person.
    async fn put_person(&self, person: &Person) -> StoreResult<()>;
    async fn put_department(&self, department: &Department) -> StoreResult<()>;
    async fn put_group(&self, group: &Group) -> StoreResult<()>;
    /// Adds or replaces everything in `organisation` in one transaction (people, departments
    /// and groups not named are kept).
    async fn import(&self, organisation: &Organisation) -> StoreResult<()>;
    /// The notification preferences a person set for themselves: kept apart from their
    /// directory entry, so that importing the directory again does not undo them, and given
    /// in place of the entry's preferences by [`Directory::person`] and [`Directory::people`].
    /// `None` removes them (the directory's apply again). False when nobody has the id.
    async fn set_preferences(&self, id: &str, preferences: Option<&Preferences>) -> StoreResult<bool>;

    /// The person `id` escalates to: their own manager, else the head of their department, else
    /// the head of the nearest ancestor department whose head is someone else.
    async fn manager_of(&self, id: &str) -> StoreResult<Option<Person>> {
        let Some(person) = self.person(id).await? else { return Ok(None) };
        if let Some(manager) = &person.manager {
            return self.person(manager).await;
        }
        let mut department = person.department.clone();
        for _ in 0..MAX_DEPARTMENT_DEPTH {
            let Some(d) = department else { break };
            let Some(found) = self.department(&d).await? else { break };
            if let Some(head) = found.head.as_deref().filter(|h| *h != id) {
                return self.person(head).await;
            }
            department = found.parent;
        }
        Ok(None)
    }

    /// The principal the directory knows for `id` (no platform permissions); none for a person
    /// who left (`active: false`).
    async fn principal(&self, id: &str) -> StoreResult<Option<Principal>> {
        Ok(self.person(id).await?.filter(|p| p.active).map(|p| p.principal()))
    }
}
