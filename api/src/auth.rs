//! Authentication of JWT bearer tokens for the HTTP and gRPC APIs (docs/authorization.md,
//! "Tokens").
//!
//! An [`Authenticator`] checks a token and says who is calling ([`Caller`]): its subject and the
//! platform permissions ([`Grant`]s) it holds, read from a claim of the token. Tokens are signed
//! with HS256 and a shared secret (development), or with RS256/ES256 (or another algorithm of the
//! allow-list) and keys from a JWKS file or URL (production).
//!
//! The checks, in order: the token's shape; the header's `alg`, which must be on the allow-list
//! (`none` never is; the header is read here, before any verification, so that such a token is
//! refused as [`AuthError::AlgorithmNotAllowed`] rather than as malformed); the key (by `kid`);
//! the signature; `exp` (required), `nbf` (when present), `iss` and `aud` (when configured), with
//! a leeway for clock skew; `sub` (required, non-empty); the permission grants.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

/// The longest token accepted, in bytes: a guard against absurd headers before any decoding.
const MAX_TOKEN_LEN: usize = 32 * 1024;
/// The largest JWKS document accepted from a URL.
const MAX_JWKS_LEN: usize = 1024 * 1024;
/// How long a JWKS fetch may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two refetches of the JWKS URL caused by unknown key ids.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// A platform permission: what a caller may do *to Baton* (docs/authorization.md, "Two kinds of
/// rights"). Written in lowercase in tokens and configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Everything, in every namespace it is granted.
    Admin,
    /// Deploy and read definitions, try them.
    Designer,
    /// Read and operate instances, incidents, the SLA dashboard, the directory.
    Ops,
    /// A service account that takes and completes activity tasks, nothing else.
    Worker,
}

impl Permission {
    /// Every permission, in the order of docs/authorization.md.
    pub const ALL: [Permission; 4] = [Permission::Admin, Permission::Designer, Permission::Ops, Permission::Worker];

    /// The permission's name, as written in tokens: `admin`, `designer`, `ops` or `worker`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Designer => "designer",
            Permission::Ops => "ops",
            Permission::Worker => "worker",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = AuthError;

    /// Reads a permission name, exactly as [`Permission::as_str`] writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            AuthError::BadGrant(format!("unknown permission `{s}` (expected admin, designer, ops or worker)"))
        })
    }
}

/// A platform permission, everywhere (namespace None) or in one namespace.
///
/// Written `permission` or `permission:namespace`: `admin`, `ops`, `ops:training`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The permission granted.
    pub permission: Permission,
    /// The namespace it is granted in; `None`: every namespace.
    pub namespace: Option<String>,
}

impl Grant {
    /// Reads a grant: `admin`, `ops`, `ops:training`. The permission is lowercase; a namespace is
    /// made of ASCII letters, digits, `-`, `_` and `.`.
    pub fn parse(s: &str) -> Result<Grant, AuthError> {
        let (name, namespace) = match s.split_once(':') {
            Some((name, namespace)) => (name, Some(namespace)),
            None => (s, None),
        };
        let permission = name.parse::<Permission>().map_err(|error| match error {
            AuthError::BadGrant(why) => AuthError::BadGrant(format!("`{s}`: {why}")),
            other => other,
        })?;
        if let Some(namespace) = namespace {
            let valid = !namespace.is_empty()
                && namespace.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                return Err(AuthError::BadGrant(format!(
                    "`{s}`: the namespace must be non-empty ASCII letters, digits, `-`, `_` or `.`"
                )));
            }
        }
        Ok(Grant { permission, namespace: namespace.map(str::to_owned) })
    }

    /// The grant of `permission` in every namespace.
    pub fn everywhere(permission: Permission) -> Grant {
        Grant { permission, namespace: None }
    }

    /// The grant of `permission` in `namespace` only.
    pub fn in_namespace(permission: Permission, namespace: impl Into<String>) -> Grant {
        Grant { permission, namespace: Some(namespace.into()) }
    }
}

impl fmt::Display for Grant {
    /// The form [`Grant::parse`] reads: `ops` or `ops:training`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{}:{namespace}", self.permission),
            None => write!(f, "{}", self.permission),
        }
    }
}

impl FromStr for Grant {
    type Err = AuthError;

    /// Same as [`Grant::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Grant::parse(s)
    }
}

