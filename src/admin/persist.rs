//! The state file: backends added through the admin API and drain flags, kept across
//! restarts in `STATE_DIR/state.json`, written atomically (temp file, fsync, rename,
//! fsync of the directory) so a crash leaves the old or the new file, never half of one.
//!
//! A stopgap for a single replica: the cluster issue replaces this file with the
//! replicated Raft state machine, which owns the dynamic pool and drain flags.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{BackendConfig, Config};
use crate::pool::Pool;

const FILE: &str = "state.json";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid state file: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Backends added through the admin API, validated on load like YAML entries.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Names of drained backends (YAML or run-time).
    #[serde(default)]
    pub drained: Vec<String>,
}

/// Where state is kept: `state_dir`, else systemd's `$STATE_DIRECTORY`, else nowhere.
pub fn state_dir(config: &Config) -> Option<PathBuf> {
    config.state_dir.clone().or_else(|| {
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .map(PathBuf::from)
            })
            .filter(|p| !p.as_os_str().is_empty())
    })
}

/// Reads the state file; a missing file is an empty state.
pub fn load(dir: &Path) -> Result<PersistedState, PersistError> {
    let path = dir.join(FILE);
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PersistedState::default()),
        Err(source) => {
            return Err(PersistError::Io {
                path: shown,
                source,
            })
        }
    };
    serde_json::from_str(&text).map_err(|e| PersistError::Invalid {
        path: shown,
        message: e.to_string(),
    })
}

/// What the pool holds now that must survive a restart.
pub fn snapshot(pool: &Pool) -> PersistedState {
    let mut drained: Vec<String> = pool
        .load()
        .backends
        .iter()
        .filter(|b| b.state.is_draining())
        .map(|b| b.name().to_string())
        .collect();
    drained.sort();
    PersistedState {
        backends: pool.dynamic_backends(),
        drained,
    }
}

/// Writes the state file atomically.
pub fn save(dir: &Path, state: &PersistedState) -> Result<(), PersistError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let io = |source, p: &Path| PersistError::Io {
        path: p.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir))?;
    let text = serde_json::to_vec_pretty(state).map_err(|e| PersistError::Invalid {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(e, &tmp))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| io(e, &tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| io(e, &path))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(e, dir))?;
    Ok(())
}

/// Builds the pool a server starts with: the YAML's backends plus the saved run-time
/// ones, with saved drain flags applied.
pub fn restore_pool(config: Config) -> Result<Pool, PersistError> {
    // With a cluster the replicated pool owns run-time backends and drain flags; a
    // file left from single-replica days must not drain what the cluster does not.
    if config.cluster.is_some() {
        return Ok(Pool::new(config));
    }
    let Some(dir) = state_dir(&config) else {
        return Ok(Pool::new(config));
    };
    let state = load(&dir)?;
    let dynamic = state.backends;
    if !dynamic.is_empty() || !state.drained.is_empty() {
        tracing::info!(
            file = %dir.join(FILE).display(),
            backends = dynamic.len(),
            drained = state.drained.len(),
            "restored run-time backends and drain flags"
        );
    }
    let pool = Pool::with_dynamic(config, dynamic);
    for name in &state.drained {
        if let Some(b) = pool.load().get(name) {
            b.state.set_draining(true);
        }
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            &format!(
                "state_dir: '{}'\nbackends: [{{name: a, url: 'h:1'}}]",
                dir.path().display()
            ),
            "t",
        )
        .unwrap();
        let pool = restore_pool(config.clone()).unwrap();
        pool.update_dynamic(|_, d| {
            d.push(serde_json::from_str(r#"{"name":"b","url":"http://h:2","weight":2}"#).unwrap());
            Ok::<_, ()>(())
        })
        .unwrap();
        pool.load().get("a").unwrap().state.set_draining(true);
        save(dir.path(), &snapshot(&pool)).unwrap();

        let again = restore_pool(config).unwrap();
        let t = again.load();
        assert_eq!(t.backends.len(), 2);
        assert!(t.get("a").unwrap().state.is_draining());
        let b = t.get("b").unwrap();
        assert!(b.dynamic && b.config.weight == 2 && b.config.url.authority == "h:2");
    }

    #[test]
    fn a_corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(PersistError::Invalid { .. })
        ));
        // A backend is checked like a YAML entry.
        let bad = r#"{"backends": [{"name": "a b", "url": "http://h:1"}]}"#;
        std::fs::write(dir.path().join(FILE), bad).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("invalid backend name 'a b'"), "{e}");
    }
}
