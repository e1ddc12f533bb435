//! Documents that are printed, signed and tracked: rendered from a template, kept with their
//! content hash in an object store, signed with the engine's key, archived.
//!
//! ```yaml
//! - render:
//!     call: baton.document.render
//!     with: { templateId: training-certificate, trackingCode: '${ .code }', data: '${ .data }' }
//! - keep:
//!     call: baton.document.store
//!     with: { draftId: '${ .draftId }', sha256: '${ .sha256 }', trackingCode: '${ .code }' }
//! ```
//!
//! - `baton.document.render` renders `<templates>/<templateId>.hbs` (handlebars, strict: a
//!   field the template names and the data lacks fails the call) to HTML with the input's
//!   `data`, `trackingCode` and `documentType`, and keeps the bytes as a draft named by their
//!   SHA-256 (`drafts/<sha256>.html`): rendering the same data again is the same draft. Only
//!   the hash enters history, never the document. With `format: pdf`, headless Chromium
//!   prints the HTML to PDF (`drafts/<sha256>.pdf`); no maintained Rust crate lays out HTML,
//!   and a browser prints what a browser shows.
//! - `baton.document.store` checks the draft against the hash it was given (refused, not
//!   retried, when they differ) and keeps it as `documents/<trackingCode>/<sha256>.html` (or
//!   `.pdf`: `mediaType` says which, as render answered).
//! - `baton.document.sign` signs `baton-document-v1:<sha256>` with the engine's Ed25519 key:
//!   the digital path, where a signature of the content hash is legally acceptable.
//!   `baton document verify FILE --signature S` checks one with the engine's public key.
//! - `baton.document.archive` copies the document to `archive/<trackingCode>/<sha256>.html`
//!   beside a JSON record of how it came back (channel, signature, scan).
//!
//! The object store is a local folder by default ([`object_store::local::LocalFileSystem`]),
//! or an S3-compatible bucket (AWS S3, MinIO; [`DocumentConfig::s3`]); any [`ObjectStore`]
//! fits.

use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use baton_engine::{ActivityError, ActivityRegistry};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const RENDER_ACTIVITY: &str = "baton.document.render";
pub const STORE_ACTIVITY: &str = "baton.document.store";
pub const SIGN_ACTIVITY: &str = "baton.document.sign";
pub const ARCHIVE_ACTIVITY: &str = "baton.document.archive";

/// What a signature signs: a fixed prefix and the document's SHA-256 (hex), so a signature made
/// for a document is never valid for anything else the key signs.
pub fn signed_message(sha256: &str) -> Vec<u8> {
    format!("baton-document-v1:{sha256}").into_bytes()
}

/// The engine's document-signing key (Ed25519).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads the key (PKCS#8, DER) from `path`, creating one there first when the file does
    /// not exist (readable by its owner only).
    pub fn load_or_create(path: &std::path::Path) -> Result<Self, String> {
        if !path.exists() {
            let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| "the system's random source failed".to_owned())?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            write_private(path, document.as_ref()).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes)
            .map_err(|_| format!("{} is not an Ed25519 key (PKCS#8, DER)", path.display()))?;
        Ok(Self { pair })
    }

    /// The public key, base64.
    pub fn public_key(&self) -> String {
        BASE64.encode(self.pair.public_key().as_ref())
    }

    /// A short name for the key: the first 16 hex digits of the SHA-256 of its public key.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.pair.public_key().as_ref())[..8])
    }

    /// The signature (base64) of a document's hash.
    pub fn sign(&self, sha256: &str) -> String {
        BASE64.encode(self.pair.sign(&signed_message(sha256)).as_ref())
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

/// Whether `signature` (base64) signs the document hash `sha256` under `public_key` (base64).
pub fn verify(public_key: &str, sha256: &str, signature: &str) -> bool {
    let (Ok(key), Ok(signature)) = (BASE64.decode(public_key.trim()), BASE64.decode(signature.trim())) else {
        return false;
    };
    UnparsedPublicKey::new(&signature::ED25519, key).verify(&signed_message(sha256), &signature).is_ok()
}

/// The SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where documents go and what renders and signs them.
#[derive(Clone, Debug)]
pub struct DocumentConfig {
    pub store: Arc<dyn ObjectStore>,
    /// The folder of the templates (`<templateId>.hbs`).
    pub templates: PathBuf,
    pub key: Arc<SigningKey>,
    /// A Chromium (or Chrome) binary that prints rendered HTML to PDF (`format: pdf`); without
    /// it, documents are HTML only.
    pub pdf: Option<PathBuf>,
}

/// The formats a document is kept in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Html,
    Pdf,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Pdf => "pdf",
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            Format::Html => "text/html",
            Format::Pdf => "application/pdf",
        }
    }

    /// The format `field` names (`html` or `pdf`, or their media types); HTML when absent.
    fn of(input: &Value, field: &str) -> Result<Self, ActivityError> {
        match input.get(field) {
            None | Some(Value::Null) => Ok(Format::Html),
            Some(Value::String(s)) if s == "html" || s == "text/html" => Ok(Format::Html),
            Some(Value::String(s)) if s == "pdf" || s == "application/pdf" => Ok(Format::Pdf),
            Some(other) => Err(invalid(format!("`{field}` is html or pdf, not {other}"))),
        }
    }
}

