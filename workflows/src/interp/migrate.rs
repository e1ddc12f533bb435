//! Moving a running instance's state to another version of its definition.
//!
//! The interpreter's state names tasks by their place in the compiled program (node and list
//! ids), which another version numbers differently. A move finds, for every frame that runs a
//! task, the task's counterpart in the new version: the task the mapping names, else the task
//! at the same reference with the same name, else the only task of that name. The frames keep
//! everything else (inputs, what they wait for, SLA clocks), so activities, timers, event
//! waits and human tasks in flight carry on under the counterpart. A sequence resumes at its
//! running task's position in the new version: tasks added before it are not run, tasks added
//! after it are.
//!
//! The move is refused, with the reason, where the new version cannot hold the state: a
//! running task with no counterpart, a counterpart of another kind, a counterpart in another
//! scope than its parent's, a `fork` with another number of branches, a `listen` with other
//! filters, an SLA whose escalation ladder has another number of rungs.

use std::collections::HashMap;

use baton_engine::{Migrated, TaskMapping};

use super::{Body, FrameKind, State, Workflow};
use crate::model::{Call, Kind, ListId, Node, NodeId, Program, Strategy, Until};

impl Workflow {
    pub(super) fn migrate_state(
        &self,
        from: &Workflow,
        state: &State,
        mapping: &TaskMapping,
    ) -> Result<Migrated<State>, String> {
        if state.ended {
            return Err("the workflow has ended".into());
        }
        if !state.queue.is_empty() {
            return Err("the instance is in the middle of a step; try again".into());
        }
        let map = Map::new(&from.program, &self.program, mapping, &from.info.version, &self.info.version)?;
        let mut moved = Vec::new();
        let mut next = state.clone();
        // Tasks first: a sequence's new place comes from its running task's counterpart.
        let mut counterparts: HashMap<u32, NodeId> = HashMap::new();
        for (&id, frame) in &state.frames {
            if let FrameKind::Task(task) = &frame.kind {
                let new = map.counterpart(task.node)?;
                map.check_body(task.node, new, &task.body, task.sla.is_some())?;
                counterparts.insert(id, new);
                let (old_ref, new_ref) = (&map.old.node(task.node).reference, &map.new.node(new).reference);
                moved.push((old_ref.clone(), new_ref.clone()));
            }
        }
        let workflow_sla = state.frames.values().any(|f| matches!(&f.kind, FrameKind::Workflow { sla: Some(_), .. }));
        if workflow_sla
            && from.program.sla.as_ref().map(|s| s.escalate.len())
                != self.program.sla.as_ref().map(|s| s.escalate.len())
        {
            return Err("the workflow's SLA escalation ladder has another number of rungs in the new version".into());
        }
        for (&id, frame) in &state.frames {
            let parent = frame.parent.and_then(|p| state.frames.get(&p).map(|f| (p, f)));
            match &frame.kind {
                FrameKind::Task(task) => {
                    let new = counterparts[&id];
                    if let Some((parent_id, parent)) = parent
                        && let FrameKind::Task(parent_task) = &parent.kind
                    {
                        map.check_direct_child(task.node, new, &parent_task.body, counterparts[&parent_id], id)?;
                    }
                    if let Some(FrameKind::Task(next_task)) = next.frames.get_mut(&id).map(|f| &mut f.kind) {
                        next_task.node = new;
                    }
                }
                FrameKind::Sequence { list, index } => {
                    let old_child = *map.old.list(*list).entries.get(*index).ok_or("a sequence ran past its end")?;
                    let new_child = map.counterpart(old_child)?;
                    let &(new_list, new_index) = map.place.get(&new_child).ok_or("a task outside every scope")?;
                    let allowed = match parent.map(|(p, f)| (p, &f.kind)) {
                        Some((_, FrameKind::Workflow { .. })) | None => vec![map.new.root],
                        Some((p, FrameKind::Task(_))) => lists_of(&map.new.node(counterparts[&p]).kind),
                        Some((_, FrameKind::Escalation { owner })) => match state.frames.get(owner).map(|f| &f.kind) {
                            Some(FrameKind::Task(_)) => rungs(map.new.node(counterparts[owner]).sla.as_ref()),
                            _ => rungs(map.new.sla.as_ref()),
                        },
                        Some((_, FrameKind::Sequence { .. })) => Vec::new(),
                    };
                    if !allowed.contains(&new_list) {
                        let old = map.old.node(old_child);
                        let new = map.new.node(new_child);
                        return Err(format!(
                            "task `{}` ({}) runs inside another task, but its counterpart {} is in another scope in \
                             version {}",
                            old.name, old.reference, new.reference, map.new_version
                        ));
                    }
                    if let Some(FrameKind::Sequence { list, index }) = next.frames.get_mut(&id).map(|f| &mut f.kind) {
                        *list = new_list;
                        *index = new_index;
                    }
                }
                FrameKind::Workflow { .. } | FrameKind::Escalation { .. } => {}
            }
        }
        moved.sort();
        Ok(Migrated { state: next, moved })
    }
}

