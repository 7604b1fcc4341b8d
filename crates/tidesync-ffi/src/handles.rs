//! Handles: `uint64_t` ids in a generational table, never pointers. A handle is
//! `generation << 32 | (slot + 1)`: closing a handle bumps its slot's generation, so the old
//! number (and any number this table never handed out, and a handle of the other kind) finds
//! nothing and the call answers `TS_ERR_CLOSED` instead of touching freed memory.
//!
//! Open databases are also kept by canonical path, reference-counted: a second `ts_open` of a
//! file that is open (another isolate, a Flutter hot restart whose old handles were never
//! closed) gets a new handle to the same engine; the last `ts_close` stops it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::abi::FfiError;
use crate::engine::Engine;
use crate::events::Subscription;

/// What a handle names.
#[derive(Clone)]
pub(crate) enum Entry {
    Db(Arc<Engine>),
    Sub(Arc<Subscription>),
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// The open engines by canonical database path, with how many handles each has.
#[derive(Default)]
struct Registry {
    engines: HashMap<PathBuf, (Arc<Engine>, usize)>,
}

fn table() -> MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    // Every critical section below is a few assignments: nothing is left half-done by a panic.
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The registry lock is held across opening and closing an engine, so two handles of one
/// file can never race into two engines.
fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn insert(entry: Entry) -> u64 {
    let mut table = table();
    let index = match table.free.pop() {
        Some(index) => index,
        None => {
            table.slots.push(Slot {
                generation: 1,
                entry: None,
            });
            table.slots.len() - 1
        }
    };
    let slot = &mut table.slots[index];
    slot.entry = Some(entry);
    (u64::from(slot.generation) << 32) | (index as u64 + 1)
}

fn slot_of(handle: u64) -> Option<(usize, u32)> {
    let index = (handle & 0xFFFF_FFFF).checked_sub(1)? as usize;
    Some((index, (handle >> 32) as u32))
}

fn get(handle: u64) -> Option<Entry> {
    let (index, generation) = slot_of(handle)?;
    let table = table();
    let slot = table.slots.get(index)?;
    (slot.generation == generation)
        .then(|| slot.entry.clone())
        .flatten()
}

fn remove(handle: u64) -> Option<Entry> {
    let (index, generation) = slot_of(handle)?;
    let mut table = table();
    let slot = table.slots.get_mut(index)?;
    if slot.generation != generation || slot.entry.is_none() {
        return None;
    }
    let entry = slot.entry.take();
    // A slot whose generation would wrap is retired instead of reused.
    if let Some(next) = slot.generation.checked_add(1) {
        slot.generation = next;
        table.free.push(index);
    }
    entry
}

/// The engine behind database handle `handle`.
pub(crate) fn db(handle: u64) -> Result<Arc<Engine>, FfiError> {
    match get(handle) {
        Some(Entry::Db(engine)) => Ok(engine),
        _ => Err(FfiError::closed("database")),
    }
}

/// The subscription behind handle `handle`.
pub(crate) fn sub(handle: u64) -> Result<Arc<Subscription>, FfiError> {
    match get(handle) {
        Some(Entry::Sub(sub)) => Ok(sub),
        _ => Err(FfiError::closed("subscription")),
    }
}

/// A new handle for `sub`.
pub(crate) fn add_sub(sub: Arc<Subscription>) -> u64 {
    insert(Entry::Sub(sub))
}

/// Forgets subscription handle `handle`.
pub(crate) fn remove_sub(handle: u64) -> Result<Arc<Subscription>, FfiError> {
    match get(handle) {
        Some(Entry::Sub(_)) => match remove(handle) {
            Some(Entry::Sub(sub)) => Ok(sub),
            _ => Err(FfiError::closed("subscription")),
        },
        _ => Err(FfiError::closed("subscription")),
    }
}

/// A handle to the engine of `path` (canonical), opening it with `open` unless it is open;
/// `true` when it attached to a live engine. `check` vets a live engine for this open.
pub(crate) fn open_db(
    path: &Path,
    open: impl FnOnce() -> Result<Arc<Engine>, FfiError>,
    check: impl FnOnce(&Engine) -> Result<(), FfiError>,
) -> Result<(u64, Arc<Engine>, bool), FfiError> {
    let mut registry = registry();
    if let Some((engine, refs)) = registry.engines.get_mut(path) {
        check(engine)?;
        *refs += 1;
        let engine = engine.clone();
        return Ok((insert(Entry::Db(engine.clone())), engine, true));
    }
    let engine = open()?;
    registry
        .engines
        .insert(path.to_owned(), (engine.clone(), 1));
    Ok((insert(Entry::Db(engine.clone())), engine, false))
}

/// Closes database handle `handle`; the last handle of an engine stops it (its sync thread
/// ends, its subscriptions are told and emptied). `true` if the engine stopped.
pub(crate) fn close_db(handle: u64) -> Result<bool, FfiError> {
    let mut registry = registry();
    let engine = match get(handle) {
        Some(Entry::Db(_)) => match remove(handle) {
            Some(Entry::Db(engine)) => engine,
            _ => return Err(FfiError::closed("database")),
        },
        _ => return Err(FfiError::closed("database")),
    };
    let path = engine.path().to_owned();
    let last = match registry.engines.get_mut(&path) {
        Some((_, refs)) if *refs > 1 => {
            *refs -= 1;
            false
        }
        _ => true,
    };
    if last {
        if let Some((engine, _)) = registry.engines.remove(&path) {
            engine.stop();
        }
    }
    Ok(last)
}
