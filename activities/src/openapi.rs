//! The built-in `openapi` activity: an operation of a Swagger 2.0 or OpenAPI 3.x document,
//! called by its `operationId`.
//!
//! # Input
//!
//! ```json
//! {
//!   "document": { "endpoint": "https://petstore.swagger.io/v2/swagger.json" },
//!   "operationId": "getPetById",
//!   "parameters": { "petId": 1 },
//!   "authentication": { "use": "petstore" },
//!   "output": "content",
//!   "redirect": false,
//!   "timeoutMs": 5000,
//!   "arguments": {},
//!   "authentications": {}
//! }
//! ```
//!
//! `document.endpoint` is a URI template or `{ "uri", "authentication" }` (the authentication
//! used to fetch the document). `authentication` is the operation's policy (or a name from
//! `authentications`); `output`, `redirect`, `timeoutMs`, `arguments` and `authentications`
//! mean what they mean for `http`, and the timeout covers fetching the document too.
//!
//! # The document
//!
//! Fetched with a GET (following up to `max_redirects` redirects; credentials are not carried
//! to another origin), at most `max_response_bytes`, parsed as JSON or else YAML, and kept in
//! memory by URI for ten minutes (at most 32 documents).
//!
//! # The request
//!
//! - Base URL. Swagger 2.0: `host` (else the document's own host and port), `basePath`, and the
//!   document's own scheme when `schemes` is absent or lists it, else the first of `schemes`.
//!   OpenAPI 3: the first of the operation's, the path's or the document's `servers`, its
//!   variables replaced by their defaults, resolved against the document's URI when relative
//!   (no `servers`: the document's origin).
//! - Parameters (the path's and the operation's, local `$ref`s resolved) take their values from
//!   `parameters` by name: `path` (percent-encoded into the path), `query` (arrays laid out by
//!   Swagger's `collectionFormat` or OpenAPI's `style`/`explode`), `header`, `cookie`, Swagger's
//!   `body` (sent as JSON) and `formData` (sent form-encoded). A missing required parameter is a
//!   `validation` error.
//! - OpenAPI 3 `requestBody`: the value of `parameters.body` when `body` is not a declared
//!   parameter, else an object of the parameters the operation does not declare. It is sent as
//!   JSON when the operation accepts JSON, else form-encoded when it accepts forms, else as the
//!   first media type listed.
//! - `Accept`: JSON when the operation produces it, else the first media type it produces.
//! - The document's `security` requirements are not applied: the call's `authentication` is.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use baton_engine::ActivityError;
use reqwest::header::{ACCEPT, CONTENT_TYPE, COOKIE};
use reqwest::{Method, Url};
use saphyr::{LoadableYamlNode, Scalar, Yaml};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::auth::Sensitive;
use crate::http::{
    CallContext, CallOptions, Endpoint, FORM, HttpActivities, Request, encode_body, essence, finish, is_json,
    parse_input, parse_method, parse_url, render, with_timeout,
};
use crate::problem::Problem;
use crate::uri::{encode_component, expand, scalar_text};

/// How long a fetched document is used before it is fetched again.
const DOCUMENT_TTL: Duration = Duration::from_secs(600);
/// Documents kept at once.
const MAX_CACHED_DOCUMENTS: usize = 32;
/// Nesting allowed in a YAML document.
const MAX_YAML_DEPTH: usize = 128;
/// `$ref` hops followed to resolve one reference.
const MAX_REF_HOPS: usize = 16;
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenApiInput {
    document: DocumentInput,
    operation_id: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    authentication: Option<Value>,
    #[serde(flatten)]
    options: CallOptions,
}

#[derive(Deserialize)]
struct DocumentInput {
    endpoint: Endpoint,
}

impl HttpActivities {
    /// Runs the `openapi` activity on `input` (see the module documentation).
    pub async fn call_openapi(&self, input: Value) -> Result<Value, ActivityError> {
        let mut sensitive = Sensitive::default();
        let result = self.openapi(input, &mut sensitive).await;
        finish(result, &sensitive)
    }

