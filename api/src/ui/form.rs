//! A task's form as HTML fields: its JSON Schema's top-level properties become inputs, and
//! the posted values become the JSON the schema checks (the engine checks it again on
//! completion; its messages land beside their fields).

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

/// One input of a task's form.
#[derive(Debug)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub description: Option<String>,
    /// `text`, `textarea`, `number`, `checkbox`, `select` or `date`.
    pub kind: &'static str,
    /// `any` for numbers, `1` for integers.
    pub step: &'static str,
    pub required: bool,
    pub options: Vec<String>,
    /// What the person entered (or nothing yet).
    pub value: String,
    pub error: Option<String>,
}

impl Field {
    pub fn checked(&self) -> bool {
        self.value == "true"
    }

    pub fn selected(&self, option: &str) -> bool {
        self.value == option
    }
}

/// The fields of `form` (a JSON Schema of an object), with the values and errors of a posted
/// attempt.
pub fn fields(
    form: Option<&Value>,
    values: &BTreeMap<String, String>,
    errors: &BTreeMap<String, String>,
) -> Vec<Field> {
    let Some(properties) = form.and_then(|f| f.get("properties")).and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = form
        .and_then(|f| f.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    properties
        .iter()
        .map(|(name, schema)| {
            let text = |key: &str| schema.get(key).and_then(Value::as_str).map(str::to_owned);
            let options: Vec<String> = schema
                .get("enum")
                .and_then(Value::as_array)
                .map(|e| e.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect())
                .unwrap_or_default();
            let kind = match (type_of(schema), options.is_empty()) {
                (_, false) => "select",
                ("boolean", _) => "checkbox",
                ("integer" | "number", _) => "number",
                _ if text("format").as_deref() == Some("date") => "date",
                _ if schema.get("maxLength").and_then(Value::as_u64).is_none_or(|max| max > 200) => "textarea",
                _ => "text",
            };
            Field {
                name: name.clone(),
                label: text("title").unwrap_or_else(|| name.clone()),
                description: text("description"),
                kind,
                step: if type_of(schema) == "integer" { "1" } else { "any" },
                required: required.contains(&name.as_str()),
                options,
                value: values.get(name).cloned().unwrap_or_default(),
                error: errors.get(name).cloned(),
            }
        })
        .collect()
}

fn type_of(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("string")
}

/// The JSON of the posted `values` by the types `form` gives (an empty input is left out, a
/// checkbox left unticked is false), or the fields whose text is not of their type.
pub fn data(form: Option<&Value>, values: &BTreeMap<String, String>) -> Result<Value, BTreeMap<String, String>> {
    let mut data = Map::new();
    let mut errors = BTreeMap::new();
    let properties = form.and_then(|f| f.get("properties")).and_then(Value::as_object);
    for (name, schema) in properties.into_iter().flatten() {
        let value = values.get(name).map(|v| v.trim()).unwrap_or_default();
        let parsed = match type_of(schema) {
            "boolean" => Some(Value::Bool(value == "true" || value == "on")),
            _ if value.is_empty() => None,
            "integer" => match value.parse::<i64>() {
                Ok(n) => Some(Value::from(n)),
                Err(_) => {
                    errors.insert(name.clone(), "a whole number".to_owned());
                    None
                }
            },
            "number" => match value.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Some(Value::Number(n)),
                None => {
                    errors.insert(name.clone(), "a number".to_owned());
                    None
                }
            },
            _ => Some(Value::String(value.to_owned())),
        };
        if let Some(parsed) = parsed {
            data.insert(name.clone(), parsed);
        }
    }
    if errors.is_empty() { Ok(Value::Object(data)) } else { Err(errors) }
}

/// The engine's form problems (`/field: message`, or a message about the whole form) split
/// into the fields' own and the rest.
pub fn split_problems(problems: &[String]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut by_field = BTreeMap::new();
    let mut general = Vec::new();
    for problem in problems {
        let field = problem.strip_prefix('/').and_then(|rest| rest.split_once(": "));
        match field {
            Some((name, message)) if !name.contains('/') => {
                by_field.insert(name.to_owned(), message.to_owned());
            }
            _ => match required_field(problem) {
                Some(name) => {
                    by_field.insert(name, "required".to_owned());
                }
                None => general.push(problem.clone()),
            },
        }
    }
    (by_field, general)
}

/// The property a `"name" is a required property` message names.
fn required_field(problem: &str) -> Option<String> {
    let rest = problem.strip_prefix('"')?;
    let (name, tail) = rest.split_once('"')?;
    tail.contains("required").then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form() -> Value {
        json!({
            "type": "object",
            "required": ["comment", "score"],
            "properties": {
                "comment": { "type": "string", "title": "Comment", "minLength": 3 },
                "score": { "type": "integer" },
                "passed": { "type": "boolean" },
                "level": { "enum": ["basic", "expert"] },
                "code": { "type": "string", "maxLength": 10 },
                "on": { "type": "string", "format": "date" },
            }
        })
    }

    #[test]
    fn a_schema_becomes_typed_labelled_inputs() {
        let values = BTreeMap::from([("level".to_owned(), "expert".to_owned())]);
        let errors = BTreeMap::from([("score".to_owned(), "a whole number".to_owned())]);
        let fields = fields(Some(&form()), &values, &errors);
        let kinds: BTreeMap<&str, &str> = fields.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            kinds,
            BTreeMap::from([
                ("code", "text"),
                ("comment", "textarea"),
                ("level", "select"),
                ("on", "date"),
                ("passed", "checkbox"),
                ("score", "number"),
            ])
        );
        let comment = fields.iter().find(|f| f.name == "comment").expect("comment");
        assert!(comment.required && comment.label == "Comment");
        let level = fields.iter().find(|f| f.name == "level").expect("level");
        assert!(level.selected("expert") && !level.selected("basic") && !level.required);
        let score = fields.iter().find(|f| f.name == "score").expect("score");
        assert_eq!((score.step, score.error.as_deref()), ("1", Some("a whole number")));
    }

    #[test]
    fn posted_text_becomes_json_of_the_schema_types() {
        let posted = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let data =
            data(Some(&form()), &posted(&[("comment", " fine "), ("score", "7"), ("passed", "on"), ("code", "")]));
        assert_eq!(data, Ok(json!({ "comment": "fine", "score": 7, "passed": true })));
        let unticked = super::data(Some(&form()), &posted(&[("score", "7")])).expect("data");
        assert_eq!(unticked["passed"], json!(false));
        let errors = super::data(Some(&form()), &posted(&[("score", "seven")])).expect_err("not a number");
        assert_eq!(errors.get("score").map(String::as_str), Some("a whole number"));
    }

    #[test]
    fn the_engine_s_problems_go_beside_their_fields() {
        let problems = [
            "/comment: \"ok\" is shorter than 3 characters".to_owned(),
            "\"score\" is a required property".to_owned(),
            "something about the whole form".to_owned(),
        ];
        let (fields, general) = split_problems(&problems);
        assert_eq!(fields.get("comment").map(String::as_str), Some("\"ok\" is shorter than 3 characters"));
        assert_eq!(fields.get("score").map(String::as_str), Some("required"));
        assert_eq!(general, ["something about the whole form"]);
    }
}