/// Who is calling, after the token was checked.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's `sub`: the directory id of a person, or the id of a service account.
    pub subject: String,
    /// The platform permissions the token grants (none: an organisation member acting on human
    /// tasks only).
    pub grants: Vec<Grant>,
    /// When the token expires (its `exp`).
    pub expires_at: Option<DateTime<Utc>>,
    /// The CloudEvent types a `worker` account may raise (`baton_event_types`): exact types, or
    /// prefixes ending in `*`. Empty: none.
    pub event_types: Vec<String>,
}

impl Caller {
    /// Whether the token lists `kind` among the event types it may raise.
    pub fn may_raise(&self, kind: &str) -> bool {
        self.event_types.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => pattern == kind,
        })
    }

    /// `permission` (or admin) in `namespace`: a grant without namespace covers every namespace;
    /// for namespace None (an operation not tied to one) any grant of that permission counts.
    pub fn has(&self, permission: Permission, namespace: Option<&str>) -> bool {
        self.grants.iter().any(|grant| {
            (grant.permission == permission || grant.permission == Permission::Admin)
                && match (namespace, grant.namespace.as_deref()) {
                    (None, _) | (_, None) => true,
                    (Some(wanted), Some(granted)) => wanted == granted,
                }
        })
    }

    /// The namespaces in which the caller holds one of `permissions` (or admin): All, Some(list),
    /// or None-at-all. The list of [`Scope::Only`] is sorted and without duplicates.
    pub fn scope(&self, permissions: &[Permission]) -> Scope {
        let mut namespaces = BTreeSet::new();
        for grant in self
            .grants
            .iter()
            .filter(|grant| grant.permission == Permission::Admin || permissions.contains(&grant.permission))
        {
            match &grant.namespace {
                None => return Scope::All,
                Some(namespace) => {
                    namespaces.insert(namespace.clone());
                }
            }
        }
        if namespaces.is_empty() { Scope::Nothing } else { Scope::Only(namespaces.into_iter().collect()) }
    }
}

/// The namespaces an operation may reach for a caller (see [`Caller::scope`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// These namespaces only (sorted, no duplicates, never empty when built by
    /// [`Caller::scope`]).
    Only(Vec<String>),
    /// No namespace at all.
    Nothing,
}

impl Scope {
    /// Whether `namespace` is in the scope.
    pub fn includes(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(namespaces) => namespaces.iter().any(|n| n == namespace),
            Scope::Nothing => false,
        }
    }
}

/// How tokens are checked. At least one key source is needed: an HS256 secret, a JWKS file or a
/// JWKS URL (they may be combined).
#[derive(Clone)]
pub struct AuthConfig {
    /// The HS256 shared secret (development identity, tests).
    pub hs256_secret: Option<String>,
    /// A JWKS file with the public keys (RS256, ES256...), read once at start.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start (a failure refuses the configuration) and refetched when a
    /// token names an unknown `kid`, at most once a minute (the fetch at start does not count).
    pub jwks_url: Option<String>,
    /// The required `iss`, checked when set.
    pub issuer: Option<String>,
    /// The accepted audiences: a token's `aud` must name one of them. Checked when not empty
    /// (and then `aud` is required); when empty, `aud` is not checked.
    pub audience: Vec<String>,
    /// The allow-list of signing algorithms. Empty: HS256 when a secret is set, plus RS256 and
    /// ES256 when keys are set. `none` is never allowed (see [`parse_algorithm`]).
    pub algorithms: Vec<Algorithm>,
    /// The clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    pub leeway_secs: u64,
    /// The claim holding the platform permissions: a JSON array of grant strings ("ops",
    /// "ops:training"); absent means no platform permission. Default `baton_permissions`.
    pub permissions_claim: String,
    /// The claim that names the caller: a person's directory id or a service account's id.
    /// Default `sub`; an identity provider whose `sub` is an opaque id may be read by
    /// `preferred_username` or `email` instead.
    pub subject_claim: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            jwks_file: None,
            jwks_url: None,
            issuer: None,
            audience: Vec::new(),
            algorithms: Vec::new(),
            leeway_secs: 30,
            permissions_claim: "baton_permissions".to_owned(),
            subject_claim: "sub".to_owned(),
        }
    }
}

