//! Long runs: how a script that runs too long lets the rest of the server go on.
//!
//! Every run is watched by a count hook (every [`HOOK_EVERY`] Lua instructions). The hook
//! does three things, in Redis's order (`scriptInterrupt`):
//!
//! 1. A run asked to stop (SCRIPT KILL / FUNCTION KILL, only granted to a run that has not
//!    written) raises Redis's "Script killed by user" error, and from then on raises it at
//!    every line, so that a `pcall` cannot swallow it for good.
//! 2. Past `busy-reply-threshold` (Redis's `lua-time-limit`) the run is *busy*: it is on the
//!    process-wide board ([`busy_runs`]), where the server looks before it sends a command to
//!    a shard — a command for a busy run's shard gets `-BUSY`, as in Redis, while the other
//!    shards serve their clients as usual.
//! 3. A busy run that may pause (a script on its shard's own thread, see
//!    [`crate::Outcome::Suspended`]) gives the thread back every [`SLICE`]: the hook yields
//!    the run's coroutine, the caller lets the thread's other work run (connections reading
//!    SCRIPT KILL, answering BUSY), then resumes it. Nothing else touches the keyspace in
//!    between: the shard stays locked for the run.
//!
//! Redis re-enters its event loop from the hook instead. A glommio executor cannot be
//! re-entered, so a busy script pauses as a coroutine. Lua 5.1 can yield from a count hook,
//! but not across a C function (`lua_yield` raises "attempt to yield across metamethod/C-call
//! boundary"): the hook yields only where that cannot happen, which it reads from the
//! coroutine's own counters (`nCcalls` against `baseCcalls`: see [`yieldable`]); `pcall`
//! runs its function as a coroutine of the run for the same reason (`prelude.lua`). Inside
//! `xpcall`, a metamethod, a `table.sort` comparator or a script's own coroutine the run
//! cannot pause: it stays busy (others get BUSY from other shards' threads) and can still be
//! killed.

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mlua::ffi;

use crate::convert::RAISED;

/// The hook runs every this many Lua instructions (Redis: 100,000).
const HOOK_EVERY: c_int = 10_000;

/// Once busy, a run that may pause gives its thread back this often.
pub const SLICE: Duration = Duration::from_millis(5);

static THRESHOLD_MS: AtomicU64 = AtomicU64::new(5000);

/// `busy-reply-threshold` in milliseconds (0: busy at once).
pub fn set_busy_threshold(ms: u64) {
    THRESHOLD_MS.store(ms, Ordering::Relaxed);
}

pub fn busy_threshold() -> u64 {
    THRESHOLD_MS.load(Ordering::Relaxed)
}

/// What a run and the rest of the process know of each other: which shards it holds, whether
/// it is busy, whether it wrote (then it cannot be killed), whether it was asked to stop.
pub struct Signals {
    shards: Vec<usize>,
    function: bool,
    threshold: Duration,
    busy: AtomicBool,
    kill: AtomicBool,
    wrote: AtomicBool,
}

/// The runs past the threshold, and how many there are (read first, without the lock: the
/// server checks it before every command).
static BUSY: Mutex<Vec<Arc<Signals>>> = Mutex::new(Vec::new());
static BUSY_COUNT: AtomicUsize = AtomicUsize::new(0);