    async fn openapi(&self, input: Value, sensitive: &mut Sensitive) -> Result<Value, Problem> {
        let input: OpenApiInput = parse_input(input)?;
        let context = CallContext {
            authentications: input.options.authentications.as_ref(),
            arguments: &input.options.arguments,
        };
        let timeout = self.timeout(input.options.timeout_ms);
        let description = format!("the operation '{}'", input.operation_id);
        let received = with_timeout(timeout, &description, async {
            let (template, document_auth) = input.document.endpoint.into_parts();
            let document_url = parse_url(&expand(&template, &input.options.arguments)?)?;
            let document = self.document(&document_url, document_auth, &context, sensitive).await?;
            let parameters = input.parameters.clone().unwrap_or_default();
            let mut request = build_request(&document, &document_url, &input.operation_id, &parameters)?;
            request.authentication = input.authentication.clone().filter(|policy| !policy.is_null());
            request.redirect = input.options.redirect.unwrap_or(false);
            self.send(request, &context, sensitive).await
        })
        .await?;
        Ok(render(received, input.options.output.unwrap_or_default(), sensitive))
    }

    async fn document(
        &self,
        url: &Url,
        authentication: Option<Value>,
        context: &CallContext<'_>,
        sensitive: &mut Sensitive,
    ) -> Result<Arc<Value>, Problem> {
        if let Some(document) = self.documents().get(url.as_str()) {
            return Ok(document);
        }
        let request = Request {
            method: Method::GET,
            url: url.clone(),
            headers: vec![(
                ACCEPT.as_str().to_owned(),
                "application/json, application/yaml;q=0.9, text/yaml;q=0.9, */*;q=0.8".to_owned(),
            )],
            body: None,
            authentication,
            redirect: true,
        };
        let received = self.send(request, context, sensitive).await?;
        let document = Arc::new(parse_document(&received.body).map_err(|error| {
            Problem::configuration(format!("the OpenAPI document at {url} is neither JSON nor YAML: {error}"))
        })?);
        self.documents().insert(url.as_str(), document.clone());
        Ok(document)
    }
}

/// Fetched documents by URI.
#[derive(Default)]
pub(crate) struct DocumentCache {
    entries: Mutex<HashMap<String, (Instant, Arc<Value>)>>,
}

impl fmt::Debug for DocumentCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.entries.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("DocumentCache").field("entries", &count).finish()
    }
}

impl DocumentCache {
    fn get(&self, uri: &str) -> Option<Arc<Value>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(uri).filter(|(fetched, _)| fetched.elapsed() < DOCUMENT_TTL).map(|(_, document)| document.clone())
    }

    fn insert(&self, uri: &str, document: Arc<Value>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_CACHED_DOCUMENTS && !entries.contains_key(uri) {
            entries.retain(|_, (fetched, _)| fetched.elapsed() < DOCUMENT_TTL);
            if entries.len() >= MAX_CACHED_DOCUMENTS {
                let oldest = entries.iter().min_by_key(|(_, (fetched, _))| *fetched).map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(uri.to_owned(), (Instant::now(), document));
    }
}

fn parse_document(bytes: &[u8]) -> Result<Value, String> {
    let json_error = match serde_json::from_slice(bytes) {
        Ok(document) => return Ok(document),
        Err(error) => error,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| format!("not JSON ({json_error}) and not UTF-8"))?;
    // The loader bounds alias expansion (saphyr's node budget), so a small document cannot
    // expand into a huge one.
    let documents =
        Yaml::load_from_str(text).map_err(|error| format!("not JSON ({json_error}), not YAML ({error})"))?;
    let first = documents.first().ok_or_else(|| "an empty document".to_owned())?;
    yaml_to_json(first, 0)
}

fn yaml_to_json(yaml: &Yaml<'_>, depth: usize) -> Result<Value, String> {
    if depth > MAX_YAML_DEPTH {
        return Err(format!("nested more than {MAX_YAML_DEPTH} levels"));
    }
    Ok(match yaml {
        Yaml::Value(scalar) => scalar_json(scalar),
        Yaml::Representation(text, _, _) => Value::String(text.to_string()),
        Yaml::Sequence(items) => {
            Value::Array(items.iter().map(|item| yaml_to_json(item, depth + 1)).collect::<Result<_, _>>()?)
        }
        Yaml::Mapping(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::Value(scalar) => match scalar_json(scalar) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    },
                    Yaml::Representation(text, _, _) => text.to_string(),
                    Yaml::Tagged(_, inner) => match inner.as_ref() {
                        Yaml::Value(scalar) => scalar_json(scalar).to_string().trim_matches('"').to_owned(),
                        _ => return Err("a mapping key that is not a scalar".to_owned()),
                    },
                    _ => return Err("a mapping key that is not a scalar".to_owned()),
                };
                object.insert(key, yaml_to_json(value, depth + 1)?);
            }
            Value::Object(object)
        }
        Yaml::Tagged(_, inner) => yaml_to_json(inner, depth + 1)?,
        Yaml::Alias(_) | Yaml::BadValue => return Err("an unresolved alias or a bad value".to_owned()),
    })
}