impl fmt::Debug for AuthConfig {
    /// Everything but the secret, which shows as `set` or `unset`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("hs256_secret", &if self.hs256_secret.is_some() { "set" } else { "unset" })
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url.as_deref().map(redact_url))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("leeway_secs", &self.leeway_secs)
            .field("permissions_claim", &self.permissions_claim)
            .field("subject_claim", &self.subject_claim)
            .finish()
    }
}

/// Reads an algorithm name of the allow-list as configuration writes it (`HS256`, `RS256`,
/// `ES256`, `PS256`, `EdDSA`...). `none` (in any case) is refused with
/// [`AuthError::AlgorithmNotAllowed`]: it is never allowed.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, AuthError> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("none") {
        return Err(AuthError::AlgorithmNotAllowed("none".to_owned()));
    }
    Algorithm::from_str(name).map_err(|_| AuthError::Config(format!("unknown signing algorithm `{name}`")))
}

/// Why a token, or the configuration, was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token at all.
    #[error("no bearer token")]
    Missing,
    /// The token is not a well-formed JWT, or a claim has the wrong shape (a missing `exp` or
    /// `sub`, say).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `exp` has passed (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not name this API, or is missing while an audience is configured.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// `iss` is not the configured issuer, or is missing while one is configured.
    #[error("the token comes from an untrusted issuer")]
    WrongIssuer,
    /// The signature does not verify with the key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The header's `alg` is not on the allow-list (`none` never is).
    #[error("signing algorithm `{0}` is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key can verify the token: an unknown `kid`, or no `kid` and not exactly one candidate.
    #[error("unknown signing key: {0}")]
    UnknownKey(String),
    /// The permissions claim holds something that is not a grant.
    #[error("bad permission grant: {0}")]
    BadGrant(String),
    /// The configuration is unusable (no key, no usable algorithm, an unreadable JWKS...), or
    /// a token cannot be issued with it.
    #[error("authentication configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// A stable, short identifier (e.g. "expired", "wrong-audience", "algorithm-not-allowed")
    /// used in problem types and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not-yet-valid",
            AuthError::WrongAudience => "wrong-audience",
            AuthError::WrongIssuer => "wrong-issuer",
            AuthError::BadSignature => "bad-signature",
            AuthError::AlgorithmNotAllowed(_) => "algorithm-not-allowed",
            AuthError::UnknownKey(_) => "unknown-key",
            AuthError::BadGrant(_) => "bad-grant",
            AuthError::Config(_) => "config",
        }
    }
}

/// Checks bearer tokens. Cheap to clone (the state is shared); its `Debug` shows no secret.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HS256 secret, as signing and verifying keys.
    hmac: Option<(EncodingKey, DecodingKey)>,
    /// The allow-list, never empty.
    algorithms: Vec<Algorithm>,
    /// `exp`, `nbf`, `iss`, `aud` and leeway; its algorithms are set per token.
    validation: Validation,
    issuer: Option<String>,
    audience: Vec<String>,
    permissions_claim: String,
    subject_claim: String,
    jwks_file: Option<PathBuf>,
    /// The keys of the JWKS file.
    file_keys: Vec<VerifyKey>,
    remote: Option<RemoteJwks>,
}

/// The JWKS URL and what it served last.
struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// When the last refetch caused by an unknown key started; held during a refetch so that
    /// concurrent requests wait for it rather than fetch again.
    last_refetch: Mutex<Option<Instant>>,
}

impl fmt::Debug for Authenticator {
    /// The configuration without the secret, and how many keys are loaded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Authenticator")
            .field("hs256_secret", &if inner.hmac.is_some() { "set" } else { "unset" })
            .field("algorithms", &inner.algorithms)
            .field("issuer", &inner.issuer)
            .field("audience", &inner.audience)
            .field("leeway_secs", &inner.validation.leeway)
            .field("permissions_claim", &inner.permissions_claim)
            .field("jwks_file", &inner.jwks_file)
            .field("file_keys", &inner.file_keys.len())
            .field("jwks_url", &inner.remote.as_ref().map(|remote| redact_url(&remote.url)))
            .finish()
    }
}

