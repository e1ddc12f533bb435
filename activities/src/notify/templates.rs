//! Notification templates: Handlebars text per template name and locale, global or belonging
//! to one definition, compiled when they are added.
//!
//! A template set is a mapping of template names to templates, as written under a definition's
//! `use.templates` or in the host's global templates:
//!
//! ```yaml
//! task-due-soon:
//!   channels: [inApp, email]
//!   en: { subject: "Task {{task.title}} is due soon", text: "Hello {{recipient.name}}", html: "<p>Hello {{recipient.name}}</p>" }
//!   fr: { subject: "La tâche {{task.title}} arrive à échéance", text: "Bonjour {{recipient.name}}" }
//! ```
//!
//! Every key but `channels` is a locale (a BCP 47 tag such as `en`, `fr` or `fr-BE`) with a
//! `subject` and a `text`, and optionally an `html` body. Rendering is strict: a variable the
//! data lacks is an error that names it. Only `html` bodies are HTML-escaped; subjects, text,
//! webhook and SMS bodies are written as they are. Partials and decorators are refused (a
//! template could otherwise pull in another definition's template).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use handlebars::template::TemplateElement;
use handlebars::{Handlebars, RenderErrorReason, Template};
use serde_json::Value;

use super::channels::CHANNELS;

/// Where a template belongs: to every definition, or to one (`ns/name@version`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Scope {
    Global,
    Definition(String),
}

/// A template that cannot be added or rendered, with where the problem is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// The template's name (empty when the whole set is malformed).
    pub template: String,
    pub locale: Option<String>,
    /// `subject`, `text`, `html` or `channels`.
    pub field: Option<String>,
    pub message: String,
}