fn board() -> std::sync::MutexGuard<'static, Vec<Arc<Signals>>> {
    BUSY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Signals {
    /// A run of a script (`function`: of a function) holding `shards`, busy after
    /// `busy-reply-threshold`.
    pub fn new(shards: Vec<usize>, function: bool) -> Arc<Signals> {
        Self::with_threshold(shards, function, Duration::from_millis(busy_threshold()))
    }

    /// The same, busy after `threshold`.
    pub fn with_threshold(shards: Vec<usize>, function: bool, threshold: Duration) -> Arc<Signals> {
        Arc::new(Signals {
            shards,
            function,
            threshold,
            busy: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
        })
    }

    /// Whether the run is a function's (FCALL) rather than a script's (EVAL).
    pub fn is_function(&self) -> bool {
        self.function
    }

    /// The run changed the keyspace: from now on it cannot be killed.
    pub fn wrote(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    fn become_busy(self: &Arc<Self>, elapsed: Duration) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        board().push(self.clone());
        BUSY_COUNT.fetch_add(1, Ordering::AcqRel);
        tracing::warn!(
            "Slow script detected: still in execution after {} milliseconds. You can try killing the script using the {} command.",
            elapsed.as_millis(),
            if self.function { "FUNCTION KILL" } else { "SCRIPT KILL" }
        );
    }

    /// The run ended: off the board.
    pub(crate) fn finish(self: &Arc<Self>) {
        if self.busy.swap(false, Ordering::AcqRel) {
            board().retain(|s| !Arc::ptr_eq(s, self));
            BUSY_COUNT.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Whether any run is busy (one atomic load: the common answer is no).
pub fn any_busy() -> bool {
    BUSY_COUNT.load(Ordering::Acquire) > 0
}

/// The busy run holding one of `shards` (`None`: any shard), if any: whether it runs a
/// function (for Redis's two BUSY texts).
pub fn busy_on(shards: Option<&[usize]>) -> Option<bool> {
    if !any_busy() {
        return None;
    }
    board()
        .iter()
        .find(|run| shards.is_none_or(|wanted| run.shards.iter().any(|s| wanted.contains(s))))
        .map(|run| run.function)
}

/// Redis's reply to a command refused while a script or function is busy.
pub fn busy_reply(function: bool) -> &'static str {
    if function {
        "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE."
    } else {
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."
    }
}

/// SCRIPT KILL (`function` false) or FUNCTION KILL: asks the busy runs of that kind to stop.
/// Redis's refusals: none busy, only the other kind busy, or it already wrote.
pub fn kill(function: bool) -> Result<(), &'static str> {
    let runs = board();
    if runs.is_empty() {
        return Err("NOTBUSY No scripts in execution right now.");
    }
    let mine: Vec<&Arc<Signals>> = runs.iter().filter(|r| r.function == function).collect();
    if mine.is_empty() {
        return Err(busy_reply(!function));
    }
    let killable: Vec<&&Arc<Signals>> = mine
        .iter()
        .filter(|r| !r.wrote.load(Ordering::Relaxed))
        .collect();
    if killable.is_empty() {
        return Err("UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.");
    }
    for run in killable {
        run.kill.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// At shutdown: asks every busy run that has not written to stop. Whether one that wrote is
/// still busy (it cannot be stopped: its writes are in memory only, never logged until it
/// ends, so the server may exit without waiting for it, as after a crash).
pub fn stop_for_shutdown() -> bool {
    let runs = board();
    let mut wrote = false;
    for run in runs.iter() {
        if run.wrote.load(Ordering::Relaxed) {
            wrote = true;
        } else {
            run.kill.store(true, Ordering::Relaxed);
        }
    }
    wrote
}

/// The run on this thread, as the hook sees it.
pub(crate) struct Current {
    pub(crate) signals: Arc<Signals>,
    started: Instant,
    threshold: Duration,
    /// Whether the caller resumes a paused run (a script on its own shard's thread).
    may_pause: bool,
    /// Pause at the first chance after this (set at each resume).
    slice_end: Instant,
    /// The hook paused the run (set when it yields, cleared at each resume): a yield with no
    /// values is a pause only then (a hook's yield carries no values in Lua 5.1).
    paused: bool,
    /// The coroutines the hook may yield: the run's own and those its `pcall`s made (a
    /// script's own coroutines are not among them: their resumer would get the pause).
    ours: Vec<usize>,
}

impl Current {
    pub(crate) fn new(signals: Arc<Signals>, may_pause: bool) -> Current {
        let now = Instant::now();
        Current {
            started: now,
            threshold: signals.threshold,
            signals,
            may_pause: may_pause && layout_ok(),
            slice_end: now,
            paused: false,
            ours: Vec::new(),
        }
    }

    fn step(&mut self, state: *mut ffi::lua_State) -> Step {
        if self.signals.kill.load(Ordering::Relaxed) {
            return Step::Kill;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.started);
        if elapsed < self.threshold {
            return Step::Go;
        }
        self.signals.become_busy(elapsed);
        if self.may_pause
            && now >= self.slice_end
            && self.ours.contains(&(state as usize))
            && unsafe { yieldable(state) }
        {
            self.paused = true;
            return Step::Pause;
        }
        Step::Go
    }
}

enum Step {
    Go,
    Pause,
    Kill,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Makes `current` the run the hook watches on this thread, `coroutine` one it may pause;
/// its slice starts now.
pub(crate) fn enter(mut current: Current, coroutine: *mut ffi::lua_State) {
    current.slice_end = Instant::now() + SLICE;
    current.paused = false;
    if !current.ours.contains(&(coroutine as usize)) {
        current.ours.push(coroutine as usize);
    }
    // SAFETY: a live coroutine of this thread's Lua state.
    unsafe { watch(coroutine) };
    CURRENT.with(|c| *c.borrow_mut() = Some(current));
}

/// The run the hook watched, taken back (the run paused or ended).
pub(crate) fn leave() -> Option<Current> {
    CURRENT.with(|c| c.borrow_mut().take())
}

/// Puts the hook on a coroutine (the coroutines it creates inherit it).
///
/// # Safety
/// `state` is a live Lua state of this thread.
pub(crate) unsafe fn watch(state: *mut ffi::lua_State) {
    ffi::lua_sethook(state, Some(hook), ffi::LUA_MASKCOUNT, HOOK_EVERY);
}

impl Current {
    /// Whether the run's last yield was the hook's pause.
    pub(crate) fn paused(&self) -> bool {
        self.paused
    }
}

/// `pcall`'s helper: whether the coroutine that just yielded was paused by the hook (then
/// `pcall` passes the pause up) rather than by the script's own `coroutine.yield`.
pub(crate) unsafe extern "C-unwind" fn paused(state: *mut ffi::lua_State) -> c_int {
    let paused = CURRENT.with(|c| {
        c.try_borrow()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.paused))
            .unwrap_or(false)
    });
    ffi::lua_pushboolean(state, paused as c_int);
    1
}

fn kill_text() -> &'static CString {
    static TEXT: OnceLock<CString> = OnceLock::new();
    TEXT.get_or_init(|| {
        CString::new(format!(
            "{RAISED}ERR Script killed by user with SCRIPT KILL..."
        ))
        .unwrap_or_default()
    })
}

unsafe extern "C-unwind" fn hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    let step = CURRENT.with(|c| match c.try_borrow_mut() {
        Ok(mut c) => c.as_mut().map(|c| c.step(state)),
        Err(_) => None,
    });
    match step {
        Some(Step::Kill) => {
            // From now on at every line and instruction of this coroutine: a pcall that
            // catches the error meets it again at once.
            ffi::lua_sethook(state, Some(hook), ffi::LUA_MASKCOUNT | ffi::LUA_MASKLINE, 1);
            ffi::lua_pushstring(state, kill_text().as_ptr());
            // Nothing owned lives in this frame: the error's long jump leaks nothing.
            ffi::lua_error(state);
        }
        Some(Step::Pause) => {
            ffi::lua_yield(state, 0);
        }
        Some(Step::Go) | None => {}
    }
}