fn scalar_json(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(flag) => Value::Bool(*flag),
        Scalar::Integer(number) => Value::from(*number),
        Scalar::FloatingPoint(number) => {
            serde_json::Number::from_f64(number.0).map_or_else(|| Value::String(number.0.to_string()), Value::Number)
        }
        Scalar::String(text) => Value::String(text.to_string()),
    }
}

/// Follows local `$ref`s (`#/...`) from `value`.
fn resolve<'a>(document: &'a Value, value: &'a Value) -> Result<&'a Value, Problem> {
    let mut current = value;
    for _ in 0..MAX_REF_HOPS {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else { return Ok(current) };
        let pointer = reference.strip_prefix('#').ok_or_else(|| {
            Problem::configuration(format!(
                "the reference '{reference}' is not local; only '#/...' references are supported"
            ))
        })?;
        current = document
            .pointer(pointer)
            .ok_or_else(|| Problem::configuration(format!("the reference '{reference}' points to nothing")))?;
    }
    Err(Problem::configuration("a chain of references is too long or circular"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    Swagger2,
    OpenApi3,
}

struct Operation<'a> {
    path: &'a str,
    method: &'static str,
    operation: &'a Value,
    path_item: &'a Value,
}

fn version(document: &Value) -> Result<Version, Problem> {
    if document.get("swagger").and_then(Value::as_str) == Some("2.0") {
        Ok(Version::Swagger2)
    } else if document.get("openapi").and_then(Value::as_str).is_some_and(|version| version.starts_with("3.")) {
        Ok(Version::OpenApi3)
    } else {
        Err(Problem::configuration("the document is neither Swagger 2.0 nor OpenAPI 3"))
    }
}

fn find_operation<'a>(document: &'a Value, operation_id: &str) -> Result<Operation<'a>, Problem> {
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| Problem::configuration("the OpenAPI document has no 'paths'"))?;
    for (path, item) in paths {
        let item = resolve(document, item)?;
        for method in METHODS {
            if let Some(operation) = item.get(method)
                && operation.get("operationId").and_then(Value::as_str) == Some(operation_id)
            {
                return Ok(Operation { path, method, operation, path_item: item });
            }
        }
    }
    Err(Problem::validation(format!("the OpenAPI document has no operation '{operation_id}'")))
}

/// A declared parameter.
struct Parameter<'a> {
    name: &'a str,
    location: &'a str,
    required: bool,
    definition: &'a Value,
}

fn parameters<'a>(document: &'a Value, operation: &Operation<'a>) -> Result<Vec<Parameter<'a>>, Problem> {
    let mut declared: Vec<Parameter<'a>> = Vec::new();
    let lists = [operation.path_item.get("parameters"), operation.operation.get("parameters")];
    for list in lists.into_iter().flatten() {
        let list = list
            .as_array()
            .ok_or_else(|| Problem::configuration(format!("the parameters of '{}' are not a list", operation.path)))?;
        for definition in list {
            let definition = resolve(document, definition)?;
            let field = |name: &str| definition.get(name).and_then(Value::as_str);
            let (Some(name), Some(location)) = (field("name"), field("in")) else {
                return Err(Problem::configuration(format!(
                    "a parameter of '{}' has no name or location",
                    operation.path
                )));
            };
            let required = location == "path" || definition.get("required").and_then(Value::as_bool).unwrap_or(false);
            // An operation's parameter overrides the path's of the same name and location.
            declared.retain(|known| !(known.name == name && known.location == location));
            declared.push(Parameter { name, location, required, definition });
        }
    }
    Ok(declared)
}

