//! `baton server` and `baton dev`: the engine, the HTTP API and the background workers in one
//! process, configured in layers (defaults, a TOML file, BATON_* variables, flags).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use baton_activities::notify::{Notifier, NotifyConfig, register_notify};
use baton_api::auth::{AuthConfig, Authenticator, Grant, Permission};
use baton_api::{ApiOptions, App};
use baton_engine::remote::RemoteQueue;
use baton_engine::runtime::CLOCK_OFFSET_KEY;
use baton_engine::{ActivityRegistry, Actor, Clock, ClockMode, Engine, EngineOptions, ManualClock, SystemClock};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Every setting of a server, with its default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the HTTP API listens.
    pub http_addr: String,
    /// Where the gRPC API listens; `off` serves none.
    pub grpc_addr: String,
    /// The store: `sqlite:///var/lib/baton/baton.db`.
    pub store: String,
    /// `system`, or `manual`: wall time plus an offset that only moves forward through the
    /// admin API (tests and demos).
    pub clock: String,
    /// Folders whose definitions (*.yaml, *.yml, *.json) are deployed at start.
    pub definitions: Vec<PathBuf>,
    /// A directory file (`baton directory import` format) imported at start.
    pub directory: Option<PathBuf>,
    /// Shared business calendars (a YAML or JSON file with `calendars:`).
    pub calendars: Option<PathBuf>,
    /// Notification templates every definition may use (a YAML or JSON file: name ->
    /// template, docs/notifications.md); a definition's own templates come first.
    pub templates: Option<PathBuf>,
    /// The locale of notification recipients who have none (BCP 47: `en`, `fr-BE`).
    pub locale: String,
    pub auth: AuthSection,
    /// Requests per second per user on average, and in a burst.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// How long ended instances of a definition are kept: `"namespace/name" = "P90D"`. The
    /// definitions not listed keep theirs for ever.
    pub retention: std::collections::BTreeMap<String, String>,
    /// The mail server notifications are sent through; without one, email deliveries fail.
    pub email: Option<EmailSection>,
    /// The receiver of the webhook channel; without one, webhook deliveries fail.
    pub webhook: Option<WebhookSection>,
    /// The SMS provider's gateway (a webhook that sends the text); without one, SMS deliveries
    /// fail.
    pub sms: Option<WebhookSection>,
    /// The RabbitMQ broker `call: baton.amqp.publish` publishes to; without one, the activity
    /// is not offered.
    pub amqp: Option<AmqpSection>,
    /// Where `baton.document.*` keeps documents, finds templates and its signing key; without
    /// it, the document activities are not offered (`baton dev` has one under .baton/).
    pub documents: Option<DocumentsSection>,
    /// The databases and named queries `call: baton.sql` may run; without any query, the
    /// activity is not offered.
    pub sql: Option<SqlSection>,
    /// The OpenID provider people sign in to the web UI through (authorization code flow);
    /// without one, the UI takes pasted tokens (and `baton dev` its development logins).
    pub oidc: Option<baton_api::ui::OidcConfig>,
}

/// `baton.sql`'s databases and the queries definitions may name (docs/activities.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSection {
    /// Name → connection URL (`sqlite://…`, `postgres://…`), or `env:NAME` to read the URL
    /// (and its password) from the environment variable NAME.
    #[serde(default)]
    pub databases: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub queries: std::collections::BTreeMap<String, SqlQuerySection>,
}

/// One named query.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlQuerySection {
    pub database: String,
    pub sql: String,
    #[serde(default = "max_rows")]
    pub max_rows: usize,
    #[serde(default)]
    pub bind_idempotency_key: bool,
    /// The statement changes rows: the answer counts them in `rowsAffected`.
    #[serde(default)]
    pub writes: bool,
}

fn max_rows() -> usize {
    baton_activities::sql::DEFAULT_MAX_ROWS
}

impl SqlSection {
    fn config(&self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<baton_activities::SqlConfig> {
        let mut databases = std::collections::BTreeMap::new();
        for (name, url) in &self.databases {
            let url = match url.strip_prefix("env:") {
                Some(variable) => env(variable).filter(|v| !v.is_empty()).with_context(|| {
                    format!("sql database `{name}` reads its URL from {variable}, which is not set")
                })?,
                None => url.clone(),
            };
            databases.insert(name.clone(), url);
        }
        let queries = self
            .queries
            .iter()
            .map(|(name, query)| {
                let mut configured = baton_activities::SqlQuery::new(&query.database, &query.sql);
                configured.max_rows = query.max_rows;
                configured.bind_idempotency_key = query.bind_idempotency_key;
                configured.writes = query.writes;
                (name.clone(), configured)
            })
            .collect();
        Ok(baton_activities::SqlConfig { databases, queries })
    }
}

/// Documents that are printed, signed and tracked (docs/activities.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsSection {
    /// The folder documents are kept in (drafts, documents, archive), by content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
    /// Or an S3-compatible bucket, `s3://<bucket>/<prefix>`, which wins over `folder`;
    /// credentials and endpoint from the AWS_* environment variables, then `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// S3 options, named as the AWS_* variables without the prefix, in lowercase: `endpoint`,
    /// `region`, `allow_http`... (prefer AWS_SECRET_ACCESS_KEY to a file for the secret).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub s3: std::collections::BTreeMap<String, String>,
    /// The folder of the templates, `<templateId>.hbs`.
    pub templates: PathBuf,
    /// The engine's Ed25519 signing key (PKCS#8, DER); made on first start when missing.
    pub key: PathBuf,
    /// A Chromium binary that prints documents to PDF (`format: pdf`); without it, documents
    /// are HTML only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdf: Option<PathBuf>,
}