/// The two programs and how tasks of the old one find theirs in the new one.
struct Map<'a> {
    old: &'a Program,
    new: &'a Program,
    new_version: &'a str,
    /// Old node -> new node, as the mapping asks.
    asked: HashMap<NodeId, NodeId>,
    /// Each new node's scope and position in it.
    place: HashMap<NodeId, (ListId, usize)>,
}

impl<'a> Map<'a> {
    fn new(
        old: &'a Program,
        new: &'a Program,
        mapping: &TaskMapping,
        old_version: &str,
        new_version: &'a str,
    ) -> Result<Self, String> {
        let mut asked = HashMap::new();
        for (from, to) in mapping {
            let old_node =
                find(old, from).map_err(|why| format!("the mapping's `{from}`: {why} in version {old_version}"))?;
            let new_node =
                find(new, to).map_err(|why| format!("the mapping's `{to}`: {why} in version {new_version}"))?;
            asked.insert(old_node, new_node);
        }
        let mut place = HashMap::new();
        for (list, entries) in new.lists.iter().enumerate() {
            for (position, &node) in entries.entries.iter().enumerate() {
                place.insert(node, (list as ListId, position));
            }
        }
        Ok(Self { old, new, new_version, asked, place })
    }

    /// The new task an old one continues as.
    fn counterpart(&self, old_id: NodeId) -> Result<NodeId, String> {
        if let Some(&new) = self.asked.get(&old_id) {
            return Ok(new);
        }
        let old = self.old.node(old_id);
        let same_place = self.new.nodes.iter().position(|n| n.reference == old.reference && n.name == old.name);
        if let Some(new) = same_place {
            return Ok(new as NodeId);
        }
        find(self.new, &old.name).map_err(|why| {
            format!(
                "task `{}` ({}) is running and {why} in version {}; map it to its counterpart ({}=<task>)",
                old.name, old.reference, self.new_version, old.name
            )
        })
    }

    /// The counterpart can go on with what the old task was doing.
    fn check_body(&self, old_id: NodeId, new_id: NodeId, body: &Body, has_sla: bool) -> Result<(), String> {
        let (old, new) = (self.old.node(old_id), self.new.node(new_id));
        let refuse = |what: &str| {
            Err(format!(
                "task `{}` ({}) is running, and its counterpart {} in version {} {what}",
                old.name, old.reference, new.reference, self.new_version
            ))
        };
        if kind_name(&old.kind) != kind_name(&new.kind) {
            return refuse(&format!("is a `{}` task, not a `{}` task", kind_name(&new.kind), kind_name(&old.kind)));
        }
        match (body, &old.kind, &new.kind) {
            (Body::Fork { branches, .. }, _, Kind::Fork { branches: list, .. })
                if self.new.list(*list).entries.len() != branches.len() =>
            {
                return refuse(&format!("has {} branches, not {}", self.new.list(*list).entries.len(), branches.len()));
            }
            (Body::Listen(_), Kind::Listen(a), Kind::Listen(b)) if filters(&a.strategy) != filters(&b.strategy) => {
                return refuse("listens with another strategy or other filters");
            }
            (Body::Try { phase: super::TryPhase::Handler, .. }, _, Kind::Try(t)) if t.handler.is_none() => {
                return refuse("has no `catch.do` for the handler that is running");
            }
            _ => {}
        }
        if has_sla && old.sla.as_ref().map(|s| s.escalate.len()) != new.sla.as_ref().map(|s| s.escalate.len()) {
            return refuse("has no SLA, or one whose escalation ladder has another number of rungs");
        }
        Ok(())
    }

