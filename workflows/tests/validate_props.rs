//! Properties of parsing and validation: values survive a trip through JSON and YAML text,
//! every node has a span, and no input makes `check` panic (what the fuzz target relies on).

use baton_workflows::parse::{ParseLimits, Parsed, parse};
use baton_workflows::validate::{ValidateOptions, check};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON holds finite numbers", |f| f.is_finite()).prop_map(Value::from),
        "[\\PC\n\t\"\\\\]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[\\PC]{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// `value` in YAML block style, every scalar written as JSON (a valid YAML flow scalar).
fn to_block_yaml(value: &Value) -> String {
    fn scalar(value: &Value) -> String {
        match value {
            Value::Array(_) => "[]".to_owned(),
            Value::Object(_) => "{}".to_owned(),
            other => other.to_string(),
        }
    }
    fn nested(value: &Value) -> bool {
        matches!(value, Value::Array(items) if !items.is_empty())
            || matches!(value, Value::Object(fields) if !fields.is_empty())
    }
    fn emit(value: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match value {
            Value::Array(items) if !items.is_empty() => {
                for item in items {
                    if nested(item) {
                        out.push_str(&format!("{pad}-\n"));
                        emit(item, indent + 2, out);
                    } else {
                        out.push_str(&format!("{pad}- {}\n", scalar(item)));
                    }
                }
            }
            Value::Object(fields) if !fields.is_empty() => {
                for (key, item) in fields {
                    let key = Value::from(key.as_str());
                    if nested(item) {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit(item, indent + 2, out);
                    } else {
                        out.push_str(&format!("{pad}{key}: {}\n", scalar(item)));
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    let mut out = String::new();
    emit(value, 0, &mut out);
    out
}

fn pointers(value: &Value, here: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                pointers(item, format!("{here}/{index}"), out);
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                pointers(item, format!("{here}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

fn parsed(text: &str) -> Result<Parsed, TestCaseError> {
    parse("p.yaml", text.as_bytes(), &ParseLimits::default())
        .map_err(|problems| TestCaseError::fail(format!("{text}\n{problems:#?}")))
}

fn assert_spans(parsed: &Parsed, value: &Value) -> Result<(), TestCaseError> {
    let mut all = Vec::new();
    pointers(value, String::new(), &mut all);
    let lines = parsed.text.lines().count().max(1);
    for pointer in all {
        let span = parsed.spans.value(&pointer);
        prop_assert!(span.is_some(), "no span for {pointer:?} in\n{}", parsed.text);
        let span = span.unwrap_or(baton_workflows::parse::Span::at(1, 1));
        prop_assert!(span.line >= 1 && span.line <= lines + 1 && span.column >= 1, "{pointer}: {span:?}");
        if pointer.rsplit('/').next().is_some_and(|last| last.parse::<usize>().is_err()) && !pointer.is_empty() {
            // A mapping member (its last segment is not an index... unless the key is a number).
            let parent = &pointer[..pointer.rfind('/').unwrap_or(0)];
            if parsed.value.pointer(parent).is_some_and(Value::is_object) {
                prop_assert!(parsed.spans.key(&pointer).is_some(), "no key span for {pointer:?}");
            }
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_value_written_as_json_parses_back_with_every_span(value in value()) {
        for text in [serde_json::to_string(&value).unwrap_or_default(), serde_json::to_string_pretty(&value).unwrap_or_default()] {
            let parsed = parsed(&text)?;
            prop_assert_eq!(&parsed.value, &value, "{}", text);
            assert_spans(&parsed, &value)?;
        }
    }

    #[test]
    fn any_value_written_as_block_yaml_parses_back_with_every_span(value in value()) {
        let text = to_block_yaml(&value);
        let parsed = parsed(&text)?;
        prop_assert_eq!(&parsed.value, &value, "{}", text);
        assert_spans(&parsed, &value)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = check("fuzz.yaml", &bytes, &ValidateOptions::default());
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[a-z:\\-\\[\\]{}&*!|>'\"#%@` ,?\n\t<=0-9.~$]{0,300}") {
        let _ = check("fuzz.yaml", text.as_bytes(), &ValidateOptions::default());
        let _ = check("fuzz.yaml", text.as_bytes(), &ValidateOptions { strict_spec: true, ..ValidateOptions::default() });
    }

    #[test]
    fn damaged_definitions_never_panic(
        example in 0usize..1000,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/spec-examples");
        let mut files: Vec<_> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
        files.sort();
        prop_assume!(!files.is_empty());
        let mut bytes = std::fs::read(&files[example % files.len()]).unwrap_or_default();
        prop_assume!(!bytes.is_empty());
        for (at, byte) in edits {
            let index = at.index(bytes.len());
            bytes[index] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = check("damaged.yaml", &bytes, &ValidateOptions::default());
    }
}
