//! The admin token: where it comes from (`admin.token`, `${ENV}` in it, or
//! `admin.token_file`), the rule that a non-loopback admin listener must have one, and
//! the constant-time check of a request's `Authorization: Bearer` header.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminConfig, Config};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin.token and admin.token_file are both set; use one")]
    Both,
    #[error("admin.token refers to ${{{0}}}, which is not set or empty")]
    MissingEnv(String),
    #[error("admin.token is empty")]
    Empty,
    #[error("admin.token_file {path}: {why}")]
    File { path: String, why: String },
    #[error(
        "admin.listen {0} is not a loopback address: set admin.token or admin.token_file \
         (mutating admin calls would be open to the network)"
    )]
    OpenAdmin(std::net::SocketAddr),
}

/// The token mutating calls need, if any. Read each time it is needed so that a
/// rotated `token_file` takes effect without a reload.
pub fn resolve(admin: &AdminConfig) -> Result<Option<String>, TokenError> {
    match (&admin.token, &admin.token_file) {
        (Some(_), Some(_)) => Err(TokenError::Both),
        (Some(raw), None) => {
            let raw = raw.trim();
            let token = match raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(var) => std::env::var(var)
                    .ok()
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| TokenError::MissingEnv(var.to_string()))?,
                None => raw.to_string(),
            };
            if token.is_empty() {
                return Err(TokenError::Empty);
            }
            Ok(Some(token))
        }
        (None, Some(path)) => {
            let file_err = |why: String| TokenError::File {
                path: path.display().to_string(),
                why,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(file_err("is empty".to_string()));
            }
            Ok(Some(token.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Validates the admin section of a config as a whole: the token resolves, and an admin
/// listener reachable from other hosts has one.
pub fn check_config(config: &Config) -> Result<Option<String>, TokenError> {
    let token = resolve(&config.admin)?;
    if token.is_none() && !config.admin.listen.ip().is_loopback() {
        return Err(TokenError::OpenAdmin(config.admin.listen));
    }
    Ok(token)
}

/// Whether an `Authorization` header value carries `expected`. Both sides are hashed
/// first so the comparison takes the same time whatever the length or content.
pub fn bearer_matches(expected: &str, header: Option<&str>) -> bool {
    let Some(given) = header.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    }) else {
        return false;
    };
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.trim().as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(yaml: &str) -> Config {
        Config::parse(yaml, "t").unwrap()
    }

    #[test]
    fn token_sources() {
        assert_eq!(resolve(&admin("{}").admin).unwrap(), None);
        let c = admin("admin: {token: s3cret}");
        assert_eq!(resolve(&c.admin).unwrap().as_deref(), Some("s3cret"));
        std::env::set_var("CORRAL_TEST_TOKEN_X", "from-env");
        let c = admin("admin: {token: '${CORRAL_TEST_TOKEN_X}'}");
        assert_eq!(resolve(&c.admin).unwrap().as_deref(), Some("from-env"));
        let c = admin("admin: {token: '${CORRAL_TEST_TOKEN_UNSET}'}");
        assert!(matches!(resolve(&c.admin), Err(TokenError::MissingEnv(_))));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "filetoken\n").unwrap();
        let c = admin(&format!("admin: {{token_file: '{}'}}", f.display()));
        assert_eq!(resolve(&c.admin).unwrap().as_deref(), Some("filetoken"));
        let c = admin(&format!(
            "admin: {{token_file: '{}/missing'}}",
            dir.path().display()
        ));
        assert!(matches!(resolve(&c.admin), Err(TokenError::File { .. })));
    }

    #[test]
    fn open_admin_needs_a_token() {
        let c = admin("admin: {listen: '0.0.0.0:11435'}");
        assert!(matches!(check_config(&c), Err(TokenError::OpenAdmin(_))));
        let c = admin("admin: {listen: '0.0.0.0:11435', token: t}");
        assert!(check_config(&c).is_ok());
        assert!(check_config(&admin("{}")).is_ok());
    }

    #[test]
    fn bearer() {
        assert!(bearer_matches("abc", Some("Bearer abc")));
        assert!(!bearer_matches("abc", Some("Bearer abd")));
        assert!(!bearer_matches("abc", Some("Bearer ab")));
        assert!(!bearer_matches("abc", Some("abc")));
        assert!(!bearer_matches("abc", None));
    }
}
