//! Where secret values come from. A definition names the secrets it uses (`use.secrets`); the
//! values are looked up at the moment they are needed (an activity authenticating a call) and
//! never written to history.
//!
//! Three providers: [`EnvSecrets`] (environment variables), [`FileSecrets`] (a directory with a
//! file per secret, as Kubernetes and Docker mount them) and [`ChainSecrets`] (the first of
//! several that has the secret). Both readers take a value as JSON when it parses as JSON
//! (`{"username": "u", "password": "p"}`, `42`, `true`), and as a string otherwise; a value that
//! must stay a string although it parses (a PIN `1234`) is written JSON-quoted (`"1234"`).
//! Values are read again at every lookup, so a rotated secret is picked up without a restart.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

/// A source of secrets by name. A secret is a JSON value: a string, or an object such as
/// `{ "username": ..., "password": ... }`.
pub trait SecretProvider: Send + Sync + fmt::Debug {
    fn get(&self, name: &str) -> Option<Value>;
}

/// A secret's text as a value: JSON when it parses, else the text itself.
fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Secrets in environment variables: secret `name` is the variable `{prefix}{NAME}`, where
/// `NAME` is the name upper-cased with every character other than an ASCII letter or digit
/// replaced by `_` (`db-password` → `BATON_SECRET_DB_PASSWORD`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvSecrets {
    prefix: String,
}

impl EnvSecrets {
    /// The prefix [`EnvSecrets::default`] uses.
    pub const DEFAULT_PREFIX: &'static str = "BATON_SECRET_";

    /// Secrets in variables named `{prefix}{NAME}`.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The variable that holds secret `name`, or `None` for an empty name.
    pub fn variable(&self, name: &str) -> Option<String> {
        if name.is_empty() {
            return None;
        }
        let upper: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        Some(format!("{}{upper}", self.prefix))
    }
}

impl Default for EnvSecrets {
    fn default() -> Self {
        Self::with_prefix(Self::DEFAULT_PREFIX)
    }
}

impl SecretProvider for EnvSecrets {
    fn get(&self, name: &str) -> Option<Value> {
        let text = std::env::var(self.variable(name)?).ok()?;
        Some(parse_value(&text))
    }
}

/// Secrets as files of one directory, as a Kubernetes secret volume or Docker secrets mount
/// them: the file named like the secret holds its value (one trailing newline is dropped). A
/// name with a path separator, `..`, a leading `.` or a NUL is refused, so a lookup can never
/// leave the directory; so is a file larger than [`FileSecrets::MAX_BYTES`] or not UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSecrets {
    dir: PathBuf,
}

impl FileSecrets {
    /// Largest secret file read.
    pub const MAX_BYTES: u64 = 1024 * 1024;

    /// Secrets in the files of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file that holds secret `name`, or `None` when the name is refused.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        let refused = name.is_empty()
            || name.starts_with('.')
            || name.contains("..")
            || name.contains(['/', '\\', '\0'])
            || name.contains(std::path::MAIN_SEPARATOR);
        (!refused).then(|| self.dir.join(name))
    }
}

impl SecretProvider for FileSecrets {
    fn get(&self, name: &str) -> Option<Value> {
        let path = self.path(name)?;
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > Self::MAX_BYTES {
            return None;
        }
        let text = String::from_utf8(std::fs::read(&path).ok()?).ok()?;
        let text = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
        Some(parse_value(text))
    }
}

/// Several providers asked in order; the first that has the secret answers.
#[derive(Clone, Debug, Default)]
pub struct ChainSecrets {
    providers: Vec<Arc<dyn SecretProvider>>,
}

impl ChainSecrets {
    /// Asks `providers` in this order.
    pub fn new(providers: Vec<Arc<dyn SecretProvider>>) -> Self {
        Self { providers }
    }

    /// These providers, then `provider`.
    #[must_use]
    pub fn then(mut self, provider: Arc<dyn SecretProvider>) -> Self {
        self.providers.push(provider);
        self
    }
}