/// The request for `operation_id` with `values`; authentication and redirects are the caller's.
fn build_request(
    document: &Value,
    document_url: &Url,
    operation_id: &str,
    values: &Map<String, Value>,
) -> Result<Request, Problem> {
    let version = version(document)?;
    let operation = find_operation(document, operation_id)?;
    let declared = parameters(document, &operation)?;

    let mut path_values = HashMap::new();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    let mut body = None;
    let mut form = Map::new();
    for parameter in &declared {
        let value = match values.get(parameter.name) {
            None | Some(Value::Null) if parameter.required => {
                return Err(Problem::validation(format!(
                    "the operation '{operation_id}' needs the {} parameter '{}'",
                    parameter.location, parameter.name
                )));
            }
            None | Some(Value::Null) => continue,
            Some(value) => value,
        };
        match parameter.location {
            "path" => {
                path_values.insert(parameter.name, joined(parameter, value)?);
            }
            "query" => query.extend(query_pairs(version, parameter, value)),
            "header" => headers.push((parameter.name.to_owned(), joined(parameter, value)?)),
            "cookie" => cookies.push(format!("{}={}", parameter.name, joined(parameter, value)?)),
            "body" => body = Some((value.clone(), swagger_consumes(document, &operation))),
            "formData" => {
                form.insert(parameter.name.to_owned(), value.clone());
            }
            other => {
                return Err(Problem::configuration(format!(
                    "the parameter '{}' is in '{other}', which is not supported",
                    parameter.name
                )));
            }
        }
    }
    if !form.is_empty() {
        body = Some((Value::Object(form), Some(FORM.to_owned())));
    }
    if version == Version::OpenApi3
        && let Some(request_body) = operation.operation.get("requestBody")
    {
        let request_body = resolve(document, request_body)?;
        let declared_names: HashSet<&str> = declared.iter().map(|parameter| parameter.name).collect();
        let value = match values.get("body") {
            Some(value) if !declared_names.contains("body") => Some(value.clone()),
            _ => {
                let rest: Map<String, Value> = values
                    .iter()
                    .filter(|(name, _)| !declared_names.contains(name.as_str()))
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                (!rest.is_empty()).then_some(Value::Object(rest))
            }
        };
        match value {
            Some(value) => body = Some((value, preferred(media_types(request_body.get("content")), true))),
            None if request_body.get("required").and_then(Value::as_bool) == Some(true) => {
                return Err(Problem::validation(format!("the operation '{operation_id}' needs a request body")));
            }
            None => {}
        }
    }

    let mut path = String::new();
    let mut rest = operation.path;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|close| open + close)
            .ok_or_else(|| Problem::configuration(format!("the path '{}' has an unclosed '{{'", operation.path)))?;
        let name = &rest[open + 1..close];
        let value = path_values.get(name).ok_or_else(|| {
            Problem::validation(format!("the operation '{operation_id}' needs the path parameter '{name}'"))
        })?;
        path.push_str(&encode_component(value));
        rest = &rest[close + 1..];
    }
    path.push_str(rest);

    let base = match version {
        Version::Swagger2 => swagger_base(document, &operation, document_url),
        Version::OpenApi3 => openapi_base(document, &operation, document_url)?,
    };
    let mut url = parse_url(&format!("{}{path}", base.trim_end_matches('/')))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    }

    let produces = match version {
        Version::Swagger2 => {
            string_list(operation.operation.get("produces")).or_else(|| string_list(document.get("produces")))
        }
        Version::OpenApi3 => Some(response_media_types(document, &operation)),
    };
    if let Some(accept) = preferred(produces.unwrap_or_default(), false) {
        headers.push((ACCEPT.as_str().to_owned(), accept));
    }
    if !cookies.is_empty() {
        headers.push((COOKIE.as_str().to_owned(), cookies.join("; ")));
    }
    let body = match body {
        None => None,
        Some((value, media_type)) => {
            if let Some(media_type) = media_type {
                headers.push((CONTENT_TYPE.as_str().to_owned(), media_type));
            }
            Some(encode_body(&value, &mut headers)?)
        }
    };
    Ok(Request { method: parse_method(operation.method)?, url, headers, body, authentication: None, redirect: false })
}