impl DocumentsSection {
    pub fn config(&self) -> anyhow::Result<baton_activities::DocumentConfig> {
        let key = Arc::new(baton_activities::SigningKey::load_or_create(&self.key).map_err(anyhow::Error::msg)?);
        let templates = self.templates.clone();
        let mut config = match (&self.store, &self.folder) {
            (Some(url), _) => baton_activities::DocumentConfig::s3(url, &self.s3, templates, key),
            (None, Some(folder)) => baton_activities::DocumentConfig::local(folder, templates, key),
            (None, None) => Err("[documents] needs a `folder` or a `store` (s3://<bucket>/<prefix>)".into()),
        }
        .map_err(anyhow::Error::msg)?;
        config.pdf = self.pdf.clone();
        Ok(config)
    }
}

/// The AMQP broker (docs/activities.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSection {
    /// `amqp://user:password@host:5672/vhost` or `amqps://...`; prefer BATON_AMQP_URL when it
    /// holds a password.
    pub url: String,
}

/// An HTTP receiver of notifications: each delivery is POSTed as JSON, signed with HMAC-SHA256
/// of the body under `secret` in `X-Baton-Signature`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: String,
    /// Prefer BATON_WEBHOOK_SECRET (BATON_SMS_SECRET) to a file.
    #[serde(default)]
    pub secret: String,
}

impl WebhookSection {
    fn config(&self) -> baton_activities::notify::WebhookConfig {
        baton_activities::notify::WebhookConfig::new(&self.url, &self.secret)
    }
}

/// The email channel's SMTP server (docs/operations.md, Notifications).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    pub host: String,
    pub port: u16,
    /// The sender: `Baton <baton@example.com>` or a bare address.
    pub from: String,
    /// TLS from the first byte on port 465, STARTTLS (required) on any other port; `false` for
    /// a relay on the same host. Default true.
    #[serde(default = "yes")]
    pub tls: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// Prefer BATON_EMAIL_PASSWORD to a file.
    #[serde(default)]
    pub password: Option<String>,
}

fn yes() -> bool {
    true
}

impl EmailSection {
    fn smtp(&self) -> baton_activities::notify::SmtpConfig {
        let mut smtp = baton_activities::notify::SmtpConfig::new(&self.host, self.port, &self.from);
        smtp.tls = self.tls;
        smtp.username = self.username.clone();
        smtp.password = self.password.clone();
        smtp
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_addr: "127.0.0.1:8080".into(),
            grpc_addr: "127.0.0.1:9090".into(),
            store: "sqlite://baton.db".into(),
            clock: "system".into(),
            definitions: Vec::new(),
            directory: None,
            calendars: None,
            templates: None,
            locale: "en".into(),
            auth: AuthSection::default(),
            rate_per_second: 50.0,
            rate_burst: 200.0,
            retention: Default::default(),
            email: None,
            webhook: None,
            sms: None,
            amqp: None,
            documents: None,
            sql: None,
            oidc: None,
        }
    }
}

/// How bearer tokens are checked (docs/operations.md, Security).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// HS256 secret (development); prefer BATON_AUTH_HS256_SECRET to a file.
    pub hs256_secret: Option<String>,
    /// A JWKS file with the identity provider's public keys (RS256, ES256).
    pub jwks_file: Option<PathBuf>,
    /// Or the provider's JWKS URL.
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    /// The algorithm allow-list (`HS256`, `RS256`, `ES256`...); by default what the keys allow.
    pub algorithms: Vec<String>,
}

/// Flags shared by `baton server` and `baton dev`; each overrides the file and the environment.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// A TOML configuration file (every key of `--dump-config`).
    #[arg(long, env = "BATON_CONFIG")]
    config: Option<PathBuf>,
    /// Where the HTTP API listens (BATON_HTTP_ADDR).
    #[arg(long)]
    http_addr: Option<String>,
    /// Where the gRPC API listens, `off` for none (BATON_GRPC_ADDR).
    #[arg(long)]
    grpc_addr: Option<String>,
    /// The store (BATON_STORE).
    #[arg(long)]
    store: Option<String>,
    /// `system` or `manual` (BATON_CLOCK).
    #[arg(long)]
    clock: Option<String>,
    /// A folder of definitions deployed at start; repeatable (BATON_DEFINITIONS, comma-separated).
    #[arg(long = "definitions")]
    definitions: Vec<PathBuf>,
    /// A directory file imported at start (BATON_DIRECTORY).
    #[arg(long)]
    directory: Option<PathBuf>,
    /// Shared business calendars (BATON_CALENDARS).
    #[arg(long)]
    calendars: Option<PathBuf>,
    /// Notification templates every definition may use (BATON_TEMPLATES).
    #[arg(long)]
    templates: Option<PathBuf>,
    /// Print the configuration this would run with (secrets hidden) and exit.
    #[arg(long)]
    dump_config: bool,
}