    /// A task started directly by its parent task (a `fork` branch, a function's body) keeps
    /// its place under the parent's counterpart.
    fn check_direct_child(
        &self,
        old_id: NodeId,
        new_id: NodeId,
        parent_body: &Body,
        parent_new: NodeId,
        frame: u32,
    ) -> Result<(), String> {
        let fits = match (parent_body, &self.new.node(parent_new).kind) {
            (Body::Fork { branches, .. }, Kind::Fork { branches: list, .. }) => {
                let branch = branches.iter().position(|b| *b == Some(frame));
                branch.is_some_and(|i| self.new.list(*list).entries.get(i) == Some(&new_id))
            }
            (Body::Sub, Kind::Call(Call::Function { node, .. })) => *node == new_id,
            _ => true,
        };
        if fits {
            return Ok(());
        }
        let (old, new) = (self.old.node(old_id), self.new.node(new_id));
        Err(format!(
            "task `{}` ({}) runs as a branch of its parent, but its counterpart {} is not that branch in version {}",
            old.name, old.reference, new.reference, self.new_version
        ))
    }
}

/// The task a mapping entry names: a reference (`/do/1/review`), or a name only one task has.
fn find(program: &Program, name: &str) -> Result<NodeId, String> {
    if name.starts_with('/') {
        return program
            .nodes
            .iter()
            .position(|n| n.reference == name)
            .map(|i| i as NodeId)
            .ok_or_else(|| "no task has that reference".to_owned());
    }
    let named: Vec<(usize, &Node)> = program.nodes.iter().enumerate().filter(|(_, n)| n.name == name).collect();
    match named.as_slice() {
        [] => Err("no task has that name".into()),
        [(id, _)] => Ok(*id as NodeId),
        several => Err(format!(
            "several tasks have that name ({}); use a reference",
            several.iter().map(|(_, n)| n.reference.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The scopes a task runs its tasks in.
fn lists_of(kind: &Kind) -> Vec<ListId> {
    match kind {
        Kind::Do(list) => vec![*list],
        Kind::For(for_) => vec![for_.body],
        Kind::Try(try_) => [Some(try_.body), try_.handler].into_iter().flatten().collect(),
        Kind::Listen(listen) => listen.foreach.as_ref().and_then(|f| f.body).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn rungs(sla: Option<&crate::model::Sla>) -> Vec<ListId> {
    sla.map(|s| s.escalate.iter().map(|r| r.body).collect()).unwrap_or_default()
}

/// A `listen`'s shape, as its running state counts on it: the strategy and its filters' events.
fn filters(strategy: &Strategy) -> (u8, Vec<Option<String>>, Vec<Option<String>>) {
    let events = |filters: &[crate::model::Filter]| filters.iter().map(|f| f.event_type.clone()).collect();
    match strategy {
        Strategy::One(f) => (0, events(std::slice::from_ref(f)), Vec::new()),
        Strategy::All(fs) => (1, events(fs), Vec::new()),
        Strategy::Any { filters, until } => {
            let until = match until {
                Some(Until::Events(strategy)) => events(super::strategy_filters(strategy)),
                _ => Vec::new(),
            };
            (2, events(filters), until)
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Call(Call::HumanTask { .. }) => "call: humanTask",
        Kind::Call(Call::Notify { .. }) => "call: notify",
        Kind::Call(Call::ReassignTask { .. }) => "call: reassignTask",
        Kind::Call(Call::Function { .. }) => "call (function)",
        Kind::Call(_) => "call",
        Kind::Do(_) => "do",
        Kind::Emit { .. } => "emit",
        Kind::For(_) => "for",
        Kind::Fork { .. } => "fork",
        Kind::Listen(_) => "listen",
        Kind::Raise(_) => "raise",
        Kind::Run(_) => "run",
        Kind::Set(_) => "set",
        Kind::Switch(_) => "switch",
        Kind::Try(_) => "try",
        Kind::Wait(_) => "wait",
    }
}
