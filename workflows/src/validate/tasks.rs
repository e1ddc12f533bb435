//! Where the tasks of a definition are.
//!
//! Task lists sit at fixed places of the DSL, listed here once: the workflow's `do`; a `do`
//! task's `do`; a `for` task's `do`; a `try` task's `try` and `catch.do`; a `fork` task's
//! `branches` (run concurrently); a `listen` task's `foreach.do`; an AsyncAPI call's
//! `with.subscription.foreach.do`; an extension's `before` and `after`; the `do` of each rung
//! of an `sla.escalate` ladder (Baton's, on a task or the workflow). Reusable functions
//! (`use.functions`) are tasks outside any list. A Baton extension that holds tasks adds its
//! place to [`Tasks::task`].

use serde_json::Value;

use super::schema::TASK_KINDS;
use crate::parse::escape;

/// What a task entry is, by its discriminating keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    None,
    One(&'static str),
    Many(Vec<&'static str>),
}

#[derive(Debug)]
pub(crate) struct Task<'a> {
    pub name: &'a str,
    /// The pointer of the task's body (`/do/0/getPet`); its key span is the task's name.
    pub pointer: String,
    pub value: &'a Value,
}

impl Task<'_> {
    pub fn kind(&self) -> Kind {
        kind(self.value)
    }
}

#[derive(Debug)]
pub(crate) struct TaskList {
    /// Indexes into [`Tasks::all`], in document order.
    pub tasks: Vec<usize>,
    /// Fork branches: they all run, so flow analysis does not apply.
    pub concurrent: bool,
    /// The list holding the task that holds this one.
    pub parent: Option<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct Tasks<'a> {
    pub all: Vec<Task<'a>>,
    pub lists: Vec<TaskList>,
}

/// The kind of a task: the one kind key it has (`for` also has `do`).
pub(crate) fn kind(task: &Value) -> Kind {
    let Some(fields) = task.as_object() else { return Kind::None };
    let mut found: Vec<&'static str> = TASK_KINDS.iter().copied().filter(|kind| fields.contains_key(*kind)).collect();
    if found.contains(&"for") {
        found.retain(|kind| *kind != "do");
    }
    match found.len() {
        0 => Kind::None,
        1 => Kind::One(found[0]),
        _ => Kind::Many(found),
    }
}

/// Every task and task list of `document`.
pub(crate) fn collect(document: &Value) -> Tasks<'_> {
    let mut tasks = Tasks::default();
    tasks.list(document.get("do"), "/do".to_owned(), false, None);
    tasks.ladder(document, "", None);
    if let Some(functions) = document.pointer("/use/functions").and_then(Value::as_object) {
        for (name, task) in functions {
            tasks.task(name, format!("/use/functions/{}", escape(name)), task, None);
        }
    }
    if let Some(extensions) = document.pointer("/use/extensions").and_then(Value::as_array) {
        for (index, item) in extensions.iter().enumerate() {
            for (name, extension) in item.as_object().into_iter().flatten() {
                for part in ["before", "after"] {
                    let pointer = format!("/use/extensions/{index}/{}/{part}", escape(name));
                    tasks.list(extension.get(part), pointer, false, None);
                }
            }
        }
    }
    tasks
}

impl<'a> Tasks<'a> {
    fn list(&mut self, value: Option<&'a Value>, pointer: String, concurrent: bool, parent: Option<usize>) {
        let Some(items) = value.and_then(Value::as_array) else { return };
        let id = self.lists.len();
        self.lists.push(TaskList { tasks: Vec::new(), concurrent, parent });
        for (index, item) in items.iter().enumerate() {
            // An entry is one `name: task` pair; the schema reports any other shape.
            let Some(entry) = item.as_object().filter(|entry| entry.len() == 1) else { continue };
            for (name, task) in entry {
                let task = self.task(name, format!("{pointer}/{index}/{}", escape(name)), task, Some(id));
                self.lists[id].tasks.push(task);
            }
        }
    }

