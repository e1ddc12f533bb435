//! The diagrams of a definition: Mermaid edges follow the DSL's flow rules, composites become
//! subgraphs, human tasks and SLAs show, labels are escaped, the SVG is well-formed XML, the
//! output is deterministic, and every spec example that loads renders.

use std::path::Path;

use baton_workflows::diagram::{mermaid, svg};
use baton_workflows::model::Program;
use baton_workflows::run::load;

fn program(name: &str, body: &str) -> Program {
    let source = format!("document:\n  dsl: '1.0.3'\n  namespace: test\n  name: {name}\n  version: '1.0.0'\n{body}");
    load(&source, "test.yaml").unwrap_or_else(|e| panic!("the definition loads: {e}"))
}

/// The Mermaid edges as `(from, arrow, label, to)`.
fn edges(mermaid: &str) -> Vec<(String, String, String, String)> {
    mermaid
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            let (from, rest) = line.split_once(' ')?;
            let arrow = ["-->", "-.->"].into_iter().find(|arrow| rest.starts_with(arrow))?;
            let rest = &rest[arrow.len()..];
            let (label, to) = match rest.strip_prefix("|\"") {
                Some(labelled) => labelled.split_once("\"| ")?,
                None => ("", rest.trim()),
            };
            Some((from.to_owned(), arrow.to_owned(), label.to_owned(), to.to_owned()))
        })
        .collect()
}

fn has_edge(mermaid: &str, from: &str, to: &str) -> bool {
    edges(mermaid).iter().any(|(f, _, _, t)| f == from && t == to)
}

fn labelled(mermaid: &str, from: &str) -> Vec<(String, String)> {
    edges(mermaid).into_iter().filter(|(f, ..)| f == from).map(|(_, _, label, to)| (label, to)).collect()
}

/// A well-formedness check: tags balance, attributes are quoted, every `&` starts an entity,
/// and no `<` or `>` stands alone in text.
fn assert_well_formed(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('>').unwrap_or_else(|| panic!("an unclosed tag: {after:.60}"));
        let tag = &after[..close];
        assert!(!tag.contains('<'), "a `<` inside a tag: {tag}");
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
        } else if !tag.starts_with('?') && !tag.starts_with('!') {
            let name: String = tag.chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
            assert!(!name.is_empty(), "a tag without a name: <{tag}>");
            check_attributes(tag);
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &after[close + 1..];
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert_eq!(roots, 1, "one root element");
}

fn check_text(text: &str) {
    assert!(!text.contains('>'), "a bare `>` in text: {text}");
    for (at, _) in text.match_indices('&') {
        let entity = &text[at..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| entity.starts_with(e)),
            "a bare `&`: {entity:.20}"
        );
    }
}

fn check_attributes(tag: &str) {
    let mut inside = false;
    let mut value = String::new();
    for c in tag.chars() {
        match (inside, c) {
            (false, '"') => inside = true,
            (true, '"') => {
                check_text(&value);
                value.clear();
                inside = false;
            }
            (true, c) => value.push(c),
            _ => {}
        }
    }
}

#[test]
fn a_linear_flow_goes_from_start_through_each_task_to_end() {
    let p = program("linear", "do:\n  - a: { set: { x: 1 } }\n  - b: { set: { y: 2 } }\n");
    let m = mermaid(&p);
    assert!(m.starts_with("flowchart TD\n"), "{m}");
    assert_eq!(
        edges(&m).iter().map(|(f, a, _, t)| format!("{f} {a} {t}")).collect::<Vec<_>>(),
        ["wf_start --> t_do_0_a", "t_do_0_a --> t_do_1_b", "t_do_1_b --> wf_end"],
        "{m}"
    );
    assert!(m.contains("t_do_0_a[\"a<br/>set x\"]"), "{m}");
}