impl Authenticator {
    /// Loads the keys (reads the JWKS file, fetches the JWKS URL) and checks the configuration.
    ///
    /// Refuses a configuration with no key at all, an empty secret, an unreadable JWKS or one
    /// without a usable signing key, and an allow-list containing no algorithm for which a key
    /// is configured.
    pub async fn new(config: AuthConfig) -> Result<Self, AuthError> {
        let AuthConfig {
            hs256_secret,
            jwks_file,
            jwks_url,
            issuer,
            audience,
            algorithms,
            leeway_secs,
            permissions_claim,
            subject_claim,
        } = config;
        if hs256_secret.is_none() && jwks_file.is_none() && jwks_url.is_none() {
            return Err(AuthError::Config("no key: set an HS256 secret, a JWKS file or a JWKS URL".to_owned()));
        }
        let hmac = match hs256_secret {
            Some(secret) if secret.is_empty() => {
                return Err(AuthError::Config("the HS256 secret is empty".to_owned()));
            }
            Some(secret) => {
                Some((EncodingKey::from_secret(secret.as_bytes()), DecodingKey::from_secret(secret.as_bytes())))
            }
            None => None,
        };
        if issuer.as_deref().is_some_and(str::is_empty) {
            return Err(AuthError::Config("the issuer is empty".to_owned()));
        }
        if audience.iter().any(String::is_empty) {
            return Err(AuthError::Config("an audience is empty".to_owned()));
        }
        if permissions_claim.is_empty() {
            return Err(AuthError::Config("the permissions claim has no name".to_owned()));
        }
        if subject_claim.is_empty() {
            return Err(AuthError::Config("the subject claim has no name".to_owned()));
        }

        let file_keys = match &jwks_file {
            Some(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| AuthError::Config(format!("cannot read the JWKS file {}: {e}", path.display())))?;
                let keys = parse_jwks(&text)
                    .map_err(|e| AuthError::Config(format!("the JWKS file {}: {e}", path.display())))?;
                if keys.is_empty() {
                    return Err(AuthError::Config(format!(
                        "the JWKS file {} holds no usable signing key",
                        path.display()
                    )));
                }
                keys
            }
            None => Vec::new(),
        };

        let remote = match jwks_url {
            Some(url) => {
                let parsed = reqwest::Url::parse(&url)
                    .map_err(|e| AuthError::Config(format!("the JWKS URL {}: {e}", redact_url(&url))))?;
                if !matches!(parsed.scheme(), "https" | "http") {
                    return Err(AuthError::Config(format!(
                        "the JWKS URL {} is neither https nor http",
                        redact_url(&url)
                    )));
                }
                let client = reqwest::Client::builder()
                    .timeout(JWKS_FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| AuthError::Config(format!("cannot build the HTTP client: {e}")))?;
                let keys = fetch_jwks(&client, &url).await.map_err(AuthError::Config)?;
                if keys.is_empty() {
                    return Err(AuthError::Config(format!(
                        "the JWKS at {} holds no usable signing key",
                        redact_url(&url)
                    )));
                }
                Some(RemoteJwks { url, client, keys: RwLock::new(Arc::new(keys)), last_refetch: Mutex::new(None) })
            }
            None => None,
        };

