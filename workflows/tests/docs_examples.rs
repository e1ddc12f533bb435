//! The YAML examples of the people-and-deadlines pages are real: every complete definition in
//! them validates strictly and compiles, every directory example imports, every calendar
//! parses. (Their behaviour is exercised by tests/people.rs.)

use std::path::{Path, PathBuf};

use baton_engine::directory::Organisation;
use baton_workflows::diagnostic::Severity;
use baton_workflows::validate::{ValidateOptions, check};
use serde_json::Value;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The ```yaml blocks of a page, with the line each starts on.
fn yaml_blocks(page: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(docs().join(page)).expect("the page exists");
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some((number + 2, String::new())),
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn parse(page: &str, line: usize, block: &str) -> Value {
    let parsed = baton_workflows::parse::parse(page, block.as_bytes(), &Default::default())
        .unwrap_or_else(|problems| panic!("{page}:{line}: not YAML: {problems:?}"));
    parsed.value
}

/// Checks each block by what it is; returns how many definitions were checked.
fn check_page(page: &str) -> usize {
    let mut definitions = 0;
    for (line, block) in yaml_blocks(page) {
        let value = parse(page, line, &block);
        if value.get("document").is_some() {
            let options = ValidateOptions { strict: true, ..ValidateOptions::default() };
            let (_, diagnostics) = check(page, block.as_bytes(), &options);
            let errors: Vec<_> = diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
            assert!(errors.is_empty(), "{page}:{line}: the example does not validate: {errors:#?}");
            baton_workflows::run::load(&block, page).unwrap_or_else(|e| panic!("{page}:{line}: {e}"));
            definitions += 1;
        } else if value.get("people").is_some() || value.get("departments").is_some() {
            let organisation: Organisation =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{page}:{line}: not a directory: {e}"));
            if let Err(problems) = organisation.check() {
                panic!("{page}:{line}: the directory does not hold together: {problems:?}");
            }
        } else if let Some(calendars) = value.get("calendars") {
            baton_sla::Calendars::from_value(calendars).unwrap_or_else(|e| panic!("{page}:{line}: {e}"));
        }
    }
    definitions
}

#[test]
fn the_human_task_examples_are_valid() {
    assert!(check_page("human-tasks.md") >= 3);
}

#[test]
fn the_sla_examples_are_valid() {
    assert!(check_page("sla.md") >= 2);
}

#[test]
fn the_calendar_examples_are_valid() {
    check_page("calendars.md");
}

#[test]
fn the_notification_examples_are_valid() {
    if docs().join("notifications.md").is_file() {
        check_page("notifications.md");
    }
}