#[test]
fn then_end_and_jumps_follow_the_flow_rules() {
    let p = program(
        "jumps",
        r#"do:
  - a: { set: { x: 1 }, then: c }
  - b: { set: { x: 2 } }
  - c: { set: { x: 3 }, then: end }
  - d: { set: { x: 4 }, then: b }
  - inner:
      do:
        - leave: { set: { x: 5 }, then: exit }
        - skipped: { set: { x: 6 } }
  - last: { set: { x: 7 }, then: continue }
"#,
    );
    let m = mermaid(&p);
    assert!(has_edge(&m, "t_do_0_a", "t_do_2_c"), "then: c jumps: {m}");
    assert!(!has_edge(&m, "t_do_0_a", "t_do_1_b"), "a jump replaces the default: {m}");
    assert!(has_edge(&m, "t_do_1_b", "t_do_2_c"), "the default is the next task: {m}");
    assert!(has_edge(&m, "t_do_2_c", "wf_end"), "then: end: {m}");
    assert!(!has_edge(&m, "t_do_2_c", "t_do_3_d"), "{m}");
    assert!(has_edge(&m, "t_do_3_d", "t_do_1_b"), "a jump back: {m}");
    assert!(has_edge(&m, "t_do_4_inner", "t_do_4_inner_do_0_leave"), "a do enters its list: {m}");
    assert!(has_edge(&m, "t_do_4_inner_do_0_leave", "t_do_5_last"), "then: exit leaves the do: {m}");
    assert!(has_edge(&m, "t_do_4_inner_do_1_skipped", "t_do_5_last"), "the end of a do continues after it: {m}");
    assert!(has_edge(&m, "t_do_5_last", "wf_end"), "then: continue at the end: {m}");
}

#[test]
fn a_switch_is_a_decision_with_one_labelled_edge_per_case() {
    let p = program(
        "switch",
        r#"do:
  - route:
      switch:
        - electronic: { when: '.orderType == "electronic"', then: digital }
        - physical: { when: '${ .orderType == "physical" and .weight > 10 and .destination != "somewhere far" }', then: parcel }
        - default: { then: unknown }
  - digital: { set: { how: email }, then: end }
  - parcel: { set: { how: post }, then: end }
  - unknown: { set: { how: none } }
"#,
    );
    let m = mermaid(&p);
    assert!(m.contains("t_do_0_route{\"route<br/>switch\"}"), "a decision node: {m}");
    let out = labelled(&m, "t_do_0_route");
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], ("electronic: .orderType == #quot;electronic#quot;".to_owned(), "t_do_1_digital".to_owned()));
    assert!(out[1].0.starts_with("physical: .orderType =="), "{out:?}");
    assert!(out[1].0.ends_with('…') && out[1].0.chars().count() < 80, "long conditions are shortened: {out:?}");
    assert_eq!(out[1].1, "t_do_2_parcel");
    assert_eq!(out[2], ("default".to_owned(), "t_do_3_unknown".to_owned()));

    // Without a default case, no match goes on with the next task.
    let p = program(
        "fallthrough",
        "do:\n  - check:\n      switch:\n        - big: { when: '.n > 10', then: end }\n  - small: { set: { n: 0 } }\n",
    );
    let out = labelled(&mermaid(&p), "t_do_0_check");
    assert_eq!(
        out,
        [("big: .n #gt; 10".to_owned(), "wf_end".to_owned()), ("no match".to_owned(), "t_do_1_small".to_owned())]
    );
}