/// The environment variables read, and the setting each sets.
const ENVIRONMENT: &[&str] = &[
    "BATON_HTTP_ADDR",
    "BATON_GRPC_ADDR",
    "BATON_STORE",
    "BATON_CLOCK",
    "BATON_DEFINITIONS",
    "BATON_DIRECTORY",
    "BATON_CALENDARS",
    "BATON_TEMPLATES",
    "BATON_LOCALE",
    "BATON_AUTH_HS256_SECRET",
    "BATON_AUTH_JWKS_FILE",
    "BATON_AUTH_JWKS_URL",
    "BATON_AUTH_ISSUER",
    "BATON_AUTH_AUDIENCE",
    "BATON_AUTH_ALGORITHMS",
    "BATON_RATE_PER_SECOND",
    "BATON_RATE_BURST",
    "BATON_EMAIL_PASSWORD",
    "BATON_WEBHOOK_SECRET",
    "BATON_SMS_SECRET",
    "BATON_AMQP_URL",
    "BATON_OIDC_CLIENT_SECRET",
];

impl ServerConfig {
    /// Defaults, then the file, then `env` (BATON_* variables), then the flags.
    pub fn load(args: &ServerArgs, base: ServerConfig, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the configuration {}", path.display()))?;
                // Read once alone for its errors (unknown keys, types), then laid over the base.
                let _: ServerConfig =
                    toml::from_str(&text).with_context(|| format!("{}: not a valid configuration", path.display()))?;
                let mut merged = toml::Value::try_from(&base)?;
                merge(&mut merged, toml::from_str(&text)?);
                merged.try_into().with_context(|| format!("{}: not a valid configuration", path.display()))?
            }
            None => base,
        };
        for name in ENVIRONMENT {
            if let Some(value) = env(name).filter(|v| !v.is_empty()) {
                config.set(name, value).with_context(|| format!("the environment variable {name}"))?;
            }
        }
        let flags: [(&str, Option<String>); 7] = [
            ("BATON_HTTP_ADDR", args.http_addr.clone()),
            ("BATON_GRPC_ADDR", args.grpc_addr.clone()),
            ("BATON_STORE", args.store.clone()),
            ("BATON_CLOCK", args.clock.clone()),
            ("BATON_DIRECTORY", args.directory.as_ref().map(|p| p.display().to_string())),
            ("BATON_CALENDARS", args.calendars.as_ref().map(|p| p.display().to_string())),
            ("BATON_TEMPLATES", args.templates.as_ref().map(|p| p.display().to_string())),
        ];
        for (name, value) in flags {
            if let Some(value) = value {
                config.set(name, value)?;
            }
        }
        if !args.definitions.is_empty() {
            config.definitions = args.definitions.clone();
        }
        config.check()?;
        Ok(config)
    }

    fn set(&mut self, name: &str, value: String) -> anyhow::Result<()> {
        let list = |v: &str| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
        match name {
            "BATON_HTTP_ADDR" => self.http_addr = value,
            "BATON_GRPC_ADDR" => self.grpc_addr = value,
            "BATON_STORE" => self.store = value,
            "BATON_CLOCK" => self.clock = value,
            "BATON_DEFINITIONS" => self.definitions = list(&value).into_iter().map(PathBuf::from).collect(),
            "BATON_DIRECTORY" => self.directory = Some(value.into()),
            "BATON_CALENDARS" => self.calendars = Some(value.into()),
            "BATON_TEMPLATES" => self.templates = Some(value.into()),
            "BATON_LOCALE" => self.locale = value,
            "BATON_AUTH_HS256_SECRET" => self.auth.hs256_secret = Some(value),
            "BATON_AUTH_JWKS_FILE" => self.auth.jwks_file = Some(value.into()),
            "BATON_AUTH_JWKS_URL" => self.auth.jwks_url = Some(value),
            "BATON_AUTH_ISSUER" => self.auth.issuer = Some(value),
            "BATON_AUTH_AUDIENCE" => self.auth.audience = list(&value),
            "BATON_AUTH_ALGORITHMS" => self.auth.algorithms = list(&value),
            "BATON_RATE_PER_SECOND" => self.rate_per_second = value.parse().context("a number")?,
            "BATON_RATE_BURST" => self.rate_burst = value.parse().context("a number")?,
            "BATON_EMAIL_PASSWORD" => match &mut self.email {
                Some(email) => email.password = Some(value),
                None => anyhow::bail!("a password for email, but no [email] server is configured"),
            },
            "BATON_WEBHOOK_SECRET" => match &mut self.webhook {
                Some(webhook) => webhook.secret = value,
                None => anyhow::bail!("a webhook secret, but no [webhook] receiver is configured"),
            },
            "BATON_AMQP_URL" => self.amqp = Some(AmqpSection { url: value }),
            "BATON_SMS_SECRET" => match &mut self.sms {
                Some(sms) => sms.secret = value,
                None => anyhow::bail!("an SMS gateway secret, but no [sms] gateway is configured"),
            },
            "BATON_OIDC_CLIENT_SECRET" => match &mut self.oidc {
                Some(oidc) => oidc.client_secret = Some(value),
                None => anyhow::bail!("an OpenID Connect client secret, but no [oidc] provider is configured"),
            },
            other => anyhow::bail!("{other} is not a setting"),
        }
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(self.clock.as_str(), "system" | "manual"),
            "clock must be `system` or `manual`, not {:?}",
            self.clock
        );
        anyhow::ensure!(self.rate_per_second > 0.0 && self.rate_burst >= 1.0, "the rate limit must be positive");
        crate::retention::policies(&self.retention)?;
        Ok(())
    }

    /// The configuration as TOML, secrets hidden.
    pub fn dump(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        if shown.auth.hs256_secret.is_some() {
            shown.auth.hs256_secret = Some("<hidden>".into());
        }
        if let Some(url) = &mut shown.auth.jwks_url {
            *url = hide_userinfo(url);
        }
        if let Some(email) = &mut shown.email
            && email.password.is_some()
        {
            email.password = Some("<hidden>".into());
        }
        if let Some(amqp) = &mut shown.amqp {
            amqp.url = hide_userinfo(&amqp.url);
        }
        if let Some(oidc) = &mut shown.oidc
            && oidc.client_secret.is_some()
        {
            oidc.client_secret = Some("<hidden>".into());
        }
        if let Some(documents) = &mut shown.documents {
            // Only the options known to hold no secret are shown.
            const PLAIN: &[&str] = &["endpoint", "region", "allow_http", "virtual_hosted_style_request", "bucket"];
            for (name, value) in &mut documents.s3 {
                if !PLAIN.contains(&name.to_ascii_lowercase().trim_start_matches("aws_")) {
                    *value = "<hidden>".into();
                }
            }
        }
        if let Some(sql) = &mut shown.sql {
            sql.databases.values_mut().for_each(|url| *url = hide_userinfo(url));
        }
        for hook in [&mut shown.webhook, &mut shown.sms].into_iter().flatten() {
            if !hook.secret.is_empty() {
                hook.secret = "<hidden>".into();
            }
        }
        Ok(toml::to_string_pretty(&shown)?)
    }

    fn auth_config(&self) -> anyhow::Result<AuthConfig> {
        let algorithms =
            self.auth.algorithms.iter().map(|a| baton_api::auth::parse_algorithm(a)).collect::<Result<Vec<_>, _>>()?;
        Ok(AuthConfig {
            hs256_secret: self.auth.hs256_secret.clone(),
            jwks_file: self.auth.jwks_file.clone(),
            jwks_url: self.auth.jwks_url.clone(),
            issuer: self.auth.issuer.clone(),
            audience: self.auth.audience.clone(),
            algorithms,
            ..AuthConfig::default()
        })
    }
}

