//! The flow between tasks: unique names per list, `then:` targets, reachability, and switch
//! default cases.
//!
//! A flow directive only reaches tasks of its own list ("they cannot target tasks at a
//! different depth", DSL reference, Flow Directive). Reachability follows what the runtime does:
//! a task goes on to the next one unless `then:` says otherwise (`exit` and `end` stop the
//! list); a switch goes to each case's target, and also on when no case is a default; a task
//! with `if:` may be skipped, so it also goes on; a `raise` goes nowhere.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::Context;
use super::tasks::{Kind, Task, TaskList, Tasks};
use crate::diagnostic::{Diagnostic, codes};

const DIRECTIVES: &[&str] = &["continue", "exit", "end"];

pub(super) fn check(cx: &mut Context<'_>, tasks: &Tasks<'_>) {
    for list in &tasks.lists {
        let before = cx.out.len();
        let names = duplicates(cx, tasks, list);
        for &index in &list.tasks {
            let task = &tasks.all[index];
            targets(cx, tasks, list, &names, task);
            default_cases(cx, task);
        }
        // With a name used twice or a target missing, the flow is unclear: say nothing of it.
        let clear = cx.out.len() == before;
        if !list.concurrent && clear {
            unreachable(cx, tasks, list, &names);
        }
    }
}

/// Reports names used twice in `list`; gives each name's first position.
fn duplicates<'a>(cx: &mut Context<'_>, tasks: &'a Tasks<'_>, list: &TaskList) -> HashMap<&'a str, usize> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (position, &index) in list.tasks.iter().enumerate() {
        let task = &tasks.all[index];
        if let Some(&first) = names.get(task.name) {
            let first_line = cx.label(&tasks.all[list.tasks[first]].pointer).line;
            let message = format!("the task name `{}` is already used in this list (line {first_line})", task.name);
            let span = cx.label(&task.pointer);
            let diagnostic = Diagnostic::error(codes::DUPLICATE_TASK, cx.file, span, &task.pointer, message)
                .with_expected("a name used once per list, so `then:` and the run history can tell the tasks apart");
            cx.push(diagnostic);
        } else {
            names.insert(task.name, position);
        }
    }
    names
}

/// Every `then:` of a task: its own and, for a switch, its cases', with their pointers.
fn thens<'a>(task: &Task<'a>) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    if let Some(target) = task.value.get("then").and_then(Value::as_str) {
        out.push((target, format!("{}/then", task.pointer)));
    }
    for (index, name, case) in cases(task) {
        if let Some(target) = case.get("then").and_then(Value::as_str) {
            let escaped = crate::parse::escape(name);
            out.push((target, format!("{}/switch/{index}/{escaped}/then", task.pointer)));
        }
    }
    out
}

/// The cases of a switch task: position, name, body.
fn cases<'a>(task: &Task<'a>) -> Vec<(usize, &'a str, &'a Value)> {
    let Some(items) = task.value.get("switch").and_then(Value::as_array) else { return Vec::new() };
    items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            let entry = item.as_object().filter(|entry| entry.len() == 1)?;
            entry.iter().next().map(|(name, case)| (index, name.as_str(), case))
        })
        .collect()
}

fn targets(cx: &mut Context<'_>, tasks: &Tasks<'_>, list: &TaskList, names: &HashMap<&str, usize>, task: &Task<'_>) {
    for (target, pointer) in thens(task) {
        if DIRECTIVES.contains(&target) || names.contains_key(target) {
            continue;
        }
        let mut enclosing = list.parent;
        let mut outside = false;
        while let Some(index) = enclosing {
            let parent = &tasks.lists[index];
            if parent.tasks.iter().any(|&t| tasks.all[t].name == target) {
                outside = true;
                break;
            }
            enclosing = parent.parent;
        }
        let message = if outside {
            format!(
                "`then: {target}` names a task of an enclosing list; a flow directive only reaches tasks of its own list"
            )
        } else {
            let mut message = format!("`then: {target}` names no task of this list");
            let candidates = names.keys().copied().chain(DIRECTIVES.iter().copied());
            if let Some(close) = super::schema::closest(target, candidates) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            message
        };
        let mut known: Vec<&str> = list.tasks.iter().map(|&t| tasks.all[t].name).collect();
        known.truncate(12);
        let expected = format!("continue, exit, end, or a task of this list: {}", known.join(", "));
        let span = cx.span(&pointer);
        cx.push(Diagnostic::error(codes::THEN_TARGET, cx.file, span, &pointer, message).with_expected(expected));
    }
}

fn default_cases(cx: &mut Context<'_>, task: &Task<'_>) {
    let mut first: Option<&str> = None;
    for (index, name, case) in cases(task) {
        if case.get("when").is_some() {
            continue;
        }
        match first {
            None => first = Some(name),
            Some(first) => {
                let pointer = format!("{}/switch/{index}/{}", task.pointer, crate::parse::escape(name));
                let message = format!(
                    "the case `{name}` has no `when`, and neither has `{first}`: a switch has one default case at most"
                );
                let span = cx.label(&pointer);
                let diagnostic = Diagnostic::error(codes::DEFAULT_CASE, cx.file, span, &pointer, message)
                    .with_expected("a `when:` condition on every case but one");
                cx.push(diagnostic);
            }
        }
    }
}

fn unreachable(cx: &mut Context<'_>, tasks: &Tasks<'_>, list: &TaskList, names: &HashMap<&str, usize>) {
    let count = list.tasks.len();
    if count < 2 {
        return;
    }
    let successors = |position: usize| -> Vec<usize> {
        let task = &tasks.all[list.tasks[position]];
        let next = (position + 1 < count).then_some(position + 1);
        let follow = |directive: Option<&str>| match directive {
            None | Some("continue") => next,
            Some("exit" | "end") => None,
            Some(name) => names.get(name).copied(),
        };
        let own = task.value.get("then").and_then(Value::as_str);
        let mut out: Vec<Option<usize>> = Vec::new();
        match task.kind() {
            Kind::One("raise") => {}
            Kind::One("switch") => {
                let cases = cases(task);
                for (_, _, case) in &cases {
                    out.push(follow(case.get("then").and_then(Value::as_str)));
                }
                if !cases.iter().any(|(_, _, case)| case.get("when").is_none()) {
                    out.push(follow(own));
                }
            }
            _ => out.push(follow(own)),
        }
        if task.value.get("if").is_some() {
            out.push(follow(own));
            out.push(next);
        }
        out.into_iter().flatten().collect()
    };
    let mut reached = HashSet::from([0]);
    let mut queue = vec![0];
    while let Some(position) = queue.pop() {
        for successor in successors(position) {
            if reached.insert(successor) {
                queue.push(successor);
            }
        }
    }
    for position in (0..count).filter(|position| !reached.contains(position)) {
        let task = &tasks.all[list.tasks[position]];
        let message =
            format!("the task `{}` is never reached: no path from the first task of its list leads to it", task.name);
        let span = cx.label(&task.pointer);
        let diagnostic = Diagnostic::warning(codes::UNREACHABLE, cx.file, span, &task.pointer, message).with_expected(
            "a `then:` naming this task, or the task before it going on (no `then: exit`/`end`/another task)",
        );
        cx.push(diagnostic);
    }
}
