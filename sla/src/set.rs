//! A named set of calendars, as declared under a `calendars:` mapping.

use std::collections::BTreeMap;
use std::collections::btree_map;

use serde_json::Value;

use crate::calendar::Calendar;
use crate::config::CalendarError;

/// Calendars by name. Workflows and SLAs refer to a calendar by its name.
#[derive(Clone, Debug, Default)]
pub struct Calendars {
    by_name: BTreeMap<String, Calendar>,
}

impl Calendars {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a mapping of name → calendar declaration. Errors name the calendar
    /// (`calendar 'office': hours.mon-fri[1]: ...`).
    pub fn from_value(value: &Value) -> Result<Self, CalendarError> {
        let Value::Object(entries) = value else {
            return Err(CalendarError::new(
                "",
                format!("expected a mapping of calendar names to calendars, found {}", crate::config::describe(value)),
            ));
        };
        let mut calendars = Self::new();
        for (name, declaration) in entries {
            if name.trim().is_empty() {
                return Err(CalendarError::new("", "a calendar name must not be empty"));
            }
            let calendar = Calendar::from_value(declaration).map_err(|error| error.in_calendar(name))?;
            calendars.insert(name.clone(), calendar);
        }
        Ok(calendars)
    }

    /// The calendar named `name`.
    pub fn get(&self, name: &str) -> Option<&Calendar> {
        self.by_name.get(name)
    }

    /// Adds or replaces the calendar named `name`; returns the one it replaced.
    pub fn insert(&mut self, name: impl Into<String>, calendar: Calendar) -> Option<Calendar> {
        self.by_name.insert(name.into(), calendar)
    }

    /// Adds every calendar of `other`; on a name in both, `other`'s calendar wins (later
    /// declarations override earlier ones).
    pub fn merge(&mut self, other: Calendars) {
        self.by_name.extend(other.by_name);
    }

    /// Whether a calendar is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The calendar names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Name and calendar pairs, in name order.
    pub fn iter(&self) -> btree_map::Iter<'_, String, Calendar> {
        self.by_name.iter()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl<'a> IntoIterator for &'a Calendars {
    type Item = (&'a String, &'a Calendar);
    type IntoIter = btree_map::Iter<'a, String, Calendar>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