/// The head of Lua 5.1.5's `lua_State` (lstate.h), up to the hook fields: Lua has no API that
/// tells whether a coroutine may yield (5.3's `lua_isyieldable`), so it is read from the
/// counters the VM itself checks in `lua_yield`. [`layout_ok`] verifies the layout once
/// against values set through the API; if it does not match, runs never pause.
#[repr(C)]
struct StateHead {
    next: *mut c_void,
    tt: u8,
    marked: u8,
    status: u8,
    top: *mut c_void,
    base: *mut c_void,
    l_g: *mut c_void,
    ci: *mut c_void,
    savedpc: *const c_void,
    stack_last: *mut c_void,
    stack: *mut c_void,
    end_ci: *mut c_void,
    base_ci: *mut c_void,
    stacksize: c_int,
    size_ci: c_int,
    n_ccalls: u16,
    base_ccalls: u16,
    hookmask: u8,
    allowhook: u8,
    basehookcount: c_int,
    hookcount: c_int,
}

/// Whether `lua_yield` may be called in `state` now: no C call (a C function that called
/// Lua, a metamethod) between this point and where the coroutine was resumed.
///
/// # Safety
/// `state` is a live Lua state and [`layout_ok`] held.
unsafe fn yieldable(state: *mut ffi::lua_State) -> bool {
    let head = &*(state as *const StateHead);
    head.n_ccalls == head.base_ccalls
}

