//! A busy script paused between two slices (see `store/script.rs` and `moon_script`'s
//! watch.rs): what the store keeps of it until the shard resumes it. Below the command
//! handlers: the store holds one.

use std::sync::Arc;

use moon_script::Signals;

/// A busy script paused between two slices: the run, and what its host knew.
pub(crate) struct PausedScript {
    pub(crate) run: moon_script::Suspended,
    pub(crate) signals: Arc<Signals>,
    pub(crate) now: u64,
    pub(crate) read_only: bool,
    pub(crate) written: usize,
    /// The database the script had selected.
    pub(crate) db: usize,
    /// Whose permissions its commands need.
    pub(crate) user: Option<crate::call::ScriptUser>,
}