const NESTED: &str = r#"do:
  - loop:
      for: { each: pet, in: .pets }
      do:
        - check: { set: { checked: true } }
  - both:
      fork:
        branches:
          - left:
              do:
                - l1: { set: { side: left } }
          - right: { set: { side: right } }
  - guarded:
      try:
        - risky:
            call: http
            with: { method: get, endpoint: 'https://pets.example/pets' }
      catch:
        errors:
          with: { type: https://serverlessworkflow.io/spec/1.0.0/errors/communication }
        retry: { delay: { seconds: 1 }, limit: { attempt: { count: 3 } } }
        do:
          - recover: { set: { recovered: true } }
  - after: { set: { done: true } }
"#;

#[test]
fn for_fork_and_try_are_subgraphs_with_the_catch_dashed() {
    let p = program("nested", NESTED);
    let m = mermaid(&p);
    for subgraph in [
        "subgraph s_do_0_loop [\"loop · for\"]",
        "subgraph s_do_1_both [\"both · fork\"]",
        "subgraph s_do_1_both_fork_branches_0_left [\"left · do\"]",
        "subgraph b_do_1_both_fork_branches_1_right [\"branch\"]",
        "subgraph s_do_2_guarded [\"guarded · try\"]",
        "subgraph c_do_2_guarded [\"catch\"]",
    ] {
        assert!(m.contains(subgraph), "{subgraph}: {m}");
    }
    assert_eq!(m.matches("subgraph ").count(), m.lines().filter(|l| l.trim() == "end").count(), "{m}");

    // The loop: into the body, back to the head, out when done.
    assert!(labelled(&m, "t_do_0_loop").contains(&("each".to_owned(), "t_do_0_loop_do_0_check".to_owned())));
    assert!(has_edge(&m, "t_do_0_loop_do_0_check", "t_do_0_loop"), "{m}");
    assert!(labelled(&m, "t_do_0_loop").contains(&("done".to_owned(), "t_do_1_both".to_owned())));
    // The fork: to each branch, each branch to the join, the join on.
    assert!(has_edge(&m, "t_do_1_both", "t_do_1_both_fork_branches_0_left"), "{m}");
    assert!(has_edge(&m, "t_do_1_both", "t_do_1_both_fork_branches_1_right"), "{m}");
    assert!(has_edge(&m, "t_do_1_both_fork_branches_0_left_do_0_l1", "j_do_1_both"), "{m}");
    assert!(has_edge(&m, "t_do_1_both_fork_branches_1_right", "j_do_1_both"), "{m}");
    assert!(has_edge(&m, "j_do_1_both", "t_do_2_guarded"), "{m}");
    // The try: its body, and the catch as a dashed edge to the handler; both go on after it.
    assert!(has_edge(&m, "t_do_2_guarded_try_0_risky", "t_do_3_after"), "{m}");
    let catch: Vec<_> = edges(&m).into_iter().filter(|(_, arrow, ..)| arrow == "-.->").collect();
    assert_eq!(catch.len(), 1, "{catch:?}");
    let (from, _, label, to) = &catch[0];
    assert_eq!((from.as_str(), to.as_str()), ("t_do_2_guarded", "t_do_2_guarded_catch_do_0_recover"));
    assert_eq!(label, "catch · communication · retry up to 3");
    assert!(has_edge(&m, "t_do_2_guarded_catch_do_0_recover", "t_do_3_after"), "{m}");
    assert!(m.contains("style c_do_2_guarded stroke-dasharray"), "the catch frame is dashed: {m}");
    assert!(m.contains("GET https://pets.example/pets"), "an http call shows its method and endpoint: {m}");
}

const HUMAN: &str = r#"do:
  - review:
      call: humanTask
      with:
        title: Grant the administrator rights
        assign: { role: it }
        outcomes: [approve, reject]
      sla:
        within: PT8H
        escalate:
          - after: 80%
            do:
              - remind: { call: notify, with: { to: assignee, template: reminder } }
  - computed:
      call: humanTask
      with:
        title: ${ "Promote \(.user)" }
        assign: { users: [maria, tom] }
        outcomes: [yes, no]
"#;

#[test]
fn a_human_task_shows_its_title_and_outcomes() {
    let p = program("human", HUMAN);
    let m = mermaid(&p);
    assert!(
        m.contains("t_do_0_review([\"review<br/>call humanTask<br/>#quot;Grant the administrator rights#quot;<br/>outcomes: approve / reject<br/>assign: role it<br/>⏱ SLA PT8H\"])"),
        "{m}"
    );
    assert!(m.contains("class t_do_0_review,t_do_1_computed human"), "{m}");
    assert!(!m.contains("Promote"), "an expression title is not shown: {m}");
    assert!(m.contains("outcomes: yes / no"), "{m}");
    let s = svg(&p);
    assert_eq!(s.matches("<title>human task</title>").count(), 2, "a person badges each human task: {s}");
    assert!(s.contains("&quot;Grant the administrator rights&quot;"), "{s}");
    assert!(s.contains("outcomes: approve / reject"), "{s}");
    assert!(s.contains("rx=\"14\""), "human tasks are rounded: {s}");
}

#[test]
fn an_sla_is_marked_with_its_escalations() {
    let p = program("sla", HUMAN);
    let m = mermaid(&p);
    assert!(m.contains("⏱ SLA PT8H"), "{m}");
    assert!(m.contains("class t_do_0_review sla"), "{m}");
    assert!(m.contains("subgraph e0_do_0_review [\"escalation at 80#37;\"]"), "{m}");
    assert!(
        edges(&m).iter().any(|(f, a, l, t)| f == "t_do_0_review"
            && a == "-.->"
            && l == "SLA 80#37;"
            && t == "t_do_0_review_sla_escalate_0_do_0_remind"),
        "{m}"
    );
    let s = svg(&p);
    assert!(s.contains(">SLA PT8H<"), "{s}");
    assert_eq!(s.matches("<title>SLA</title>").count(), 1, "a clock badges the task: {s}");

    let p = program("workflow-sla", "sla:\n  within: { hours: 2 }\ndo:\n  - wait: { wait: PT30M }\n");
    let m = mermaid(&p);
    assert!(m.contains("wf_start((\"start<br/>⏱ SLA PT2H\"))"), "the workflow's SLA is on its start: {m}");
    assert!(m.contains("t_do_0_wait[\"wait<br/>wait PT30M\"]"), "{m}");
}

const AWKWARD: &str = r#"do:
  - 'say "hi" [now] {x} <&> #1 | (a);':
      call: humanTask
      with:
        title: 'Check "quotes" [brackets] <tags> & #hash %% `tick`'
        assign: { role: it }
        outcomes: ['<ok>', 'no & never']
"#;

#[test]
fn awkward_text_is_escaped_in_both_outputs() {
    let p = program("awkward", AWKWARD);
    let m = mermaid(&p);
    let label = m.lines().find(|l| l.trim_start().starts_with("t_do_0_")).unwrap_or_else(|| panic!("the task: {m}"));
    let id = label.trim_start().split('(').next().unwrap_or_default();
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a safe id: {id}");
    let inside = label.split_once("([\"").map(|(_, l)| l.trim_end_matches("\"])")).unwrap_or_default();
    // Entity codes end in `;`, so a `;` of the text shows as `#59;`.
    assert!(inside.contains("#40;a#41;#59;"), "{inside}");
    for raw in ['"', '[', ']', '{', '}', '<', '>', '|', '(', ')', '`', '%'] {
        let unescaped = inside.replace("<br/>", "").replace("#quot;", "").contains(raw);
        assert!(!unescaped, "`{raw}` is escaped in {inside}");
    }
    assert!(inside.contains("say #quot;hi#quot; #91;now#93; #123;x#125; #lt;#amp;#gt; #35;1"), "{inside}");
    assert!(inside.contains("#lt;ok#gt; / no #amp; never"), "{inside}");

    let s = svg(&p);
    assert_well_formed(&s);
    assert!(s.contains("say &quot;hi&quot; [now] {x} &lt;&amp;&gt; #1"), "{s}");
    assert!(s.contains("Check &quot;quotes&quot; [brackets] &lt;tags&gt; &amp; #hash"), "{s}");
}

#[test]
fn the_svg_is_well_formed_and_names_every_task() {
    let p = program("nested", NESTED);
    let s = svg(&p);
    assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{s}");
    assert_well_formed(&s);
    assert!(s.contains("<title>test/nested@1.0.0</title>"), "{s}");
    assert!(s.contains("<marker id=\"baton-arrow\""), "{s}");
    assert!(s.contains("<polygon") || !s.contains("switch"), "decisions are diamonds");
    for name in ["loop", "check", "both", "left", "l1", "right", "guarded", "risky", "recover", "after"] {
        assert!(s.contains(&format!(">{name}<")) || s.contains(&format!(">{name} · ")), "{name} in {s}");
    }
    let size = |attribute: &str| -> u32 {
        let at = s.find(&format!("{attribute}=\"")).unwrap_or_else(|| panic!("{attribute}")) + attribute.len() + 2;
        s[at..].split('"').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let (width, height) = (size("width"), size("height"));
    assert!(width > 200 && height > 400, "{width}x{height}");
    assert!(s.contains(&format!("viewBox=\"0 0 {width} {height}\"")), "{s}");

    let decision = program(
        "switch",
        "do:\n  - pick:\n      switch:\n        - fine: { when: .ok, then: end }\n  - other: { set: { ok: false } }\n",
    );
    let s = svg(&decision);
    assert_well_formed(&s);
    assert!(s.contains("<polygon"), "a switch is a diamond: {s}");
}

#[test]
fn the_same_definition_draws_the_same_bytes() {
    for (name, body) in [("nested", NESTED), ("human", HUMAN), ("awkward", AWKWARD)] {
        let (a, b) = (program(name, body), program(name, body));
        assert_eq!(mermaid(&a), mermaid(&b));
        assert_eq!(svg(&a), svg(&b));
    }
}

#[test]
fn every_spec_example_that_loads_renders() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/serverless-workflow/examples");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: the spec examples are not next to this repository ({})", dir.display());
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut rendered = 0;
    for path in &files {
        let source = std::fs::read_to_string(path).unwrap_or_default();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Ok(p) = load(&source, name) else { continue };
        let m = mermaid(&p);
        assert!(m.starts_with("flowchart TD\n") && m.contains("wf_start") && m.contains("wf_end"), "{name}: {m}");
        let s = svg(&p);
        assert_well_formed(&s);
        for node in &p.nodes {
            if !node.reference.starts_with("/use/") {
                let shown: String = node.name.chars().take(20).collect();
                let escaped = shown.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                assert!(s.contains(&escaped), "{name}: {} is drawn", node.name);
            }
        }
        rendered += 1;
    }
    assert!(rendered >= 40, "most examples load and render ({rendered} of {})", files.len());
}
