//! `validate::check` on whole definitions: the spec's examples, each semantic check, and the
//! bad inputs of the reliability notes (YAML bombs, deep nesting, huge files, bad encodings).

use std::path::PathBuf;

use baton_workflows::diagnostic::{CODES, Diagnostic, Severity, codes};
use baton_workflows::parse::ParseLimits;
use baton_workflows::validate::{Activity, ActivityManifest, ValidateOptions, check};

const HEAD: &str = "document: { dsl: '1.0.3', namespace: test, name: flow, version: '1.0.0' }\n";

fn diagnose_with(text: &str, options: &ValidateOptions) -> Vec<Diagnostic> {
    check("flow.yaml", text.as_bytes(), options).1
}

fn diagnose(text: &str) -> Vec<Diagnostic> {
    diagnose_with(text, &ValidateOptions::default())
}

/// The diagnostics of a definition made of `HEAD` and `body`.
fn flow(body: &str) -> Vec<Diagnostic> {
    diagnose(&format!("{HEAD}{body}"))
}

/// `(code, line, column)` of each diagnostic.
fn found(diagnostics: &[Diagnostic]) -> Vec<(&'static str, usize, usize)> {
    diagnostics.iter().map(|d| (d.code, d.line, d.column)).collect()
}

fn only(diagnostics: &[Diagnostic]) -> &Diagnostic {
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    &diagnostics[0]
}

fn spec_examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/spec-examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the spec examples are in the repository")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_spec_example_validates_without_errors() {
    let files = spec_examples();
    assert!(files.len() >= 60, "the spec's examples are all there ({})", files.len());
    for strict_spec in [false, true] {
        let options = ValidateOptions { strict_spec, ..ValidateOptions::default() };
        for path in &files {
            let bytes = std::fs::read(path).expect("readable");
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let (parsed, diagnostics) = check(name, &bytes, &options);
            assert!(parsed.is_some(), "{name} does not parse");
            let errors: Vec<String> = diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.render(std::str::from_utf8(&bytes).unwrap_or_default()))
                .collect();
            assert!(errors.is_empty(), "{name} (strict_spec: {strict_spec}):\n{}", errors.concat());
        }
    }
}

#[test]
fn diagnostics_are_sorted_and_all_reported_at_once() {
    let diagnostics = flow(
        "do:\n  - a:\n      set: { x: 1 }\n      then: nowhere\n  - a:\n      wait: soon\n  - c:\n      call: http\n      with: { method: get }\n",
    );
    assert_eq!(
        found(&diagnostics),
        [(codes::THEN_TARGET, 5, 13), (codes::DUPLICATE_TASK, 6, 5), (codes::DURATION, 7, 13), (codes::SCHEMA, 10, 7)]
    );
}

#[test]
fn a_task_with_a_flow_problem_still_gets_its_schema_problems() {
    let d = flow("do:\n  - a:\n      set: { x: 1 }\n  - a:\n      call: http\n      with: { method: get }\n");
    assert_eq!(found(&d), [(codes::DUPLICATE_TASK, 5, 5), (codes::SCHEMA, 7, 7)]);
}

// The schema, each task against its own kind.