/// How long Chromium may take to print one document.
const PDF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Prints HTML to PDF with headless Chromium, in a scratch folder of its own (the page, the
/// browser profile, the PDF). Chromium runs in a process group of its own, ended whole once it
/// has answered or run out of time, so no helper process outlives the call. Its sandbox is
/// kept, except as root, where Chromium refuses to start with it.
async fn print_pdf(chromium: &std::path::Path, html: &str) -> Result<Vec<u8>, ActivityError> {
    let scratch = tempfile::tempdir().map_err(|e| ActivityError::retryable(format!("a scratch folder: {e}")))?;
    let page = scratch.path().join("document.html");
    let output = scratch.path().join("document.pdf");
    tokio::fs::write(&page, html).await.map_err(|e| ActivityError::retryable(format!("the page: {e}")))?;
    let url = reqwest::Url::from_file_path(&page)
        .map_err(|()| ActivityError::retryable(format!("the page {} has no file URL", page.display())))?;
    let mut command = tokio::process::Command::new(chromium);
    // No background traffic: the page is a local file, and closed networks refuse the rest.
    command.args(["--headless", "--disable-gpu", "--no-pdf-header-footer", "--no-first-run"]);
    command.args(["--disable-background-networking", "--disable-component-update", "--disable-sync"]);
    if nix::unistd::geteuid().is_root() {
        command.arg("--no-sandbox");
    }
    command
        .arg(format!("--user-data-dir={}", scratch.path().join("profile").display()))
        .arg(format!("--print-to-pdf={}", output.display()))
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!("no Chromium at {} to print PDF: {e}", chromium.display())));
        }
        Err(e) => return Err(ActivityError::retryable(format!("starting Chromium: {e}"))),
    };
    let group = child.id().and_then(|id| i32::try_from(id).ok()).map(nix::unistd::Pid::from_raw);
    let run = tokio::time::timeout(PDF_TIMEOUT, child.wait_with_output()).await;
    if let Some(group) = group {
        // Whatever is left of the group (renderers, the crash handler); gone already is fine.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    let finished = match run {
        Err(_) => return Err(ActivityError::retryable(format!("Chromium printed no PDF within {PDF_TIMEOUT:?}"))),
        Ok(Err(e)) => return Err(ActivityError::retryable(format!("waiting for Chromium: {e}"))),
        Ok(Ok(finished)) => finished,
    };
    match tokio::fs::read(&output).await {
        Ok(pdf) if finished.status.success() && pdf.starts_with(b"%PDF-") => Ok(pdf),
        _ => {
            let stderr = String::from_utf8_lossy(&finished.stderr);
            let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            Err(ActivityError::retryable(format!("Chromium printed no PDF ({}): {tail}", finished.status)))
        }
    }
}