        let has_keys = !file_keys.is_empty() || remote.is_some();
        let algorithms = if algorithms.is_empty() {
            let mut defaults = Vec::new();
            if hmac.is_some() {
                defaults.push(Algorithm::HS256);
            }
            if has_keys {
                defaults.extend([Algorithm::RS256, Algorithm::ES256]);
            }
            defaults
        } else {
            let mut unique = Vec::with_capacity(algorithms.len());
            for algorithm in algorithms {
                if !unique.contains(&algorithm) {
                    unique.push(algorithm);
                }
            }
            unique
        };
        let usable = |algorithm: Algorithm| match algorithm.family() {
            AlgorithmFamily::Hmac => hmac.is_some(),
            _ => remote.is_some() || file_keys.iter().any(|key| key.fits(algorithm)),
        };
        if !algorithms.iter().any(|a| usable(*a)) {
            return Err(AuthError::Config(format!(
                "no algorithm of the allow-list {algorithms:?} has a configured key"
            )));
        }
        for algorithm in algorithms.iter().filter(|a| !usable(**a)) {
            tracing::warn!(?algorithm, "an algorithm of the allow-list has no configured key");
        }

        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);

        Ok(Self {
            inner: Arc::new(Inner {
                hmac,
                algorithms,
                validation,
                issuer,
                audience,
                permissions_claim,
                subject_claim,
                jwks_file,
                file_keys,
                remote,
            }),
        })
    }

    /// Checks a token (without the `Bearer ` prefix) and says who is calling.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.verify(token).await.map(|(caller, _)| caller)
    }

    /// Checks a token as [`Authenticator::authenticate`] does, and gives its verified claims
    /// too (an OpenID Connect ID token's `nonce`, say).
    pub async fn verify(&self, token: &str) -> Result<(Caller, Map<String, Value>), AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed(format!("the token is longer than {MAX_TOKEN_LEN} bytes")));
        }
        let header = RawHeader::read(token)?;
        let algorithm = self.allowed(&header.alg)?;
        let key = self.key_for(algorithm, header.kid.as_deref()).await?;
        let mut validation = self.inner.validation.clone();
        validation.algorithms = vec![algorithm];
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| map_jwt_error(&error, algorithm))?;
        let caller = self.caller(&data.claims)?;
        Ok((caller, data.claims))
    }

    /// Signs an HS256 token (development identity, tests): only with a configured secret, and
    /// HS256 on the allow-list. The token carries `sub`, `iat` (`now`), `exp` (`now + ttl`), the
    /// grants in the permissions claim, and the configured `iss` and `aud`.
    pub fn issue(
        &self,
        subject: &str,
        grants: &[Grant],
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<String, AuthError> {
        self.issue_with(subject, grants, &Map::new(), ttl, now)
    }

    /// [`Authenticator::issue`] with more claims (`baton_event_types` for a worker account).
    pub fn issue_with(
        &self,
        subject: &str,
        grants: &[Grant],
        extra: &Map<String, Value>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<String, AuthError> {
        let inner = &self.inner;
        let Some((key, _)) = &inner.hmac else {
            return Err(AuthError::Config("issuing a token needs an HS256 secret".to_owned()));
        };
        if !inner.algorithms.contains(&Algorithm::HS256) {
            return Err(AuthError::Config("issuing a token needs HS256 on the allow-list".to_owned()));
        }
        if subject.trim().is_empty() {
            return Err(AuthError::Config("a token needs a non-empty subject".to_owned()));
        }
        let expires_at = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| AuthError::Config(format!("the lifetime {ttl:?} is out of range")))?;

        let mut claims = extra.clone();
        claims.insert("sub".to_owned(), Value::from(subject));
        claims.insert("iat".to_owned(), Value::from(now.timestamp()));
        claims.insert("exp".to_owned(), Value::from(expires_at.timestamp()));
        if let Some(issuer) = &inner.issuer {
            claims.insert("iss".to_owned(), Value::from(issuer.as_str()));
        }
        match inner.audience.as_slice() {
            [] => {}
            [one] => {
                claims.insert("aud".to_owned(), Value::from(one.as_str()));
            }
            many => {
                claims.insert("aud".to_owned(), Value::from(many.to_vec()));
            }
        }
        claims.insert(
            inner.permissions_claim.clone(),
            Value::Array(grants.iter().map(|grant| Value::from(grant.to_string())).collect()),
        );
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError::Config(format!("cannot sign the token: {e}")))
    }

    /// The header's algorithm, if it is on the allow-list.
    fn allowed(&self, name: &str) -> Result<Algorithm, AuthError> {
        if name.eq_ignore_ascii_case("none") {
            return Err(AuthError::AlgorithmNotAllowed(name.to_owned()));
        }
        match Algorithm::from_str(name) {
            Ok(algorithm) if self.inner.algorithms.contains(&algorithm) => Ok(algorithm),
            _ => Err(AuthError::AlgorithmNotAllowed(name.to_owned())),
        }
    }

    /// The key that verifies a token signed with `algorithm` and naming `kid`.
    async fn key_for(&self, algorithm: Algorithm, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        if algorithm.family() == AlgorithmFamily::Hmac {
            return match &self.inner.hmac {
                Some((_, key)) => Ok(key.clone()),
                None => Err(AuthError::UnknownKey(format!("no secret for {algorithm:?}"))),
            };
        }
        let lookup = self.lookup(algorithm, kid).await;
        let lookup = match (lookup, &self.inner.remote) {
            (Lookup::NotFound, Some(remote)) => {
                remote.refetch_if_due().await;
                self.lookup(algorithm, kid).await
            }
            (lookup, _) => lookup,
        };
        match lookup {
            Lookup::Found(key) => Ok(key),
            Lookup::NotFound => Err(AuthError::UnknownKey(match kid {
                Some(kid) => format!("no {algorithm:?} key with id `{kid}`"),
                None => format!("the token names no key id (`kid`) and there is no {algorithm:?} key"),
            })),
            Lookup::Ambiguous(count) => Err(AuthError::UnknownKey(format!(
                "the token names no key id (`kid`) and {count} {algorithm:?} keys could verify it"
            ))),
        }
    }

    /// Looks for the key among those of the file and those the URL served last.
    async fn lookup(&self, algorithm: Algorithm, kid: Option<&str>) -> Lookup {
        let remote_keys = match &self.inner.remote {
            Some(remote) => remote.keys.read().await.clone(),
            None => Arc::new(Vec::new()),
        };
        let mut candidates = self
            .inner
            .file_keys
            .iter()
            .chain(remote_keys.iter())
            .filter(|key| key.fits(algorithm) && (kid.is_none() || key.kid.as_deref() == kid));
        match (kid, candidates.next(), candidates.next()) {
            (_, None, _) => Lookup::NotFound,
            (Some(_), Some(key), _) | (None, Some(key), None) => Lookup::Found(key.key.clone()),
            (None, Some(_), Some(_)) => Lookup::Ambiguous(2 + candidates.count()),
        }
    }

    /// The caller named by verified claims.
    fn caller(&self, claims: &Map<String, Value>) -> Result<Caller, AuthError> {
        let name = &self.inner.subject_claim;
        let subject = match claims.get(name) {
            Some(Value::String(subject)) if !subject.trim().is_empty() => subject.clone(),
            Some(Value::String(_)) => return Err(AuthError::Malformed(format!("the subject (`{name}`) is empty"))),
            None | Some(Value::Null) => {
                return Err(AuthError::Malformed(format!("the token has no subject (`{name}`)")));
            }
            Some(_) => return Err(AuthError::Malformed(format!("the subject (`{name}`) is not a string"))),
        };
        let expires_at = claims
            .get("exp")
            .and_then(|exp| exp.as_i64().or_else(|| exp.as_f64().map(|exp| exp.round() as i64)))
            .and_then(|exp| DateTime::from_timestamp(exp, 0));
        let claim = &self.inner.permissions_claim;
        let grants = match claims.get(claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(grant) => Grant::parse(grant),
                    other => Err(AuthError::BadGrant(format!("{other} is not a string"))),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(AuthError::BadGrant(format!("the `{claim}` claim is not an array of strings")));
            }
        };
        let event_types = match claims.get(EVENT_TYPES_CLAIM) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Caller { subject, grants, expires_at, event_types })
    }
}