/// Lays `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// A URL with its user and password (if any) hidden.
fn hide_userinfo(url: &str) -> String {
    // A password may also be a query parameter (`postgres://host/db?password=...`).
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=<hidden>"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_owned(),
    };
    let url = url.as_str();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            match rest.split_once('/').map(|(authority, _)| authority).unwrap_or(rest).rsplit_once('@') {
                Some((_, host)) => {
                    format!("{scheme}://<hidden>@{host}{}", rest.find('/').map(|i| &rest[i..]).unwrap_or(""))
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// `baton server`.
pub async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let config = ServerConfig::load(&args, ServerConfig::default(), |name| std::env::var(name).ok())?;
    if args.dump_config {
        return crate::write_out(&config.dump()?);
    }
    run(config, None).await
}

/// What `baton dev` adds to a server: a development identity whose tokens it prints, and the
/// demo it seeds on a new store.
struct DevIdentity {
    subjects: Vec<(&'static str, Vec<Grant>)>,
    /// The demo's folder (`definitions/demo/`), unless `--no-demo`.
    demo: Option<PathBuf>,
}

/// `baton dev`'s arguments: the server's, and the demo.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Do not seed the demo organisation and its requests on a new store.
    #[arg(long)]
    pub no_demo: bool,
}

/// The setting that says the demo was seeded (once per store).
const DEMO_SEEDED: &str = "dev.demo.seeded";

/// Seeds the demo on a store that has not had it: the organisation of
/// `<demo>/organisation.yaml` and the instances of `<demo>/starts.json`, started as the
/// development administrator (each with an idempotency key, so a crash halfway seeds no twin).
async fn seed_demo(app: &App, demo: &Path) -> anyhow::Result<()> {
    let store = app.engine.store();
    if store.setting(DEMO_SEEDED).await?.is_some() {
        return Ok(());
    }
    let organisation_file = demo.join("organisation.yaml");
    let Some(organisation) = crate::directory_cmd::load_organisation(&organisation_file)? else {
        anyhow::bail!("{}: the demo organisation has problems (above)", organisation_file.display());
    };
    baton_engine::erasure::import_directory(store.as_ref(), &organisation).await?;
    let starts_file = demo.join("starts.json");
    let starts: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(&starts_file).with_context(|| format!("cannot read {}", starts_file.display()))?,
    )
    .with_context(|| format!("{}: a list of starts", starts_file.display()))?;
    for (n, start) in starts.iter().enumerate() {
        let definition = start["definition"].as_str().unwrap_or_default();
        let options = baton_engine::StartOptions {
            idempotency_key: Some(format!("demo:{n}")),
            actor: Some(baton_engine::history::Actor::User { id: "admin".into() }),
            business_key: start["businessKey"].as_str().map(str::to_owned),
            tags: vec!["demo".into()],
            ..Default::default()
        };
        app.engine
            .start(definition, start["input"].clone(), options)
            .await
            .with_context(|| format!("{}: the demo start of {definition}", starts_file.display()))?;
    }
    store.set_setting(DEMO_SEEDED, &chrono::Utc::now().to_rfc3339()).await?;
    eprintln!(
        "Demo: {} people in {} departments and {} requests (sign in at /ui as tom, tina, mia...; --no-demo skips it)",
        organisation.people.len(),
        organisation.departments.len(),
        starts.len()
    );
    Ok(())
}