impl SecretProvider for ChainSecrets {
    fn get(&self, name: &str) -> Option<Value> {
        self.providers.iter().find_map(|p| p.get(name))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn env_names_are_upper_cased_with_underscores() {
        let env = EnvSecrets::default();
        assert_eq!(env.variable("db-password").as_deref(), Some("BATON_SECRET_DB_PASSWORD"));
        assert_eq!(env.variable("api.key/v2").as_deref(), Some("BATON_SECRET_API_KEY_V2"));
        assert_eq!(env.variable(""), None);
    }

    // Setting variables needs `unsafe` in edition 2024 (and the workspace forbids it), so these
    // read variables cargo sets for every test process.
    #[test]
    fn env_values_are_json_when_they_parse() {
        let cargo = EnvSecrets::with_prefix("CARGO_PKG_");
        assert_eq!(cargo.get("name"), Some(json!("baton-engine")), "not JSON: a string");
        let major: u64 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(u64::MAX);
        assert_eq!(cargo.get("version-major"), Some(json!(major)), "JSON: a number");
    }

    #[test]
    fn env_missing_is_none() {
        let env = EnvSecrets::with_prefix("BATON_SECRET_TEST_UNSET_7F3A9C_");
        assert_eq!(env.get("anything"), None);
    }

    #[test]
    fn files_hold_text_or_json() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        write("token", "s3cr3t\n").unwrap_or_else(|e| panic!("{e}"));
        write("db", "{\"username\": \"u\", \"password\": \"p\"}\r\n").unwrap_or_else(|e| panic!("{e}"));
        write("two-lines", "a\nb\n\n").unwrap_or_else(|e| panic!("{e}"));
        write("pin", "\"1234\"").unwrap_or_else(|e| panic!("{e}"));
        let files = FileSecrets::new(dir.path());
        assert_eq!(files.get("token"), Some(json!("s3cr3t")));
        assert_eq!(files.get("db"), Some(json!({"username": "u", "password": "p"})));
        assert_eq!(files.get("two-lines"), Some(json!("a\nb\n")), "only one trailing newline is dropped");
        assert_eq!(files.get("pin"), Some(json!("1234")));
        assert_eq!(files.get("missing"), None);
    }

    #[test]
    fn files_refuse_names_that_leave_the_directory() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = root.path().join("secrets");
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.path().join("outside"), "leak").unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(dir.join("sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("sub").join("x"), "nested").unwrap_or_else(|e| panic!("{e}"));
        let files = FileSecrets::new(&dir);
        for name in ["../outside", "..", "sub/x", "sub\\x", ".hidden", "", "a\0b", "/etc/passwd"] {
            assert_eq!(files.path(name), None, "{name:?} is refused");
            assert_eq!(files.get(name), None, "{name:?} is refused");
        }
        assert_eq!(files.get("sub"), None, "a directory is not a secret");
    }

    #[test]
    fn files_refuse_huge_files() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let big = "x".repeat(FileSecrets::MAX_BYTES as usize + 1);
        std::fs::write(dir.path().join("big"), big).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(FileSecrets::new(dir.path()).get("big"), None);
    }

    #[test]
    fn chain_takes_the_first_that_has_it() {
        let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(a.path().join("x"), "from a").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(b.path().join("x"), "from b").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(b.path().join("y"), "only b").unwrap_or_else(|e| panic!("{e}"));
        let chain = ChainSecrets::new(vec![Arc::new(FileSecrets::new(a.path()))])
            .then(Arc::new(FileSecrets::new(b.path())))
            .then(Arc::new(EnvSecrets::with_prefix("CARGO_PKG_")));
        assert_eq!(chain.get("x"), Some(json!("from a")));
        assert_eq!(chain.get("y"), Some(json!("only b")));
        assert_eq!(chain.get("name"), Some(json!("baton-engine")));
        assert_eq!(chain.get("z"), None);
        assert_eq!(ChainSecrets::default().get("x"), None);
    }
}
