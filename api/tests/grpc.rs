//! The gRPC API end to end: a real tonic client of every service against the server's gRPC
//! listener, with the same tokens, policy and problems as HTTP.
#![allow(clippy::unwrap_used)]

mod support;

use baton_api::grpc::problem_of;
use baton_proto::json::{from_proto, to_proto};
use baton_proto::v1;
use baton_proto::v1::definitions_client::DefinitionsClient;
use baton_proto::v1::instances_client::InstancesClient;
use baton_proto::v1::live_client::LiveClient;
use baton_proto::v1::organisation_client::OrganisationClient;
use baton_proto::v1::tasks_client::TasksClient;
use baton_proto::v1::workers_client::WorkersClient;
use serde_json::{Value, json};
use support::{APPROVAL, SIGNAL, Server};
use tonic::Code;

fn json(reply: tonic::Response<v1::Json>) -> Value {
    from_proto(reply.into_inner().value.unwrap_or_default())
}

async fn start_approval(s: &Server) -> String {
    let mut instances = InstancesClient::new(s.channel().await);
    let start = v1::StartInstanceRequest {
        definition: "training/approval".into(),
        input: Some(to_proto(json!({"title": "Forklift", "department": "assembly"}))),
        business_key: Some("order-7".into()),
        tags: vec!["forklift".into()],
        ..Default::default()
    };
    let started = json(instances.start_instance(s.grpc_request("otto", start)).await.unwrap());
    started["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn definitions_deploy_with_positions_list_get_and_draw() {
    let s = Server::start(false).await;
    let mut client = DefinitionsClient::new(s.channel().await);
    let broken = v1::DefinitionSource { source: APPROVAL.replace("do:", "doo:"), file: "approval.yaml".into() };
    let refused = client.deploy_definition(s.grpc_request("dora", broken)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let problem = problem_of(&refused).expect("the problem in the trailer");
    assert_eq!(problem["type"], "urn:baton:problem:invalid-definition");
    assert!(problem["errors"][0]["line"].as_u64().unwrap() > 0, "{problem}");

    let source = v1::DefinitionSource { source: APPROVAL.into(), file: "approval.yaml".into() };
    let deployed = json(client.deploy_definition(s.grpc_request("dora", source.clone())).await.unwrap());
    assert_eq!(deployed["key"], "training/approval@1.0.0");
    let refused = client.deploy_definition(s.grpc_request("otto", source)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "ops does not deploy");

    let list =
        json(client.list_definitions(s.grpc_request("otto", v1::ListDefinitionsRequest::default())).await.unwrap());
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let get = v1::GetDefinitionRequest { namespace: "training".into(), name: "approval".into(), ..Default::default() };
    let one = json(client.get_definition(s.grpc_request("otto", get)).await.unwrap());
    assert_eq!(one["source"], APPROVAL);
    let diagram =
        v1::GetDefinitionDiagramRequest { namespace: "training".into(), name: "approval".into(), ..Default::default() };
    let svg = client.get_definition_diagram(s.grpc_request("otto", diagram)).await.unwrap().into_inner();
    assert_eq!(svg.content_type, "image/svg+xml");
    assert!(svg.text.starts_with("<svg") && svg.text.contains("review"));
    let valid = v1::DefinitionSource { source: SIGNAL.into(), file: "signal.yaml".into() };
    let checked = json(client.validate_definition(s.grpc_request("dora", valid)).await.unwrap());
    assert_eq!(checked["valid"], true, "{checked}");

    // A try with the event the definition waits for: it ends, and nothing is deployed.
    let tried = v1::TryDefinitionRequest {
        source: SIGNAL.into(),
        events: Some(to_proto(
            json!([{"specversion": "1.0", "id": "e-1", "source": "/t", "type": "com.example.approved"}]),
        )),
        ..Default::default()
    };
    let tried = json(client.try_definition(s.grpc_request("dora", tried)).await.unwrap());
    assert_eq!(tried["status"], "completed", "{tried}");
    assert!(tried["trace"].as_array().unwrap().iter().any(|e| e["task"] == "wait"), "{tried}");
    let stuck = v1::TryDefinitionRequest { source: SIGNAL.into(), ..Default::default() };
    let refused = client.try_definition(s.grpc_request("dora", stuck)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(problem_of(&refused).unwrap()["type"], "urn:baton:problem:try-stuck");
}

#[tokio::test]
async fn instances_start_search_signal_suspend_and_terminate() {
    let s = Server::start(false).await;
    s.deploy(APPROVAL, "dora").await;
    s.deploy(SIGNAL, "dora").await;
    let id = start_approval(&s).await;
    let mut client = InstancesClient::new(s.channel().await);
    let search = v1::ListInstancesRequest { business_key: "order-7".into(), ..Default::default() };
    let found = json(client.list_instances(s.grpc_request("otto", search)).await.unwrap());
    assert_eq!(found["items"][0]["id"], id.as_str(), "{found}");
    let detail = json(client.get_instance(s.grpc_request("otto", v1::InstanceRef { id: id.clone() })).await.unwrap());
    assert_eq!(detail["instance"]["status"], "waiting", "{detail}");
    let history = v1::GetInstanceHistoryRequest { id: id.clone(), limit: 1, ..Default::default() };
    let page = json(client.get_instance_history(s.grpc_request("otto", history)).await.unwrap());
    assert_eq!(page["items"][0]["type"], "InstanceStarted");
    assert!(page["next"].is_string(), "one event a page: {page}");

    let reason = |id: &str| v1::LifecycleRequest { id: id.to_owned(), reason: "audit".into() };
    client.suspend_instance(s.grpc_request("otto", reason(&id))).await.unwrap();
    let refused = client.suspend_instance(s.grpc_request("oscar", reason(&id))).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "oscar operates another namespace");
    client.resume_instance(s.grpc_request("otto", reason(&id))).await.unwrap();
    client.terminate_instance(s.grpc_request("otto", reason(&id))).await.unwrap();

    let signal = v1::StartInstanceRequest { definition: "ops/signal".into(), ..Default::default() };
    let waiting = json(client.start_instance(s.grpc_request("root", signal)).await.unwrap());
    let waiting = waiting["id"].as_str().unwrap().to_owned();
    let event = json!({"specversion": "1.0", "id": "e-1", "type": "com.example.approved", "source": "/grpc"});
    let raise = v1::RaiseEventRequest { id: waiting.clone(), event: Some(to_proto(event)) };
    client.raise_event(s.grpc_request("root", raise)).await.unwrap();
    let incidents =
        json(client.list_incidents(s.grpc_request("root", v1::ListIncidentsRequest::default())).await.unwrap());
    assert_eq!(incidents, json!([]), "{incidents}");
    let missing = v1::RetryIncidentRequest { incident: 999, reason: "try".into(), input: None };
    let refused = client.retry_incident(s.grpc_request("root", missing)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let by_hand = v1::CompleteIncidentRequest { incident: 999, reason: "done".into(), result: None };
    let refused = client.complete_incident(s.grpc_request("root", by_hand)).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let same =
        v1::MigrateInstanceRequest { id: waiting.clone(), to: "1.0.0".into(), dry_run: true, ..Default::default() };
    let refused = client.migrate_instance(s.grpc_request("root", same)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(problem_of(&refused).unwrap()["type"], "urn:baton:problem:migration-refused");
    let bulk = v1::StartBulkRequest {
        action: "suspend".into(),
        filter: Some(to_proto(json!({"definition": "ops/signal"}))),
        dry_run: true,
        ..Default::default()
    };
    let dry = json(client.start_bulk(s.grpc_request("root", bulk)).await.unwrap());
    assert!(dry["matched"].as_u64().is_some(), "{dry}");
    let job = v1::GetBulkRequest { job: "no-such-job".into() };
    assert_eq!(client.get_bulk(s.grpc_request("root", job)).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn tasks_are_listed_claimed_and_completed_by_their_team_leader_only() {
    let s = Server::start(false).await;
    s.deploy(APPROVAL, "dora").await;
    let id = start_approval(&s).await;
    let task = s.wait_for_task(&id, "tom").await;
    let seq = task["seq"].as_u64().unwrap();
    let mut client = TasksClient::new(s.channel().await);
    let inbox = json(client.list_tasks(s.grpc_request("tina", v1::ListTasksRequest::default())).await.unwrap());
    assert_eq!(inbox["items"], json!([]), "paint's team leader sees nothing");
    let reference = || v1::TaskRef { instance: id.clone(), seq };
    let hidden = client.get_task(s.grpc_request("tina", reference())).await.unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let inbox = json(client.list_tasks(s.grpc_request("tom", v1::ListTasksRequest::default())).await.unwrap());
    assert_eq!(inbox["items"][0]["reference"], format!("{id}:{seq}"));
    json(client.claim_task(s.grpc_request("tom", reference())).await.unwrap());
    let comment = v1::CommentTaskRequest { instance: id.clone(), seq, text: "on it".into() };
    client.comment_task(s.grpc_request("tom", comment)).await.unwrap();
    let complete = |comment: &str| v1::CompleteTaskRequest {
        instance: id.clone(),
        seq,
        outcome: "approve".into(),
        data: Some(to_proto(json!({"comment": comment}))),
        ..Default::default()
    };
    let refused = client.complete_task(s.grpc_request("tom", complete("ok"))).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "the form wants 3 characters");
    assert_eq!(problem_of(&refused).unwrap()["type"], "urn:baton:problem:invalid-task-data");
    let done = json(client.complete_task(s.grpc_request("tom", complete("fine by me"))).await.unwrap());
    assert_eq!(done["task"]["status"], "completed", "{done}");
}

#[tokio::test]
async fn the_organisation_service_answers_people_notifications_slas_and_the_clock() {
    let s = Server::start(true).await;
    s.deploy(APPROVAL, "dora").await;
    start_approval(&s).await;
    let mut client = OrganisationClient::new(s.channel().await);
    let people = v1::ListPeopleRequest { department: "assembly".into(), ..Default::default() };
    let people = json(client.list_people(s.grpc_request("tom", people)).await.unwrap());
    assert!(people["items"].as_array().unwrap().iter().any(|p| p["id"] == "olga"), "{people}");
    let tom = json(client.get_person(s.grpc_request("tom", v1::PersonRef { id: "tom".into() })).await.unwrap());
    assert_eq!(tom["id"], "tom");
    let mine = v1::ListNotificationsRequest::default();
    json(client.list_notifications(s.grpc_request("tom", mine)).await.unwrap());
    let read = v1::MarkNotificationsReadRequest { ids: vec![1] };
    client.mark_notifications_read(s.grpc_request("tom", read)).await.unwrap();
    let slas = json(client.list_slas(s.grpc_request("otto", v1::ListSlasRequest::default())).await.unwrap());
    assert_eq!(slas["items"].as_array().unwrap().len(), 1, "{slas}");
    let compliance = v1::SlaComplianceRequest::default();
    let report = json(client.get_sla_compliance(s.grpc_request("root", compliance)).await.unwrap());
    let group = &report["items"][0];
    assert_eq!(
        (group["definition"].clone(), group["onTrack"].clone()),
        (json!("training/approval"), json!(1)),
        "{report}"
    );
    let refused = client.get_sla_compliance(s.grpc_request("olga", v1::SlaComplianceRequest::default())).await;
    assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    let own = v1::ListCertificationsRequest::default();
    let own = json(client.list_certifications(s.grpc_request("olga", own)).await.unwrap());
    assert_eq!(own["items"], json!([]), "nothing certified yet: {own}");
    let documents = v1::ListDocumentsRequest { department: "assembly".into(), ..Default::default() };
    json(client.list_documents(s.grpc_request("mia", documents)).await.unwrap());
    let progress = v1::ListTrainingProgressRequest { person: "olga".into(), ..Default::default() };
    json(client.list_training_progress(s.grpc_request("root", progress)).await.unwrap());
    let before = s.engine.clock().now();
    let advance = || v1::AdvanceClockRequest { by: "PT1H".into() };
    let refused = client.advance_clock(s.grpc_request("otto", advance())).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    client.advance_clock(s.grpc_request("root", advance())).await.unwrap();
    assert!(s.engine.clock().now() - before >= chrono::Duration::hours(1));
}

#[tokio::test]
async fn the_live_stream_brings_the_task_a_team_leader_may_see() {
    let s = Server::start(false).await;
    s.deploy(APPROVAL, "dora").await;
    let mut client = LiveClient::new(s.channel().await);
    let anonymous = client.watch(v1::WatchRequest::default()).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let mut stream = client.watch(s.grpc_request("tom", v1::WatchRequest::default())).await.unwrap().into_inner();
    let id = start_approval(&s).await;
    let change = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("a change within 10 s")
        .unwrap()
        .expect("the stream is open");
    assert_eq!(change.kind, "task");
    let data = from_proto(change.data.unwrap());
    assert_eq!(data["reference"].as_str().unwrap().split(':').next(), Some(id.as_str()), "{data}");
}

#[tokio::test]
async fn a_worker_polls_heartbeats_and_completes_over_grpc() {
    const REMOTE: &str = "document: { dsl: '1.0.3', namespace: training, name: remote, version: '1.0.0' }\ndo:\n  - read:\n      call: ocr\n      with: { page: 3 }\n";
    let s = Server::start(false).await;
    assert_eq!(s.deploy(REMOTE, "dora").await.0, reqwest::StatusCode::CREATED);
    let mut instances = InstancesClient::new(s.channel().await);
    let start = v1::StartInstanceRequest { definition: "training/remote".into(), ..Default::default() };
    let id =
        json(instances.start_instance(s.grpc_request("otto", start)).await.unwrap())["id"].as_str().unwrap().to_owned();

    let mut workers = WorkersClient::new(s.channel().await);
    let poll = v1::PollActivityTaskRequest { activities: vec!["ocr".into()], wait_ms: Some(5000) };
    let refused = workers.poll_activity_task(s.grpc_request("olga", poll.clone())).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let lease = workers.poll_activity_task(s.grpc_request("wendy", poll)).await.unwrap().into_inner().lease.unwrap();
    assert_eq!((lease.activity.as_str(), lease.instance.as_str(), lease.attempt), ("ocr", id.as_str(), 1));
    assert_eq!(from_proto(lease.input.unwrap()), json!({"page": 3}));
    let queues = json(workers.list_activity_queues(s.grpc_request("wendy", v1::Empty {})).await.unwrap());
    assert_eq!(queues, json!([{"activity": "ocr", "waiting": 0, "held": 1}]));
    workers
        .heartbeat_activity_task(s.grpc_request("wendy", v1::LeaseRef { token: lease.token.clone() }))
        .await
        .unwrap();
    let result = v1::CompleteActivityTaskRequest { token: lease.token.clone(), result: Some(to_proto(json!("read"))) };
    workers.complete_activity_task(s.grpc_request("wendy", result.clone())).await.unwrap();
    let gone = workers.complete_activity_task(s.grpc_request("wendy", result)).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "a lease ends once");
    assert_eq!(problem_of(&gone).unwrap()["type"], "urn:baton:problem:lease-gone");
    let fail = v1::FailActivityTaskRequest { token: lease.token, message: "late".into(), ..Default::default() };
    assert_eq!(workers.fail_activity_task(s.grpc_request("wendy", fail)).await.unwrap_err().code(), Code::NotFound);
    let empty = v1::PollActivityTaskRequest { activities: vec!["ocr".into()], wait_ms: Some(10) };
    let none = workers.poll_activity_task(s.grpc_request("wendy", empty)).await.unwrap().into_inner();
    assert_eq!(none.lease, None, "nothing waits");
}

/// The `baton-worker` crate against the server: a handler runs and its result completes the
/// instance; a handler whose instance is terminated is dropped (its lease is gone).
#[tokio::test]
async fn the_worker_crate_runs_handlers_and_drops_the_one_whose_lease_is_gone() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use baton_engine::program::{Op, Program};
    use baton_worker::{TaskError, Worker};

    /// Sets its flag when dropped: the handler's future was dropped before it finished.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let s = Server::start(false).await;
    let beating = baton_engine::ActivityOptions { heartbeat_timeout_ms: Some(600), ..Default::default() };
    let quick =
        Program::new("training/quick", vec![Op::Activity { name: "double".into(), options: Default::default() }]);
    let slow = Program::new("training/slow", vec![Op::Activity { name: "forever".into(), options: beating }]);
    s.engine.register(quick).unwrap();
    s.engine.register(slow).unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Arc::new(tokio::sync::Notify::new());
    let worker = Worker::connect(&s.grpc, &s.token_for("wendy"))
        .await
        .unwrap()
        .activity("double", |task| async move {
            let n = task.input["input"]["n"].as_i64().ok_or(TaskError::NonRetryable("no n".into()))?;
            Ok(json!({"doubled": n * 2, "key": task.idempotency_key}))
        })
        .activity("forever", {
            let (dropped, started) = (Arc::clone(&dropped), Arc::clone(&started));
            move |_task| {
                let guard = Dropped(Arc::clone(&dropped));
                let started = Arc::clone(&started);
                async move {
                    let _guard = guard;
                    started.notify_one();
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                }
            }
        });
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));

    let mut instances = InstancesClient::new(s.channel().await);
    let start = |definition: &str, input: Value| v1::StartInstanceRequest {
        definition: definition.into(),
        input: Some(to_proto(input)),
        ..Default::default()
    };
    let quick = json(
        instances.start_instance(s.grpc_request("otto", start("training/quick", json!({"n": 21})))).await.unwrap(),
    );
    let quick = baton_engine::InstanceId::new(quick["id"].as_str().unwrap());
    let Ok(outcome) = tokio::time::timeout(std::time::Duration::from_secs(20), s.engine.wait(&quick)).await else {
        let described = s.engine.describe(&quick).await.unwrap();
        panic!("the quick instance did not end: {described:?}; the worker: {:?}", running.is_finished());
    };
    let outcome = outcome.unwrap();
    assert_eq!(outcome.result.unwrap()["results"][0]["doubled"], 42);

    let slow = json(instances.start_instance(s.grpc_request("otto", start("training/slow", json!({})))).await.unwrap());
    let slow = slow["id"].as_str().unwrap().to_owned();
    tokio::time::timeout(std::time::Duration::from_secs(20), started.notified()).await.expect("the handler starts");
    let terminate = v1::LifecycleRequest { id: slow, reason: "not needed".into() };
    instances.terminate_instance(s.grpc_request("otto", terminate)).await.unwrap();
    for _ in 0..200 {
        if dropped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(dropped.load(Ordering::SeqCst), "the handler of a terminated instance is dropped at its next heartbeat");
    stop.cancel();
    running.await.unwrap().unwrap();
}

/// Server reflection lists the API's services, so tools such as grpcurl need no proto file.
#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let s = Server::start(false).await;
    let mut client = ServerReflectionClient::new(s.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["Definitions", "Instances", "Tasks", "Organisation", "Live", "Workers"] {
        assert!(names.contains(&format!("baton.v1.{service}")), "{names:?}");
    }
}
