//! Runtime expressions through the public API: semantics, the output rule, refused builtins,
//! budgets and limits against hostile expressions, templates, masking, and the builtin
//! snapshot.

use std::time::{Duration, Instant};

use baton_workflows::expr::{
    self, Expr, ExprError, ExprErrorKind, Limits, Mode, Template, Vars, check_syntax, mask, strip,
};
use serde_json::{Value, json};

const NAMES: &[&str] = &[
    "context",
    "input",
    "output",
    "secrets",
    "task",
    "workflow",
    "runtime",
    "authorization",
    "item",
    "index",
    "error",
];

fn compile(source: &str) -> Expr {
    Expr::compile(source, NAMES).unwrap_or_else(|e| panic!("`{source}` does not compile: {e:?}"))
}

fn run(source: &str, input: Value) -> Result<Value, ExprError> {
    compile(source).eval(&input, &Vars::new(), &Limits::default())
}

fn ok(source: &str, input: Value) -> Value {
    run(source, input).unwrap_or_else(|e| panic!("`{source}` failed: {e:?}"))
}

// ---- semantics ----

#[test]
fn paths_arithmetic_and_comparisons() {
    assert_eq!(ok(".a.b + 1", json!({"a": {"b": 1}})), json!(2));
    assert_eq!(ok(".x == \"y\"", json!({"x": "y"})), json!(true));
    assert_eq!(ok(".missing", json!({})), Value::Null);
    assert_eq!(ok("[.[] | select(. > 1)]", json!([1, 2, 3])), json!([2, 3]));
    assert_eq!(ok("{a: 1} + {b: 2}", Value::Null), json!({"a": 1, "b": 2}));
    assert_eq!(ok("{a: {b: 1}} * {a: {c: 2}}", Value::Null), json!({"a": {"b": 1, "c": 2}}));
    assert_eq!(
        ok("\"ab\" * 3, \"ab\" * 2.7, \"ab\" * 0.5, \"ab\" * 0", Value::Null),
        json!(["ababab", "abab", null, null])
    );
    assert_eq!(ok("\"a,b,c\" / \",\"", Value::Null), json!(["a", "b", "c"]));
    assert_eq!(ok("[1,2,3] - [2]", Value::Null), json!([1, 3]));
    assert_eq!(ok("7 % 3, 1 / 2, -(1)", Value::Null), json!([1, 0.5, -1]));
    assert_eq!(ok("1.5 + 1", Value::Null), json!(2.5));
    assert_eq!(ok("9007199254740993", Value::Null), json!(9007199254740993u64));
}

