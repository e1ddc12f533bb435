//! `baton directory`: import the organisation from YAML, show a person, list people.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use baton_engine::Store;
use baton_engine::directory::{Department, Group, Organisation, PeopleQuery, Person};
use baton_workflows::parse::{ParseLimits, Parsed, Span, parse};
use clap::Subcommand;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::{store_url, write_out};

#[derive(Debug, clap::Args)]
pub struct DirectoryArgs {
    #[command(subcommand)]
    command: DirectoryCommand,
}

#[derive(Debug, clap::Args)]
struct StoreArg {
    /// The SQLite store: a path or sqlite:///path/to/baton.db.
    #[arg(long, env = "BATON_STORE", default_value = "baton.db")]
    db: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Add or replace the people, departments and groups of a YAML (or JSON) file; those the
    /// file does not name are kept. Nothing is imported when the file has a problem.
    Import {
        file: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Only check the file; import nothing.
        #[arg(long)]
        check: bool,
    },
    /// Show one person, and whom they escalate to.
    Show {
        id: String,
        #[command(flatten)]
        store: StoreArg,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List active people: all, or those holding a role, in a department, in a group.
    List {
        /// Holders of this role (with --department: only grants in that department).
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        department: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
}

pub async fn run(args: DirectoryArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DirectoryCommand::Import { file, store, check } => import(&file, &store.db, check).await,
        DirectoryCommand::Show { id, store, output } => show(&id, &existing(&store.db).await?, output).await,
        DirectoryCommand::List { role, department, group, store, output } => {
            let query = PeopleQuery { role, department, group, after: None, limit: PeopleQuery::MAX_LIMIT };
            list(query, &existing(&store.db).await?, output).await
        }
    }
}

/// Opens a store that must already exist (reading never creates an empty one).
async fn existing(url: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    if !path.contains("://") && !Path::new(path).exists() {
        anyhow::bail!("there is no store at {path}; import a directory first (baton directory import FILE --db {url})");
    }
    store_url::open(url).await
}

/// Reads and checks a directory file. Its problems are printed with their positions (stderr)
/// and give `None`.
pub fn load_organisation(file: &Path) -> anyhow::Result<Option<Organisation>> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
    let parsed = match parse(&name, &bytes, &ParseLimits::default()) {
        Ok(parsed) => parsed,
        Err(diagnostics) => {
            let text = String::from_utf8_lossy(&bytes);
            for d in &diagnostics {
                eprint!("{}", d.render(&text));
            }
            return Ok(None);
        }
    };
    let organisation = match read_organisation(&parsed) {
        Ok(organisation) => organisation,
        Err(problems) => {
            report(&name, &parsed.text, &problems);
            return Ok(None);
        }
    };
    if let Err(problems) = organisation.check() {
        let located: Vec<(Span, String)> =
            problems.into_iter().map(|p| (locate(&parsed, &organisation, &p), p)).collect();
        report(&name, &parsed.text, &located);
        return Ok(None);
    }
    Ok(Some(organisation))
}