/// Whether [`StateHead`] is the layout of this Lua: checked once, on a coroutine of a
/// throw-away state, against its status and hook settings read through the API.
pub(crate) fn layout_ok() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let lua = mlua::Lua::new();
        // SAFETY: API calls on a state this function owns; the head is read while it lives.
        let checked = unsafe {
            lua.exec_raw::<bool>((), |state| {
                let co = ffi::lua_newthread(state);
                ffi::lua_sethook(co, Some(hook), ffi::LUA_MASKCOUNT, 4321);
                let head = &*(co as *const StateHead);
                let ok = head.hookmask as c_int == ffi::lua_gethookmask(co)
                    && head.basehookcount == ffi::lua_gethookcount(co)
                    && head.basehookcount == 4321
                    && head.status as c_int == ffi::lua_status(co)
                    && head.n_ccalls == 0
                    && head.base_ccalls == 0;
                ffi::lua_sethook(co, None, 0, 0);
                ffi::lua_settop(state, 0);
                ffi::lua_pushboolean(state, ok as c_int);
            })
        };
        let ok = checked.unwrap_or(false);
        if !ok {
            tracing::warn!("Lua's state layout is not the one expected: busy scripts cannot pause (they can still be killed)");
        }
        ok
    })
}

/// `pcall`'s helper (a C function, called straight from Lua so that the counters it reads are
/// its caller's): a new coroutine of the run for `f`, which the hook may pause, if `f` is a
/// Lua function and the caller could itself pause here; nil otherwise (`pcall` then calls `f`
/// as Lua's own pcall does).
pub(crate) unsafe extern "C-unwind" fn spawn(state: *mut ffi::lua_State) -> c_int {
    let may = ffi::lua_type(state, 1) == ffi::LUA_TFUNCTION
        && ffi::lua_iscfunction(state, 1) == 0
        && layout_ok()
        && yieldable(state)
        && CURRENT.with(|c| {
            c.try_borrow()
                .ok()
                .and_then(|c| {
                    c.as_ref()
                        .map(|c| c.may_pause && c.ours.contains(&(state as usize)))
                })
                .unwrap_or(false)
        });
    if !may {
        ffi::lua_pushnil(state);
        return 1;
    }
    let co = ffi::lua_newthread(state);
    ffi::lua_pushvalue(state, 1);
    ffi::lua_xmove(state, co, 1);
    CURRENT.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            if let Some(c) = c.as_mut() {
                c.ours.push(co as usize);
            }
        }
    });
    1
}

/// `pcall`'s helper once its coroutine is done: no longer one the hook may pause (its memory
/// may be reused for a script's own coroutine).
pub(crate) unsafe extern "C-unwind" fn forget(state: *mut ffi::lua_State) -> c_int {
    let co = ffi::lua_tothread(state, 1);
    if !co.is_null() {
        CURRENT.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(c) = c.as_mut() {
                    c.ours.retain(|p| *p != co as usize);
                }
            }
        });
    }
    0
}