fn string_list(value: Option<&Value>) -> Option<Vec<String>> {
    value?.as_array().map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

fn media_types(content: Option<&Value>) -> Vec<String> {
    content.and_then(Value::as_object).map(|content| content.keys().cloned().collect()).unwrap_or_default()
}

/// JSON if listed, else (for a request body) a form, else the first; `None` if none is listed.
fn preferred(media_types: Vec<String>, form: bool) -> Option<String> {
    media_types
        .iter()
        .find(|media_type| is_json(&essence(media_type)))
        .or_else(|| media_types.iter().find(|media_type| form && essence(media_type) == FORM))
        .or_else(|| media_types.first())
        .cloned()
}

fn swagger_consumes(document: &Value, operation: &Operation<'_>) -> Option<String> {
    let consumes = string_list(operation.operation.get("consumes")).or_else(|| string_list(document.get("consumes")));
    preferred(consumes.unwrap_or_default(), false).filter(|media_type| essence(media_type) != "multipart/form-data")
}

fn response_media_types(document: &Value, operation: &Operation<'_>) -> Vec<String> {
    let mut types = Vec::new();
    let responses = operation.operation.get("responses").and_then(Value::as_object);
    for (code, response) in responses.into_iter().flatten() {
        if (code.starts_with('2') || code == "default")
            && let Ok(response) = resolve(document, response)
        {
            for media_type in media_types(response.get("content")) {
                if !types.contains(&media_type) {
                    types.push(media_type);
                }
            }
        }
    }
    types
}

fn swagger_base(document: &Value, operation: &Operation<'_>, document_url: &Url) -> String {
    let schemes = string_list(operation.operation.get("schemes"))
        .or_else(|| string_list(document.get("schemes")))
        .unwrap_or_default();
    let own = document_url.scheme();
    let scheme = if schemes.is_empty() || schemes.iter().any(|scheme| scheme == own) {
        own.to_owned()
    } else {
        schemes[0].clone()
    };
    let host = match document.get("host").and_then(Value::as_str).filter(|host| !host.is_empty()) {
        Some(host) => host.to_owned(),
        None => {
            let host = document_url.host_str().unwrap_or_default();
            match document_url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            }
        }
    };
    let base_path = document.get("basePath").and_then(Value::as_str).unwrap_or("/");
    let separator = if base_path.starts_with('/') { "" } else { "/" };
    format!("{scheme}://{host}{separator}{base_path}")
}

fn openapi_base(document: &Value, operation: &Operation<'_>, document_url: &Url) -> Result<String, Problem> {
    let servers = [operation.operation.get("servers"), operation.path_item.get("servers"), document.get("servers")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .find(|servers| !servers.is_empty());
    let Some(server) = servers.and_then(|servers| servers.first()) else {
        return Ok(document_url.origin().ascii_serialization());
    };
    let template = server
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::configuration("the document's server has no url"))?;
    let variables = server.get("variables").and_then(Value::as_object);
    let mut url = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        url.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|close| open + close)
            .ok_or_else(|| Problem::configuration(format!("the server url '{template}' has an unclosed '{{'")))?;
        let name = &rest[open + 1..close];
        let value = variables
            .and_then(|variables| variables.get(name))
            .and_then(|variable| variable.get("default"))
            .and_then(scalar_text)
            .ok_or_else(|| {
                Problem::configuration(format!("the server variable '{name}' of '{template}' has no default"))
            })?;
        url.push_str(&value);
        rest = &rest[close + 1..];
    }
    url.push_str(rest);
    document_url
        .join(&url)
        .map(|url| url.to_string())
        .map_err(|error| Problem::configuration(format!("the server url '{url}' is not valid: {error}")))
}

fn definition_str<'a>(parameter: &Parameter<'a>, field: &str) -> Option<&'a str> {
    parameter.definition.get(field).and_then(Value::as_str)
}

/// The separator of an array in a path, header or Swagger `collectionFormat`.
fn separator(parameter: &Parameter<'_>) -> &'static str {
    match definition_str(parameter, "collectionFormat").or_else(|| definition_str(parameter, "style")) {
        Some("ssv" | "spaceDelimited") => " ",
        Some("tsv") => "\t",
        Some("pipes" | "pipeDelimited") => "|",
        _ => ",",
    }
}

/// A value as one piece of text: arrays joined, objects as `key,value` pairs.
fn joined(parameter: &Parameter<'_>, value: &Value) -> Result<String, Problem> {
    let invalid = || Problem::validation(format!("the parameter '{}' has a nested array or object", parameter.name));
    match value {
        Value::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(scalar_text).collect();
            Ok(items.ok_or_else(invalid)?.join(separator(parameter)))
        }
        Value::Object(map) => {
            let mut parts = Vec::new();
            for (key, item) in map {
                parts.push(key.clone());
                parts.push(scalar_text(item).ok_or_else(invalid)?);
            }
            Ok(parts.join(","))
        }
        scalar => Ok(scalar_text(scalar).unwrap_or_default()),
    }
}

