//! Unit tests of the pieces behind the public API (the API itself is tested in
//! workflows/tests/expr.rs).

use serde_json::json;

use super::*;

const NAMES: &[&str] = &["context", "input", "secrets"];

#[test]
fn mentions_whole_variable_names_only() {
    assert!(mentions("$context.a", "context"));
    assert!(mentions("[$input]", "input"));
    assert!(!mentions("$contexts", "context"));
    assert!(!mentions("context", "context"));
    assert!(mentions("$a + $ab", "ab") && mentions("$a + $ab", "a"));
}

#[test]
fn offsets_count_characters() {
    let source = "\"héé\" | x";
    let part = &source[source.len() - 1..];
    assert_eq!(offset_of(source, part), Some(8));
    assert_eq!(offset_of(source, &String::from("elsewhere")), None);
}

#[test]
fn only_mentioned_variables_are_declared() {
    let e = Expr::compile("$input + 1", NAMES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.inner.names, vec!["input".to_owned()]);
    let e = Expr::compile("$nope", NAMES).expect_err("must fail");
    assert_eq!(e.message, "undefined variable `$nope`; the variables here are: $context, $input, $secrets");
}

#[test]
fn vars_replace_and_ignore_the_dollar() {
    let mut vars = Vars::new().with("$a", json!(1));
    vars.set("a", json!(2));
    vars.set("b", json!(3));
    assert_eq!(vars.iter().collect::<Vec<_>>(), vec![("a", &json!(2)), ("b", &json!(3))]);
}

#[test]
fn an_unused_variable_is_not_converted() {
    // a `$context` too deep to convert does not matter to an expression that does not read it
    let mut deep = json!(0);
    for _ in 0..300 {
        deep = json!([deep]);
    }
    let vars = Vars::new().with("context", deep);
    let e = Expr::compile(". + 1", NAMES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.eval(&json!(1), &vars, &Limits::default()), Ok(json!(2)));
}

#[test]
fn budget_state_is_clean_after_a_stop() {
    let limits = Limits { fuel: 1000, ..Limits::default() };
    let e = Expr::compile("last(range(1e9))", NAMES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.eval(&json!(null), &Vars::new(), &limits).map_err(|e| e.kind), Err(ExprErrorKind::Budget));
    assert_eq!(budget::remaining(), u64::MAX, "no evaluation is active afterwards");
    let e = Expr::compile("[range(10)] | length", NAMES).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.eval(&json!(null), &Vars::new(), &limits), Ok(json!(10)));
}

#[test]
fn a_small_stack_allowance_gives_a_limit_not_a_crash() {
    let limits = Limits { max_stack_bytes: 64 * 1024, ..Limits::default() };
    let e = Expr::compile("def f: 1 + f; f", NAMES).unwrap_or_else(|e| panic!("{e}"));
    let e = e.eval(&json!(null), &Vars::new(), &limits).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert!(e.message.contains("stack"), "{}", e.message);
}