#[test]
fn library_filters() {
    assert_eq!(ok("map(.a) | add", json!([{"a": 1}, {"a": 2}])), json!(3));
    assert_eq!(ok("to_entries | from_entries", json!({"a": 1})), json!({"a": 1}));
    assert_eq!(ok("keys, length", json!({"b": 1, "a": 2})), json!([["a", "b"], 2]));
    assert_eq!(ok("[.[] | length]", json!(["héllo", [1, 2], {"a": 1}, null, -3])), json!([5, 2, 1, 0, 3]));
    assert_eq!(ok("sort_by(.n) | map(.n)", json!([{"n": 3}, {"n": 1}])), json!([1, 3]));
    assert_eq!(ok("group_by(.k) | map(length)", json!([{"k": 1}, {"k": 2}, {"k": 1}])), json!([2, 1]));
    assert_eq!(ok("unique", json!([3, 1, 3])), json!([1, 3]));
    assert_eq!(ok("[paths]", json!({"a": [1]})), json!([["a"], ["a", 0]]));
    assert_eq!(ok("getpath([\"a\", 0])", json!({"a": [7]})), json!(7));
    assert_eq!(ok("setpath([\"a\", \"b\"]; 1)", json!({})), json!({"a": {"b": 1}}));
    assert_eq!(ok(".a.b = 1 | .c[2] = 3 | .d += 1", Value::Null), json!({"a": {"b": 1}, "c": [null, null, 3], "d": 1}));
    assert_eq!(ok("[1] | .[3] = 4, del(.[5])", Value::Null), json!([[1, null, null, 4], [1]]));
    assert_eq!(ok("del(.a)", json!({"a": 1, "b": 2})), json!({"b": 2}));
    assert_eq!(ok(".a |= . + 1 | .b += 2", json!({"a": 1, "b": 1})), json!({"a": 2, "b": 3}));
    assert_eq!(ok(".[1:] |= map(. * 10)", json!([1, 2, 3])), json!([1, 20, 30]));
    assert_eq!(ok("walk(if type == \"number\" then . + 1 else . end)", json!({"a": [1]})), json!({"a": [2]}));
    assert_eq!(ok("to_entries | map(.key)", json!({"x": 1})), json!(["x"]));
    assert_eq!(ok("contains({a: [\"b\"]})", json!({"a": ["abc"]})), json!(true));
    assert_eq!(ok("has(\"a\"), has(\"z\")", json!({"a": 1})), json!([true, false]));
    assert_eq!(ok("[has(0), has(5), has(-1)]", json!([1])), json!([true, false, false]));
    assert_eq!(ok("indices(\", \")", json!("a, b, c")), json!([1, 4]));
    assert_eq!(ok("indices(1)", json!([0, 1, 1])), json!([1, 2]));
    assert_eq!(ok("index(\"b\"), rindex(\"b\")", json!("abcb")), json!([1, 3]));
    assert_eq!(ok("bsearch(3)", json!([1, 2, 3])), json!(2));
    assert_eq!(ok("tojson", json!({"a": [1, "x"]})), json!("{\"a\":[1,\"x\"]}"));
    assert_eq!(ok("fromjson", json!("{\"a\": [1, 2]}")), json!({"a": [1, 2]}));
    assert_eq!(ok("tostring, tonumber", json!("12")), json!(["12", 12]));
    assert_eq!(ok("ascii_downcase, ltrimstr(\"A\")", json!("ABC")), json!(["abc", "BC"]));
    assert_eq!(ok("join(\"-\")", json!(["a", "b", 1])), json!("a-b-1"));
    assert_eq!(ok("@base64, (@base64 | @base64d)", json!("hi")), json!(["aGk=", "hi"]));
    assert_eq!(ok("\"x=\\(.x) y=\\(.y)\"", json!({"x": 1, "y": [2]})), json!("x=1 y=[2]"));
    assert_eq!(
        ok("[limit(3; range(10))], first(range(5; 9)), [range(0; 10; 4)]", Value::Null),
        json!([[0, 1, 2], 5, [0, 4, 8]])
    );
    assert_eq!(ok("reduce .[] as $x (0; . + $x)", json!([1, 2, 3])), json!(6));
    assert_eq!(ok("[foreach .[] as $x (0; . + $x)]", json!([1, 2, 3])), json!([1, 3, 6]));
    assert_eq!(ok("label $out | .[] | if . > 1 then ., break $out else . end", json!([1, 2, 3])), json!([1, 2]));
    assert_eq!(ok("def twice(f): f | f; twice(. * 2)", json!(3)), json!(12));
    assert_eq!(ok(". as [$a, {b: $c}] | $a + $c", json!([1, {"b": 2}])), json!(3));
    assert_eq!(ok("input_filename", Value::Null), Value::Null);
    assert_eq!(ok("[.[] | numbers]", json!([1, "a", null])), json!([1]));
    assert_eq!(ok("splits(\", *\")", json!("a, b,c")), json!(["a", "b", "c"]));
    assert_eq!(ok("any, all", json!([true, false])), json!([true, false]));
    assert_eq!(ok("flatten", json!([1, [2, [3]]])), json!([1, 2, 3]));
    assert_eq!(ok("min_by(.a), max_by(.a) | .a", json!([{"a": 2}, {"a": 1}])), json!([1, 2]));
    assert_eq!(ok("transpose", json!([[1, 2], [3, 4]])), json!([[1, 3], [2, 4]]));
}

#[test]
fn regular_expressions() {
    assert_eq!(ok("test(\"^a.c$\")", json!("abc")), json!(true));
    assert_eq!(ok("[match(\"b+\").string]", json!("abbbc")), json!(["bbb"]));
    assert_eq!(ok("capture(\"(?<y>\\\\d+)-(?<m>\\\\d+)\")", json!("2024-05")), json!({"y": "2024", "m": "05"}));
    assert_eq!(ok("sub(\"a\"; \"x\"), gsub(\"a\"; \"x\")", json!("banana")), json!(["bxnana", "bxnxnx"]));
    assert_eq!(ok("[scan(\"\\\\d\")]", json!("a1b2")), json!(["1", "2"]));
    assert_eq!(ok("split(\", *\"; null)", json!("a, b,c")), json!(["a", "b", "c"]));
}

