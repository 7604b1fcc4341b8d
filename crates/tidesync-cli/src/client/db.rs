//! Opening the client database without changing the disk more than the command asks.
//!
//! - Read commands ([`read`]) need a database: a missing or empty file is an error and
//!   nothing is created. A database that cannot be written (a read-only file, or a
//!   read-only directory where SQLite cannot keep its `-wal`/`-shm` files) is read from a
//!   private snapshot in a temporary directory, so nothing is left next to it. "Read-only"
//!   is the mode (no write bit, which root honours here too) or this process's permissions.
//! - Write commands ([`write`]) may create a database (put, patch, restore set, sync) only in
//!   a directory that exists; the others need one. A database that cannot be written is
//!   refused before SQLite opens it, saying why. A database the command created (or an empty
//!   file it filled) is removed again (emptied again) when the command fails.
//!
//! What it does not do: no directory is ever created, and no file is opened for writing
//! before the command's arguments were checked (the callers check them first).

use std::fs::File;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tidesync_store::Store;

use super::store_config;

/// Whether a command may create the database or needs it to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// The command writes its first record into a new database if there is none.
    Create,
    /// The command needs an existing database.
    Existing,
}

/// SQLite's files next to a database: they belong to it.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory `db` is in (`.` for a bare file name).
fn directory(db: &Path) -> &Path {
    match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// What is at `db` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No file.
    Nothing,
    /// A file of 0 bytes (as `touch` leaves it): no database yet.
    Empty,
    /// A file with content (SQLite's open decides whether it is a database).
    File,
}

fn found(db: &Path) -> anyhow::Result<Found> {
    match std::fs::metadata(db) {
        Ok(meta) if meta.is_dir() => {
            bail!(
                "{} is a directory, not a client database file",
                db.display()
            )
        }
        Ok(meta) if meta.len() == 0 => Ok(Found::Empty),
        Ok(_) => Ok(Found::File),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read {}", db.display()))),
    }
}

/// The error of a command that needs a database where there is none.
fn no_database(db: &Path, what: Found) -> anyhow::Error {
    let why = match what {
        Found::Empty => " (the file is empty)",
        _ => "",
    };
    anyhow::anyhow!(
        "no client database at {}{why}; nothing was created (write a record with `put` to create one)",
        db.display()
    )
}

/// Checks that a read command has a database at `db`.
pub fn existing(db: &Path) -> anyhow::Result<()> {
    match found(db)? {
        Found::File => Ok(()),
        other => Err(no_database(db, other)),
    }
}

/// Whether `db` may be written: its mode allows it (a file without any write permission is
/// read-only for everyone, root included: that is what its owner asked for) and this
/// process can open it for writing.
fn file_writable(db: &Path) -> bool {
    !mode_read_only(db) && File::options().write(true).open(db).is_ok()
}

/// Whether files can be created in `dir` (SQLite's `-wal` and `-shm`): its mode allows it,
/// and this process can (tried: permissions depend on who owns it).
fn directory_writable(dir: &Path) -> bool {
    // The probe file is removed when dropped.
    !mode_read_only(dir)
        && tempfile::Builder::new()
            .prefix(".tidesync-probe-")
            .tempfile_in(dir)
            .is_ok()
}

/// No write permission for anyone in the mode bits.
fn mode_read_only(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.permissions().readonly())
}

/// Whether this process can write `db` and create files next to it.
fn writable(db: &Path) -> bool {
    file_writable(db) && directory_writable(directory(db))
}

/// A store opened for reading: `db` itself, or a private snapshot of it (removed on drop).
#[derive(Debug)]
pub struct ReadStore {
    // Declared first: the store closes before its snapshot's directory goes.
    store: Store,
    _snapshot: Option<tempfile::TempDir>,
}