/// The claim listing the event types a worker account may raise.
pub const EVENT_TYPES_CLAIM: &str = "baton_event_types";

/// The outcome of a key lookup.
enum Lookup {
    Found(DecodingKey),
    NotFound,
    /// No `kid`, and this many keys fit.
    Ambiguous(usize),
}

impl RemoteJwks {
    /// Refetches the key set unless a refetch started less than a minute ago. A failure keeps
    /// the keys served last.
    async fn refetch_if_due(&self) {
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        match fetch_jwks(&self.client, &self.url).await {
            Ok(keys) => {
                tracing::info!(url = %redact_url(&self.url), keys = keys.len(), "refetched the JWKS");
                *self.keys.write().await = Arc::new(keys);
            }
            Err(error) => tracing::warn!(%error, "cannot refetch the JWKS; keeping the keys served last"),
        }
    }
}

/// The parts of a token header read before verification.
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

impl RawHeader {
    /// Reads the header of a compact JWS: `header.payload.signature`, base64url without padding.
    fn read(token: &str) -> Result<Self, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("a token has three parts separated by dots".to_owned()));
        };
        if header.is_empty() || payload.is_empty() {
            return Err(AuthError::Malformed("the header or the payload is empty".to_owned()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|e| AuthError::Malformed(format!("the header is not base64url: {e}")))?;
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(AuthError::Malformed("the header is not a JSON object".to_owned()));
        };
        let alg = match fields.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(AuthError::Malformed("the header has no algorithm (`alg`)".to_owned())),
        };
        let kid = match fields.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(AuthError::Malformed("the key id (`kid`) is not a string".to_owned())),
        };
        if fields.contains_key("crit") {
            // RFC 7515 §4.1.11: extensions a recipient does not understand must be refused.
            return Err(AuthError::Malformed("the header has critical extensions (`crit`)".to_owned()));
        }
        Ok(Self { alg, kid })
    }
}

