//! The data directory holds what must stay private: the SQLite databases
//! (password and refresh-token hashes among them), their WAL and shared-memory
//! files, and the generated JWT secret. It is created `0700`; the databases
//! are created `0600` (by the storage layer; SQLite gives a database's
//! `-wal` and `-shm` files the database's own mode).
//!
//! An existing directory or file that others (neither its owner nor its
//! group) may read, write or enter stops start-up in production (exit 2,
//! naming the path) and is a warning in development. Group access is only a
//! warning: a Kubernetes `fsGroup` volume is group-owned by design.

use std::path::{Path, PathBuf};

use crate::config::Environment;

/// Files of the data dir that hold secrets or user data.
const PRIVATE_SUFFIXES: &[&str] = &[".db", ".db-wal", ".db-shm", "jwt-secret"];

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is open to other users (mode {mode:o}); it holds password and token hashes: \
         chmod o-rwx it (the data directory 0700, its files 0600) before starting in production"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

/// Creates the data dir `0700` if it is missing, and checks that neither it
/// nor a private file in it is open to others.
pub fn prepare(data_dir: &Path, env: Environment) -> Result<(), DataDirError> {
    create_private(data_dir)?;
    check(data_dir, env)?;
    let entries = std::fs::read_dir(data_dir).map_err(|source| DataDirError::Read {
        path: data_dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| DataDirError::Read {
            path: data_dir.to_owned(),
            source,
        })?;
        let name = entry.file_name();
        let private = name
            .to_str()
            .is_some_and(|name| PRIVATE_SUFFIXES.iter().any(|s| name.ends_with(s)));
        if private {
            match check(&entry.path(), env) {
                // A `-wal` or `-shm` file goes away when the last connection
                // to its database closes (another process, a sqlite3 shell):
                // a file that is gone exposes nothing.
                Err(DataDirError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn create_private(data_dir: &Path) -> Result<(), DataDirError> {
    use std::os::unix::fs::DirBuilderExt;
    if data_dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|source| DataDirError::Create {
            path: data_dir.to_owned(),
            source,
        })
}

#[cfg(not(unix))]
fn create_private(data_dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(data_dir).map_err(|source| DataDirError::Create {
        path: data_dir.to_owned(),
        source,
    })
}

/// Refuses (production) or warns about (development) a path others may use.
#[cfg(unix)]
fn check(path: &Path, env: Environment) -> Result<(), DataDirError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| DataDirError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o007 != 0 {
        if env == Environment::Production {
            return Err(DataDirError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "open to other users: production refuses to start with it");
    } else if mode & 0o070 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "open to the group");
    }
    Ok(())
}

#[cfg(not(unix))]
fn check(_path: &Path, _env: Environment) -> Result<(), DataDirError> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_data_dir_is_created_private() {
        let parent = tempfile::tempdir().unwrap();
        let data = parent.path().join("a").join("data");
        prepare(&data, Environment::Production).unwrap();
        assert_eq!(mode(&data), 0o700);
    }

    #[test]
    fn production_refuses_a_directory_or_database_open_to_others() {
        let data = tempfile::tempdir().unwrap();
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let db = data.path().join("auth.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        prepare(data.path(), Environment::Production).unwrap();

        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = prepare(data.path(), Environment::Production).unwrap_err();
        assert!(
            matches!(&err, DataDirError::Exposed { path, .. } if path == &db),
            "{err}"
        );
        // Development only warns.
        prepare(data.path(), Environment::Development).unwrap();

        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare(data.path(), Environment::Production).unwrap_err();
        assert!(
            err.to_string().contains(&data.path().display().to_string()),
            "{err}"
        );
        // Group access is a warning only (fsGroup volumes).
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        prepare(data.path(), Environment::Production).unwrap();
    }
}
