//! `baton directory`: an operator imports the organisation and looks people up.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `baton directory ARGS` with the store in `dir`: (exit code, stdout, stderr).
fn directory(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("directory")
        .args(args)
        .env("BATON_STORE", format!("sqlite://{}", dir.join("baton.db").display()))
        .output()
        .expect("baton runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

const ORGANISATION: &str = "\
departments:
  - { id: plant, name: Plant, head: dora }
  - { id: assembly, name: Assembly, parent: plant, head: max }
groups:
  - { id: reviewers, name: Reviewers }
people:
  - id: dora
    name: Dora Director
    email: dora@example.com
    department: plant
  - id: max
    name: Max Manager
    email: max@example.com
    department: assembly
    roles: [{ role: manager, department: assembly }]
  - id: ana
    name: Ana Operator
    email: ana@example.com
    locale: fr-BE
    department: assembly
    roles: [{ role: operator, department: assembly }]
    groups: [reviewers]
    preferences:
      channels: { sms: false }
      quietHours: office
      digest: '07:30'
";

#[test]
fn import_then_show_and_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("org.yaml");
    std::fs::write(&file, ORGANISATION).expect("writes the file");
    let file = file.to_str().expect("a UTF-8 path");

    let (code, stdout, stderr) = directory(dir.path(), &["import", file]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("imported 3 people, 2 departments, 1 group from"), "{stdout}");

    let (code, stdout, stderr) = directory(dir.path(), &["show", "ana"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("name         Ana Operator\n"), "{stdout}");
    assert!(stdout.contains("escalates to max (Max Manager)\n"), "{stdout}");
    assert!(stdout.contains("roles        operator@assembly\n"), "{stdout}");
    assert!(stdout.contains("channels off sms\n") && stdout.contains("digest       07:30\n"), "{stdout}");

    let (code, stdout, _) = directory(dir.path(), &["show", "max", "-o", "json"]);
    assert_eq!(code, 0);
    let max: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(max["escalatesTo"], "dora", "the head of the parent department");
    assert_eq!(max["roles"][0]["role"], "manager");

    let (code, stdout, _) = directory(dir.path(), &["list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("ID    NAME"), "{stdout}");
    assert!(lines[1].starts_with("ana   Ana Operator"), "{stdout}");

    let (_, stdout, _) =
        directory(dir.path(), &["list", "--role", "manager", "--department", "assembly", "-o", "json"]);
    let managers: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(managers.as_array().map(Vec::len), Some(1), "{stdout}");
    assert_eq!(managers[0]["id"], "max");
    let (_, stdout, _) = directory(dir.path(), &["list", "--group", "reviewers", "-o", "json"]);
    assert_eq!(serde_json::from_str::<Value>(&stdout).expect("JSON")[0]["id"], "ana");

    let (code, _, stderr) = directory(dir.path(), &["show", "nobody"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no person \"nobody\""), "{stderr}");

    // Importing again replaces what the file names and keeps the rest.
    std::fs::write(
        dir.path().join("more.yaml"),
        "people:\n  - { id: ana, name: Ana Renamed }\n  - { id: zoe, name: Zoe }\n",
    )
    .expect("writes");
    let more = dir.path().join("more.yaml");
    let (code, _, stderr) = directory(dir.path(), &["import", more.to_str().expect("path")]);
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = directory(dir.path(), &["list", "-o", "json"]);
    let ids: Vec<String> = serde_json::from_str::<Vec<Value>>(&stdout)
        .expect("JSON")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids, ["ana", "dora", "max", "zoe"]);
}

#[test]
fn problems_are_listed_with_their_position_and_nothing_is_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "people:\n  - id: ana\n    manager: bob\n    emial: ana@example.com\n  - id: max\n    department: paint\n    groups: nope\n",
    )
    .expect("writes");
    let path = file.to_str().expect("a UTF-8 path");

    // The shape first: the misspelt field and the wrong type, each at its place.
    let (code, _, stderr) = directory(dir.path(), &["import", path, "--check"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown person field 'emial'"), "{stderr}");
    assert!(stderr.contains(&format!("--> {path}:4:5\n")), "{stderr}");
    assert!(stderr.contains("person \"max\": groups: invalid type"), "{stderr}");
    assert!(stderr.contains(&format!("--> {path}:7:13\n")), "{stderr}");

    // Then the references.
    std::fs::write(&file, "people:\n  - id: ana\n    manager: bob\n  - id: max\n    department: paint\n")
        .expect("writes");
    let (code, _, stderr) = directory(dir.path(), &["import", path]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("error: person \"ana\": manager \"bob\" is not a person"), "{stderr}");
    assert!(stderr.contains(&format!("--> {path}:3:14\n")), "{stderr}");
    assert!(stderr.contains("error: person \"max\": department \"paint\" is not declared"), "{stderr}");
    assert!(stderr.contains(&format!("--> {path}:5:17\n")), "{stderr}");
    assert!(stderr.contains("2 problems; nothing imported"), "{stderr}");
    let (code, _, stderr) = directory(dir.path(), &["list"]);
    assert_eq!(code, 1, "no store was created: {stderr}");
    assert!(stderr.contains("there is no store"), "{stderr}");

    // YAML syntax errors point at the text.
    std::fs::write(&file, "people: [\n").expect("writes");
    let (code, _, stderr) = directory(dir.path(), &["import", path]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("{path}:")), "{stderr}");
}
