//! Live updates as server-sent events: what changes in the instances and human tasks the caller
//! may see, as the engine commits it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use baton_engine::human::{Principal, may_see};
use baton_engine::{Change, InstanceId};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::authorize;
use crate::app::{App, Auth};
use crate::auth::{Caller, Permission};
use crate::policy;
use crate::problem::ApiResult;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Only the changes of this instance.
    instance: Option<String>,
}

/// What one subscriber may see.
pub(crate) struct Viewer {
    caller: Caller,
    principal: Principal,
    instance: Option<InstanceId>,
}

impl Viewer {
    /// The caller's viewer, after the policy's check.
    pub(crate) async fn new(app: &App, auth: &Auth, instance: Option<String>) -> ApiResult<Self> {
        authorize(app, auth, "streamChanges", None)?;
        let caller = auth.caller()?.clone();
        let principal = app.principal(&caller, None).await?;
        Ok(Self { caller, principal, instance: instance.map(InstanceId::new) })
    }

    /// The events of `change` this viewer gets, by kind: the instance's change when they
    /// operate its namespace; each human task they may see.
    fn events(&self, change: &Change) -> Vec<(&'static str, Value)> {
        let row = &change.instance;
        if self.instance.as_ref().is_some_and(|id| *id != row.id) {
            return Vec::new();
        }
        let namespace = row.namespace.as_deref().or_else(|| policy::namespace_of(&row.orchestration));
        let mut events = Vec::new();
        let operates = self.caller.has(Permission::Ops, namespace) || self.caller.has(Permission::Admin, namespace);
        if operates {
            let data = json!({
                "instance": row.id,
                "definition": row.orchestration,
                "status": row.status,
                "events": change.events.iter().map(|(seq, kind)| json!({"seq": seq, "type": kind})).collect::<Vec<_>>(),
            });
            events.push(("instance", data));
        }
        let admin = namespace.is_some_and(|n| self.caller.has(Permission::Admin, Some(n)));
        for task in &change.human_tasks {
            if admin || may_see(&self.principal, &task.task) {
                let mut data = serde_json::to_value(task).unwrap_or_default();
                if let serde_json::Value::Object(map) = &mut data {
                    map.insert("reference".into(), serde_json::Value::String(task.reference()));
                }
                events.push(("task", data));
            }
        }
        events
    }
}

/// Server-sent events: `instance` (status and history events of the instances of the
/// namespaces the caller operates), `task` (a human task the caller may see was created or
/// changed), and `lagged` (changes were missed: reload the view). The stream ends when the
/// server shuts down.
#[utoipa::path(get, path = "/api/v1/stream", operation_id = "streamChanges", tag = "live",
    params(StreamParams),
    responses((status = 200, description = "A text/event-stream of changes", content_type = "text/event-stream"),
        (status = 401, body = crate::problem::ProblemBody)))]
pub async fn stream(
    State(app): State<Arc<App>>,
    auth: Auth,
    Query(params): Query<StreamParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let viewer = Viewer::new(&app, &auth, params.instance).await?;
    let events = changes(&app, viewer).map(|(kind, data)| Ok(Event::default().event(kind).data(data.to_string())));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The changes `viewer` may see as the engine commits them, by kind (`instance`, `task`, and
/// `lagged` when some were missed); ends when the server shuts down.
pub(crate) fn changes(app: &App, viewer: Viewer) -> impl Stream<Item = (&'static str, Value)> + Send + use<> {
    let receiver = app.engine.subscribe();
    let shutdown = app.shutdown.clone();
    let pending: Vec<(&'static str, Value)> = Vec::new();
    futures_util::stream::unfold(
        (receiver, viewer, shutdown, pending),
        |(mut receiver, viewer, shutdown, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop() {
                    return Some((event, (receiver, viewer, shutdown, pending)));
                }
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    received = receiver.recv() => received,
                };
                match received {
                    Ok(change) => {
                        pending = viewer.events(&change);
                        pending.reverse();
                    }
                    Err(RecvError::Lagged(missed)) => {
                        let event = ("lagged", json!({"missed": missed}));
                        return Some((event, (receiver, viewer, shutdown, pending)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}
