//! Every command Moon knows, in one index: the keyspace's rows (`moon_store::table`, run by
//! a shard's store) and the server's connection-level rows (`commands`, run by the
//! connection). A request is looked up here once, when it is parsed ([`lookup`]); ACL rules
//! and COMMAND read the specs from here too.
//!
//! The bottom of the server: it names no handler. The connection-level rows carry functions
//! over the session, which sits above this index, so the index is built by `commands` (the
//! top) and installed once at startup ([`install`]) — the way Redis fills its command
//! dictionary when the server starts.

use std::sync::OnceLock;

use moon_store::call::KeyspaceCommand;
use moon_store::command::{find, sorted_index, CommandSpec, NameIndex};

/// Which table row runs a command.
#[derive(Clone, Copy, Debug)]
pub enum Row {
    /// A shard's store runs it: the row travels with the request ([`moon_store::Call`]).
    Keyspace(&'static KeyspaceCommand),
    /// The connection runs it: its position in `commands::CONNECTION`.
    Connection(usize),
}

/// One command: its spec and its row.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub spec: &'static CommandSpec,
    pub row: Row,
}

struct Catalog {
    /// Sorted by name; a command's position here is its id ([`id`]).
    index: NameIndex<Entry>,
}

static CATALOG: OnceLock<Catalog> = OnceLock::new();

/// Installs the index (once; later calls change nothing).
pub fn install(entries: impl IntoIterator<Item = Entry>) {
    CATALOG.get_or_init(|| Catalog {
        index: sorted_index(entries.into_iter().map(|e| (e.spec.name, e))),
    });
}

fn catalog() -> &'static Catalog {
    // `main` installs it before anything runs (a unit test installs it itself); before
    // that, no command is known.
    static EMPTY: Catalog = Catalog {
        index: NameIndex::empty(),
    };
    CATALOG.get().unwrap_or(&EMPTY)
}

/// Finds a command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<Entry> {
    find(&catalog().index, name)
}

/// Every command's spec, by name.
pub fn specs() -> impl Iterator<Item = &'static CommandSpec> {
    catalog().index.entries().iter().map(|(_, e)| e.spec)
}

/// How many commands there are (ids are below this).
pub fn count() -> usize {
    catalog().index.len()
}

/// A command's id: its position in the index (ACL keeps one bit per id).
pub fn id(spec: &CommandSpec) -> usize {
    catalog()
        .index
        .position(spec.name.as_bytes())
        .unwrap_or(usize::MAX)
}
