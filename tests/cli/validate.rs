//! `baton validate`: exit status, text and JSON-lines output, and the options.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const HEAD: &str = "document: { dsl: '1.0.3', namespace: test, name: flow, version: '1.0.0' }\n";

/// Runs `baton validate ARGS`: (exit code, stdout, stderr).
fn validate(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_baton")).arg("validate").args(args).output().expect("baton runs");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8 output");
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writes the file");
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[test]
fn a_valid_definition_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "ok.yaml", &format!("{HEAD}do:\n  - greet:\n      set: {{ hello: world }}\n"));
    let (code, stdout, stderr) = validate(&[arg(&file)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "1 file checked: no problems\n");
}

#[test]
fn errors_are_rendered_with_their_source_line_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file =
        write(dir.path(), "flow.yaml", &format!("{HEAD}do:\n  - a:\n      set: {{ x: 1 }}\n      then: publsh\n"));
    let (code, stdout, _) = validate(&[arg(&file)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("error[BATON-L014]: `then: publsh` names no task of this list\n"), "{stdout}");
    assert!(stdout.contains(&format!(" --> {}:5:13\n", arg(&file))), "{stdout}");
    assert!(stdout.contains("5 |       then: publsh\n  |             ^^^^^^\n"), "{stdout}");
    assert!(stdout.ends_with("1 file checked: 1 error\n"), "{stdout}");
}

#[test]
fn warnings_alone_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "flow.yaml", &format!("{HEAD}do:\n  - a:\n      call: training.schedule\n"));
    let (code, stdout, _) = validate(&[arg(&file)]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("warning[BATON-L020]"), "{stdout}");
    assert!(stdout.ends_with("1 file checked: 1 warning\n"), "{stdout}");
}

#[test]
fn json_output_is_one_object_per_problem_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write(dir.path(), "a.yaml", &format!("{HEAD}do:\n  - a:\n      wait: soon\n"));
    let second = write(dir.path(), "b.yaml", "do: [\n");
    let (code, stdout, _) = validate(&["-o", "json", arg(&first), arg(&second)]);
    assert_eq!(code, 1);
    let lines: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("a JSON object per line")).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["code"], "BATON-L016");
    assert_eq!(lines[0]["file"], arg(&first));
    assert_eq!((lines[0]["line"].as_u64(), lines[0]["column"].as_u64()), (Some(4), Some(13)));
    assert_eq!(lines[0]["pointer"], "/do/0/a/wait");
    assert_eq!(lines[1]["code"], "BATON-L001");
    assert_eq!(lines[1]["severity"], "error");
}

#[test]
fn an_unreadable_file_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = write(dir.path(), "ok.yaml", &format!("{HEAD}do: []\n"));
    let missing = dir.path().join("missing.yaml");
    let (code, _, stderr) = validate(&[arg(&ok), arg(&missing)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn strict_makes_an_unknown_function_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "flow.yaml", &format!("{HEAD}do:\n  - a:\n      call: training.schedule\n"));
    let (code, stdout, _) = validate(&["--strict", arg(&file)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("error[BATON-L020]"), "{stdout}");
}

#[test]
fn an_activity_manifest_checks_names_and_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = write(
        dir.path(),
        "activities.yaml",
        "activities:\n  - name: training.schedule\n    input: { type: object, required: [course] }\n",
    );
    let good = write(
        dir.path(),
        "good.yaml",
        &format!("{HEAD}do:\n  - a:\n      call: training.schedule\n      with: {{ course: c1 }}\n"),
    );
    let (code, stdout, _) = validate(&["--activities", arg(&manifest), arg(&good)]);
    assert_eq!(code, 0, "{stdout}");
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!("{HEAD}do:\n  - a:\n      call: training.schedul\n  - b:\n      call: training.schedule\n"),
    );
    let (code, stdout, _) = validate(&["--activities", arg(&manifest), "-o", "json", arg(&bad)]);
    assert_eq!(code, 1, "{stdout}");
    let codes: Vec<String> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON")["code"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(codes, ["BATON-L020", "BATON-L021"]);
    let broken = write(dir.path(), "broken.yaml", "activities:\n  - nam: x\n");
    let (code, stdout, _) = validate(&["--activities", arg(&broken), arg(&good)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("BATON-L024"), "{stdout}");
    let (code, _, _) = validate(&["--activities", arg(&dir.path().join("none.yaml")), arg(&good)]);
    assert_eq!(code, 2);
}

#[test]
fn strict_spec_names_baton_extensions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "flow.yaml", &format!("{HEAD}do:\n  - a:\n      call: training.schedule\n"));
    let (code, stdout, _) = validate(&["--strict-spec", arg(&file)]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.starts_with("error[BATON-L012]") && stdout.contains("Baton extension"), "{stdout}");
}

#[test]
fn shared_calendars_count_as_declared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = "do:\n  - review:\n      call: humanTask\n      with: { title: Review, assignee: ana }\n      sla: { within: PT8H, calendar: office }\n";
    let file = write(dir.path(), "sla.yaml", &format!("{HEAD}{body}"));
    let (code, stdout, _) = validate(&[arg(&file)]);
    assert_eq!(code, 0, "an undeclared calendar is a warning: {stdout}");
    assert!(stdout.contains("BATON-L025"), "{stdout}");
    let calendars = write(
        dir.path(),
        "calendars.yaml",
        "calendars:\n  office: { timezone: Europe/Brussels, hours: { mon-fri: ['09:00-17:00'] } }\n",
    );
    let (code, stdout, _) = validate(&[arg(&file), "--calendars", arg(&calendars)]);
    assert_eq!((code, stdout.contains("BATON-L025")), (0, false), "{stdout}");
}