#[test]
fn a_wrong_type_names_the_property_and_what_was_expected() {
    let d = diagnose("document: { dsl: '1.0.3', namespace: test, name: flow, version: 1.0 }\ndo: []\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column, d.pointer.as_str()), (codes::SCHEMA, 1, 65, "/document/version"));
    assert_eq!(d.message, "expected a string, found the number 1.0");
    assert!(d.expected.as_deref().unwrap_or_default().contains("semantic version"), "{d:?}");
}

#[test]
fn a_mistake_inside_a_task_is_reported_there_not_as_no_matching_kind() {
    let d = flow(
        "do:\n  - getPet:\n      call: http\n      with:\n        method: get\n        endpont: https://example.com\n",
    );
    assert_eq!(found(&d), [(codes::SCHEMA, 5, 7), (codes::SCHEMA, 7, 9)]);
    assert_eq!(d[0].message, "missing the required property `endpoint`");
    assert_eq!(d[1].message, "unknown property `endpont`; did you mean `endpoint`?");
    assert!(d.iter().all(|d| !d.message.contains("any of")), "{d:#?}");
}

#[test]
fn a_task_without_a_kind_or_with_two() {
    let d = flow("do:\n  - a:\n      cal: x\n  - b:\n      call: x\n      set: { y: 1 }\n");
    let kinds: Vec<_> = d.iter().filter(|d| d.code == codes::TASK_KIND).collect();
    assert_eq!(kinds.len(), 2, "{d:#?}");
    assert_eq!((kinds[0].line, kinds[0].column), (3, 5));
    assert!(kinds[0].message.contains("did you mean `call`"), "{}", kinds[0].message);
    assert!(kinds[1].message.contains("several task kinds (call, set)"), "{}", kinds[1].message);
}

#[test]
fn a_value_of_none_of_the_allowed_forms_lists_them() {
    let d = flow("do:\n  - a:\n      call: http\n      with: { method: get, endpoint: { uri: 7 } }\n");
    let d = only(&d);
    assert_eq!((d.code, d.pointer.as_str()), (codes::SCHEMA, "/do/0/a/with/endpoint/uri"));
    assert!(
        d.message.starts_with("expected literal uri template (a string) or literal uri (a string)"),
        "{}",
        d.message
    );
}

#[test]
fn unknown_top_level_properties_are_refused_except_evaluate() {
    let d = flow("dO: []\ndo: []\n");
    assert_eq!(only(&d).message, "unknown property `dO`; did you mean `do`?");
    assert!(flow("evaluate: { language: jq, mode: loose }\ndo: []\n").is_empty());
}

#[test]
fn dsl_versions_outside_1_0_are_refused() {
    let d = diagnose("document: { dsl: '1.1.0', namespace: test, name: flow, version: '1.0.0' }\ndo: []\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::DSL_VERSION, 1, 18));
    let d = diagnose("document: { dsl: 1.0, namespace: test, name: flow, version: '1.0.0' }\ndo: []\n");
    assert_eq!(only(&d).message, "expected a string, found the number 1.0");
    for version in ["1.0.0", "1.0.1", "1.0.2", "1.0.3"] {
        let text = format!("document: {{ dsl: '{version}', namespace: test, name: flow, version: '1.0.0' }}\ndo: []\n");
        assert!(diagnose(&text).is_empty(), "{version}");
    }
}

#[test]
fn policy_refused_run_tasks_are_valid() {
    let d = flow(
        "do:\n  - a:\n      run:\n        shell: { command: 'echo hi' }\n  - b:\n      run:\n        container: { image: alpine }\n  - c:\n      run:\n        script: { language: js, code: '1' }\n",
    );
    assert!(d.is_empty(), "{d:#?}");
}

// The flow.

#[test]
fn duplicate_task_names_in_one_list() {
    let d = flow("do:\n  - a:\n      set: { x: 1 }\n  - a:\n      set: { x: 2 }\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::DUPLICATE_TASK, 5, 5));
    assert!(d.message.contains("line 3"), "{}", d.message);
    // The same name in two lists is fine.
    assert!(flow("do:\n  - a:\n      do:\n        - a: { set: { x: 1 } }\n").is_empty());
}

#[test]
fn duplicate_names_in_try_fork_and_for_lists() {
    for body in [
        "do:\n  - t:\n      try:\n        - x: { set: {a: 1} }\n        - x: { set: {a: 1} }\n      catch: {}\n",
        "do:\n  - f:\n      fork:\n        branches:\n          - x: { set: {a: 1} }\n          - x: { set: {a: 1} }\n",
        "do:\n  - l:\n      for: { in: '${ .items }' }\n      do:\n        - x: { set: {a: 1} }\n        - x: { set: {a: 1} }\n",
    ] {
        let d = flow(body);
        assert_eq!(only(&d).code, codes::DUPLICATE_TASK, "{body}");
    }
}

#[test]
fn then_must_name_a_task_of_its_own_list() {
    let d = flow("do:\n  - a:\n      set: { x: 1 }\n      then: publsh\n  - publish:\n      set: { x: 2 }\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::THEN_TARGET, 5, 13));
    assert!(d.message.contains("did you mean `publish`"), "{}", d.message);
    for directive in ["continue", "exit", "end"] {
        assert!(
            flow(&format!("do:\n  - a:\n      set: {{ x: 1 }}\n      then: {directive}\n")).is_empty(),
            "{directive}"
        );
    }
}

#[test]
fn then_cannot_leave_its_list() {
    let d = flow("do:\n  - outer:\n      do:\n        - inner:\n            set: { x: 1 }\n            then: outer\n");
    let d = only(&d);
    assert_eq!(d.code, codes::THEN_TARGET);
    assert!(d.message.contains("enclosing list"), "{}", d.message);
}

#[test]
fn switch_case_targets_are_checked() {
    let d = flow(
        "do:\n  - s:\n      switch:\n        - yes: { when: '${ .ok }', then: done }\n        - no: { then: nope }\n  - done:\n      set: { x: 1 }\n",
    );
    let d = only(&d);
    assert_eq!((d.code, d.pointer.as_str()), (codes::THEN_TARGET, "/do/0/s/switch/1/no/then"));
}

#[test]
fn one_default_case_per_switch() {
    let d = flow("do:\n  - s:\n      switch:\n        - a: { then: end }\n        - b: { then: end }\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::DEFAULT_CASE, 6, 11));
}

#[test]
fn unreachable_tasks_are_a_warning() {
    let d = flow(
        "do:\n  - a:\n      set: { x: 1 }\n      then: c\n  - b:\n      set: { x: 2 }\n  - c:\n      set: { x: 3 }\n      then: exit\n  - d:\n      set: { x: 4 }\n",
    );
    assert_eq!(found(&d), [(codes::UNREACHABLE, 6, 5), (codes::UNREACHABLE, 11, 5)]);
    assert!(d.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn reachability_follows_switches_ifs_and_raises() {
    // A switch without a default case goes on; with `if:` a task may be skipped.
    let ok = flow(
        "do:\n  - s:\n      switch:\n        - a: { when: '${ .a }', then: end }\n  - b:\n      if: '${ .b }'\n      set: { x: 1 }\n      then: end\n  - c:\n      set: { x: 2 }\n",
    );
    assert!(ok.is_empty(), "{ok:#?}");
    let d = flow(
        "do:\n  - r:\n      raise:\n        error: { type: 'https://example.com/e', status: 400 }\n  - after:\n      set: { x: 1 }\n",
    );
    assert_eq!(found(&d), [(codes::UNREACHABLE, 6, 5)]);
    // Fork branches all run.
    assert!(flow("do:\n  - f:\n      fork:\n        branches:\n          - a: { set: {x: 1}, then: end }\n          - b: { set: {x: 1} }\n").is_empty());
}

// Values.

#[test]
fn durations_must_be_iso_8601_and_of_fixed_length() {
    let d = flow(
        "do:\n  - a:\n      wait: 1 hour\n  - b:\n      wait: P1M\n  - c:\n      wait: { hour: 1 }\n  - d:\n      wait: { minutes: 5 }\n  - e:\n      wait: PT1H30M\n  - f:\n      wait: '${ .delay }'\n",
    );
    assert_eq!(found(&d), [(codes::DURATION, 4, 13), (codes::DURATION, 6, 13), (codes::SCHEMA, 8, 15)]);
    assert!(d[0].message.contains("starts with `P`"), "{}", d[0].message);
    assert!(d[1].message.contains("no fixed length"), "{}", d[1].message);
    assert!(d[2].message.contains("did you mean `hours`"), "{}", d[2].message);
}

#[test]
fn durations_everywhere_are_checked() {
    let d = flow(
        "timeout: { after: PT }\nschedule: { every: soon }\ndo:\n  - a:\n      set: { x: 1 }\n      timeout: { after: P1Y }\n",
    );
    assert_eq!(found(&d), [(codes::DURATION, 2, 19), (codes::DURATION, 3, 20), (codes::DURATION, 7, 25)]);
}

#[test]
fn cron_expressions_must_parse() {
    let d = flow("schedule:\n  cron: '61 * * * *'\ndo: []\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::CRON, 3, 9));
    assert!(flow("schedule:\n  cron: '0 0 * * *'\ndo: []\n").is_empty());
    assert!(flow("schedule:\n  cron: '30 0 0 * * *'\ndo: []\n").is_empty(), "an optional seconds field");
}

#[test]
fn jq_errors_point_inside_the_expression() {
    // Multibyte characters before the error: columns count characters.
    let d = flow("do:\n  - ünïcödé:\n      set:\n        v: '${ .a | }'\n");
    let d = only(&d);
    assert_eq!(d.code, codes::EXPRESSION);
    assert_eq!((d.line, d.pointer.as_str()), (5, "/do/0/ünïcödé/set/v"));
    // `        v: '${ .a | }'`: the error is at the end of the expression, where `}` is.
    assert_eq!(d.column, 21, "{d:#?}");
    let d = flow("do:\n  - é:\n      set: { wörd: '${ .a | }' }\n");
    assert_eq!(only(&d).column, 29);
}

#[test]
fn a_multiline_expression_points_at_its_string() {
    let d = flow("do:\n  - a:\n      set:\n        v: >-\n          ${ .a\n          | }\n");
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::EXPRESSION, 6, 11));
}

#[test]
fn expression_fields_are_jq_even_without_braces() {
    let d = flow("do:\n  - a:\n      if: .x ==\n      set: { x: 1 }\n");
    let d = only(&d);
    assert_eq!((d.code, d.line), (codes::EXPRESSION, 4));
    // The spec's examples write conditions without `${ }`; valid jq passes.
    assert!(flow("do:\n  - a:\n      if: $context.error == null\n      set: { x: 1 }\n").is_empty());
    // A literal string elsewhere is not an expression.
    assert!(flow("do:\n  - a:\n      set: { x: '.x ==' }\n").is_empty());
}

#[test]
fn in_loose_mode_a_broken_template_stands_for_its_text() {
    let d = flow("evaluate: { mode: loose }\ndo:\n  - a:\n      set: { x: '${ .a | }' }\n");
    assert_eq!(only(&d).severity, Severity::Warning);
    let d = flow("evaluate: { mode: loose }\ndo:\n  - a:\n      if: .x ==\n      set: { x: 1 }\n");
    assert_eq!(only(&d).severity, Severity::Error);
}

#[test]
fn input_and_output_schemas_must_compile() {
    let d = flow(
        "input:\n  schema:\n    document: { type: objekt }\ndo:\n  - a:\n      set: { x: 1 }\n      output:\n        schema:\n          format: avro\n          document: {}\n",
    );
    assert_eq!(found(&d), [(codes::DATA_SCHEMA, 4, 23), (codes::DATA_SCHEMA, 10, 19)]);
}

#[test]
fn references_to_use_entries_must_resolve() {
    let d = flow(
        "use:\n  secrets: [known]\ndo:\n  - a:\n      raise: { error: missing }\n  - b:\n      set: { x: 1 }\n      timeout: short\n  - c:\n      try:\n        - d: { set: { x: 1 } }\n      catch: { retry: again }\n  - e:\n      call: http\n      with:\n        method: get\n        endpoint:\n          uri: https://example.com\n          authentication: { bearer: { use: unknown } }\n  - f:\n      call: http\n      with:\n        method: get\n        endpoint:\n          uri: https://example.com\n          authentication: { use: policy }\n",
    );
    // (The tasks after the raise are unreachable too: warnings.)
    let codes_found: Vec<_> = d.iter().filter(|d| d.is_error()).map(|d| (d.code, d.pointer.as_str())).collect();
    assert_eq!(
        codes_found,
        [
            (codes::UNKNOWN_REFERENCE, "/do/0/a/raise/error"),
            (codes::UNKNOWN_REFERENCE, "/do/1/b/timeout"),
            (codes::UNKNOWN_REFERENCE, "/do/2/c/catch/retry"),
            (codes::UNKNOWN_REFERENCE, "/do/3/e/with/endpoint/authentication/bearer/use"),
            (codes::UNKNOWN_REFERENCE, "/do/4/f/with/endpoint/authentication/use"),
        ]
    );
}

// Functions and activities.

const CALLS: &str = "use:\n  functions:\n    declared:\n      call: http\n      with: { method: get, endpoint: 'https://example.com' }\n  catalogs:\n    shared:\n      endpoint: https://example.com/catalog\ndo:\n  - a: { call: declared }\n  - b: { call: 'log:1.0.0@shared' }\n  - c: { call: 'log:1.0.0@default' }\n  - d: { call: 'https://example.com/functions/log.yaml' }\n  - e: { call: training.schedule }\n";

#[test]
fn an_unknown_function_is_a_warning_by_default() {
    let d = flow(CALLS);
    let d = only(&d);
    assert_eq!((d.code, d.severity, d.line, d.column), (codes::UNKNOWN_FUNCTION, Severity::Warning, 15, 16));
    let catalog = flow("do:\n  - a: { call: 'log:1.0.0@nowhere' }\n");
    assert_eq!(only(&catalog).code, codes::UNKNOWN_REFERENCE);
}

#[test]
fn an_unknown_function_is_an_error_when_strict_or_with_a_manifest() {
    let text = format!("{HEAD}{CALLS}");
    let strict = diagnose_with(&text, &ValidateOptions { strict: true, ..ValidateOptions::default() });
    assert_eq!(only(&strict).severity, Severity::Error);
    let manifest =
        ActivityManifest { activities: vec![Activity::new("training.book", None, None, None).expect("valid")] };
    let options = ValidateOptions { activities: Some(manifest.clone()), ..ValidateOptions::default() };
    let d = diagnose_with(&text, &options);
    assert_eq!(only(&d).severity, Severity::Error);
    let known =
        ActivityManifest { activities: vec![Activity::new("training.schedule", None, None, None).expect("valid")] };
    assert!(
        diagnose_with(&text, &ValidateOptions { activities: Some(known), ..ValidateOptions::default() }).is_empty()
    );
}

#[test]
fn a_call_without_expressions_is_checked_against_the_activity_input_schema() {
    let manifest = ActivityManifest::parse(
        "activities.yaml",
        b"activities:\n  - name: training.schedule\n    description: Books a session.\n    input:\n      type: object\n      required: [course]\n      properties:\n        course: { type: string }\n",
    )
    .expect("a valid manifest");
    let options = ValidateOptions { activities: Some(manifest), ..ValidateOptions::default() };
    let d = diagnose_with(
        &format!("{HEAD}do:\n  - a:\n      call: training.schedule\n      with: {{ course: 5 }}\n"),
        &options,
    );
    let d = only(&d);
    assert_eq!((d.code, d.pointer.as_str(), d.line, d.column), (codes::ACTIVITY_INPUT, "/do/0/a/with/course", 5, 23));
    let missing = diagnose_with(&format!("{HEAD}do:\n  - a:\n      call: training.schedule\n"), &options);
    assert_eq!(only(&missing).code, codes::ACTIVITY_INPUT);
    // With an expression, the input is only known at run time.
    let dynamic = diagnose_with(
        &format!("{HEAD}do:\n  - a:\n      call: training.schedule\n      with: {{ course: '${{ .c }}' }}\n"),
        &options,
    );
    assert!(dynamic.is_empty(), "{dynamic:#?}");
}

#[test]
fn a_bad_manifest_is_reported_with_positions() {
    let problems = ActivityManifest::parse(
        "activities.yaml",
        b"activities:\n  - name: a\n    inptu: {}\n  - name: a\n  - description: no name\n  - name: b\n    input: { type: 12 }\n",
    )
    .expect_err("invalid");
    let found: Vec<_> = problems.iter().map(|d| (d.code, d.line)).collect();
    assert_eq!(found, [(codes::MANIFEST, 3), (codes::MANIFEST, 4), (codes::MANIFEST, 5), (codes::MANIFEST, 7)]);
}

#[test]
fn strict_spec_names_each_baton_extension() {
    let options = ValidateOptions { strict_spec: true, ..ValidateOptions::default() };
    let d = diagnose_with(&format!("{HEAD}do:\n  - a: {{ call: training.schedule }}\n"), &options);
    let d = only(&d);
    assert_eq!(d.code, codes::EXTENSION);
    assert!(d.message.contains("Baton extension"), "{}", d.message);
}

#[test]
fn calendars_must_be_valid_and_sla_calendars_declared() {
    let d = flow(
        r#"use:
  calendars:
    office: { timezone: Europe/Brusels, hours: { mon-fri: ['09:00-17:00'] } }
do:
  - review:
      call: humanTask
      with: { title: Review, assign: { role: reviewer } }
      sla: { within: PT8H, calendar: ofice }
"#,
    );
    assert_eq!(found(&d), [(codes::CALENDAR, 4, 5), (codes::CALENDAR, 9, 38)]);
    assert_eq!(d[0].severity, Severity::Error);
    assert!(d[0].message.contains("Europe/Brusels"), "{}", d[0].message);
    assert_eq!(d[1].severity, Severity::Warning);
    assert!(d[1].message.contains("`ofice` is not declared"), "{}", d[1].message);
}

#[test]
fn the_server_s_own_activities_are_known_except_to_a_portable_definition() {
    let source = format!("{HEAD}do:\n  - boss: {{ call: baton.directory.managerOf, with: {{ user: olga }} }}\n");
    let strict = ValidateOptions { strict: true, ..ValidateOptions::default() };
    assert!(diagnose_with(&source, &strict).is_empty());
    let portable = ValidateOptions { strict_spec: true, ..ValidateOptions::default() };
    assert_eq!(only(&diagnose_with(&source, &portable)).code, codes::EXTENSION);
}

#[test]
fn an_sla_may_take_its_duration_from_an_expression() {
    let d = flow(
        r#"do:
  - review:
      call: humanTask
      with: { title: Review, assign: { role: reviewer } }
      sla: { within: '${ .deadline }' }
"#,
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn people_and_deadlines_are_extensions_under_strict_spec() {
    let options = ValidateOptions { strict_spec: true, ..ValidateOptions::default() };
    let body = "do:
  - a:
      call: humanTask
      with: { title: T, assignee: ana }
      sla: { within: PT1H }
";
    let d = diagnose_with(&format!("{HEAD}{body}"), &options);
    let messages: Vec<&str> = d.iter().filter(|d| d.code == codes::EXTENSION).map(|d| d.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("humanTask")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("sla")), "{messages:?}");
}

// Bad input (reliability notes 3.3 and 3.4): each refused with a clear diagnostic, quickly and
// in bounded memory.

#[test]
fn a_billion_laughs_alias_bomb_is_refused() {
    let mut text = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (name, previous) in
        ["b", "c", "d", "e", "f", "g", "h", "i"].iter().zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        text.push_str(&format!("{name}: &{name} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"));
    }
    let d = diagnose(&text);
    let d = only(&d);
    assert_eq!(d.code, codes::ALIAS_BUDGET);
    assert!(d.message.contains("aliases expand to more than 10000 nodes"), "{}", d.message);
}

#[test]
fn one_anchor_referenced_thousands_of_times_and_merge_fan_out_are_refused() {
    let mut text = String::from("base: &b { k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, k6: 6, k7: 7, k8: 8 }\nlist:\n");
    for _ in 0..5_000 {
        text.push_str("  - { <<: *b }\n");
    }
    assert_eq!(only(&diagnose(&text)).code, codes::ALIAS_BUDGET);
}

#[test]
fn deep_nesting_is_refused() {
    let flow_style = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let d = diagnose(&flow_style);
    assert_eq!(only(&d).code, codes::TOO_DEEP);
    let mappings = format!("{}1{}", "{a: ".repeat(10_000), "}".repeat(10_000));
    assert_eq!(only(&diagnose(&mappings)).code, codes::TOO_DEEP);
    // Block style pays for depth in indentation: 2,000 levels fit in the size limit.
    let mut block = String::new();
    for depth in 0..2_000 {
        block.push_str(&" ".repeat(depth));
        block.push_str("a:\n");
    }
    assert_eq!(only(&diagnose(&block)).code, codes::TOO_DEEP);
}

#[test]
fn a_50_mib_document_is_refused_before_parsing() {
    let mut text = String::from(HEAD);
    text.push_str("do:\n  - a:\n      set:\n        big: '");
    text.push_str(&"x".repeat(50 << 20));
    text.push_str("'\n");
    let d = diagnose(&text);
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::TOO_LARGE, 1, 1));
    assert!(d.message.contains("4194304 bytes"), "{}", d.message);
}

#[test]
fn too_many_nodes_are_refused() {
    let options = ValidateOptions {
        limits: ParseLimits { max_nodes: 1_000, ..ParseLimits::default() },
        ..ValidateOptions::default()
    };
    let text = format!("list: [{}]\n", vec!["1"; 2_000].join(","));
    assert_eq!(only(&diagnose_with(&text, &options)).code, codes::TOO_LARGE);
}

#[test]
fn non_utf8_points_at_the_first_bad_byte() {
    let mut bytes = format!("{HEAD}do:\n  - é:\n      set: {{ v: \"ab").into_bytes();
    bytes.extend_from_slice(&[0xC3, 0x28]);
    bytes.extend_from_slice(b"\" }\n");
    let (parsed, d) = check("flow.yaml", &bytes, &ValidateOptions::default());
    assert!(parsed.is_none());
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::NOT_UTF8, 4, 20));
}

#[test]
fn wrong_types_everywhere_are_each_reported() {
    let d = diagnose("document: 5\ndo: { a: 1 }\nuse: []\n");
    assert_eq!(found(&d), [(codes::SCHEMA, 1, 11), (codes::SCHEMA, 2, 1), (codes::SCHEMA, 3, 1)]);
    let d = diagnose("- just\n- a list\n");
    assert!(only(&d).message.contains("not a single value or a list"), "{d:#?}");
    assert_eq!(only(&diagnose("")).message, "the document is empty");
}

#[test]
fn duplicate_keys_in_a_definition_are_errors() {
    let d = diagnose(&format!("{HEAD}do: []\ndo: []\n"));
    let d = only(&d);
    assert_eq!((d.code, d.line, d.column), (codes::DUPLICATE_KEY, 3, 1));
}

#[test]
fn syntax_errors_have_a_position() {
    let d = diagnose("document: { dsl: '1.0.3'\ndo: [\n");
    let d = only(&d);
    assert_eq!(d.code, codes::YAML_SYNTAX);
    assert!(d.line >= 2, "{d:?}");
}

// Output.

#[test]
fn rendering_shows_the_line_and_a_caret() {
    let text = format!("{HEAD}do:\n  - a:\n      set: {{ x: 1 }}\n      then: publsh\n");
    let d = diagnose(&text);
    assert_eq!(
        only(&d).render(&text),
        "error[BATON-L014]: `then: publsh` names no task of this list\n --> flow.yaml:5:13\n  |\n5 |       then: publsh\n  |             ^^^^^^\n  = expected: continue, exit, end, or a task of this list: a\n"
    );
}

#[test]
fn json_has_the_fields_editors_read() {
    let d = flow("do:\n  - a:\n      wait: soon\n");
    let json = serde_json::to_value(only(&d)).expect("serializes");
    for field in
        ["code", "severity", "file", "line", "column", "end_line", "end_column", "pointer", "message", "expected"]
    {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    assert_eq!(json["pointer"], "/do/0/a/wait");
}

#[test]
fn every_code_has_a_documentation_page_and_an_index_entry() {
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/errors");
    let index = std::fs::read_to_string(docs.join("README.md")).expect("docs/errors/README.md");
    for (code, title) in CODES {
        let page =
            std::fs::read_to_string(docs.join(format!("{code}.md"))).unwrap_or_else(|_| panic!("{code} has no page"));
        assert!(page.starts_with(&format!("# {code}: {title}\n")), "{code}'s page starts with its title");
        assert!(
            index.contains(&format!("| [{code}]({code}.md) | {title} |")),
            "{code} is not in docs/errors/README.md"
        );
    }
}

#[test]
fn batons_settings_in_the_metadata_are_checked_at_their_line() {
    let text = "document:\n  dsl: '1.0.3'\n  namespace: test\n  name: flow\n  version: '1.0.0'\n  metadata:\n    baton:\n      onError: maybe\n      startableBy: [team_leader]\ndo:\n  - a:\n      set: { b: 1 }\n";
    let diagnostic = only(&diagnose(text)).clone();
    assert_eq!((diagnostic.code, diagnostic.line, diagnostic.column), (codes::SCHEMA, 8, 16), "{diagnostic:?}");
    assert!(diagnostic.expected.as_deref().is_some_and(|e| e.contains("`incident`")), "{diagnostic:?}");
    assert!(diagnose(&text.replace("maybe", "incident")).is_empty());
}