/// `baton dev`: a server on a local SQLite file, with a development secret, the definitions/
/// folder deployed, and tokens printed for trying the API.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let DevArgs { server: args, no_demo } = args;
    let base = ServerConfig {
        store: "sqlite://.baton/dev.db".into(),
        definitions: vec![PathBuf::from("definitions")],
        documents: Some(DocumentsSection {
            folder: Some(PathBuf::from(".baton/documents")),
            store: None,
            s3: Default::default(),
            templates: PathBuf::from("definitions/templates"),
            key: PathBuf::from(".baton/document-key.der"),
            pdf: None,
        }),
        ..ServerConfig::default()
    };
    let mut config = ServerConfig::load(&args, base, |name| std::env::var(name).ok())?;
    let no_keys =
        config.auth.hs256_secret.is_none() && config.auth.jwks_file.is_none() && config.auth.jwks_url.is_none();
    if args.dump_config {
        if no_keys {
            config.auth.hs256_secret = Some("<made at start, kept in .baton/dev-secret>".into());
        }
        return crate::write_out(&toml::to_string_pretty(&config)?);
    }
    std::fs::create_dir_all(".baton").context("cannot create .baton/ for the development store and secret")?;
    if no_keys {
        config.auth.hs256_secret = Some(dev_secret(Path::new(".baton/dev-secret"))?);
    }
    let identity = DevIdentity {
        subjects: vec![
            ("admin", vec![Grant { permission: Permission::Admin, namespace: None }]),
            ("designer", vec![Grant { permission: Permission::Designer, namespace: None }]),
            ("ops", vec![Grant { permission: Permission::Ops, namespace: None }]),
            ("worker", vec![Grant { permission: Permission::Worker, namespace: None }]),
        ],
        demo: (!no_demo).then(|| PathBuf::from("definitions/demo")).filter(|demo| demo.is_dir()),
    };
    run(config, Some(identity)).await
}

/// The development secret: made once, kept beside the development store.
fn dev_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        return Ok(secret.trim().to_owned());
    }
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    Ok(secret)
}

