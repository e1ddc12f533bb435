//! The schema files in `schema/`: each JSON file is what its sources give. After editing
//! `workflow-1.0.3.yaml` or `baton-extensions.yaml`, regenerate the JSON files with
//! `BATON_BLESS=1 cargo test -p baton-workflows --test validate_schema`.

use std::path::PathBuf;

use baton_workflows::parse::{ParseLimits, parse};
use baton_workflows::validate::schema::{BATON_SCHEMA, OFFICIAL_SCHEMA, extension_set, generate};
use baton_workflows::validate::{BUILTIN_FUNCTIONS, Site};
use serde_json::Value;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema")
}

fn blessing() -> bool {
    std::env::var_os("BATON_BLESS").is_some()
}

/// Writes `value` to `file` when blessing; otherwise asserts `embedded` holds the same value.
fn compare_or_bless(file: &str, embedded: &str, value: &Value) {
    if blessing() {
        let text = schema_text(value);
        std::fs::write(schema_dir().join(file), text).expect("writes the schema");
        return;
    }
    let committed: Value = serde_json::from_str(embedded).expect("the committed file is JSON");
    assert!(committed == *value, "schema/{file} is stale: regenerate it with BATON_BLESS=1 (see this file's doc)");
}

/// Pretty JSON with the identifying keywords first, as readers expect at the top of a schema.
fn schema_text(value: &Value) -> String {
    const FIRST: &[&str] =
        &["$id", "$schema", "title", "description", "type", "required", "properties", "unevaluatedProperties"];
    let Some(fields) = value.as_object() else { return serde_json::to_string_pretty(value).expect("serializes") };
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort_by_key(|key| (FIRST.iter().position(|first| first == key).unwrap_or(FIRST.len()), key.as_str()));
    let entries: Vec<String> = keys
        .into_iter()
        .map(|key| {
            let body = serde_json::to_string_pretty(&fields[key]).expect("serializes").replace('\n', "\n  ");
            format!("  {}: {body}", Value::from(key.as_str()))
        })
        .collect();
    format!("{{\n{}\n}}\n", entries.join(",\n"))
}

fn official_from_yaml() -> Value {
    let path = schema_dir().join("workflow-1.0.3.yaml");
    let bytes = std::fs::read(&path).expect("the official schema is in the repository");
    match parse("workflow-1.0.3.yaml", &bytes, &ParseLimits::default()) {
        Ok(parsed) => parsed.value,
        Err(problems) => panic!("the official schema does not parse: {problems:?}"),
    }
}

#[test]
fn the_official_json_schema_is_the_yaml_converted() {
    let official = official_from_yaml();
    assert_eq!(official["$id"], "https://serverlessworkflow.io/schemas/1.0.3/workflow.yaml");
    compare_or_bless("workflow-1.0.3.json", OFFICIAL_SCHEMA, &official);
}

#[test]
fn the_baton_schema_is_the_official_one_with_the_extensions_applied() {
    let set = extension_set().expect("baton-extensions.yaml reads");
    let baton = generate(&official_from_yaml(), set).expect("every entry applies");
    assert_eq!(baton["$id"], set.id.as_str());
    assert!(set.id.ends_with("/workflows/schema/baton-workflow.json"), "the $id is where the file is published");
    compare_or_bless("baton-workflow.json", BATON_SCHEMA, &baton);
}

#[test]
fn every_builtin_function_has_a_function_extension_and_back() {
    let set = extension_set().expect("baton-extensions.yaml reads");
    let mut declared: Vec<&str> =
        set.extensions.iter().filter(|e| e.site == Site::Function).map(|e| e.name.as_str()).collect();
    declared.sort_unstable();
    let mut builtins = BUILTIN_FUNCTIONS.to_vec();
    builtins.sort_unstable();
    assert_eq!(declared, builtins);
}

#[test]
fn each_extension_site_lands_where_documented() {
    let official = official_from_yaml();
    let mut set = extension_set().expect("reads").clone();
    // Each site on its own, with names of the kind Baton uses (the real ones are checked by the
    // generated schema's own test).
    set.extensions.clear();
    let schema: Value = serde_json::json!({ "type": "object" });
    for (name, site) in
        [("sla", Site::Task), ("calendars", Site::Use), ("owner", Site::Root), ("humanTask", Site::Function)]
    {
        set.extensions.push(baton_workflows::validate::Extension {
            name: name.into(),
            site,
            summary: format!("test {name}"),
            schema: schema.clone(),
        });
    }
    let baton = generate(&official, &set).expect("applies");
    assert_eq!(baton.pointer("/$defs/taskBase/properties/sla/type"), Some(&Value::from("object")));
    assert!(baton.pointer("/properties/use/properties/calendars").is_some());
    assert!(baton.pointer("/properties/owner").is_some());
    let branches = baton.pointer("/$defs/callTask/oneOf").and_then(Value::as_array).expect("branches");
    assert!(branches.iter().any(|b| b.pointer("/allOf/1/properties/call/const") == Some(&Value::from("humanTask"))));
    let function = branches.iter().find(|b| b["title"] == "CallFunction").expect("custom-function branch");
    let refused = function.pointer("/allOf/1/properties/call/not/enum").and_then(Value::as_array).expect("names");
    assert!(refused.contains(&Value::from("humanTask")));
    // A property the official schema has already is refused.
    set.extensions.push(baton_workflows::validate::Extension {
        name: "if".into(),
        site: Site::Task,
        summary: "clash".into(),
        schema,
    });
    assert!(generate(&official, &set).is_err());
}
