//! Any expression on any input: compiled and evaluated under the default limits, it gives a
//! value or an error, never a panic, a hang or a stack overflow.
#![no_main]

use baton_workflows::expr::{Expr, Limits, Vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // `expression\0input-json`: the input defaults to a small document.
    let (source, input) = text.split_once('\0').unwrap_or((text, r#"{"a":[1,2,{"b":"c"}],"n":3}"#));
    let input: serde_json::Value = serde_json::from_str(input).unwrap_or(serde_json::Value::Null);
    let names = ["context", "input", "secrets"];
    if let Ok(expr) = Expr::compile(source, &names) {
        let vars = Vars::new().with("context", serde_json::json!({"k": 1})).with("secrets", serde_json::json!({"s": "hunter22"}));
        let _ = expr.eval(&input, &vars, &Limits::default());
    }
});