/// The key types a JWKS may hold that can verify a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// A verification key of a JWKS.
struct VerifyKey {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one.
    algorithm: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

impl VerifyKey {
    /// A key from a JWK, or why it cannot verify signatures.
    fn from_jwk(jwk: &Jwk) -> Result<Self, String> {
        let common = &jwk.common;
        if common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
            return Err("not a signing key (`use`)".to_owned());
        }
        if common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
            return Err("not a verification key (`key_ops`)".to_owned());
        }
        let algorithm = match common.key_algorithm {
            None => None,
            Some(algorithm) => match Algorithm::try_from(algorithm) {
                Ok(algorithm) if algorithm.family() != AlgorithmFamily::Hmac => Some(algorithm),
                _ => return Err(format!("`alg` {algorithm} is not an asymmetric signing algorithm")),
            },
        };
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(params) => match params.curve {
                EllipticCurve::P256 => KeyKind::EcP256,
                EllipticCurve::P384 => KeyKind::EcP384,
                _ => return Err(format!("unsupported curve {:?}", params.curve)),
            },
            AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => KeyKind::Ed25519,
            AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are not taken from a JWKS".to_owned()),
            _ => return Err("unsupported key type".to_owned()),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unreadable key: {e}"))?;
        let key = Self { kid: common.key_id.clone(), algorithm: None, kind, key };
        match algorithm {
            Some(algorithm) if !key.fits(algorithm) => Err(format!("`alg` {algorithm:?} does not fit the key")),
            _ => Ok(Self { algorithm, ..key }),
        }
    }

    /// Whether this key verifies signatures made with `algorithm`.
    fn fits(&self, algorithm: Algorithm) -> bool {
        if self.algorithm.is_some_and(|own| own != algorithm) {
            return false;
        }
        match self.kind {
            KeyKind::Rsa => algorithm.family() == AlgorithmFamily::Rsa,
            KeyKind::EcP256 => algorithm == Algorithm::ES256,
            KeyKind::EcP384 => algorithm == Algorithm::ES384,
            KeyKind::Ed25519 => algorithm == Algorithm::EdDSA,
        }
    }
}

/// The usable signing keys of a JWKS document; keys that cannot verify signatures (encryption
/// keys, symmetric keys, unknown types) are skipped with a warning.
fn parse_jwks(text: &str) -> Result<Vec<VerifyKey>, String> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (index, raw) in set.keys.into_iter().enumerate() {
        let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
        let key = serde_json::from_value::<Jwk>(raw)
            .map_err(|e| format!("not a JWK: {e}"))
            .and_then(|jwk| VerifyKey::from_jwk(&jwk));
        match key {
            Ok(key) => keys.push(key),
            Err(why) => tracing::warn!(index, ?kid, %why, "skipped a key of the JWKS"),
        }
    }
    Ok(keys)
}

/// Fetches and reads a JWKS document.
async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<Vec<VerifyKey>, String> {
    let shown = redact_url(url);
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("cannot fetch the JWKS at {shown}: {}", e.without_url()))?;
    if response.content_length().is_some_and(|length| length > MAX_JWKS_LEN as u64) {
        return Err(format!("the JWKS at {shown} is larger than {MAX_JWKS_LEN} bytes"));
    }
    let body = response.bytes().await.map_err(|e| format!("cannot fetch the JWKS at {shown}: {}", e.without_url()))?;
    if body.len() > MAX_JWKS_LEN {
        return Err(format!("the JWKS at {shown} is larger than {MAX_JWKS_LEN} bytes"));
    }
    let text = std::str::from_utf8(&body).map_err(|_| format!("the JWKS at {shown} is not UTF-8"))?;
    parse_jwks(text).map_err(|e| format!("the JWKS at {shown}: {e}"))
}

/// A URL without its password, for logs and `Debug`.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("redacted"));
            }
            parsed.to_string()
        }
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// Maps a jsonwebtoken refusal to ours.
fn map_jwt_error(error: &jsonwebtoken::errors::Error, algorithm: Algorithm) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed(format!("{algorithm:?}"))
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::Malformed(format!("the `{claim}` claim is missing")),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::Malformed(format!("the `{claim}` claim is not valid")),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => {
            tracing::warn!(%error, "a configured key cannot verify a token");
            AuthError::BadSignature
        }
        _ => AuthError::Malformed(error.to_string()),
    }
}
