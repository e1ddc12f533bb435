//! The web UI over a real server: people sign in (the development identity, or a token), see
//! the tasks the API would show them, and complete one through the form its JSON Schema
//! describes, with the engine's messages beside their fields; forms without the session's
//! CSRF token, or posted from another site, are refused; pages need a session and carry their
//! security headers; assets are cached by their ETag.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH, LOCATION, SET_COOKIE};
use serde_json::json;
use support::{APPROVAL, BROKEN, Server, supervised_approval};

/// A browser of one person: a client that does not follow redirects, and their session cookie.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browser {
    async fn sign_in(s: &Server, form: &[(&str, &str)]) -> Result<Self, (StatusCode, String)> {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let response = client.post(format!("{}/ui/login", s.base)).form(form).send().await.unwrap();
        let status = response.status();
        let cookie = response
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        match (status, cookie) {
            (StatusCode::SEE_OTHER, Some(cookie)) => Ok(Self { client, base: s.base.clone(), cookie }),
            _ => Err((status, response.text().await.unwrap())),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response =
            self.client.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> (StatusCode, String, String) {
        let mut request = self.client.post(format!("{}{path}", self.base)).header("cookie", &self.cookie).form(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (response.status(), location, response.text().await.unwrap())
    }
}

/// The value of the first `name="_csrf"` input of a page.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"_csrf\" value=\"").expect("a CSRF field") + "name=\"_csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_team_leader_sees_their_department_and_completes_a_task_through_its_form() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    let assembly = s.start_approval("Forklift", "assembly").await;
    s.start_approval("Spray booth", "paint").await;

    let login = reqwest::get(format!("{}/ui/login", s.base)).await.unwrap().text().await.unwrap();
    assert!(login.contains("value=\"tom\"") && login.contains("team_leader in assembly"), "{login}");
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    let (status, inbox) = tom.get("/ui/inbox").await;
    assert_eq!(status, StatusCode::OK);
    assert!(inbox.contains("Approve Forklift"), "{inbox}");
    assert!(!inbox.contains("Spray booth"), "another department's task is not shown: {inbox}");
    let (_, rows) = tom.get("/ui/inbox/rows").await;
    assert!(rows.contains("Approve Forklift") && !rows.contains("<html"), "the rows alone: {rows}");
    let (_, mine) = tom.get("/ui/inbox?view=mine").await;
    assert!(mine.contains("Nothing to do"), "tom owns nothing yet: {mine}");

    let link_at = inbox.find("\">Approve Forklift").expect("a link to the task");
    let task_path = inbox[..link_at].rsplit("href=\"").next().unwrap().to_owned();
    assert!(task_path.starts_with(&format!("/ui/tasks/{assembly}/")), "{task_path}");
    let (status, task) = tom.get(&task_path).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert!(task.contains("Approve Forklift") && task.contains("name=\"comment\""), "{task}");
    assert!(task.contains("value=\"approve\"") && task.contains("value=\"reject\""), "the outcomes: {task}");
    let token = csrf(&task);

    // Without the session's CSRF token, or from another site: refused, nothing done.
    let complete = format!("{task_path}/complete");
    let (status, _, _) = tom.post(&complete, &[("comment", "fine"), ("_outcome", "approve")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = tom
        .post(
            &complete,
            &[("_csrf", &token), ("comment", "fine"), ("_outcome", "approve")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Too short for the form: the engine's message beside the field, the text kept.
    let (status, _, page) =
        tom.post(&complete, &[("_csrf", &token), ("comment", "ok"), ("_outcome", "approve")], None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
    let error_at = page.find("id=\"e-comment\"").expect("an error beside the comment field");
    assert!(page[error_at..].contains("shorter than 3"), "{page}");
    assert!(page.contains(">ok</textarea>"), "what was typed is kept: {page}");

    let (status, location, _) = tom.post(&format!("{task_path}/claim"), &[("_csrf", &token)], None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, task_path.as_str()));
    // Delegated to sam, the work shows in sam's own inbox; tom, the owner, may still complete it.
    let (status, _, _) = tom.post(&format!("{task_path}/delegate"), &[("_csrf", &token), ("to", "sam")], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let sam = Browser::sign_in(&s, &[("subject", "sam")]).await.expect("sam signs in");
    let (_, sams) = sam.get("/ui/inbox?view=mine").await;
    assert!(sams.contains("Approve Forklift") && sams.contains("tom (delegated to sam)"), "{sams}");
    let (_, mine) = tom.get("/ui/inbox?view=mine").await;
    assert!(mine.contains("Approve Forklift"), "claimed, it is tom's: {mine}");
    let (status, _, _) =
        tom.post(&complete, &[("_csrf", &token), ("comment", "Looks right"), ("_outcome", "approve")], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, done) = tom.get(&task_path).await;
    assert!(done.contains("completed") && done.contains("approve by tom"), "{done}");

    let api_path = task_path.replace("/ui/", "/api/v1/");
    let (_, task) = s.call("GET", &api_path, Some("root"), None).await;
    assert_eq!(task["task"]["completion"]["data"], json!({ "comment": "Looks right" }));
    assert_eq!(task["task"]["completion"]["completedBy"], "tom");

    // Another department's team leader: as the API, the task does not exist for her.
    let tina = Browser::sign_in(&s, &[("subject", "tina")]).await.expect("tina signs in");
    let (status, page) = tina.get(&task_path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
    let (status, _, _) =
        tina.post(&format!("{task_path}/comment"), &[("_csrf", &csrf(&page)), ("text", "hi")], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_need_a_session_tokens_sign_in_and_assets_are_cached() {
    let s = Server::start(false).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(format!("{}/ui/inbox", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/ui/login");
    let response = client.get(format!("{}/ui/inbox/rows", s.base)).header("hx-request", "true").send().await.unwrap();
    assert_eq!(
        (response.status(), &response.headers()["hx-redirect"]),
        (StatusCode::UNAUTHORIZED, &"/ui/login".parse().unwrap())
    );

    // No development identity here: only a token signs in, and a bad one is refused.
    let (status, page) = Browser::sign_in(&s, &[("subject", "tom")]).await.err().expect("no dev login");
    assert!(status == StatusCode::UNAUTHORIZED && page.contains("identity provider"), "{page}");
    let (status, page) = Browser::sign_in(&s, &[("token", "not-a-token")]).await.err().expect("refused");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{page}");
    let olga = Browser::sign_in(&s, &[("token", &s.token_for("olga"))]).await.expect("a token signs in");
    let response = olga.client.get(format!("{}/ui/inbox", s.base)).header("cookie", &olga.cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(response.text().await.unwrap().contains("Signed in as <strong>olga</strong>"));
    let (status, location, _) = olga.post("/ui/logout", &[], None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/login"));

    let script = client.get(format!("{}/ui/assets/htmx-2.0.11.min.js", s.base)).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert!(script.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    let etag = script.headers()[ETAG].clone();
    assert!(script.text().await.unwrap().contains("htmx"));
    let again = client.get(format!("{}/ui/assets/htmx-2.0.11.min.js", s.base)).header(IF_NONE_MATCH, etag).send();
    assert_eq!(again.await.unwrap().status(), StatusCode::NOT_MODIFIED);
    let missing = client.get(format!("{}/ui/assets/nothing.js", s.base)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_manager_sees_a_breached_sla_of_their_department_and_reassigns_the_task() {
    let s = Server::start_dev(true, &[("root", "admin")]).await;
    let (status, deployed) = s.deploy(&supervised_approval(), "dora").await;
    assert!(status.is_success(), "{deployed}");
    let assembly = s.start_approval("Forklift", "assembly").await;
    s.start_approval("Spray booth", "paint").await;

    let mia = Browser::sign_in(&s, &[("subject", "mia")]).await.expect("mia signs in");
    let (status, page) = mia.get("/ui/escalations").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Nothing at risk or breached"), "all on track at first: {page}");

    // Past the 8 hours: the clocks breach.
    let (status, moved) =
        s.call("POST", "/api/v1/admin/clock/advance", Some("root"), Some(json!({"by": "PT9H"}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    let mut page = String::new();
    for _ in 0..200 {
        page = mia.get("/ui/escalations").await.1;
        if page.contains("badge overdue") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(page.contains(">breached<") && page.contains("training/approval"), "{page}");
    assert!(page.contains("Escalations: assembly"), "a manager sees their department: {page}");
    let link_at = page.find(&format!("href=\"/ui/tasks/{assembly}/")).expect("a link to the breached task");
    let task_path = page[link_at + 6..].split('"').next().unwrap().to_owned();
    assert_eq!(page.matches("badge overdue").count(), 1, "the paint shop's clock is not mia's: {page}");
    let (_, rows) = mia.get("/ui/escalations/rows").await;
    assert!(rows.contains(">breached<") && !rows.contains("<html"), "the tables alone, to refresh in place: {rows}");

    // Tina leads a team but manages no department.
    let tina = Browser::sign_in(&s, &[("subject", "tina")]).await.expect("tina signs in");
    assert_eq!(tina.get("/ui/escalations").await.0, StatusCode::FORBIDDEN);

    // Mia supervises the task: she reassigns it to pat, who then owns it.
    let (status, task) = mia.get(&task_path).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    let (status, location, page) =
        mia.post(&format!("{task_path}/reassign"), &[("_csrf", &csrf(&task)), ("to", "pat")], None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, task_path.as_str()), "{page}");
    let pat = Browser::sign_in(&s, &[("subject", "pat")]).await.expect("pat signs in");
    let (_, mine) = pat.get("/ui/inbox?view=mine").await;
    assert!(mine.contains("Approve Forklift"), "{mine}");
}

#[tokio::test]
async fn an_ops_engineer_finds_a_faulted_instance_and_retries_it_with_a_reason() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    let (status, deployed) = s.deploy(BROKEN, "dora").await;
    assert!(status.is_success(), "{deployed}");
    let start = json!({ "definition": "training/broken", "input": { "pages": 3 }, "businessKey": "print-7" });
    let (status, started) = s.call("POST", "/api/v1/instances", Some("otto"), Some(start)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();

    let otto = Browser::sign_in(&s, &[("token", &s.token_for("otto"))]).await.expect("otto signs in");
    let mut found = String::new();
    for _ in 0..200 {
        found = otto.get("/ui/instances?status=faulted").await.1;
        if found.contains(&id) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found.contains(&format!("href=\"/ui/instances/{id}\"")) && found.contains("print-7"), "{found}");
    let (_, other) = otto.get("/ui/instances?businessKey=nothing-like-it").await;
    assert!(other.contains("No instance matches"), "{other}");

    let (status, page) = otto.get(&format!("/ui/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("faulted") && page.contains("Retry") && page.contains("InstanceStarted"), "{page}");
    let at = page.find("action=\"/ui/incidents/").expect("a retry form") + "action=\"/ui/incidents/".len();
    let incident = page[at..].split('/').next().unwrap().to_owned();
    let retry = format!("/ui/incidents/{incident}/retry");
    let (status, _, _) = otto.post(&retry, &[("instance", &id), ("reason", "printer fixed")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token, nothing retried");
    let form = [("_csrf", csrf(&page)), ("instance", id.clone()), ("reason", "printer fixed".to_owned())];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, location, _) = otto.post(&retry, &form, None).await;
    assert_eq!((status, location), (StatusCode::SEE_OTHER, format!("/ui/instances/{id}?retried={incident}")));
    let (_, after) = otto.get(&format!("/ui/instances/{id}?retried={incident}")).await;
    assert!(after.contains(&format!("Incident {incident} is being retried")), "{after}");
    assert!(after.contains("IncidentResolved</strong> by otto"), "the retry is in the history with its actor: {after}");

    // Someone with no part in it: as the API, the instance does not exist for them.
    let olga = Browser::sign_in(&s, &[("subject", "olga")]).await.expect("olga signs in");
    assert_eq!(olga.get(&format!("/ui/instances/{id}")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_designer_reads_a_definition_with_its_diagram_and_sees_a_validation_error_at_its_line() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    let dora = Browser::sign_in(&s, &[("token", &s.token_for("dora"))]).await.expect("dora signs in");
    let (status, list) = dora.get("/ui/definitions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list.contains("href=\"/ui/definitions/training/approval?version=1.0.0\""), "{list}");

    let (status, page) = dora.get("/ui/definitions/training/approval?version=1.0.0").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"L4\"") && page.contains("name: approval"), "numbered lines: {page}");
    assert!(page.contains("src=\"/ui/definitions/training/approval/diagram.svg?version=1.0.0\""), "{page}");
    let svg = dora.client.get(format!("{}/ui/definitions/training/approval/diagram.svg?version=1.0.0", s.base));
    let svg = svg.header("cookie", &dora.cookie).send().await.unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));

    let typo = "document:\n  dsl: '1.0.3'\n  namespace: training\n  name: typo\n  version: '1.0.0'\n  metadata:\n    baton:\n      onError: maybe\ndo:\n  - a:\n      set: { x: 1 }\n";
    let token = csrf(&page);
    let (status, _, checked) =
        dora.post("/ui/definitions/validate", &[("_csrf", &token), ("source", typo)], None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{checked}");
    let bad_line = checked.find("<li id=\"L8\" class=\"bad\">").expect("line 8 marked");
    assert!(checked[bad_line..].contains("line 8, column 16: BATON-L009"), "the error beside its line: {checked}");
    assert!(checked.contains("Not valid"), "{checked}");
    let fixed = typo.replace("maybe", "incident");
    let (status, _, checked) =
        dora.post("/ui/definitions/validate", &[("_csrf", &token), ("source", &fixed)], None).await;
    assert_eq!(status, StatusCode::OK, "{checked}");
    assert!(checked.contains("Valid: no problem found."), "{checked}");

    // A team leader reads no definition, as from the API.
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    assert_eq!(tom.get("/ui/definitions").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_manager_finds_where_a_document_is_and_its_custody_trail() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    let leg = |name: &str, state: &str, extra: &str| {
        format!(
            "  - {name}:\n      emit:\n        event:\n          with:\n            type: com.baton.training.document.{state}\n            source: https://tests.example\n            data: {{ trackingCode: BTN-9, person: olga, department: assembly, documentType: certificate{extra} }}\n"
        )
    };
    let travels = format!(
        "document:\n  dsl: '1.0.3'\n  namespace: training\n  name: travels\n  version: '1.0.0'\ndo:\n{}{}{}",
        leg("issue", "issued", ""),
        leg("print", "printed", ", printer: P-2"),
        leg("send", "sent", ", carrier: bpost")
    );
    let (status, deployed) = s.deploy(&travels, "dora").await;
    assert_eq!(status, StatusCode::CREATED, "{deployed}");
    let start = json!({ "definition": "training/travels", "input": {} });
    let (status, started) = s.call("POST", "/api/v1/instances", Some("root"), Some(start)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let instance = started["id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        let (_, row) = s.call("GET", &format!("/api/v1/instances/{instance}"), Some("root"), None).await;
        if row["instance"]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let projector = baton_engine::projection::Projector::new(
        std::sync::Arc::clone(s.engine.store()),
        std::sync::Arc::clone(s.engine.clock()),
        baton_activities::read_models::training_projections(),
    );
    projector.catch_up().await.expect("projected");

    let mia = Browser::sign_in(&s, &[("subject", "mia")]).await.expect("mia signs in");
    let (status, page) = mia.get("/ui/documents?code=BTN-9").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<strong>sent</strong> since"), "where it is now: {page}");
    let trail = &page[page.find("Custody trail").expect("a trail")..];
    let at = |leg: &str| trail.find(&format!(">{leg}<")).unwrap_or_else(|| panic!("no {leg} leg: {trail}"));
    assert!(at("issued") < at("printed") && at("printed") < at("sent"), "the legs in order: {trail}");
    assert!(trail.contains("printer: P-2") && trail.contains("carrier: bpost"), "{trail}");
    // A team leader manages no department: refused, as from the API.
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    assert_eq!(tom.get("/ui/documents").await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_person_reads_their_notifications_and_marks_them_read() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    let store = s.engine.store();
    let note = |delivery: i64, user: &str, subject: &str, link: Option<&str>| baton_engine::store::InAppNotification {
        id: 0,
        user: user.to_owned(),
        delivery,
        subject: subject.to_owned(),
        body: format!("{subject}: details"),
        link: link.map(str::to_owned),
        created_at: chrono::Utc::now(),
        read_at: None,
    };
    store.put_in_app(&note(1, "olga", "Training assigned", Some("/ui/inbox"))).await.unwrap();
    store.put_in_app(&note(2, "olga", "Certificate ready", None)).await.unwrap();
    store.put_in_app(&note(3, "dan", "Dan's own", None)).await.unwrap();

    let olga = Browser::sign_in(&s, &[("subject", "olga")]).await.expect("olga signs in");
    let (status, page) = olga.get("/ui/notifications").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<a href=\"/ui/inbox\">Training assigned</a>") && page.contains("Certificate ready"),
        "{page}"
    );
    assert!(!page.contains("Dan's own") && page.contains("Mark all 2 read"), "{page}");

    // Dan's id posted by olga changes nothing; her own are marked.
    let dan_id = store.in_app("dan", false, None, 10).await.unwrap()[0].id.to_string();
    let token = csrf(&page);
    let (status, location, _) = olga.post("/ui/notifications/read", &[("_csrf", &token), ("id", &dan_id)], None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/notifications"));
    assert!(store.in_app("dan", true, None, 10).await.unwrap().len() == 1, "dan's stays unread");
    let ids: Vec<String> =
        store.in_app("olga", false, None, 10).await.unwrap().iter().map(|n| n.id.to_string()).collect();
    let form: Vec<(&str, &str)> =
        std::iter::once(("_csrf", token.as_str())).chain(ids.iter().map(|id| ("id", id.as_str()))).collect();
    olga.post("/ui/notifications/read", &form, None).await;
    let (_, page) = olga.get("/ui/notifications").await;
    assert!(!page.contains("Mark all") && !page.contains(">new<"), "all read: {page}");
}

#[tokio::test]
async fn escalations_are_counted_by_training_program_and_filtered_by_program_process_and_department() {
    let s = Server::start_dev(true, &[("root", "admin")]).await;
    let (status, deployed) = s.deploy(APPROVAL, "dora").await;
    assert!(status.is_success(), "{deployed}");
    let inputs = [
        json!({ "title": "Forklift A", "department": "assembly", "programTitle": "Forklift safety" }),
        json!({ "title": "Forklift B", "department": "paint", "programTitle": "Forklift safety" }),
        json!({ "title": "Welding", "department": "assembly", "subject": { "kind": "training", "title": "Welding basics" } }),
        json!({ "title": "Laptop", "department": "assembly", "subject": { "kind": "purchase", "title": "A laptop" } }),
    ];
    for input in inputs {
        let start = json!({ "definition": "training/approval", "input": input });
        let (status, started) = s.call("POST", "/api/v1/instances", Some("otto"), Some(start)).await;
        assert_eq!(status, StatusCode::CREATED, "{started}");
        s.wait_for_task(started["id"].as_str().unwrap(), "root").await;
    }
    // The inbox says each task's SLA state too.
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    let (_, inbox) = tom.get("/ui/inbox/rows").await;
    assert_eq!(inbox.matches("<td>on track</td>").count(), 3, "tom's three assembly tasks: {inbox}");
    let (status, moved) =
        s.call("POST", "/api/v1/admin/clock/advance", Some("root"), Some(json!({"by": "PT9H"}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");

    let root = Browser::sign_in(&s, &[("subject", "root")]).await.expect("root signs in");
    let mut page = String::new();
    for _ in 0..200 {
        page = root.get("/ui/escalations").await.1;
        if page.matches("badge overdue").count() == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(page.matches("badge overdue").count(), 4, "{page}");
    // By training program: two forklift clocks, one welding, none for the purchase.
    let table = &page[page.find("By training program").unwrap()..page.find("<h2>Compliance").unwrap()];
    assert!(table.contains(">Forklift safety</a></td><td>0</td><td>2</td>"), "{table}");
    assert!(table.contains(">Welding basics</a></td><td>0</td><td>1</td>"), "{table}");
    assert!(!table.contains("A laptop"), "a purchase is no training program: {table}");

    let (_, inbox) = tom.get("/ui/inbox/rows").await;
    assert_eq!(inbox.matches(r#"<strong class="badge overdue">breached</strong>"#).count(), 3, "{inbox}");

    let (_, welding) = root.get("/ui/escalations?program=Welding+basics").await;
    assert_eq!(welding.matches("badge overdue").count(), 1, "{welding}");
    assert!(welding.contains("<td>Welding basics</td>"), "{welding}");
    let refresh = welding.split("hx-get=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default();
    assert_eq!(refresh, "/ui/escalations/rows?program=Welding+basics", "the refresh keeps the filter");
    let (_, rows) = root.get("/ui/escalations/rows?program=Forklift+safety&department=paint").await;
    assert_eq!(rows.matches("badge overdue").count(), 1, "{rows}");
    assert!(rows.contains("<td>Forklift safety</td>\n    <td>paint</td>"), "{rows}");
    let (_, other) = root.get("/ui/escalations?definition=training/other").await;
    assert!(other.contains("Nothing at risk or breached"), "{other}");
    assert!(other.contains(r#"<option value="training/approval">"#), "the filter's choices stay: {other}");
}

#[tokio::test]
async fn a_person_sets_their_notification_preferences_which_a_new_import_of_the_directory_keeps() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    let (status, page) = tom.get("/ui/preferences").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"name="channel" value="email" checked"#), "every channel is on at first: {page}");

    // Email off (its box not ticked), a digest at half past eight.
    let token = csrf(&page);
    let form =
        [("_csrf", token.as_str()), ("channel", "inApp"), ("channel", "sms"), ("quietHours", ""), ("digest", "08:30")];
    let (status, location, _) = tom.post("/ui/preferences", &form, None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/preferences?saved=1"));
    let (_, page) = tom.get("/ui/preferences?saved=1").await;
    assert!(page.contains("Saved.") && page.contains(r#"value="08:30""#), "{page}");
    assert!(page.contains(r#"name="channel" value="email">"#), "email is off: {page}");

    let (status, person) = s.call("GET", "/api/v1/people/tom", Some("tom"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(person["preferences"]["channels"]["email"], false, "{person}");
    assert_eq!(person["preferences"]["digest"], "08:30");
    // The directory imported again (as a server does at each start) keeps what tom chose.
    s.engine.store().import(&support::organisation()).await.unwrap();
    let (_, person) = s.call("GET", "/api/v1/people/tom", Some("tom"), None).await;
    assert_eq!(person["preferences"]["channels"]["email"], false, "{person}");

    // A time that is none: refused beside the form, which keeps what tom typed.
    let (_, page) = tom.get("/ui/preferences").await;
    let token = csrf(&page);
    let form = [("_csrf", token.as_str()), ("channel", "inApp"), ("channel", "email"), ("digest", "25:99")];
    let (status, _, page) = tom.post("/ui/preferences", &form, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert!(page.contains(r#"role="alert""#) && page.contains(r#"value="25:99""#), "{page}");
    assert!(page.contains(r#"name="channel" value="email" checked"#), "as typed, not as stored: {page}");
    assert!(page.contains(r#"name="channel" value="sms">"#), "{page}");

    // Through the API: another person may not, an administrator may; bad values are named.
    let email_on = json!({ "channels": { "email": true } });
    let (status, _) = s.call("PUT", "/api/v1/people/tom/preferences", Some("dan"), Some(email_on.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An administrator of one namespace is no administrator of the directory.
    let url = format!("{}/api/v1/people/tom/preferences", s.base);
    let namespaced = s.token("ada", &["admin:training"]);
    let answer = s.client.put(url).bearer_auth(namespaced).json(&email_on).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    let bad = json!({ "quietHours": "nights" });
    let (status, problem) = s.call("PUT", "/api/v1/people/tom/preferences", Some("tom"), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("no business calendar \"nights\""), "{problem}");
    let bad = json!({ "channels": { "pigeon": true } });
    let (status, _) = s.call("PUT", "/api/v1/people/tom/preferences", Some("tom"), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s.call("PUT", "/api/v1/people/nobody/preferences", Some("root"), Some(email_on)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, person) = s.call("GET", "/api/v1/people/tom", Some("tom"), None).await;
    assert_eq!(person["preferences"]["channels"]["email"], false, "refusals change nothing: {person}");

    // Back to the organisation's preferences.
    let (_, page) = tom.get("/ui/preferences").await;
    let (status, location, _) = tom.post("/ui/preferences", &[("_csrf", &csrf(&page)), ("reset", "1")], None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/preferences?saved=reset"));
    let (_, person) = s.call("GET", "/api/v1/people/tom", Some("tom"), None).await;
    assert!(person.get("preferences").is_none(), "{person}");
}

#[tokio::test]
async fn a_designer_tries_a_definition_and_sees_its_output_its_trace_and_a_json_error_beside_its_field() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    let dora = Browser::sign_in(&s, &[("token", &s.token_for("dora"))]).await.expect("dora signs in");
    let (status, page) = dora.get("/ui/definitions/training/approval?version=1.0.0").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let form_at = page.find("action=\"/ui/definitions/try\"").expect("a try form on the definition's page");
    let form = &page[form_at..];
    assert!(form.contains("name=\"source\" value=\"document:"), "the version's text goes with it: {form}");
    assert!(form.contains("name=\"input\"") && form.contains(">{}</textarea>"), "{form}");
    assert!(form.contains("name=\"answers\"") && form.contains(">[]</textarea>"), "{form}");
    let token = csrf(&page);

    // Not JSON: the message beside the field, every entry kept, nothing run.
    let input = r#"{"title": "Forklift", "department": "assembly"}"#;
    let answers = r#"[{"task": "review", "outcome": "approve", "data": {"comment": "fine by me"}}]"#;
    let typo = r#"{"title": "Forklift", "department": }"#;
    let fields = |input: &'static str| {
        vec![
            ("_csrf", token.clone()),
            ("definition", "training/approval".to_owned()),
            ("version", "1.0.0".to_owned()),
            ("source", APPROVAL.to_owned()),
            ("input", input.to_owned()),
            ("activities", "{}".to_owned()),
            ("answers", answers.to_owned()),
        ]
    };
    let posted = |fields: Vec<(&'static str, String)>| {
        let dora = &dora;
        async move {
            let form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            dora.post("/ui/definitions/try", &form, None).await
        }
    };
    let (status, _, tried) = posted(fields(typo)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tried}");
    let error_at = tried.find("id=\"e-input\"").expect("an error beside the input field");
    assert!(tried[error_at..].contains("not JSON"), "{tried}");
    assert!(tried.contains("&#34;department&#34;: }</textarea>"), "what was typed is kept: {tried}");
    assert!(!tried.contains("id=\"e-answers\""), "the answers are fine: {tried}");
    assert!(!tried.contains("id=\"try-result\""), "nothing ran: {tried}");

    let (status, _, tried) = posted(fields(input)).await;
    assert_eq!(status, StatusCode::OK, "{tried}");
    assert!(tried.contains("Completed after"), "{tried}");
    let result_at = tried.find("id=\"try-result\"").expect("the output");
    let output = &tried[result_at..tried[result_at..].find("</pre>").unwrap() + result_at];
    assert!(
        output.contains("&#34;outcome&#34;: &#34;approve&#34;") && output.contains("&#34;by&#34;: &#34;dora&#34;"),
        "{output}"
    );
    let trace_at = tried.find("id=\"try-trace\"").expect("the trace");
    let trace = &tried[trace_at..];
    let started = trace.find("<code>review</code> started").expect("review started");
    let completed = trace.find("<code>review</code> completed").expect("review completed");
    assert!(started < completed && trace.contains("<code>done</code> completed"), "{trace}");

    // A broken text: its error at its line, as the validate page shows it.
    let mut broken = fields(input);
    broken[3].1 = APPROVAL.replace("outcomes: [approve, reject]", "outcomes: approve");
    let (status, _, tried) = posted(broken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{tried}");
    assert!(tried.contains("class=\"bad\"") && tried.contains("Not run to its end"), "{tried}");

    // Nothing was stored; and a team leader may not try.
    let (_, instances) = s.call("GET", "/api/v1/instances", Some("root"), None).await;
    assert_eq!(instances["items"], json!([]), "{instances}");
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    let (_, inbox) = tom.get("/ui/inbox").await;
    let mut theirs = fields(input);
    theirs[0].1 = csrf(&inbox);
    let form: Vec<(&str, &str)> = theirs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, _) = tom.post("/ui/definitions/try", &form, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Ops read the definition, without a try form: they may not try it.
    let otto = Browser::sign_in(&s, &[("token", &s.token_for("otto"))]).await.expect("otto signs in");
    let (status, page) = otto.get("/ui/definitions/training/approval?version=1.0.0").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("action=\"/ui/definitions/try\""), "{page}");
}

/// The status of an instance, as the API says.
async fn status_of(s: &Server, id: &str) -> String {
    let (_, detail) = s.call("GET", &format!("/api/v1/instances/{id}"), Some("root"), None).await;
    detail["instance"]["status"].as_str().unwrap_or_default().to_owned()
}

/// Waits (bounded) until the instance has `wanted` status; answers the last status seen.
async fn wait_for_status(s: &Server, id: &str, wanted: &str) -> String {
    let mut status = String::new();
    for _ in 0..250 {
        status = status_of(s, id).await;
        if status == wanted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    status
}

/// A form's fields as `Browser::post` takes them.
fn fields<'a>(form: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn an_ops_engineer_suspends_resumes_and_terminates_an_instance_with_a_reason() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    let id = s.start_approval("Forklift", "assembly").await;
    let page_path = format!("/ui/instances/{id}");
    let change = |action: &str| format!("/ui/instances/{id}/{action}");

    // Tom has a task in it, so he sees it; he may not operate it: no controls, and a posted
    // suspension is refused as the API refuses it, nothing changed.
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    let (status, page) = tom.get(&page_path).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains(&change("suspend")) && !page.contains("Operate"), "{page}");
    let form = [("_csrf", csrf(&page)), ("reason", "just because".to_owned())];
    let (status, _, refusal) = tom.post(&change("suspend"), &fields(&form), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refusal}");
    assert!(refusal.contains("Not allowed") && refusal.contains("suspendInstance"), "{refusal}");
    assert_eq!(status_of(&s, &id).await, "waiting");

    let otto = Browser::sign_in(&s, &[("token", &s.token_for("otto"))]).await.expect("otto signs in");
    let (_, page) = otto.get(&page_path).await;
    assert!(page.contains(&change("suspend")) && page.contains(&change("terminate")), "{page}");
    assert!(!page.contains(&change("resume")), "a waiting instance is not resumed: {page}");
    assert!(page.contains("<label for=\"suspend-reason\">"), "the reason is labelled: {page}");
    let token = csrf(&page);
    let (status, _, _) = otto.post(&change("suspend"), &[("reason", "stock count")], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token, nothing done");
    assert_eq!(status_of(&s, &id).await, "waiting");

    let steps = [("suspend", "stock count", "suspended"), ("resume", "count done", "waiting")];
    for (action, reason, wanted) in steps {
        let form = [("_csrf", token.clone()), ("reason", reason.to_owned())];
        let (status, location, _) = otto.post(&change(action), &fields(&form), None).await;
        assert_eq!((status, location), (StatusCode::SEE_OTHER, format!("{page_path}?changed={action}")));
        assert_eq!(wait_for_status(&s, &id, wanted).await, wanted, "after {action}");
    }
    let (_, page) = otto.get(&format!("{page_path}?changed=resume")).await;
    assert!(page.contains("Resumed: the instance goes on."), "{page}");
    assert!(page.contains("InstanceSuspended</strong> by otto: <q>stock count</q>"), "in the timeline: {page}");

    let form = [("_csrf", token.clone()), ("reason", "again".to_owned())];
    otto.post(&change("suspend"), &fields(&form), None).await;
    let (_, suspended) = otto.get(&page_path).await;
    assert!(suspended.contains(&change("resume")) && !suspended.contains(&change("suspend")), "{suspended}");
    let form = [("_csrf", token.clone()), ("reason", "the request was withdrawn".to_owned())];
    let (status, location, _) = otto.post(&change("terminate"), &fields(&form), None).await;
    assert_eq!((status, location), (StatusCode::SEE_OTHER, format!("{page_path}?changed=terminate")));
    assert_eq!(status_of(&s, &id).await, "cancelled");
    let (_, ended) = otto.get(&format!("{page_path}?changed=terminate")).await;
    assert!(ended.contains("Terminated: the instance has ended."), "{ended}");
    assert!(!ended.contains("Operate") && !ended.contains(&change("terminate")), "nothing applies now: {ended}");
    let form = [("_csrf", token.clone()), ("reason", "too late".to_owned())];
    let (status, _, refusal) = otto.post(&change("resume"), &fields(&form), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "an ended instance does not resume: {refusal}");
    assert!(refusal.contains("Not possible now"), "{refusal}");

    let (_, history) = s.call("GET", &format!("/api/v1/instances/{id}/history"), Some("root"), None).await;
    let changes: Vec<(&str, &str, &str)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            ["InstanceSuspended", "InstanceResumed", "InstanceTerminated"].contains(&e["type"].as_str().unwrap())
        })
        .map(|e| {
            (e["type"].as_str().unwrap(), e["data"]["reason"].as_str().unwrap(), e["actor"]["id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("InstanceSuspended", "stock count", "otto"),
            ("InstanceResumed", "count done", "otto"),
            ("InstanceSuspended", "again", "otto"),
            ("InstanceTerminated", "the request was withdrawn", "otto"),
        ]
    );
}

#[tokio::test]
async fn skipping_a_failed_step_by_hand_lets_the_instance_go_on_and_bad_json_is_refused() {
    use baton_engine::program::{Op, Program};
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    let once = baton_engine::ActivityOptions { retry: baton_engine::RetryPolicy::none(), ..Default::default() };
    s.engine.register(Program::new("training/scan", vec![Op::Activity { name: "ocr".into(), options: once }])).unwrap();
    let (status, started) = s
        .call("POST", "/api/v1/instances", Some("otto"), Some(json!({"definition": "training/scan", "input": {}})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let poll = json!({"activities": ["ocr"], "waitMs": 5000});
    let (_, lease) = s.call("POST", "/api/v1/workers/poll", Some("wendy"), Some(poll)).await;
    let fail = format!("/api/v1/workers/leases/{}/fail", lease["token"].as_str().unwrap());
    let failure = json!({"message": "page 1 is blank", "retryable": false});
    assert_eq!(s.call("POST", &fail, Some("wendy"), Some(failure)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(wait_for_status(&s, &id, "faulted").await, "faulted");
    let open_incidents = async || {
        let (_, open) = s.call("GET", &format!("/api/v1/incidents?instance={id}"), Some("otto"), None).await;
        open.as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect::<Vec<_>>()
    };
    let incident = open_incidents().await[0];

    let otto = Browser::sign_in(&s, &[("token", &s.token_for("otto"))]).await.expect("otto signs in");
    let (_, page) = otto.get(&format!("/ui/instances/{id}")).await;
    let skip = format!("/ui/incidents/{incident}/complete");
    assert!(page.contains(&format!("action=\"{skip}\"")) && page.contains("Retry"), "skip beside retry: {page}");
    assert!(page.contains(&format!("<label for=\"result-{incident}\">")), "{page}");
    assert!(page.contains(">{}</textarea>"), "the result is an empty object by default: {page}");

    let form = [
        ("_csrf", csrf(&page)),
        ("instance", id.clone()),
        ("result", "{text: by hand".to_owned()),
        ("reason", "typed in from the paper copy".to_owned()),
    ];
    let (status, _, refused) = otto.post(&skip, &fields(&form), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let error_at = refused.find(&format!("id=\"skip-error-{incident}\"")).expect("an error beside the result");
    assert!(refused[error_at..].contains("not valid JSON"), "{refused}");
    assert!(refused.contains(">{text: by hand</textarea>"), "what was typed is kept: {refused}");
    assert!(refused.contains("value=\"typed in from the paper copy\""), "{refused}");
    assert_eq!(open_incidents().await, [incident], "nothing done: the incident stays open");
    assert_eq!(status_of(&s, &id).await, "faulted");

    let mut form = form;
    form[2].1 = r#"{"text": "by hand"}"#.to_owned();
    let (status, location, _) = otto.post(&skip, &fields(&form), None).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, format!("/ui/instances/{id}?skipped={incident}").as_str())
    );
    assert_eq!(wait_for_status(&s, &id, "completed").await, "completed", "the instance went on");
    let (_, detail) = s.call("GET", &format!("/api/v1/instances/{id}"), Some("root"), None).await;
    assert_eq!(detail["instance"]["result"]["results"], json!([{"text": "by hand"}]));
    let (_, page) = otto.get(&location).await;
    assert!(page.contains("its step was completed by hand"), "{page}");
    assert!(page.contains("typed in from the paper copy"), "the reason is in the history: {page}");
    assert!(open_incidents().await.is_empty());
}

#[tokio::test]
async fn a_bulk_suspend_counts_the_search_first_then_its_job_page_follows_it_to_the_end() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    s.deploy(APPROVAL, "dora").await;
    let mut approvals = Vec::new();
    for (title, department) in [("Forklift", "assembly"), ("Crane", "assembly"), ("Spray booth", "paint")] {
        approvals.push(s.start_approval(title, department).await);
    }
    s.deploy(BROKEN, "dora").await;
    let start = json!({ "definition": "training/broken", "input": { "pages": 3 } });
    let (_, broken) = s.call("POST", "/api/v1/instances", Some("otto"), Some(start)).await;
    let broken = broken["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_for_status(&s, &broken, "faulted").await, "faulted");

    let otto = Browser::sign_in(&s, &[("token", &s.token_for("otto"))]).await.expect("otto signs in");
    let (_, page) = otto.get("/ui/instances?definition=training%2Fapproval&status=waiting").await;
    assert!(page.contains("action=\"/ui/bulk\"") && page.contains("<label for=\"bulk-action\">"), "{page}");
    assert!(page.contains("process training/approval, status waiting"), "the search in words: {page}");
    let search = |action: &str, status: &str| {
        [
            ("_csrf", csrf(&page)),
            ("definition", "training/approval".to_owned()),
            ("status", status.to_owned()),
            ("businessKey", String::new()),
            ("action", action.to_owned()),
            ("reason", "stocktaking".to_owned()),
        ]
    };

    // The dry run: how many, which, and nothing changed yet.
    let (status, _, dry_run) = otto.post("/ui/bulk", &fields(&search("suspend", "waiting")), None).await;
    assert_eq!(status, StatusCode::OK, "{dry_run}");
    assert!(dry_run.contains("Suspend 3 instances?") && dry_run.contains("id=\"matched\">3<"), "{dry_run}");
    assert!(approvals.iter().all(|id| dry_run.contains(&format!("href=\"/ui/instances/{id}\""))), "{dry_run}");
    assert!(!dry_run.contains(&broken), "{dry_run}");
    for id in &approvals {
        assert_eq!(status_of(&s, id).await, "waiting", "a dry run changes nothing");
    }
    let (_, _, none) = otto.post("/ui/bulk", &fields(&search("suspend", "faulted")), None).await;
    assert!(none.contains("No instance matches") && !none.contains("/ui/bulk/start"), "{none}");

    let (status, location, _) = otto.post("/ui/bulk/start", &fields(&search("suspend", "waiting")), None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let job = location.strip_prefix("/ui/bulk/").expect("the job's page").to_owned();
    let (status, page) = otto.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Bulk suspend") && page.contains("id=\"bulk-progress\""), "{page}");
    let progress = format!("/ui/bulk/{job}/progress");
    let mut part = String::new();
    for _ in 0..250 {
        part = otto.get(&progress).await.1;
        if part.contains("Finished") {
            break;
        }
        assert!(part.contains(&format!("hx-get=\"{progress}\"")) && part.contains("every 1s"), "polls: {part}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!part.contains("<html") && part.contains("Finished: 3 done, 0 failed, of 3."), "{part}");
    assert!(!part.contains("hx-get") && !part.contains("hx-trigger"), "once finished it stops polling: {part}");
    for id in &approvals {
        assert_eq!(status_of(&s, id).await, "suspended");
    }
    assert_eq!(status_of(&s, &broken).await, "faulted", "outside the search: untouched");
    let (_, history) = s.call("GET", &format!("/api/v1/instances/{}/history", approvals[0]), Some("root"), None).await;
    let suspended = history["items"].as_array().unwrap().iter().find(|e| e["type"] == "InstanceSuspended").unwrap();
    assert_eq!(
        (suspended["data"]["reason"].as_str(), suspended["actor"]["id"].as_str()),
        (Some("stocktaking"), Some("otto"))
    );

    // The suspended ones are now what a bulk resume would find.
    let (_, _, again) = otto.post("/ui/bulk", &fields(&search("resume", "suspended")), None).await;
    assert!(again.contains("Resume 3 instances?"), "{again}");

    // Tom operates nothing: no bulk form, and a posted one is refused.
    let tom = Browser::sign_in(&s, &[("subject", "tom")]).await.expect("tom signs in");
    let (_, page) = tom.get("/ui/instances").await;
    assert!(!page.contains("action=\"/ui/bulk\""), "{page}");
    let mut refused = search("terminate", "");
    refused[0].1 = csrf(&page);
    let (status, _, _) = tom.post("/ui/bulk/start", &fields(&refused), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for id in &approvals {
        assert_eq!(status_of(&s, id).await, "suspended", "nothing changed");
    }
}

#[tokio::test]
async fn an_instance_page_shows_the_timers_and_the_activities_it_waits_for() {
    let s = Server::start_dev(false, &[("root", "admin")]).await;
    let waits = "document:\n  dsl: '1.0.3'\n  namespace: training\n  name: waits\n  version: '1.0.0'\n\
                 do:\n  - scan:\n      call: ocr\n      with: { page: 1 }\n  - pause:\n      wait: P1D\n";
    let (status, deployed) = s.deploy(waits, "dora").await;
    assert!(status.is_success(), "{deployed}");
    let start = json!({ "definition": "training/waits", "input": {} });
    let (status, started) = s.call("POST", "/api/v1/instances", Some("otto"), Some(start)).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();

    let otto = Browser::sign_in(&s, &[("token", &s.token_for("otto"))]).await.expect("otto signs in");
    let (status, page) = otto.get(&format!("/ui/instances/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Waiting for activities") && page.contains("<strong>ocr</strong>"), "{page}");
    assert!(!page.contains(r#"id="timers""#), "no timer before the activity is done: {page}");

    // A worker answers the activity: the instance now waits a day.
    let poll = json!({ "activities": ["ocr"], "waitMs": 2000 });
    let (_, lease) = s.call("POST", "/api/v1/workers/poll", Some("wendy"), Some(poll)).await;
    let token = lease["token"].as_str().expect("a lease").to_owned();
    let done = json!({ "result": { "text": "scanned" } });
    let (status, _) =
        s.call("POST", &format!("/api/v1/workers/leases/{token}/complete"), Some("wendy"), Some(done)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut page = String::new();
    for _ in 0..250 {
        page = otto.get(&format!("/ui/instances/{id}")).await.1;
        if page.contains(r#"id="timers""#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(page.contains(r#"id="timers""#) && page.contains("due 20"), "{page}");
    assert!(!page.contains("Waiting for activities"), "{page}");
}