    fn task(&mut self, name: &'a str, pointer: String, value: &'a Value, list: Option<usize>) -> usize {
        let index = self.all.len();
        self.all.push(Task { name, pointer: pointer.clone(), value });
        let nested = |path: &str| value.pointer(path);
        match kind(value) {
            Kind::One("do" | "for") => self.list(nested("/do"), format!("{pointer}/do"), false, list),
            Kind::One("try") => {
                self.list(nested("/try"), format!("{pointer}/try"), false, list);
                self.list(nested("/catch/do"), format!("{pointer}/catch/do"), false, list);
            }
            Kind::One("fork") => self.list(nested("/fork/branches"), format!("{pointer}/fork/branches"), true, list),
            Kind::One("listen") => self.list(nested("/foreach/do"), format!("{pointer}/foreach/do"), false, list),
            Kind::One("call") if value.get("call").and_then(Value::as_str) == Some("asyncapi") => {
                let path = "/with/subscription/foreach/do";
                self.list(nested(path), format!("{pointer}{path}"), false, list);
            }
            _ => {}
        }
        self.ladder(value, &pointer, list);
        index
    }

    /// The task lists of an `sla.escalate` ladder: each rung runs on its own, beside the task.
    fn ladder(&mut self, value: &'a Value, pointer: &str, list: Option<usize>) {
        let Some(rungs) = value.pointer("/sla/escalate").and_then(Value::as_array) else { return };
        for (i, rung) in rungs.iter().enumerate() {
            self.list(rung.get("do"), format!("{pointer}/sla/escalate/{i}/do"), false, list);
        }
    }

    /// The call tasks (in lists and functions) with the function name they call.
    pub fn calls(&self) -> impl Iterator<Item = (&Task<'a>, &'a str)> {
        self.all.iter().filter(|task| task.kind() == Kind::One("call")).filter_map(|task| {
            let name = task.value.get("call").and_then(Value::as_str)?;
            Some((task, name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_every_nested_list() {
        let document = json!({
            "do": [
                {"loop": {"for": {"in": "${ . }"}, "do": [{"inner": {"set": {}}}]}},
                {"guard": {"try": [{"a": {"set": {}}}], "catch": {"do": [{"b": {"set": {}}}]}}},
                {"split": {"fork": {"branches": [{"c": {"set": {}}}]}}},
                {"wait": {"listen": {"to": {"any": []}}, "foreach": {"do": [{"d": {"set": {}}}]}}}
            ],
            "use": {"functions": {"f": {"call": "http"}}, "extensions": [{"e": {"extend": "all", "before": [{"g": {"set": {}}}]}}]}
        });
        let tasks = collect(&document);
        let names: Vec<&str> = tasks.all.iter().map(|t| t.name).collect();
        assert_eq!(names, ["loop", "inner", "guard", "a", "b", "split", "c", "wait", "d", "f", "g"]);
        let firsts: Vec<&str> = tasks.lists.iter().map(|l| tasks.all[l.tasks[0]].pointer.as_str()).collect();
        assert_eq!(
            firsts,
            [
                "/do/0/loop",
                "/do/0/loop/do/0/inner",
                "/do/1/guard/try/0/a",
                "/do/1/guard/catch/do/0/b",
                "/do/2/split/fork/branches/0/c",
                "/do/3/wait/foreach/do/0/d",
                "/use/extensions/0/e/before/0/g"
            ]
        );
        assert!(tasks.lists[4].concurrent);
        assert_eq!(tasks.lists[1].parent, Some(0));
    }

    #[test]
    fn kinds() {
        assert_eq!(kind(&json!({"for": {}, "do": []})), Kind::One("for"));
        assert_eq!(kind(&json!({"call": "x", "set": {}})), Kind::Many(vec!["call", "set"]));
        assert_eq!(kind(&json!({"then": "end"})), Kind::None);
    }
}