impl DocumentConfig {
    /// Documents in a local folder (created if needed).
    pub fn local(folder: &std::path::Path, templates: PathBuf, key: Arc<SigningKey>) -> Result<Self, String> {
        std::fs::create_dir_all(folder).map_err(|e| format!("creating {}: {e}", folder.display()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
            .map_err(|e| format!("the document folder {}: {e}", folder.display()))?;
        Ok(Self { store: Arc::new(store), templates, key, pdf: None })
    }

    /// Documents in an S3-compatible bucket: `url` is `s3://<bucket>` or
    /// `s3://<bucket>/<prefix>`. Credentials, region and endpoint come from the standard
    /// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT` for MinIO...), then `options`, named as the variables
    /// without `AWS_` in lowercase (`endpoint`, `region`, `allow_http`...). Nothing connects
    /// until the first document.
    pub fn s3(
        url: &str,
        options: &std::collections::BTreeMap<String, String>,
        templates: PathBuf,
        key: Arc<SigningKey>,
    ) -> Result<Self, String> {
        let (bucket, prefix) = url
            .strip_prefix("s3://")
            .map(|rest| rest.split_once('/').unwrap_or((rest, "")))
            .filter(|(bucket, _)| !bucket.is_empty())
            .ok_or_else(|| format!("the document store {url}: expected s3://<bucket> or s3://<bucket>/<prefix>"))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (name, value) in options {
            let option: AmazonS3ConfigKey =
                name.parse().map_err(|_| format!("the document store: `{name}` is not an S3 option"))?;
            builder = builder.with_config(option, value);
        }
        let bucket_store = builder.build().map_err(|e| format!("the document store {url}: {e}"))?;
        let prefix = prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(bucket_store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(bucket_store, prefix))
        };
        Ok(Self { store, templates, key, pdf: None })
    }
}

/// Registers the four document activities.
pub fn register_documents(registry: &mut ActivityRegistry, config: DocumentConfig) {
    let config = Arc::new(config);
    let c = Arc::clone(&config);
    registry.register(RENDER_ACTIVITY, move |_ctx, input| {
        let c = Arc::clone(&c);
        async move { render(&c, &input).await }
    });
    let c = Arc::clone(&config);
    registry.register(STORE_ACTIVITY, move |_ctx, input| {
        let c = Arc::clone(&c);
        async move { store(&c, &input).await }
    });
    let c = Arc::clone(&config);
    registry.register(SIGN_ACTIVITY, move |_ctx, input| {
        let c = Arc::clone(&c);
        async move { sign(&c, &input) }
    });
    registry.register(ARCHIVE_ACTIVITY, move |_ctx, input| {
        let c = Arc::clone(&config);
        async move { archive(&c, &input).await }
    });
}

fn invalid(message: impl Into<String>) -> ActivityError {
    ActivityError::non_retryable(message)
}

/// A required text field that is safe as one segment of a path: letters, digits, `-`, `_`, `.`
/// (not leading).
fn segment<'a>(input: &'a Value, field: &str) -> Result<&'a str, ActivityError> {
    let text = input.get(field).and_then(Value::as_str).ok_or_else(|| invalid(format!("`{field}` is required")))?;
    let safe = !text.is_empty()
        && text.len() <= 200
        && !text.starts_with('.')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if safe {
        Ok(text)
    } else {
        Err(invalid(format!("`{field}` may hold letters, digits, `-`, `_` and `.`: {text:?}")))
    }
}

fn hash_field<'a>(input: &'a Value, field: &str) -> Result<&'a str, ActivityError> {
    let text = input.get(field).and_then(Value::as_str).ok_or_else(|| invalid(format!("`{field}` is required")))?;
    if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
        Ok(text)
    } else {
        Err(invalid(format!("`{field}` is a SHA-256 in lowercase hex: {text:?}")))
    }
}

fn storage(err: object_store::Error) -> ActivityError {
    match err {
        object_store::Error::NotFound { path, .. } => invalid(format!("no document at {path}")),
        // Wrong credentials or rights stay wrong until an operator mends them.
        error @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }) => {
            invalid(format!("the document store refused: {error}"))
        }
        other => ActivityError::retryable(format!("the document store: {other}")),
    }
}

async fn read(config: &DocumentConfig, path: &ObjectPath) -> Result<Vec<u8>, ActivityError> {
    let found = config.store.get(path).await.map_err(storage)?;
    Ok(found.bytes().await.map_err(storage)?.to_vec())
}

