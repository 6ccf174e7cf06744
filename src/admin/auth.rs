//! The admin token: where it comes from (`admin.token`, resolved with the config, or
//! `admin.token_file`), the rule that a non-loopback admin listener must have one, and
//! the check of a request's `Authorization: Bearer` header.

use crate::config::{AdminConfig, Config};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin.token and admin.token_file are both set; use one")]
    Both,
    #[error("admin.token_file {path}: {why}")]
    File { path: String, why: String },
    #[error(
        "admin.listen {0} is not a loopback address: set admin.token or admin.token_file \
         (mutating admin calls would be open to the network)"
    )]
    OpenAdmin(std::net::SocketAddr),
}

/// The token mutating calls need, if any. A `token_file` is read each time so that a
/// rotated file takes effect without a reload.
pub fn resolve(admin: &AdminConfig) -> Result<Option<Secret>, TokenError> {
    match (&admin.token, &admin.token_file) {
        (Some(_), Some(_)) => Err(TokenError::Both),
        (Some(token), None) => Ok(Some(token.clone())),
        (None, Some(path)) => {
            let file_err = |why: String| TokenError::File {
                path: path.display().to_string(),
                why,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            Secret::new(text)
                .map(Some)
                .ok_or_else(|| file_err("is empty".to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Validates the admin section of a config as a whole: the token resolves, and an admin
/// listener reachable from other hosts has one.
pub fn check_config(config: &Config) -> Result<Option<Secret>, TokenError> {
    let token = resolve(&config.admin)?;
    if token.is_none() && !config.admin.listen.ip().is_loopback() {
        return Err(TokenError::OpenAdmin(config.admin.listen));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(yaml: &str) -> Config {
        Config::parse(yaml, "t").unwrap()
    }

    #[test]
    fn token_sources() {
        let token = |c: &Config| resolve(&c.admin).unwrap().map(|s| s.expose().to_string());
        assert_eq!(token(&admin("{}")), None);
        assert_eq!(
            token(&admin("admin: {token: s3cret}")).as_deref(),
            Some("s3cret")
        );
        std::env::set_var("CORRAL_TEST_TOKEN_X", "from-env");
        let c = admin("admin: {token: '${CORRAL_TEST_TOKEN_X}'}");
        assert_eq!(token(&c).as_deref(), Some("from-env"));
        // An unset variable is refused with the file, at its line.
        let e = Config::parse("admin: {token: '${CORRAL_TEST_TOKEN_UNSET}'}", "t");
        assert!(e.unwrap_err().to_string().starts_with("t:1:"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "filetoken\n").unwrap();
        let c = admin(&format!("admin: {{token_file: '{}'}}", f.display()));
        assert_eq!(token(&c).as_deref(), Some("filetoken"));
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
}