#[test]
fn pure_time_conversions_work() {
    assert_eq!(ok("todate", json!(1_641_024_000)), json!("2022-01-01T08:00:00Z"));
    assert_eq!(ok("fromdate", json!("2022-01-01T08:00:00Z")), json!(1_641_024_000));
    assert_eq!(ok("gmtime | mktime", json!(1_641_024_000)), json!(1_641_024_000));
    assert_eq!(ok("strftime(\"%Y-%m-%d\")", json!(1_641_024_000)), json!("2022-01-01"));
    assert_eq!(ok("strptime(\"%Y-%m-%d\") | mktime", json!("2022-01-01")), json!(1_640_995_200));
}

#[test]
fn runtime_errors_carry_jq_messages() {
    let e = run("error(\"boom\")", Value::Null).expect_err("must fail");
    assert_eq!((e.kind, e.message.as_str()), (ExprErrorKind::Runtime, "boom"));
    let e = run("error({a: 1})", Value::Null).expect_err("must fail");
    assert_eq!(e.message, "{\"a\":1} (not a string)");
    let e = run(".a + 1", json!({"a": "x"})).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Runtime);
    assert!(e.message.contains("cannot"), "{}", e.message);
    assert_eq!(ok("try error(\"x\") catch ., (.a? // \"d\")", json!(1)), json!(["x", "d"]));
    assert_eq!(ok("try (null | implode) catch \"caught\"", Value::Null), json!("caught"));
}

#[test]
fn output_rule() {
    assert_eq!(ok("empty", json!(1)), Value::Null);
    assert_eq!(ok(".[]", json!([7])), json!(7));
    assert_eq!(ok(".[]", json!([1, 2, 3])), json!([1, 2, 3]));
    assert_eq!(ok("1, [2]", Value::Null), json!([1, [2]]));
    let e = compile(".[]");
    let v = Vars::new();
    let l = Limits::default();
    assert!(!e.eval_bool(&json!([]), &v, &l).unwrap_or(true), "no output is null, false");
    assert!(!e.eval_bool(&json!([false]), &v, &l).unwrap_or(true));
    assert!(e.eval_bool(&json!([0]), &v, &l).unwrap_or(false), "0 is true in jq");
    assert!(e.eval_bool(&json!([false, false]), &v, &l).unwrap_or(false), "several outputs: an array");
}

#[test]
fn variables_are_named_and_default_to_null() {
    let e = compile("[$context.a, $input, $item, $index, $task.name]");
    let vars = Vars::new().with("context", json!({"a": 1})).with("$item", json!("x")).with("index", json!(2));
    assert_eq!(e.eval(&json!(null), &vars, &Limits::default()), Ok(json!([1, null, "x", 2, null])));
    let mut vars = vars;
    vars.set("context", json!({"a": 5}));
    assert_eq!(vars.get("$context"), Some(&json!({"a": 5})));
    assert_eq!(e.eval(&json!(null), &vars, &Limits::default()), Ok(json!([5, null, "x", 2, null])));
    assert!(e.uses("task") && e.uses("$index") && !e.uses("workflow"));
    let e = Expr::compile("$nope", NAMES).expect_err("must fail");
    assert_eq!((e.kind, e.offset), (ExprErrorKind::Syntax, Some(0)));
    assert!(e.message.contains("$nope") && e.message.contains("$context"), "{}", e.message);
}

#[test]
fn a_compiled_expression_is_shared_between_threads() {
    let e = compile("[range(.)] | add");
    std::thread::scope(|s| {
        for n in 1..5 {
            let e = e.clone();
            s.spawn(move || {
                assert_eq!(
                    e.eval(&json!(n * 10), &Vars::new(), &Limits::default()),
                    Ok(json!((n * 10) * (n * 10 - 1) / 2))
                )
            });
        }
    });
}

// ---- syntax ----