impl TemplateError {
    fn new(template: &str, locale: Option<&str>, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            template: template.to_owned(),
            locale: locale.map(str::to_owned),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.template.is_empty() {
            f.write_str("templates")?;
        } else {
            write!(f, "template '{}'", self.template)?;
        }
        if let Some(locale) = &self.locale {
            write!(f, ", locale '{locale}'")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field '{field}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A message rendered for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The locale of the template that was used (after fallback).
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The fields of one locale, as names of compiled templates in the registries.
#[derive(Clone, Debug)]
struct LocaleEntry {
    subject: String,
    text: String,
    html: Option<String>,
}

#[derive(Clone, Debug)]
struct TemplateEntry {
    channels: Option<Vec<String>>,
    /// By locale tag as written; lookups compare case-insensitively.
    locales: BTreeMap<String, LocaleEntry>,
}

struct Inner {
    scopes: BTreeMap<Scope, BTreeMap<String, TemplateEntry>>,
    /// Subjects and text: nothing escaped.
    plain: Handlebars<'static>,
    /// HTML bodies: values HTML-escaped.
    html: Handlebars<'static>,
    next_id: u64,
}

/// Templates by scope, name and locale. Shared by the notify activity and the notifier; a host
/// adds a definition's templates when it deploys the definition.
pub struct Templates {
    inner: RwLock<Inner>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let names: BTreeMap<String, Vec<&String>> = inner
            .scopes
            .iter()
            .map(|(scope, templates)| {
                let scope = match scope {
                    Scope::Global => "global".to_owned(),
                    Scope::Definition(key) => key.clone(),
                };
                (scope, templates.keys().collect())
            })
            .collect();
        f.debug_struct("Templates").field("scopes", &names).finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// The name of the template that formats digests, looked up among the global templates.
pub const DIGEST_TEMPLATE: &str = "digest";

impl Templates {
    /// An empty set.
    pub fn new() -> Self {
        let mut plain = Handlebars::new();
        plain.set_strict_mode(true);
        plain.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        Self { inner: RwLock::new(Inner { scopes: BTreeMap::new(), plain, html, next_id: 0 }) }
    }

    /// A set holding `value`'s templates as global templates.
    pub fn from_value(value: &Value) -> Result<Self, TemplateError> {
        let templates = Self::new();
        templates.insert_global(value)?;
        Ok(templates)
    }

    /// Adds global templates (a mapping of names to templates); a name already there is
    /// replaced. Nothing is added when any template has a problem.
    pub fn insert_global(&self, value: &Value) -> Result<(), TemplateError> {
        self.insert(Scope::Global, value, false)
    }

    /// Sets the templates of the definition `key` (`ns/name@version`), replacing any it had
    /// (`null` leaves it none). Nothing changes when any template has a problem.
    pub fn insert_definition(&self, key: &str, value: &Value) -> Result<(), TemplateError> {
        self.insert(Scope::Definition(key.to_owned()), value, true)
    }

    /// Removes the templates of the definition `key`.
    pub fn remove_definition(&self, key: &str) {
        let mut inner = self.write();
        if let Some(old) = inner.scopes.remove(&Scope::Definition(key.to_owned())) {
            inner.unregister(old.values());
        }
    }

    /// Whether a template `name` is visible from `definition` (its own, then the global ones).
    pub fn contains(&self, definition: Option<&str>, name: &str) -> bool {
        let inner = self.read();
        inner.find(definition, name).is_some()
    }

    /// The template's default channels, if it declares them.
    pub fn channels(&self, definition: Option<&str>, name: &str) -> Option<Vec<String>> {
        let inner = self.read();
        inner.find(definition, name).and_then(|entry| entry.channels.clone())
    }

    /// Renders the template `name` seen from `definition` for a recipient whose locale is
    /// `locale`, falling back to its language, then `default_locale`, then the template's first
    /// locale (alphabetically). `Ok(None)` when there is no such template.
    pub fn render(
        &self,
        definition: Option<&str>,
        name: &str,
        locale: Option<&str>,
        default_locale: &str,
        data: &Value,
    ) -> Result<Option<Rendered>, TemplateError> {
        let inner = self.read();
        let Some(entry) = inner.find(definition, name) else { return Ok(None) };
        let Some((tag, fields)) = pick_locale(entry, locale, default_locale) else { return Ok(None) };
        let render = |registry: &Handlebars<'static>, field: &str, id: &str| {
            registry.render(id, data).map_err(|error| {
                TemplateError::new(name, Some(tag), Some(field), describe_render_error(error.reason()))
            })
        };
        Ok(Some(Rendered {
            locale: tag.to_owned(),
            subject: render(&inner.plain, "subject", &fields.subject)?,
            text: render(&inner.plain, "text", &fields.text)?,
            html: fields.html.as_deref().map(|id| render(&inner.html, "html", id)).transpose()?,
        }))
    }

    fn insert(&self, scope: Scope, value: &Value, replace_scope: bool) -> Result<(), TemplateError> {
        let parsed = parse_set(value)?;
        let mut inner = self.write();
        let mut entries = BTreeMap::new();
        for (name, template) in parsed {
            let mut locales = BTreeMap::new();
            for (tag, fields) in template.locales {
                let mut ids = Vec::with_capacity(3);
                for (field, compiled) in fields {
                    let id = format!("#{}", inner.next_id);
                    inner.next_id += 1;
                    let registry = if field == "html" { &mut inner.html } else { &mut inner.plain };
                    registry.register_template(&id, compiled);
                    ids.push((field, id));
                }
                let mut entry = LocaleEntry { subject: String::new(), text: String::new(), html: None };
                for (field, id) in ids {
                    match field {
                        "subject" => entry.subject = id,
                        "text" => entry.text = id,
                        _ => entry.html = Some(id),
                    }
                }
                locales.insert(tag, entry);
            }
            entries.insert(name, TemplateEntry { channels: template.channels, locales });
        }
        let old: Vec<TemplateEntry> = if replace_scope {
            inner.scopes.remove(&scope).map(|old| old.into_values().collect()).unwrap_or_default()
        } else {
            let existing = inner.scopes.entry(scope.clone()).or_default();
            entries.keys().filter_map(|name| existing.remove(name)).collect()
        };
        inner.unregister(old.iter());
        inner.scopes.entry(scope).or_default().extend(entries);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn find(&self, definition: Option<&str>, name: &str) -> Option<&TemplateEntry> {
        definition
            .and_then(|key| self.scopes.get(&Scope::Definition(key.to_owned())))
            .and_then(|templates| templates.get(name))
            .or_else(|| self.scopes.get(&Scope::Global).and_then(|templates| templates.get(name)))
    }

    fn unregister<'a>(&mut self, entries: impl Iterator<Item = &'a TemplateEntry>) {
        for entry in entries {
            for fields in entry.locales.values() {
                self.plain.unregister_template(&fields.subject);
                self.plain.unregister_template(&fields.text);
                if let Some(html) = &fields.html {
                    self.html.unregister_template(html);
                }
            }
        }
    }
}

/// The locale chain: exact tag, its language, the default locale, the first locale.
fn pick_locale<'a>(
    entry: &'a TemplateEntry,
    locale: Option<&str>,
    default_locale: &str,
) -> Option<(&'a str, &'a LocaleEntry)> {
    let find = |wanted: &str| {
        let wanted = normalise(wanted);
        entry.locales.iter().find(|(tag, _)| normalise(tag) == wanted).map(|(tag, fields)| (tag.as_str(), fields))
    };
    let mut candidates: Vec<String> = Vec::new();
    if let Some(locale) = locale.map(str::trim).filter(|l| !l.is_empty()) {
        candidates.push(locale.to_owned());
        let normal = normalise(locale);
        if let Some((language, _)) = normal.split_once('-') {
            candidates.push(language.to_owned());
        }
    }
    candidates.push(default_locale.to_owned());
    if let Some((language, _)) = normalise(default_locale).split_once('-') {
        candidates.push(language.to_owned());
    }
    candidates
        .iter()
        .find_map(|candidate| find(candidate))
        .or_else(|| entry.locales.iter().next().map(|(tag, fields)| (tag.as_str(), fields)))
}

/// `fr_BE` and `FR-be` compare equal to `fr-be`.
fn normalise(tag: &str) -> String {
    tag.trim().replace('_', "-").to_ascii_lowercase()
}

fn describe_render_error(reason: &RenderErrorReason) -> String {
    match reason {
        RenderErrorReason::MissingVariable(Some(path)) => {
            format!("the variable '{path}' is missing from the data (templates are strict)")
        }
        RenderErrorReason::MissingVariable(None) => "a variable is missing from the data (templates are strict)".into(),
        RenderErrorReason::HelperNotFound(name) => format!("there is no helper '{name}'"),
        other => other.to_string(),
    }
}

struct ParsedTemplate {
    channels: Option<Vec<String>>,
    /// Locale → (field, compiled template) in the order subject, text, html.
    locales: BTreeMap<String, Vec<(&'static str, Template)>>,
}

fn parse_set(value: &Value) -> Result<BTreeMap<String, ParsedTemplate>, TemplateError> {
    if value.is_null() {
        return Ok(BTreeMap::new());
    }
    let Value::Object(templates) = value else {
        return Err(TemplateError::new("", None, None, "expected a mapping of template names to templates"));
    };
    let mut parsed = BTreeMap::new();
    for (name, template) in templates {
        if name.trim().is_empty() {
            return Err(TemplateError::new(name, None, None, "a template name must not be empty"));
        }
        parsed.insert(name.clone(), parse_template(name, template)?);
    }
    Ok(parsed)
}

fn parse_template(name: &str, value: &Value) -> Result<ParsedTemplate, TemplateError> {
    let Value::Object(fields) = value else {
        return Err(TemplateError::new(name, None, None, "expected a mapping of locales (and channels)"));
    };
    let mut channels = None;
    let mut locales = BTreeMap::new();
    for (key, value) in fields {
        if key == "channels" {
            channels = Some(parse_channels(name, value)?);
            continue;
        }
        if !is_locale_tag(key) {
            return Err(TemplateError::new(
                name,
                Some(key),
                None,
                "expected a locale such as en, fr or fr-BE (letters, digits, '-')",
            ));
        }
        locales.insert(key.clone(), parse_locale(name, key, value)?);
    }
    if locales.is_empty() {
        return Err(TemplateError::new(name, None, None, "a template needs at least one locale (en: {subject, text})"));
    }
    Ok(ParsedTemplate { channels, locales })
}

fn parse_channels(name: &str, value: &Value) -> Result<Vec<String>, TemplateError> {
    let error = |message: String| TemplateError::new(name, None, Some("channels"), message);
    let Value::Array(items) = value else {
        return Err(error(format!("expected a list of channels ({})", CHANNELS.join(", "))));
    };
    let mut channels = Vec::new();
    for item in items {
        match item.as_str() {
            Some(channel) if CHANNELS.contains(&channel) => channels.push(channel.to_owned()),
            _ => return Err(error(format!("unknown channel {item}, expected one of {}", CHANNELS.join(", ")))),
        }
    }
    Ok(channels)
}

fn parse_locale(name: &str, tag: &str, value: &Value) -> Result<Vec<(&'static str, Template)>, TemplateError> {
    let Value::Object(fields) = value else {
        return Err(TemplateError::new(name, Some(tag), None, "expected a mapping with subject, text and html"));
    };
    if let Some(unknown) = fields.keys().find(|key| !["subject", "text", "html"].contains(&key.as_str())) {
        return Err(TemplateError::new(
            name,
            Some(tag),
            Some(unknown),
            "unknown field, expected subject, text or html",
        ));
    }
    let mut compiled = Vec::new();
    for field in ["subject", "text", "html"] {
        let source = match fields.get(field) {
            Some(Value::String(source)) => source,
            None if field == "html" => continue,
            None => return Err(TemplateError::new(name, Some(tag), Some(field), "missing")),
            Some(_) => return Err(TemplateError::new(name, Some(tag), Some(field), "expected a string")),
        };
        let template = Template::compile(source)
            .map_err(|error| TemplateError::new(name, Some(tag), Some(field), error.to_string()))?;
        if let Some(what) = forbidden(&template.elements) {
            return Err(TemplateError::new(name, Some(tag), Some(field), format!("{what} are not supported")));
        }
        compiled.push((field, template));
    }
    Ok(compiled)
}

/// Partials and decorators, anywhere in the template, blocks included.
fn forbidden(elements: &[TemplateElement]) -> Option<&'static str> {
    elements.iter().find_map(|element| match element {
        TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => Some("partials ({{> name}})"),
        TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => Some("decorators ({{* name}})"),
        TemplateElement::HelperBlock(helper) => helper
            .template
            .as_ref()
            .and_then(|t| forbidden(&t.elements))
            .or_else(|| helper.inverse.as_ref().and_then(|t| forbidden(&t.elements))),
        _ => None,
    })
}

fn is_locale_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && tag.starts_with(|c: char| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set() -> Templates {
        Templates::from_value(&json!({
            "due": {
                "channels": ["inApp", "email"],
                "en": { "subject": "Task {{task.title}} is due", "text": "Hello {{recipient.name}}", "html": "<p>{{task.title}}</p>" },
                "fr": { "subject": "La tâche {{task.title}}", "text": "Bonjour {{recipient.name}}" },
                "nl": { "subject": "Taak {{task.title}}", "text": "Hallo {{recipient.name}}" }
            }
        }))
        .expect("valid templates")
    }

    fn data() -> Value {
        json!({ "task": { "title": "A & <b>" }, "recipient": { "name": "Ana" } })
    }

    #[test]
    fn locales_fall_back_to_language_then_default_then_first() {
        let t = set();
        let pick = |locale: Option<&str>, default: &str| {
            t.render(None, "due", locale, default, &data()).expect("renders").expect("exists").locale
        };
        assert_eq!(pick(Some("fr-BE"), "en"), "fr");
        assert_eq!(pick(Some("nl_be"), "en"), "nl");
        assert_eq!(pick(Some("de"), "en"), "en");
        assert_eq!(pick(None, "nl"), "nl");
        assert_eq!(pick(Some("de"), "es"), "en", "the first locale, alphabetically");
    }

    #[test]
    fn only_html_is_escaped() {
        let rendered = set().render(None, "due", Some("en"), "en", &data()).expect("renders").expect("exists");
        assert_eq!(rendered.subject, "Task A & <b> is due");
        assert_eq!(rendered.html.as_deref(), Some("<p>A &amp; &lt;b&gt;</p>"));
    }

    #[test]
    fn strict_mode_names_the_missing_variable() {
        let error = set().render(None, "due", Some("fr"), "en", &json!({ "task": {} })).expect_err("strict");
        assert_eq!(error.locale.as_deref(), Some("fr"));
        assert_eq!(error.field.as_deref(), Some("subject"));
        assert!(error.to_string().contains("task.title"), "{error}");
    }

    #[test]
    fn bad_templates_name_template_locale_and_field() {
        let t = Templates::new();
        let error = t
            .insert_global(&json!({ "x": { "en": { "subject": "{{#if}}", "text": "t" } } }))
            .expect_err("syntax error");
        assert_eq!(
            (error.template.as_str(), error.locale.as_deref(), error.field.as_deref()),
            ("x", Some("en"), Some("subject"))
        );
        let error = t.insert_global(&json!({ "x": { "en": { "subject": "s" } } })).expect_err("no text");
        assert_eq!(error.field.as_deref(), Some("text"));
        let error =
            t.insert_global(&json!({ "x": { "en": { "subject": "s", "text": "{{> other}}" } } })).expect_err("partial");
        assert!(error.message.contains("partials"), "{error}");
        let error = t
            .insert_global(&json!({ "x": { "en": { "subject": "s", "text": "{{#each a}}{{> other}}{{/each}}" } } }))
            .expect_err("nested partial");
        assert!(error.message.contains("partials"), "{error}");
        let error = t.insert_global(&json!({ "x": { "channels": ["fax"], "en": { "subject": "s", "text": "t" } } }));
        assert!(error.expect_err("unknown channel").to_string().contains("fax"));
        assert!(!t.contains(None, "x"), "nothing is added on error");
    }

    #[test]
    fn definition_templates_shadow_global_ones_and_are_replaced_on_redeploy() {
        let t = set();
        t.insert_definition("ns/flow@1", &json!({ "due": { "en": { "subject": "own", "text": "own" } } }))
            .expect("valid");
        let subject = |definition: Option<&str>| {
            t.render(definition, "due", Some("en"), "en", &data()).expect("renders").expect("exists").subject
        };
        assert_eq!(subject(Some("ns/flow@1")), "own");
        assert_eq!(subject(Some("ns/flow@2")), "Task A & <b> is due");
        assert_eq!(subject(None), "Task A & <b> is due");
        t.insert_definition("ns/flow@1", &json!({ "other": { "en": { "subject": "o", "text": "o" } } }))
            .expect("valid");
        assert_eq!(subject(Some("ns/flow@1")), "Task A & <b> is due", "the redeploy replaced the scope");
        assert!(t.contains(Some("ns/flow@1"), "other"));
        t.remove_definition("ns/flow@1");
        assert!(!t.contains(Some("ns/flow@1"), "other"));
        assert_eq!(t.channels(None, "due"), Some(vec!["inApp".to_owned(), "email".to_owned()]));
    }
}