/// `baton.document.render`.
pub async fn render(config: &DocumentConfig, input: &Value) -> Result<Value, ActivityError> {
    let template_id = segment(input, "templateId")?;
    let file = config.templates.join(format!("{template_id}.hbs"));
    let template = tokio::fs::read_to_string(&file)
        .await
        .map_err(|e| invalid(format!("template {template_id}: {e} ({})", file.display())))?;
    let mut handlebars = handlebars::Handlebars::new();
    handlebars.set_strict_mode(true);
    let mut data = input.get("data").cloned().unwrap_or_else(|| json!({}));
    if let Value::Object(map) = &mut data {
        for field in ["trackingCode", "documentType", "locale"] {
            if let Some(value) = input.get(field) {
                map.entry(field).or_insert_with(|| value.clone());
            }
        }
    }
    let format = Format::of(input, "format")?;
    let html =
        handlebars.render_template(&template, &data).map_err(|e| invalid(format!("template {template_id}: {e}")))?;
    let content = match (format, &config.pdf) {
        (Format::Html, _) => html.into_bytes(),
        (Format::Pdf, Some(chromium)) => print_pdf(chromium, &html).await?,
        (Format::Pdf, None) => {
            return Err(invalid("PDF needs a Chromium to print it: set `pdf` under [documents]"));
        }
    };
    let sha256 = sha256_hex(&content);
    let path = ObjectPath::from(format!("drafts/{sha256}.{}", format.extension()));
    let bytes = content.len();
    config.store.put(&path, PutPayload::from(content)).await.map_err(storage)?;
    Ok(json!({ "draftId": sha256, "sha256": sha256, "mediaType": format.media_type(), "bytes": bytes }))
}

/// `baton.document.store`.
pub async fn store(config: &DocumentConfig, input: &Value) -> Result<Value, ActivityError> {
    let draft = hash_field(input, "draftId")?;
    let expected = hash_field(input, "sha256")?;
    let code = segment(input, "trackingCode")?;
    let format = Format::of(input, "mediaType")?;
    let extension = format.extension();
    let bytes = read(config, &ObjectPath::from(format!("drafts/{draft}.{extension}"))).await?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(invalid(format!("the draft's content has SHA-256 {actual}, not {expected}: refused")));
    }
    let document_id = format!("{code}/{actual}");
    let uri = format!("documents/{document_id}.{extension}");
    config.store.put(&ObjectPath::from(uri.as_str()), PutPayload::from(bytes)).await.map_err(storage)?;
    Ok(json!({ "documentId": document_id, "uri": uri, "sha256": actual, "mediaType": format.media_type() }))
}

/// `baton.document.sign`.
pub fn sign(config: &DocumentConfig, input: &Value) -> Result<Value, ActivityError> {
    let sha256 = hash_field(input, "sha256")?;
    let signature = config.key.sign(sha256);
    Ok(json!({
        "signatureId": sha256_hex(signature.as_bytes())[..16],
        "algorithm": "Ed25519",
        "signature": signature,
        "keyId": config.key.key_id(),
        "publicKey": config.key.public_key(),
        "signer": input.get("signer").cloned().unwrap_or(Value::Null),
    }))
}

/// `baton.document.archive`.
pub async fn archive(config: &DocumentConfig, input: &Value) -> Result<Value, ActivityError> {
    let sha256 = hash_field(input, "sha256")?;
    let code = segment(input, "trackingCode")?;
    let extension = Format::of(input, "mediaType")?.extension();
    let bytes = read(config, &ObjectPath::from(format!("documents/{code}/{sha256}.{extension}"))).await?;
    if sha256_hex(&bytes) != sha256 {
        return Err(invalid(format!("the stored document {code}/{sha256} no longer has its hash")));
    }
    let base = format!("archive/{code}/{sha256}");
    config
        .store
        .put(&ObjectPath::from(format!("{base}.{extension}")), PutPayload::from(bytes))
        .await
        .map_err(storage)?;
    let record = json!({
        "trackingCode": code,
        "sha256": sha256,
        "channel": input.get("channel").cloned().unwrap_or(Value::Null),
        "signature": input.get("signature").cloned().unwrap_or(Value::Null),
        "scanUri": input.get("scanUri").cloned().unwrap_or(Value::Null),
        "archivedBy": input.get("archivedBy").cloned().unwrap_or(Value::Null),
    });
    let record = serde_json::to_vec_pretty(&record).unwrap_or_default();
    config.store.put(&ObjectPath::from(format!("{base}.json")), PutPayload::from(record)).await.map_err(storage)?;
    Ok(json!({ "archiveRef": base, "sha256": sha256 }))
}