async fn run(config: ServerConfig, identity: Option<DevIdentity>) -> anyhow::Result<()> {
    let store = crate::store_url::open(&config.store).await?;
    let manual = config.clock == "manual";
    let clock: Arc<dyn Clock> = if manual {
        let offset = store.setting(CLOCK_OFFSET_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
        Arc::new(ManualClock::offset(offset))
    } else {
        Arc::new(SystemClock)
    };
    if let Some(path) = &config.directory {
        let organisation = crate::directory_cmd::load_organisation(path)?.ok_or_else(|| {
            anyhow::anyhow!("{}: the directory has problems (above); nothing imported", path.display())
        })?;
        let left_out = baton_engine::erasure::import_directory(store.as_ref(), &organisation)
            .await
            .context("cannot import the directory")?;
        if !left_out.is_empty() {
            tracing::warn!(people = ?left_out, "the directory file names people whose data was erased; their rows stay erased");
        }
    }
    let calendars = match &config.calendars {
        Some(path) => crate::run_cmd::load_calendars(path)?,
        None => Arc::new(baton_sla::Calendars::default()),
    };

    let mut registry = ActivityRegistry::new();
    baton_activities::http::register(&mut registry, baton_activities::http::HttpConfig::default());
    baton_activities::register_directory(&mut registry, Arc::clone(&store));
    let mut notify = NotifyConfig::new(Arc::clone(&store), Arc::clone(&clock));
    notify.calendars = (*calendars).clone();
    notify.default_locale = config.locale.clone();
    if let Some(path) = &config.templates {
        let templates = crate::run_cmd::read_value(&format!("@{}", path.display()), "templates")?;
        notify
            .add_global_templates(&templates)
            .map_err(|error| anyhow::anyhow!("the templates {}: {error}", path.display()))?;
    }
    notify.smtp = config.email.as_ref().map(EmailSection::smtp);
    notify.webhook = config.webhook.as_ref().map(WebhookSection::config);
    notify.sms = config.sms.as_ref().map(WebhookSection::config);
    let notify = Arc::new(notify);
    register_notify(&mut registry, Arc::clone(&notify));
    if let Some(amqp) = &config.amqp {
        baton_activities::register_amqp(&mut registry, baton_activities::AmqpConfig { uri: amqp.url.clone() });
    }
    if let Some(documents) = &config.documents {
        baton_activities::register_documents(&mut registry, documents.config()?);
    }
    if let Some(sql) = config.sql.as_ref().filter(|sql| !sql.queries.is_empty()) {
        let sql = sql.config(|name| std::env::var(name).ok())?;
        baton_activities::register_sql(&mut registry, sql).map_err(anyhow::Error::msg)?;
    }
    // Every other activity name goes to remote workers (`baton worker`, the HTTP protocol).
    let remote = RemoteQueue::new();
    remote.install(&mut registry);

    let mut api_options = ApiOptions {
        manual_clock: manual,
        rate_per_second: config.rate_per_second,
        rate_burst: config.rate_burst,
        calendars,
        remote_workers: Some(remote),
        notify: Some(Arc::clone(&notify)),
        dev_login: identity
            .as_ref()
            .map(|identity| identity.subjects.iter().map(|(s, grants)| ((*s).to_owned(), grants.clone())).collect()),
        ..ApiOptions::default()
    };
    if let Some(oidc) = &config.oidc {
        let provider = baton_api::ui::Oidc::discover(oidc.clone()).await.map_err(anyhow::Error::msg)?;
        api_options.oidc = Some(Arc::new(provider));
    }
    let options =
        EngineOptions { clock: if manual { ClockMode::Manual } else { ClockMode::System }, ..EngineOptions::default() };
    let mut builder =
        Engine::builder().store(Arc::clone(&store)).clock(Arc::clone(&clock)).options(options).activities(registry);
    // Deployed definitions are registered before the engine recovers the instances that run them.
    let mut programs = Vec::new();
    for workflow in baton_api::app::stored_definitions(store.as_ref(), &api_options).await? {
        let info = baton_engine::Orchestration::definition(&workflow);
        let key = info.key();
        programs.push((info.name, key.clone(), Arc::clone(workflow.program())));
        notify
            .add_definition_templates(&key, &workflow.program().templates)
            .map_err(|error| anyhow::anyhow!("the deployed definition {key}: use.templates: {error}"))?;
        builder = builder.orchestration(workflow);
    }
    let engine = Arc::new(builder.build().await.context("cannot start the engine")?);
    // Scheduled starts: the latest version of each definition says its schedule.
    let scheduler = Arc::new(baton_workflows::schedule::Scheduler::new(Arc::clone(&engine)));
    for (name, key, program) in &programs {
        if engine.latest_key(name).as_ref() == Some(key) {
            scheduler.register(program).await.with_context(|| format!("the schedule of {key}"))?;
        }
    }
    api_options.scheduler = Some(Arc::clone(&scheduler));
    let auth = Authenticator::new(config.auth_config()?).await.context("the authentication settings")?;
    let app = App::new(Arc::clone(&engine), auth.clone(), api_options).await?;
    for folder in &config.definitions {
        deploy_folder(&app, folder).await?;
    }
    if let Some(demo) = identity.as_ref().and_then(|identity| identity.demo.as_deref()) {
        seed_demo(&app, demo).await?;
    }

    let cancel = CancellationToken::new();
    let notifier = tokio::spawn(Notifier::new(notify).run(cancel.clone()));
    // The read models follow the domain events the definitions emit.
    let projector = Arc::new(baton_engine::projection::Projector::new(
        Arc::clone(&store),
        Arc::clone(&clock),
        baton_activities::read_models::training_projections(),
    ));
    let projected = tokio::spawn(projector.run(engine.subscribe(), cancel.clone()));
    let scheduled = tokio::spawn(Arc::clone(&scheduler).run(cancel.clone()));
    let retention = crate::retention::policies(&config.retention)?;
    let retention =
        tokio::spawn(crate::retention::run(Arc::clone(&store), Arc::clone(&clock), retention, cancel.clone()));
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, store = %config.store, "baton server listening");
    eprintln!("Baton API on http://{address}/api/v1 (OpenAPI document: http://{address}/api/v1/openapi.json)");
    eprintln!("Baton web UI on http://{address}/ui");
    let grpc = match config.grpc_addr.as_str() {
        "off" => None,
        grpc_addr => {
            let listener = tokio::net::TcpListener::bind(grpc_addr)
                .await
                .with_context(|| format!("cannot listen on {grpc_addr} for gRPC"))?;
            let address = listener.local_addr()?;
            tracing::info!(%address, "baton gRPC listening");
            eprintln!("Baton gRPC API on {address} (baton.v1; the .proto is proto/baton/v1/baton.proto)");
            let stopping = cancel.clone();
            let app = Arc::clone(&app);
            Some(tokio::spawn(async move {
                baton_api::server::serve_grpc(app, listener, async move { stopping.cancelled().await }).await
            }))
        }
    };
    if let Some(identity) = identity {
        eprintln!("Development tokens (valid 12 hours; send as `Authorization: Bearer <token>`):");
        for (subject, grants) in &identity.subjects {
            let token = auth.issue(subject, grants, std::time::Duration::from_secs(12 * 3600), chrono::Utc::now())?;
            eprintln!("  {subject}: {token}");
        }
    }
    let shutdown = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        shutdown.cancel();
    });
    let stopping = cancel.clone();
    baton_api::server::serve(app, listener, async move { stopping.cancelled().await }).await?;
    cancel.cancel();
    if let Some(grpc) = grpc {
        grpc.await.context("the gRPC server")?.context("the gRPC server")?;
    }
    let _ = notifier.await;
    let _ = retention.await;
    let _ = scheduled.await;
    let _ = projected.await;
    engine.shutdown().await;
    eprintln!("Baton stopped.");
    Ok(())
}