impl Deref for ReadStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// Opens the database at `db` for a read command.
pub fn read(db: &Path) -> anyhow::Result<ReadStore> {
    existing(db)?;
    if writable(db) {
        let store = Store::open(db, store_config())
            .with_context(|| format!("cannot open {}", db.display()))?;
        return Ok(ReadStore {
            store,
            _snapshot: None,
        });
    }
    // SQLite cannot read a WAL database in place without writing next to it; a copy can be
    // read (and migrated, when the file is older) without touching the original.
    let snapshot = tempfile::tempdir().context("cannot create a temporary directory")?;
    let copy = snapshot.path().join("snapshot.db");
    copy_file(db, &copy)?;
    let wal = sidecar(db, "-wal");
    if wal.exists() {
        copy_file(&wal, &sidecar(&copy, "-wal"))?;
    }
    let store = Store::open(&copy, store_config())
        .with_context(|| format!("cannot read {}", db.display()))?;
    Ok(ReadStore {
        store,
        _snapshot: Some(snapshot),
    })
}

/// Copies the bytes only (not the mode: the copy must be writable).
fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut source = File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut target = File::create(to).with_context(|| format!("cannot write {}", to.display()))?;
    std::io::copy(&mut source, &mut target)
        .with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

/// What a write command found before it opened the database: what to undo if it fails.
#[derive(Debug)]
pub struct Prepared {
    db: PathBuf,
    found: Found,
    /// The SQLite side files that were there before.
    sidecars_before: Vec<bool>,
}

/// Checks that a write command may open `db` (see the module docs); nothing is opened.
pub fn prepare_write(db: &Path, open: Open) -> anyhow::Result<Prepared> {
    let what = found(db)?;
    let dir = directory(db);
    match (what, open) {
        (Found::Nothing | Found::Empty, Open::Existing) => return Err(no_database(db, what)),
        (Found::Nothing, Open::Create) => {
            if !dir.is_dir() {
                bail!(
                    "cannot create {}: the directory {} does not exist; nothing was created",
                    db.display(),
                    dir.display()
                );
            }
            if !directory_writable(dir) {
                bail!(
                    "cannot create {}: the directory {} is not writable",
                    db.display(),
                    dir.display()
                );
            }
        }
        (Found::Empty | Found::File, _) => {
            if !file_writable(db) {
                bail!(
                    "{} is read-only (no write permission on the file): nothing was written; make it writable to change it",
                    db.display()
                );
            }
            if !directory_writable(dir) {
                bail!(
                    "{} cannot be written: its directory {} is read-only (SQLite keeps its -wal and -shm files there); nothing was written",
                    db.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(Prepared {
        db: db.to_owned(),
        found: what,
        sidecars_before: SIDECARS.iter().map(|s| sidecar(db, s).exists()).collect(),
    })
}

impl Prepared {
    /// Leaves the disk as it was before the command, when the command created or filled
    /// the database (a failed command must not leave a new database behind). The database
    /// must be closed.
    pub fn undo(&self) {
        match self.found {
            Found::File => return,
            Found::Nothing => {
                let _ = std::fs::remove_file(&self.db);
            }
            Found::Empty => {
                let _ = File::options().write(true).truncate(true).open(&self.db);
            }
        }
        for (suffix, existed) in SIDECARS.iter().zip(&self.sidecars_before) {
            if !existed {
                let _ = std::fs::remove_file(sidecar(&self.db, suffix));
            }
        }
    }
}

/// Runs a write command's `f` on the database at `db`: checked first (see
/// [`prepare_write`]), and put back as it was when opening or `f` fails.
pub fn write<T>(
    db: &Path,
    open: Open,
    f: impl FnOnce(&mut Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let prepared = prepare_write(db, open)?;
    let result = Store::open(db, store_config())
        .with_context(|| format!("cannot open {}", db.display()))
        // The store closes at the end of the closure, before an undo.
        .and_then(|mut store| f(&mut store));
    if result.is_err() {
        prepared.undo();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_in_the_working_directory() {
        assert_eq!(directory(Path::new("c.db")), Path::new("."));
        assert_eq!(directory(Path::new("a/c.db")), Path::new("a"));
        assert_eq!(
            sidecar(Path::new("a/c.db"), "-wal"),
            Path::new("a/c.db-wal")
        );
    }
}