#[test]
fn strip_takes_whole_dollar_brace_strings() {
    assert_eq!(strip("${ .a }"), Some(" .a "));
    assert_eq!(strip("  ${.a}\n"), Some(".a"));
    assert_eq!(strip(".a"), None);
    assert_eq!(strip("x ${ .a }"), None);
    assert_eq!(strip("${ .a"), None);
}

#[test]
fn syntax_errors_have_offsets() {
    let e = check_syntax(".a | ]").expect_err("must fail");
    assert_eq!((e.kind, e.offset), (ExprErrorKind::Syntax, Some(5)));
    let e = check_syntax("[1, 2").expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Syntax);
    assert!(e.offset.is_some());
    let e = check_syntax("\"é\" | foo(1)").expect_err("must fail");
    assert_eq!((e.kind, e.offset), (ExprErrorKind::Syntax, Some(6)), "character offsets: {}", e.message);
    assert!(e.message.contains("foo/1"), "{}", e.message);
    assert_eq!(check_syntax("$anything | .a"), Ok(()));
    assert_eq!(check_syntax("def env: 1; env"), Ok(()), "an author's own `env` is fine");
}

#[test]
fn compile_field_follows_the_mode() {
    assert_eq!(Expr::compile_field("${ .a }", Mode::Strict, NAMES).map(|e| e.source().to_owned()), Ok(" .a ".into()));
    assert_eq!(Expr::compile_field(".a", Mode::Loose, NAMES).map(|e| e.source().to_owned()), Ok(".a".into()));
    let e = Expr::compile_field(".a", Mode::Strict, NAMES).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Syntax);
}

// ---- refused builtins: one test each ----

fn refused(source: &str, name: &str) {
    for e in [Expr::compile(source, NAMES).expect_err("must fail"), check_syntax(source).expect_err("must fail")] {
        assert_eq!(e.kind, ExprErrorKind::Refused, "`{source}`: {e:?}");
        assert!(e.message.contains(&format!("`{name}`")), "`{source}`: {}", e.message);
        assert!(e.offset.is_some(), "`{source}` has an offset");
    }
}

#[test]
fn refuses_env() {
    refused("env.HOME", "env");
}

#[test]
fn refuses_dollar_env() {
    refused("$ENV.HOME", "$ENV");
}

#[test]
fn refuses_now() {
    refused("now | todate", "now");
}

#[test]
fn refuses_halt() {
    refused("halt", "halt");
}

#[test]
fn refuses_halt_error() {
    refused("halt_error", "halt_error");
    refused("halt_error(1)", "halt_error");
}

#[test]
fn refuses_input() {
    refused("input", "input");
}

#[test]
fn refuses_inputs() {
    refused("[inputs]", "inputs");
}

#[test]
fn refuses_debug() {
    refused(".a | debug", "debug");
    refused("debug(\"x\")", "debug");
}

#[test]
fn refuses_stderr() {
    refused("stderr", "stderr");
}

#[test]
fn refuses_import() {
    refused("import \"x\" as y; .", "import");
    refused("import \"x\" as $y; .", "import");
}

#[test]
fn refuses_include() {
    refused("include \"x\"; .", "include");
}

#[test]
fn refuses_host_dependent_time() {
    refused("localtime", "localtime");
    refused("strflocaltime(\"%H\")", "strflocaltime");
}

#[test]
fn refuses_module_and_file_introspection() {
    refused("get_search_list", "get_search_list");
    refused("input_line_number", "input_line_number");
}

#[test]
fn builtin_snapshot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/jq-builtins.txt");
    let current: String = expr::builtins().iter().map(|(name, arity)| format!("{name}/{arity}\n")).collect();
    if std::env::var_os("BATON_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(path, &current).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != current {
        let old: Vec<&str> = committed.lines().collect();
        let new: Vec<&str> = current.lines().collect();
        let added: Vec<&&str> = new.iter().filter(|l| !old.contains(l)).collect();
        let removed: Vec<&&str> = old.iter().filter(|l| !new.contains(l)).collect();
        panic!(
            "the jq builtins an expression may call changed (a jaq upgrade?).\n\
             added: {added:?}\nremoved: {removed:?}\n\
             Review every added builtin: anything doing I/O, reading the clock, the environment or \
             the host, or stopping the process must be refused in workflows/src/expr/library.rs. \
             Then update the snapshot with\n  \
             BATON_UPDATE_SNAPSHOTS=1 cargo test -p baton-workflows --test expr builtin_snapshot\n\
             and commit tests/snapshots/jq-builtins.txt."
        );
    }
}