/// Deploys every definition file of `folder` (a missing folder deploys nothing).
async fn deploy_folder(app: &App, folder: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        tracing::info!(folder = %folder.display(), "no definitions folder");
        return Ok(());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
        .collect();
    files.sort();
    for file in files {
        let source = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file.display().to_string();
        match app.deploy(&source, &name, Actor::System).await {
            Ok(deployed) => {
                tracing::info!(definition = %deployed.row.name, version = %deployed.row.version, created = deployed.created, "deployed")
            }
            Err(problem) => {
                let details: Vec<String> = problem
                    .errors
                    .iter()
                    .map(|e| format!("  {}:{}:{}: {}", name, e.line.unwrap_or(0), e.column.unwrap_or(0), e.message))
                    .collect();
                anyhow::bail!("{}\n{}", problem.detail, details.join("\n"));
            }
        }
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> ServerArgs {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServerArgs,
        }
        let mut argv = vec!["baton"];
        argv.extend_from_slice(list);
        Wrapper::parse_from(argv).args
    }

    #[test]
    fn layers_apply_in_order_defaults_file_environment_flags() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "http_addr = \"0.0.0.0:1\"\nstore = \"sqlite://file.db\"\nclock = \"manual\"\n")
            .expect("write");
        let config = args(&["--config", file.to_str().expect("utf-8"), "--http-addr", "127.0.0.1:3"]);
        let env = |name: &str| match name {
            "BATON_HTTP_ADDR" => Some("127.0.0.1:2".to_owned()),
            "BATON_STORE" => Some("sqlite://env.db".to_owned()),
            _ => None,
        };
        let loaded = ServerConfig::load(&config, ServerConfig::default(), env).expect("loads");
        assert_eq!(loaded.http_addr, "127.0.0.1:3", "a flag beats the environment");
        assert_eq!(loaded.store, "sqlite://env.db", "the environment beats the file");
        assert_eq!(loaded.clock, "manual", "the file beats the defaults");
        assert_eq!(loaded.rate_burst, 200.0, "defaults fill the rest");
    }

    #[test]
    fn a_bad_setting_is_named() {
        let env = |name: &str| (name == "BATON_CLOCK").then(|| "sometimes".to_owned());
        let error = ServerConfig::load(&args(&[]), ServerConfig::default(), env).expect_err("refused");
        assert!(format!("{error:#}").contains("sometimes"), "{error:#}");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "htp_addr = \"x\"\n").expect("write");
        let error =
            ServerConfig::load(&args(&["--config", file.to_str().expect("utf-8")]), ServerConfig::default(), |_| None)
                .expect_err("unknown key");
        assert!(format!("{error:#}").contains("htp_addr"), "{error:#}");
    }

    #[test]
    fn the_dump_hides_secrets() {
        let mut config = ServerConfig::default();
        config.auth.hs256_secret = Some("s3cret".into());
        config.auth.jwks_url = Some("https://user:pa55@idp.example/keys".into());
        let dump = config.dump().expect("dump");
        assert!(!dump.contains("s3cret") && !dump.contains("pa55") && dump.contains("<hidden>"), "{dump}");
        assert!(dump.contains("https://<hidden>@idp.example/keys"), "{dump}");
        assert_eq!(hide_userinfo("https://idp.example/keys"), "https://idp.example/keys");
        assert_eq!(
            hide_userinfo("postgres://db.example/hr?user=hr&password=pa55&sslmode=require"),
            "postgres://db.example/hr?user=hr&password=<hidden>&sslmode=require"
        );

        let mut email: ServerConfig =
            toml::from_str("[email]\nhost = \"smtp.example\"\nport = 587\nfrom = \"baton@example\"\n").expect("toml");
        email.set("BATON_EMAIL_PASSWORD", "m4il-pass".into()).expect("a password for the configured server");
        assert_eq!(email.email.as_ref().map(|e| (e.tls, e.password.as_deref())), Some((true, Some("m4il-pass"))));
        let dump = email.dump().expect("dump");
        assert!(!dump.contains("m4il-pass") && dump.contains("<hidden>"), "{dump}");
        let refused = ServerConfig::default().set("BATON_EMAIL_PASSWORD", "x".into());
        assert!(refused.is_err(), "a password without a server is a mistake");

        let mut hooks: ServerConfig =
            toml::from_str("[webhook]\nurl = \"https://hooks.example/baton\"\n[sms]\nurl = \"https://sms.example\"\n")
                .expect("toml");
        hooks.set("BATON_WEBHOOK_SECRET", "h00k-key".into()).expect("a webhook secret");
        hooks.set("BATON_SMS_SECRET", "sms-key".into()).expect("an SMS secret");
        let dump = hooks.dump().expect("dump");
        assert!(!dump.contains("h00k-key") && !dump.contains("sms-key"), "{dump}");
        assert!(dump.contains("https://hooks.example/baton"), "{dump}");

        let text = "[oidc]\nissuer = \"https://id.example\"\nclient_id = \"baton\"\n\
                    redirect_url = \"https://baton.example/ui/login/oidc/callback\"\n";
        let mut oidc: ServerConfig = toml::from_str(text).expect("toml");
        oidc.set("BATON_OIDC_CLIENT_SECRET", "c1ient".into()).expect("a client secret");
        let dump = oidc.dump().expect("dump");
        assert!(!dump.contains("c1ient") && dump.contains("client_secret = \"<hidden>\""), "{dump}");
        assert!(dump.contains("subject_claim = \"sub\""), "the defaults are shown: {dump}");
        let refused = ServerConfig::default().set("BATON_OIDC_CLIENT_SECRET", "x".into());
        assert!(refused.is_err(), "a client secret without a provider is a mistake");

        let mut broker = ServerConfig::default();
        broker.set("BATON_AMQP_URL", "amqp://baton:r4bbit@mq.example:5672/%2f".into()).expect("a broker");
        let dump = broker.dump().expect("dump");
        assert!(!dump.contains("r4bbit") && dump.contains("amqp://<hidden>@mq.example:5672/%2f"), "{dump}");

        let text = "[documents]\nstore = \"s3://docs/training\"\ntemplates = \"t\"\nkey = \"k.der\"\n\
                    [documents.s3]\nendpoint = \"http://minio:9000\"\nsecret_access_key = \"m1n10\"\n\
                    sse_customer_key_base64 = \"k3y\"\n";
        let documents: ServerConfig = toml::from_str(text).expect("toml");
        let shown = documents.dump().expect("dump");
        assert!(!shown.contains("m1n10") && !shown.contains("k3y") && shown.contains("http://minio:9000"), "{shown}");
    }

    #[test]
    fn sql_databases_come_from_the_file_or_the_environment_and_their_passwords_stay_hidden() {
        let text = r#"
            [sql.databases]
            hr = "postgres://hr:pa55@db.example/hr"
            reporting = "env:REPORTING_URL"
            [sql.queries.expiring]
            database = "reporting"
            sql = "SELECT operator FROM certification WHERE until < $1"
            [sql.queries.record]
            database = "hr"
            sql = "INSERT INTO done (key) VALUES ($1) ON CONFLICT DO NOTHING"
            max_rows = 1
            bind_idempotency_key = true
            writes = true
        "#;
        let config: ServerConfig = toml::from_str(text).expect("toml");
        let dump = config.dump().expect("dump");
        assert!(!dump.contains("pa55") && dump.contains("postgres://<hidden>@db.example/hr"), "{dump}");
        assert!(dump.contains("env:REPORTING_URL"), "{dump}");

        let sql = config.sql.as_ref().expect("a [sql] section");
        let env = |name: &str| (name == "REPORTING_URL").then(|| "postgres://r:s3cret@db.example/r".to_owned());
        let resolved = sql.config(env).expect("resolved");
        assert_eq!(resolved.databases["reporting"], "postgres://r:s3cret@db.example/r");
        assert_eq!(resolved.databases["hr"], "postgres://hr:pa55@db.example/hr");
        assert_eq!(resolved.queries["expiring"].max_rows, baton_activities::sql::DEFAULT_MAX_ROWS);
        let record = &resolved.queries["record"];
        assert!(record.bind_idempotency_key && record.writes && record.max_rows == 1);
        assert!(!resolved.queries["expiring"].writes);

        let missing = sql.config(|_| None).expect_err("the variable is not set");
        assert!(format!("{missing:#}").contains("REPORTING_URL, which is not set"), "{missing:#}");
    }

    #[test]
    fn a_file_overrides_only_the_keys_it_names() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("baton.toml");
        std::fs::write(&file, "http_addr = \"0.0.0.0:9\"\n[auth]\nissuer = \"https://idp\"\n").expect("write");
        let base = ServerConfig { store: "sqlite://.baton/dev.db".into(), ..ServerConfig::default() };
        let loaded =
            ServerConfig::load(&args(&["--config", file.to_str().expect("utf-8")]), base, |_| None).expect("loads");
        assert_eq!(loaded.store, "sqlite://.baton/dev.db", "the base (baton dev's defaults) stays");
        assert_eq!(loaded.http_addr, "0.0.0.0:9");
        assert_eq!(loaded.auth.issuer.as_deref(), Some("https://idp"));
    }
}