async fn import(file: &Path, url: &str, check: bool) -> anyhow::Result<ExitCode> {
    let name = file.display().to_string();
    let Some(organisation) = load_organisation(file)? else { return Ok(ExitCode::FAILURE) };
    let count = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let counts = format!(
        "{}, {}, {}",
        count(organisation.people.len(), "person", "people"),
        count(organisation.departments.len(), "department", "departments"),
        count(organisation.groups.len(), "group", "groups")
    );
    if check {
        write_out(&format!("{name}: no problems ({counts})"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = store_url::open(url).await?;
    let left_out = baton_engine::erasure::import_directory(store.as_ref(), &organisation)
        .await
        .with_context(|| format!("cannot import into {url}"))?;
    write_out(&format!("imported {counts} from {name} into {url}"))?;
    if !left_out.is_empty() {
        write_out(&format!(
            "left as erased (their data was erased on request; add them again one by one if they return): {}",
            left_out.join(", ")
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints each problem with its position and source line (stderr); exit code 1.
fn report(file: &str, text: &str, problems: &[(Span, String)]) -> ExitCode {
    for (span, message) in problems {
        let mut out = format!("error: {message}\n  --> {file}:{}:{}\n", span.line, span.column);
        if let Some(line) = span.line.checked_sub(1).and_then(|i| text.lines().nth(i)) {
            let number = span.line.to_string();
            let gutter = " ".repeat(number.len());
            let width = line.chars().count();
            let start = span.column.saturating_sub(1).min(width);
            let end = if span.end_line == span.line { span.end_column.saturating_sub(1) } else { width };
            let carets = end.clamp(start, width).saturating_sub(start).max(1);
            out.push_str(&format!(
                "{gutter} |\n{number} | {line}\n{gutter} | {}{}\n",
                " ".repeat(start),
                "^".repeat(carets)
            ));
        }
        eprint!("{out}");
    }
    eprintln!("{file}: {} problem{}; nothing imported", problems.len(), if problems.len() == 1 { "" } else { "s" });
    ExitCode::FAILURE
}

const PERSON_FIELDS: &[&str] =
    &["id", "name", "email", "phone", "locale", "department", "manager", "roles", "groups", "preferences", "active"];
const PREFERENCE_FIELDS: &[&str] = &["channels", "quietHours", "digest"];
const DEPARTMENT_FIELDS: &[&str] = &["id", "name", "parent", "head"];
const GROUP_FIELDS: &[&str] = &["id", "name"];

/// The organisation in the file, or every problem of its shape with where it is.
fn read_organisation(parsed: &Parsed) -> Result<Organisation, Vec<(Span, String)>> {
    let spans = &parsed.spans;
    let mut problems = Vec::new();
    let Value::Object(top) = &parsed.value else {
        return Err(vec![(spans.nearest(""), "expected a mapping with departments, groups and people".into())]);
    };
    for key in top.keys().filter(|k| !["departments", "groups", "people"].contains(&k.as_str())) {
        problems.push((
            spans.label(&pointer(&["", key])).unwrap_or_else(|| spans.nearest("")),
            format!("unknown section '{key}', expected departments, groups or people"),
        ));
    }
    let departments =
        section::<Department>(parsed, top, ("departments", "department"), DEPARTMENT_FIELDS, &mut problems);
    let groups = section::<Group>(parsed, top, ("groups", "group"), GROUP_FIELDS, &mut problems);
    let people = section::<Person>(parsed, top, ("people", "person"), PERSON_FIELDS, &mut problems);
    if let Some(Value::Array(items)) = top.get("people") {
        for (index, item) in items.iter().enumerate() {
            if let Some(Value::Object(prefs)) = item.get("preferences") {
                let at = format!("/people/{index}/preferences");
                unknown_fields(parsed, &at, prefs, PREFERENCE_FIELDS, "preference", &mut problems);
            }
        }
    }
    if problems.is_empty() { Ok(Organisation { departments, groups, people }) } else { Err(problems) }
}

fn pointer(parts: &[&str]) -> String {
    parts.iter().map(|p| p.replace('~', "~0").replace('/', "~1")).collect::<Vec<_>>().join("/")
}

fn unknown_fields(
    parsed: &Parsed,
    at: &str,
    fields: &Map<String, Value>,
    known: &[&str],
    what: &str,
    problems: &mut Vec<(Span, String)>,
) {
    for key in fields.keys().filter(|k| !known.contains(&k.as_str())) {
        let here = format!("{at}/{}", pointer(&[key]));
        problems.push((
            parsed.spans.key(&here).unwrap_or_else(|| parsed.spans.nearest(at)),
            format!("unknown {what} field '{key}', expected one of {}", known.join(", ")),
        ));
    }
}

/// Reads one list of the file, item by item, pointing each problem at its field.
fn section<T: DeserializeOwned>(
    parsed: &Parsed,
    top: &Map<String, Value>,
    (name, singular): (&str, &str),
    known: &[&str],
    problems: &mut Vec<(Span, String)>,
) -> Vec<T> {
    let spans = &parsed.spans;
    let items = match top.get(name) {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            problems.push((spans.nearest(&format!("/{name}")), format!("{name}: expected a list")));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = format!("/{name}/{index}");
        let Value::Object(fields) = item else {
            problems.push((spans.nearest(&at), format!("{name}[{index}]: expected a mapping with an id")));
            continue;
        };
        unknown_fields(parsed, &at, fields, known, singular, problems);
        match serde_json::from_value::<T>(item.clone()) {
            Ok(value) => out.push(value),
            Err(error) => {
                // Find the field at fault by reading each one alone.
                let culprit = fields.iter().find_map(|(key, value)| {
                    if !known.contains(&key.as_str()) {
                        return None;
                    }
                    let alone = json!({ "id": "x", key.as_str(): value });
                    serde_json::from_value::<T>(alone).err().map(|e| (key, e))
                });
                let id = fields.get("id").and_then(Value::as_str).map_or(String::new(), |id| format!(" {id:?}"));
                match culprit {
                    Some((key, e)) => problems.push((
                        spans.value(&format!("{at}/{}", pointer(&[key]))).unwrap_or_else(|| spans.nearest(&at)),
                        format!("{singular}{id}: {key}: {e}"),
                    )),
                    None => problems.push((spans.nearest(&at), format!("{name}[{index}]{id}: {error}"))),
                }
            }
        }
    }
    out
}

/// Where a problem of [`Organisation::check`] is: the entity it names, and the field it is
/// about when that can be told from the text.
fn locate(parsed: &Parsed, organisation: &Organisation, problem: &str) -> Span {
    let quoted = |prefix: &str| {
        let rest = problem.strip_prefix(prefix)?;
        let end = rest.find('"')?;
        Some((rest[..end].to_owned(), rest[end + 1..].to_owned()))
    };
    let (section, index, rest) = if let Some((id, rest)) = quoted("person \"") {
        ("people", organisation.people.iter().rposition(|p| p.id == id), rest)
    } else if let Some((id, rest)) = quoted("department \"") {
        ("departments", organisation.departments.iter().rposition(|d| d.id == id), rest)
    } else {
        return parsed.spans.nearest("");
    };
    let Some(index) = index else { return parsed.spans.nearest(&format!("/{section}")) };
    let at = format!("/{section}/{index}");
    let field = [
        (": manager", "manager"),
        (": department", "department"),
        (": role", "roles"),
        (": group", "groups"),
        (": head", "head"),
        (": parent", "parent"),
        (" is its own ancestor", "parent"),
        (" is declared twice", "id"),
    ]
    .iter()
    .find(|(marker, _)| rest.starts_with(marker))
    .map(|(_, field)| *field);
    field
        .and_then(|f| parsed.spans.value(&format!("{at}/{f}")))
        .unwrap_or_else(|| parsed.spans.label(&at).unwrap_or_else(|| parsed.spans.nearest(&at)))
}

async fn show(id: &str, store: &std::sync::Arc<dyn Store>, output: Output) -> anyhow::Result<ExitCode> {
    let Some(person) = store.person(id).await? else {
        eprintln!("error: no person {id:?} in the directory");
        return Ok(ExitCode::FAILURE);
    };
    let escalates_to = store.manager_of(id).await?;
    if output == Output::Json {
        let mut value = serde_json::to_value(&person)?;
        value["escalatesTo"] = json!(escalates_to.as_ref().map(|p| &p.id));
        value["active"] = json!(person.active);
        write_out(&serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("id", person.id.clone()),
        ("name", person.name.clone()),
        ("email", person.email.clone().unwrap_or_default()),
        ("phone", person.phone.clone().unwrap_or_default()),
        ("locale", person.locale.clone().unwrap_or_default()),
        ("department", person.department.clone().unwrap_or_default()),
        ("manager", person.manager.clone().unwrap_or_default()),
        ("escalates to", escalates_to.map(|p| format!("{} ({})", p.id, p.name)).unwrap_or_default()),
        ("roles", roles(&person)),
        ("groups", person.groups.join(", ")),
    ];
    let prefs = &person.preferences;
    let off: Vec<&str> = prefs.channels.iter().filter(|(_, on)| !**on).map(|(c, _)| c.as_str()).collect();
    rows.push(("channels off", off.join(", ")));
    rows.push(("quiet hours", prefs.quiet_hours.clone().unwrap_or_default()));
    rows.push(("digest", prefs.digest.clone().unwrap_or_default()));
    rows.push(("active", if person.active { "yes" } else { "no" }.to_owned()));
    let text: String = rows
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(label, value)| format!("{label:<13}{value}\n"))
        .collect();
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}

fn roles(person: &Person) -> String {
    person
        .roles
        .iter()
        .map(|g| match &g.department {
            Some(d) => format!("{}@{d}", g.role),
            None => g.role.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn list(mut query: PeopleQuery, store: &std::sync::Arc<dyn Store>, output: Output) -> anyhow::Result<ExitCode> {
    let mut people = Vec::new();
    loop {
        let page = store.people(&query).await?;
        let full = page.len() >= query.effective_limit() as usize;
        query.after = page.last().map(|p| p.id.clone());
        people.extend(page);
        if !full {
            break;
        }
    }
    if output == Output::Json {
        write_out(&serde_json::to_string_pretty(&people)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if people.is_empty() {
        write_out("no people")?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = people
        .iter()
        .map(|p| {
            [
                p.id.clone(),
                p.name.clone(),
                p.email.clone().unwrap_or_default(),
                p.department.clone().unwrap_or_default(),
                roles(p),
                p.groups.join(", "),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "EMAIL", "DEPARTMENT", "ROLES", "GROUPS"].map(str::to_owned);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    write_out(&text)?;
    Ok(ExitCode::SUCCESS)
}
