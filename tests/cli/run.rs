//! `baton run`: a designer tries a definition without writing Rust.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

fn run(dir: &Path, definition: &str, args: &[&str]) -> (i32, String, String) {
    let file = dir.join("flow.yaml");
    std::fs::write(&file, definition).expect("write the definition");
    let output =
        Command::new(env!("CARGO_BIN_EXE_baton")).arg("run").arg(&file).args(args).output().expect("baton runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

const APPROVAL: &str = r#"document: { dsl: '1.0.3', namespace: demo, name: approval, version: '1.0.0' }
do:
  - reserve:
      call: rooms.reserve
      with: { room: '${ .room }' }
  - remind:
      wait: P2D
  - decision:
      listen:
        to:
          one:
            with: { type: com.acme.decided }
            correlate: { room: { from: '${ .data.room }', expect: '${ .room }' } }
      output: { as: '${ .[0] }' }
  - check:
      switch:
        - approved: { when: '.approved', then: done }
        - default: { then: refuse }
  - refuse:
      raise:
        error: { type: https://acme.example/errors/refused, status: 403, title: Refused }
  - done:
      set: { approved: true, by: '${ .by }' }
"#;

fn decided(room: &str, approved: bool) -> String {
    json!({"specversion": "1.0", "id": format!("d-{room}-{approved}"), "source": "desk", "type": "com.acme.decided",
           "data": {"room": room, "approved": approved, "by": "ana"}})
    .to_string()
}

#[test]
fn a_run_prints_the_output_after_simulated_time_events_and_activities() {
    let dir = tempfile::tempdir().expect("tempdir");
    let event = decided("R1", true);
    let (code, stdout, stderr) = run(
        dir.path(),
        APPROVAL,
        &[
            "--input",
            r#"{"room":"R1"}"#,
            "--activity",
            r#"rooms.reserve={"room":"R1","held":true}"#,
            "--event",
            &event,
            "--trace",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let output: Value = serde_json::from_str(&stdout).expect("the output is JSON");
    assert_eq!(output, json!({"approved": true, "by": "ana"}));
    let started: Vec<String> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "io.serverlessworkflow.task.started.v1")
        .map(|e| e["task"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(started, ["reserve", "remind", "decision", "check", "done"]);
}

#[test]
fn a_fault_prints_the_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let event = decided("R1", false);
    let (code, stdout, _) = run(
        dir.path(),
        APPROVAL,
        &["--input", r#"{"room":"R1"}"#, "--activity", r#"rooms.reserve={"room":"R1"}"#, "--event", &event],
    );
    assert_eq!(code, 1);
    let problem: Value = serde_json::from_str(&stdout).expect("the problem is JSON");
    assert_eq!(problem["type"], "https://acme.example/errors/refused");
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["instance"], "/do/4/refuse");
}

#[test]
fn a_missing_event_is_reported_instead_of_hanging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) =
        run(dir.path(), APPROVAL, &["--input", r#"{"room":"R1"}"#, "--activity", "rooms.reserve={}"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--event"), "{stderr}");
}

#[test]
fn an_invalid_definition_shows_where_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = "document: { dsl: '1.0.3', namespace: demo, name: broken, version: '1.0.0' }\ndo:\n  - a:\n      set: { x: 1 }\n      then: nowhere\n";
    let (code, stdout, stderr) = run(dir.path(), broken, &[]);
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.contains("flow.yaml:5:"), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");
}

/// A one-shot HTTP server answering every request with `body`.
fn answer_once(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{address}/reserve")
}

#[test]
fn an_activity_can_be_answered_by_an_http_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = answer_once(r#"{"held":true,"room":"R9"}"#);
    let definition = "document: { dsl: '1.0.3', namespace: demo, name: http-stub, version: '1.0.0' }\ndo:\n  - reserve:\n      call: rooms.reserve\n      with: { room: R9 }\n";
    let (code, stdout, stderr) = run(dir.path(), definition, &["--activity", &format!("rooms.reserve={url}")]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).expect("json"), json!({"held": true, "room": "R9"}));
}

#[test]
fn shell_tasks_run_only_when_processes_are_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let definition = "document: { dsl: '1.0.3', namespace: demo, name: shell, version: '1.0.0' }\ndo:\n  - greet:\n      run:\n        shell:\n          command: 'echo \"$GREETING $1\"'\n          arguments: ['${ .name }']\n          environment: { GREETING: hello }\n";
    let (code, stdout, stderr) = run(dir.path(), definition, &["--input", r#"{"name":"Ada"}"#]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.contains("refused"), "{stdout}");
    let (code, stdout, stderr) = run(dir.path(), definition, &["--input", r#"{"name":"Ada"}"#, "--allow-processes"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).expect("json"), json!("hello Ada"));
}

#[test]
fn a_kept_run_replays_from_its_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kept.db");
    let event = decided("R1", true);
    let db_arg = db.display().to_string();
    let (code, _, stderr) = run(
        dir.path(),
        APPROVAL,
        &[
            "--input",
            r#"{"room":"R1"}"#,
            "--activity",
            r#"rooms.reserve={"room":"R1"}"#,
            "--event",
            &event,
            "--db",
            &db_arg,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let store = format!("sqlite://{db_arg}");
    let instance = stderr
        .split_whitespace()
        .skip_while(|w| *w != "instance")
        .nth(1)
        .expect("baton run names the kept instance")
        .to_owned();
    let definition = dir.path().join("flow.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["replay", &instance, "--store", &store, "--json", "--definition"])
        .arg(&definition)
        .output()
        .expect("baton runs");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert!(output.status.success(), "{report}");
    assert_eq!(report["error"], Value::Null);
    assert_eq!(report["replayed_status"], report["status"]);
}

const REVIEW: &str = r#"document: { dsl: '1.0.3', namespace: demo, name: review, version: '1.0.0' }
use:
  templates:
    late:
      en: { subject: 'Late: {{title}}', text: 'The review of {{title}} is late.' }
do:
  - review:
      call: humanTask
      with:
        title: '${ "Review \(.title)" }'
        assign: { role: reviewer, department: assembly }
        outcomes: [approve, reject]
        form: { type: object, required: [note], properties: { note: { type: string } } }
      sla:
        within: PT8H
        calendar: office
        escalate:
          - after: 100%
            do:
              - tell: { call: notify, with: { to: { role: manager }, template: late, data: { title: '${ .title }' } } }
  - result:
      set: { decision: '${ .outcome }', note: '${ .data.note }', by: '${ .completedBy }' }
"#;

const CALENDARS: &str =
    "calendars:\n  office:\n    timezone: Europe/Brussels\n    hours: { mon-fri: ['09:00-17:00'] }\n";

const PEOPLE: &str = "departments: [{ id: assembly, name: Assembly }]\npeople:\n  - { id: maria, name: Maria, roles: [{ role: manager }] }\n";

#[test]
fn a_run_answers_human_tasks_and_escalates_on_simulated_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("calendars.yaml"), CALENDARS).expect("write");
    std::fs::write(dir.path().join("people.yaml"), PEOPLE).expect("write");
    let calendars = dir.path().join("calendars.yaml");
    let people = dir.path().join("people.yaml");
    let common = ["--calendars", calendars.to_str().expect("utf-8"), "--directory", people.to_str().expect("utf-8")];

    // Answered: the output carries the completion.
    let mut args = common.to_vec();
    args.extend(["--input", r#"{"title":"Forklift safety"}"#, "--complete", r#"review=approve:{"note":"fine"}"#]);
    let (code, stdout, stderr) = run(dir.path(), REVIEW, &args);
    assert_eq!(code, 0, "stderr: {stderr}");
    let output: Value = serde_json::from_str(&stdout).expect("JSON output");
    assert_eq!(output, json!({"decision": "approve", "note": "fine", "by": "designer"}));

    // Not answered: the SLA runs out on simulated time (the manager is notified), then the run
    // says what it waits for.
    let mut args = common.to_vec();
    args.extend(["--input", r#"{"title":"Forklift safety"}"#, "--trace"]);
    let (code, _, stderr) = run(dir.path(), REVIEW, &args);
    assert_ne!(code, 0);
    assert!(stderr.contains("tell"), "the escalation ran: {stderr}");
    assert!(stderr.contains("--complete review=approve|reject"), "{stderr}");

    // A completion that does not fit the form is refused with the reason.
    let mut args = common.to_vec();
    args.extend(["--input", r#"{"title":"X"}"#, "--complete", "review=approve"]);
    let (code, _, stderr) = run(dir.path(), REVIEW, &args);
    assert_ne!(code, 0);
    assert!(stderr.contains("does not match the task's form"), "{stderr}");
}

#[test]
fn admin_verify_checks_every_kept_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kept.db");
    let definition = "document: { dsl: '1.0.3', namespace: demo, name: hello, version: '1.0.0' }\ndo:\n  - hi: { set: { hello: world } }\n";
    let (code, _, stderr) = run(dir.path(), definition, &["--db", db.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    let store = format!("sqlite://{}", db.display());
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["admin", "verify", "--store", &store])
        .output()
        .expect("baton runs");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("1 instances") && stdout.contains("0 broken"), "{stdout}");
}

#[test]
fn admin_backup_and_restore_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("kept.db");
    let definition = "document: { dsl: '1.0.3', namespace: demo, name: hello, version: '1.0.0' }\ndo:\n  - hi: { set: { hello: world } }\n";
    let (code, _, stderr) = run(dir.path(), definition, &["--db", db.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stderr}");
    let baton = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_baton")).args(args).output().expect("baton runs");
        (
            output.status.code(),
            String::from_utf8(output.stdout).expect("utf-8"),
            String::from_utf8(output.stderr).expect("utf-8"),
        )
    };
    let backup = dir.path().join("backup.db");
    let restored = dir.path().join("restored.db");
    let store = format!("sqlite://{}", db.display());
    let (code, _, stderr) = baton(&["admin", "backup", backup.to_str().expect("utf-8"), "--store", &store]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, _, stderr) =
        baton(&["admin", "restore", backup.to_str().expect("utf-8"), "--to", restored.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, _) = baton(&["admin", "verify", "--store", &format!("sqlite://{}", restored.display())]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("1 instances") && stdout.contains("0 broken"), "{stdout}");
    // A restore never overwrites.
    let (code, _, stderr) =
        baton(&["admin", "restore", backup.to_str().expect("utf-8"), "--to", restored.to_str().expect("utf-8")]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("exists"), "{stderr}");
}

#[test]
fn admin_erase_removes_a_person_s_form_data_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("calendars.yaml"), CALENDARS).expect("write");
    std::fs::write(dir.path().join("people.yaml"), PEOPLE).expect("write");
    let db = dir.path().join("kept.db");
    let (calendars, people) = (dir.path().join("calendars.yaml"), dir.path().join("people.yaml"));
    let args = [
        "--calendars",
        calendars.to_str().expect("utf-8"),
        "--directory",
        people.to_str().expect("utf-8"),
        "--db",
        db.to_str().expect("utf-8"),
        "--input",
        r#"{"title":"Forklift safety"}"#,
        "--complete",
        r#"review=approve:{"note":"call 0470-555-123"}"#,
    ];
    let (code, _, stderr) = run(dir.path(), REVIEW, &args);
    assert_eq!(code, 0, "stderr: {stderr}");
    let store = format!("sqlite://{}", db.display());
    let admin = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_baton")).arg("admin").args(args).output().expect("baton runs");
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
        (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
    };
    let (code, _, stderr) = admin(&["erase", "designer", "--store", &store, "--reason", ""]);
    assert_ne!(code, 0, "a reason is required");
    assert!(stderr.contains("--reason"), "{stderr}");
    let (code, stdout, stderr) = admin(&["erase", "designer", "--reason", "req-1", "--dry-run", "--store", &store]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 event(s) in 1 ended instance(s)") && stdout.contains("would be erased"), "{stdout}");
    let (code, stdout, stderr) = admin(&["erase", "designer", "--reason", "req-1", "--json", "--store", &store]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!((report["events"].clone(), report["applied"].clone()), (json!(1), json!(true)));
    let (code, stdout, _) = admin(&["verify", "--store", &store]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("(1 with erased personal data): 0 broken"), "{stdout}");
    let (_, stdout, _) = admin(&["erasures", "designer", "--store", &store]);
    let record: Value = serde_json::from_str(stdout.lines().next().expect("one record")).expect("JSON");
    assert_eq!((record["person"].clone(), record["reason"].clone()), (json!("designer"), json!("req-1")));
    assert_eq!(record["report"]["events"], 1);

    // Importing the directory file again (as a server does at every start) does not bring an
    // erased person's data back.
    let (code, _, stderr) = admin(&["erase", "maria", "--reason", "req-2", "--store", &store]);
    assert_eq!(code, 0, "{stderr}");
    let directory = |args: &[&str]| {
        let output =
            Command::new(env!("CARGO_BIN_EXE_baton")).arg("directory").args(args).output().expect("baton runs");
        (output.status.code().unwrap_or(-1), String::from_utf8(output.stdout).expect("utf-8"))
    };
    let (code, stdout) = directory(&["import", people.to_str().expect("utf-8"), "--db", &store]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("left as erased") && stdout.contains("maria"), "{stdout}");
    let (code, stdout) = directory(&["show", "maria", "--db", &store, "-o", "json"]);
    assert_eq!(code, 0, "{stdout}");
    let maria: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!((maria["name"].clone(), maria["active"].clone()), (json!(""), json!(false)), "{maria}");
}

#[test]
fn document_verify_accepts_the_signed_file_and_refuses_a_changed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("document-key.der");
    let key = baton_activities::SigningKey::load_or_create(&key_file).expect("a key");
    let file = dir.path().join("certificate.html");
    std::fs::write(&file, "<p>Olga completed Forklift safety</p>").expect("write");
    let sha256 = baton_activities::document::sha256_hex(&std::fs::read(&file).expect("read"));
    let signature = key.sign(&sha256);
    let verify = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["document", "verify", file.to_str().expect("utf-8"), "--signature", &signature])
            .args(extra)
            .output()
            .expect("baton runs");
        (output.status.code().unwrap_or(-1), String::from_utf8(output.stdout).expect("utf-8"))
    };
    let (code, stdout) = verify(&["--key", key_file.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("valid") && stdout.contains(&sha256), "{stdout}");
    let (code, _) = verify(&["--public-key", &key.public_key()]);
    assert_eq!(code, 0, "with the public key alone");
    std::fs::write(&file, "<p>Olga completed Crane safety</p>").expect("forge");
    let (code, stdout) = verify(&["--key", key_file.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("INVALID"), "{stdout}");
}