// ---- budgets and limits: every hostile expression ends quickly, with bounded memory ----

/// Runs `source` and expects it to stop on a budget or limit within a few seconds (debug build).
fn stopped(source: &str, input: Value) -> ExprError {
    let started = Instant::now();
    let e = run(source, input).expect_err(source);
    let took = started.elapsed();
    assert!(matches!(e.kind, ExprErrorKind::Budget | ExprErrorKind::Limit), "`{source}`: {e:?}");
    assert!(took < Duration::from_secs(20), "`{source}` took {took:?}");
    e
}

#[test]
fn infinite_recursion_runs_out_of_fuel() {
    assert_eq!(stopped("def f: f; f", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn non_tail_recursion_is_stopped() {
    stopped("def f: 1 + f; f", Value::Null);
}

#[test]
fn repeat_is_stopped() {
    assert_eq!(stopped("repeat(1)", Value::Null).kind, ExprErrorKind::Limit, "more outputs than allowed");
    assert_eq!(stopped("last(repeat(1))", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn a_long_native_range_is_stopped() {
    assert_eq!(stopped("last(range(1e18))", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn collecting_a_huge_range_is_stopped() {
    assert_eq!(stopped("[range(1e9)]", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn a_huge_reduce_is_stopped() {
    assert_eq!(stopped("reduce range(1e12) as $x (0; . + 1)", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn string_repetition_is_charged_before_allocating() {
    let started = Instant::now();
    assert_eq!(stopped("\"x\" * 1e9", Value::Null).kind, ExprErrorKind::Budget);
    assert_eq!(stopped("\"x\" * 1000000000", Value::Null).kind, ExprErrorKind::Budget);
    assert_eq!(stopped("\"x\" * 1000000000000000", Value::Null).kind, ExprErrorKind::Budget);
    assert_eq!(stopped("\"x\" * (1e15 | floor)", Value::Null).kind, ExprErrorKind::Budget);
    assert!(started.elapsed() < Duration::from_millis(500), "no allocation happened");
}

#[test]
fn doubling_strings_and_arrays_is_stopped() {
    stopped("reduce range(64) as $x (\"ab\"; . + .)", Value::Null);
    stopped("reduce range(64) as $x ([1]; . + .)", Value::Null);
    stopped("reduce range(64) as $x ([1]; [.[], .[]])", Value::Null);
    stopped("reduce range(64) as $x ({a: 1}; {a: ., b: .})", Value::Null);
    stopped("reduce range(40) as $x (\"ab\"; gsub(\"\"; \"xx\"))", Value::Null);
}

#[test]
fn adding_many_repeated_strings_is_stopped() {
    assert_eq!(stopped("[limit(1e8; repeat(\"aaaa\"))] | add", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn deep_recursion_never_overflows_the_stack() {
    let e = stopped("def f(n): if n == 0 then 0 else 1 + f(n - 1) end; f(1e7)", Value::Null);
    assert!(e.message.contains("stack") || e.message.contains("budget"), "{}", e.message);
}

#[test]
fn moderate_recursion_succeeds_on_a_thread_of_its_own() {
    assert_eq!(ok("def f(n): if n == 0 then 0 else 1 + f(n - 1) end; f(200)", Value::Null), json!(200));
}

#[test]
fn deeply_nested_values_are_refused() {
    let e = stopped("reduce range(100000) as $x (null; [.])", Value::Null);
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert!(e.message.contains("nested deeper"), "{}", e.message);
    stopped("reduce range(100000) as $x (null; {a: .})", Value::Null);
    stopped("[range(10000)] | reduce .[] as $x (.; [.])", Value::Null);
    stopped("(\"[\" * 100000) | fromjson", Value::Null);
    stopped("setpath([range(1000) | 0]; 1)", Value::Null);
    assert_eq!(ok("reduce range(100) as $x (null; [.]) | flatten", Value::Null), json!([null]));
}

#[test]
fn deep_input_is_refused() {
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let e = run(".", deep.clone()).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Limit);
    let e = compile("$context")
        .eval(&Value::Null, &Vars::new().with("context", deep), &Limits::default())
        .expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Limit);
}

#[test]
fn comparing_big_values_is_charged() {
    let limits = Limits { fuel: 2_000_000, ..Limits::default() };
    let e = compile("[range(100000)] as $a | reduce range(1000) as $i (0; if $a == $a then . + 1 else . end)")
        .eval(&Value::Null, &Vars::new(), &limits)
        .expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Budget);
}

#[test]
fn regex_on_big_strings_is_charged() {
    let limits = Limits { fuel: 1_000_000, ..Limits::default() };
    let e = compile(
        "(\"a\" * 100000) as $s | reduce range(100000) as $i (0; if ($s | test(\"(a|b)*c\")) then 1 else . end)",
    )
    .eval(&Value::Null, &Vars::new(), &limits)
    .expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Budget);
}

#[test]
fn try_cannot_catch_a_budget() {
    assert_eq!(stopped("try (def f: f; f) catch 1", Value::Null).kind, ExprErrorKind::Budget);
    assert_eq!(stopped("def f: try last(range(1e18)) catch f; f", Value::Null).kind, ExprErrorKind::Budget);
}

#[test]
fn output_count_and_size_are_limited() {
    let limits = Limits { max_outputs: 3, ..Limits::default() };
    let e = compile("range(4)").eval(&Value::Null, &Vars::new(), &limits).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Limit);
    assert_eq!(compile("range(3)").eval(&Value::Null, &Vars::new(), &limits), Ok(json!([0, 1, 2])));
    let limits = Limits { max_output_bytes: 100, ..Limits::default() };
    let e = compile("\"x\" * 200").eval(&Value::Null, &Vars::new(), &limits).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Limit);
}

#[test]
fn source_length_is_limited() {
    let limits = Limits { max_source_chars: 10, ..Limits::default() };
    let e = Expr::compile_with(".a + .b + .c", NAMES, &limits).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Limit);
    let nested = format!("{}.{}", "(".repeat(4000), ")".repeat(4000));
    assert_eq!(check_syntax(&nested), Ok(()), "deep nesting in the source is parsed on a big stack");
}

#[test]
fn the_budget_is_deterministic() {
    let source = "[range(10000)] | map(. * 2) | add";
    let limits = Limits { fuel: 15_000, ..Limits::default() };
    let e = compile(source);
    let first = e.eval(&Value::Null, &Vars::new(), &limits);
    for _ in 0..3 {
        assert_eq!(e.eval(&Value::Null, &Vars::new(), &limits), first);
    }
    // and the boundary is sharp: find it, then check one unit less fails and the boundary passes
    let mut lo = 1u64;
    let mut hi = 1_000_000u64;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if e.eval(&Value::Null, &Vars::new(), &Limits { fuel: mid, ..Limits::default() }).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    for _ in 0..3 {
        assert!(e.eval(&Value::Null, &Vars::new(), &Limits { fuel: lo, ..Limits::default() }).is_ok());
        let e =
            e.eval(&Value::Null, &Vars::new(), &Limits { fuel: lo - 1, ..Limits::default() }).expect_err("must fail");
        assert_eq!(e.kind, ExprErrorKind::Budget);
    }
}

// ---- templates ----

#[test]
fn templates_replace_expression_strings() {
    let t = Template::compile(
        &json!({"a": "${ .x }", "b": ["lit", "${ $context.n + 1 }"], "${ .x }": "keys stay", "c": 3}),
        Mode::Strict,
        NAMES,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!t.is_constant());
    assert!(t.uses("context"));
    let vars = Vars::new().with("context", json!({"n": 1}));
    assert_eq!(
        t.eval(&json!({"x": "X"}), &vars, &Limits::default()),
        Ok(json!({"a": "X", "b": ["lit", 2], "${ .x }": "keys stay", "c": 3}))
    );
    let t = Template::compile(&json!({"a": [1, "two"]}), Mode::Strict, NAMES).unwrap_or_else(|e| panic!("{e}"));
    assert!(t.is_constant());
    assert_eq!(t.eval(&Value::Null, &Vars::new(), &Limits::default()), Ok(json!({"a": [1, "two"]})));
}

#[test]
fn template_errors_point_at_the_string() {
    let e = Template::compile(&json!({"a": [1, {"b/c": "${ .x | ] }"}]}), Mode::Strict, NAMES).expect_err("must fail");
    assert_eq!(e.pointer, "/a/1/b~1c");
    assert_eq!(e.error.kind, ExprErrorKind::Syntax);
    let e = Template::compile(&json!("${ env }"), Mode::Loose, NAMES).expect_err("must fail");
    assert_eq!((e.pointer.as_str(), e.error.kind), ("", ExprErrorKind::Refused));
}

#[test]
fn loose_templates_fall_back_to_their_text() {
    let t = Template::compile(&json!(["${ .a | ] }", "${ error(\"x\") }", "${ .a }"]), Mode::Loose, NAMES)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        t.eval(&json!({"a": 1}), &Vars::new(), &Limits::default()),
        Ok(json!(["${ .a | ] }", "${ error(\"x\") }", 1]))
    );
    let t = Template::compile(&json!(["${ last(range(1e18)) }"]), Mode::Loose, NAMES).unwrap_or_else(|e| panic!("{e}"));
    let e = t.eval(&Value::Null, &Vars::new(), &Limits::default()).expect_err("must fail");
    assert_eq!(e.kind, ExprErrorKind::Budget, "budgets are never swallowed");
}

#[test]
fn template_outputs_share_the_size_limit() {
    let t = Template::compile(&json!(["${ \"x\" * 60 }", "${ \"y\" * 60 }"]), Mode::Strict, NAMES)
        .unwrap_or_else(|e| panic!("{e}"));
    let limits = Limits { max_output_bytes: 100, ..Limits::default() };
    assert_eq!(t.eval(&Value::Null, &Vars::new(), &limits).expect_err("must fail").kind, ExprErrorKind::Limit);
}

// ---- secrets ----

#[test]
fn error_messages_never_show_secrets() {
    let secrets = json!({"db": {"password": "hunter2-pw"}});
    let vars = Vars::new().with("secrets", secrets.clone());
    for source in [
        "$secrets.db.password | error",
        "$secrets.db.password + 1",
        "error({pw: $secrets.db.password})",
        "$secrets.db | .password | .[0]",
    ] {
        let e = compile(source).eval(&Value::Null, &vars, &Limits::default()).expect_err("must fail");
        assert!(!e.message.contains("hunter2"), "`{source}` leaked: {}", e.message);
        assert!(e.message.contains("***"), "`{source}`: {}", e.message);
    }
    let t = Template::compile(&json!({"a": "${ $secrets.db.password | tonumber }"}), Mode::Strict, NAMES)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = t.eval(&Value::Null, &vars, &Limits::default()).expect_err("must fail");
    assert!(!e.message.contains("hunter2"), "{}", e.message);
    // the value itself is the interpreter's to mask before it is recorded
    let out = compile("{auth: \"Basic \\($secrets.db.password)\"}").eval(&Value::Null, &vars, &Limits::default());
    assert_eq!(out.map(|v| mask(&v, &secrets)), Ok(json!({"auth": "Basic ***"})));
}

// ---- cost ----

/// Run with `--ignored --nocapture` in release to see the figures.
#[test]
#[ignore = "a measurement, not a check"]
fn eval_cost() {
    let input = json!({"a": {"b": 1}, "x": "y", "items": [1, 2, 3]});
    let vars = Vars::new().with("context", json!({"k": "v"}));
    let limits = Limits::default();
    for source in [".a.b + 1", ".x == \"y\"", "$context.k", "[.items[] | select(. > 1)]"] {
        let e = compile(source);
        let n = 100_000u32;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(e.eval(&input, &vars, &limits).ok());
        }
        eprintln!("{source:32} {:?} per evaluation", started.elapsed() / n);
    }
    let started = Instant::now();
    let e = compile("last(range(1e18))");
    let _ = e.eval(&Value::Null, &Vars::new(), &limits);
    eprintln!("exhausting the default fuel ({}) took {:?}", limits.fuel, started.elapsed());
    let started = Instant::now();
    let _ = Expr::compile("map(select(.a > 1)) | sort_by(.b) | .[0]", NAMES);
    eprintln!("compiling took {:?}", started.elapsed());
}