fn query_pairs(version: Version, parameter: &Parameter<'_>, value: &Value) -> Vec<(String, String)> {
    let name = parameter.name.to_owned();
    let text = |value: &Value| scalar_text(value).unwrap_or_else(|| value.to_string());
    let style = definition_str(parameter, "style");
    let explode = match version {
        Version::Swagger2 => definition_str(parameter, "collectionFormat") == Some("multi"),
        Version::OpenApi3 => {
            parameter.definition.get("explode").and_then(Value::as_bool).unwrap_or(matches!(style, None | Some("form")))
        }
    };
    match value {
        Value::Array(items) if explode => items.iter().map(|item| (name.clone(), text(item))).collect(),
        Value::Array(items) => {
            vec![(name, items.iter().map(text).collect::<Vec<_>>().join(separator(parameter)))]
        }
        Value::Object(map) if version == Version::OpenApi3 && style == Some("deepObject") => {
            map.iter().map(|(key, item)| (format!("{name}[{key}]"), text(item))).collect()
        }
        Value::Object(map) if version == Version::OpenApi3 && explode => {
            map.iter().map(|(key, item)| (key.clone(), text(item))).collect()
        }
        Value::Object(map) if version == Version::OpenApi3 => {
            let parts: Vec<String> = map.iter().flat_map(|(key, item)| [key.clone(), text(item)]).collect();
            vec![(name, parts.join(","))]
        }
        other => vec![(name, text(other))],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a valid URL")
    }

    #[test]
    fn yaml_documents_become_json() {
        let yaml = "openapi: 3.0.0\npaths:\n  /a:\n    get:\n      operationId: a\n      responses:\n        200:\n          description: ok\n";
        let document = parse_document(yaml.as_bytes()).expect("parses");
        assert_eq!(document["paths"]["/a"]["get"]["responses"]["200"]["description"], "ok");
        assert_eq!(document["openapi"], "3.0.0");
    }

    #[test]
    fn swagger_base_prefers_the_documents_own_scheme_and_host() {
        let document = json!({ "swagger": "2.0", "schemes": ["https", "http"], "basePath": "/v2", "paths": {} });
        let operation = Operation { path: "/", method: "get", operation: &Value::Null, path_item: &Value::Null };
        assert_eq!(
            swagger_base(&document, &operation, &url("http://127.0.0.1:8080/v2/swagger.json")),
            "http://127.0.0.1:8080/v2"
        );
        let document = json!({ "swagger": "2.0", "host": "api.example.com", "schemes": ["https"], "paths": {} });
        assert_eq!(swagger_base(&document, &operation, &url("http://127.0.0.1/doc")), "https://api.example.com/");
    }

    #[test]
    fn openapi_base_resolves_relative_servers_and_variables() {
        let operation = Operation { path: "/", method: "get", operation: &Value::Null, path_item: &Value::Null };
        let document = json!({ "openapi": "3.0.3", "servers": [{ "url": "/api/{version}", "variables": { "version": { "default": "v3" } } }] });
        let base = openapi_base(&document, &operation, &url("http://127.0.0.1:9/docs/openapi.json")).expect("resolves");
        assert_eq!(base, "http://127.0.0.1:9/api/v3");
        let document = json!({ "openapi": "3.1.0" });
        let base = openapi_base(&document, &operation, &url("http://127.0.0.1:9/docs/openapi.json")).expect("resolves");
        assert_eq!(base, "http://127.0.0.1:9");
    }

    #[test]
    fn query_layouts() {
        let definition = json!({ "name": "status", "in": "query", "collectionFormat": "multi" });
        let parameter = Parameter { name: "status", location: "query", required: false, definition: &definition };
        assert_eq!(query_pairs(Version::Swagger2, &parameter, &json!(["a", "b"])).len(), 2);
        let definition = json!({ "name": "status", "in": "query" });
        let parameter = Parameter { name: "status", location: "query", required: false, definition: &definition };
        assert_eq!(
            query_pairs(Version::Swagger2, &parameter, &json!(["a", "b"])),
            vec![("status".into(), "a,b".into())]
        );
        assert_eq!(query_pairs(Version::OpenApi3, &parameter, &json!(["a", "b"])).len(), 2);
        let definition = json!({ "name": "f", "in": "query", "style": "deepObject" });
        let parameter = Parameter { name: "f", location: "query", required: false, definition: &definition };
        assert_eq!(query_pairs(Version::OpenApi3, &parameter, &json!({ "x": 1 })), vec![("f[x]".into(), "1".into())]);
    }
}
