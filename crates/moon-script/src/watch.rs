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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
    /// Woken when the run becomes busy ([`Signals::became_busy`]).
    waker: Mutex<Option<std::task::Waker>>,
    /// [`CLEAN`], [`WROTE`] or [`KILLED`]: one atomic, so that a kill and a first write
    /// cannot both win (SCRIPT KILL answers OK only if no write ever runs after it).
    state: AtomicU8,
    started: Instant,
    /// The function's name and the command that runs it, for FUNCTION STATS.
    command: Mutex<Option<(String, Vec<bytes::Bytes>)>>,
}

/// A busy run as FUNCTION STATS shows it (`running_script`).
pub struct RunningScript {
    pub name: String,
    pub command: Vec<bytes::Bytes>,
    pub duration_ms: u64,
}

/// The busy function, if any (FUNCTION STATS can answer while one is busy); `Err` while a
/// script (EVAL) is busy, which FUNCTION STATS answers with BUSY as Redis does.
pub fn running_script() -> Result<Option<RunningScript>, &'static str> {
    if !any_busy() {
        return Ok(None);
    }
    let runs = board();
    if runs.iter().any(|r| !r.function) {
        return Err(busy_reply(false));
    }
    let Some(run) = runs.first() else {
        return Ok(None);
    };
    let (name, command) = run
        .command
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    Ok(Some(RunningScript {
        name,
        command,
        duration_ms: run.started.elapsed().as_millis() as u64,
    }))
}

const CLEAN: u8 = 0;
const WROTE: u8 = 1;
const KILLED: u8 = 2;

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
            waker: Mutex::new(None),
            state: AtomicU8::new(CLEAN),
            started: Instant::now(),
            command: Mutex::new(None),
        })
    }

    /// Names a function's run for FUNCTION STATS: the function and the command that runs it
    /// (a copy of the arguments' handles, once per FCALL).
    pub fn describe(&self, name: String, command: &[bytes::Bytes]) {
        *self.command.lock().unwrap_or_else(|e| e.into_inner()) = Some((name, command.to_vec()));
    }

    /// Resolves once the run is busy (for a coordinator that tells the run's shards).
    pub fn became_busy(self: &Arc<Self>) -> impl std::future::Future<Output = ()> {
        let signals = self.clone();
        std::future::poll_fn(move |cx| {
            let mut waker = signals.waker.lock().unwrap_or_else(|e| e.into_inner());
            if signals.busy.load(Ordering::Acquire) {
                return std::task::Poll::Ready(());
            }
            *waker = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
    }

    /// Whether the run is a function's (FCALL) rather than a script's (EVAL).
    pub fn is_function(&self) -> bool {
        self.function
    }

    /// The run is about to change the keyspace: from now on it cannot be killed. `false`: it
    /// was killed already, and the write must not run.
    pub fn may_write(&self) -> bool {
        match self
            .state
            .compare_exchange(CLEAN, WROTE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == WROTE,
        }
    }

    fn killed(&self) -> bool {
        self.state.load(Ordering::Acquire) == KILLED
    }

    /// Asks the run to stop, unless it wrote.
    fn try_kill(&self) -> bool {
        match self
            .state
            .compare_exchange(CLEAN, KILLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now == KILLED,
        }
    }

    fn become_busy(self: &Arc<Self>, elapsed: Duration) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        board().push(self.clone());
        BUSY_COUNT.fetch_add(1, Ordering::AcqRel);
        if let Some(waker) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            waker.wake();
        }
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

const UNKILLABLE: &str = "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.";

/// What a killed run's write answers (the hook raises the same error at its next check).
pub const KILLED_TEXT: &str = "ERR Script killed by user with SCRIPT KILL...";

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
    let mut killed = false;
    for run in mine {
        killed |= run.try_kill();
    }
    if !killed {
        return Err(UNKILLABLE);
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
        wrote |= !run.try_kill();
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
    /// The coroutines the hook paused whose pause is still on its way up to the caller (a
    /// hook's yield carries no values in Lua 5.1: a bare yield is a pause only if its
    /// coroutine is here). `pcall` passes its coroutine's pause up as its own ([`passing`]).
    paused: Vec<usize>,
    /// The coroutines the hook may yield: the run's own and those its `pcall`s made (a
    /// script's own coroutines are not among them: their resumer would get the pause).
    ours: Vec<usize>,
    /// Any coroutine of the state may yield (a suspending state: its runs are mlua's async
    /// coroutines, which take a bare yield for "poll again", and a script's own coroutines
    /// are refused there).
    anywhere: bool,
}

impl Current {
    pub(crate) fn new(signals: Arc<Signals>, may_pause: bool) -> Current {
        Self::with(signals, may_pause, false)
    }

    /// A run of a suspending state, which may pause in any of its coroutines.
    pub(crate) fn suspending(signals: Arc<Signals>) -> Current {
        Self::with(signals, true, true)
    }

    fn with(signals: Arc<Signals>, may_pause: bool, anywhere: bool) -> Current {
        let now = Instant::now();
        Current {
            started: now,
            threshold: signals.threshold,
            signals,
            may_pause: may_pause && layout_ok(),
            slice_end: now,
            paused: Vec::new(),
            ours: Vec::new(),
            anywhere,
        }
    }

    fn step(&mut self, state: *mut ffi::lua_State) -> Step {
        if self.signals.killed() {
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
            && (self.anywhere || self.ours.contains(&(state as usize)))
            && unsafe { yieldable(state) }
        {
            if !self.anywhere {
                self.paused.push(state as usize);
            }
            // The next slice (a synchronous run's starts again when it is resumed).
            self.slice_end = now + SLICE;
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
    /// The runs in progress on this thread, by Lua state (the `global_State` every coroutine
    /// of a state shares): a synchronous run between its resumption and its pause, a
    /// suspending one from its start to its end (other runs happen while it waits).
    static RUNS: RefCell<Vec<(usize, Current)>> = const { RefCell::new(Vec::new()) };
}

/// The Lua state `state` (any coroutine of it) belongs to.
///
/// # Safety
/// `state` is a live Lua state.
unsafe fn state_key(state: *mut ffi::lua_State) -> usize {
    if layout_ok() {
        (*(state as *const StateHead)).l_g as usize
    } else {
        // Without the layout, one run per thread is told apart (each thread runs one
        // synchronous run at a time).
        0
    }
}

/// Runs `f` on the run of `state`'s Lua state, if one is watched.
fn with_run<R>(state: *mut ffi::lua_State, f: impl FnOnce(&mut Current) -> R) -> Option<R> {
    // SAFETY: called from the hook and the C helpers with the running state.
    let key = unsafe { state_key(state) };
    RUNS.with(|runs| {
        let mut runs = runs.try_borrow_mut().ok()?;
        runs.iter_mut().find(|(k, _)| *k == key).map(|(_, c)| f(c))
    })
}

fn insert(key: usize, current: Current) {
    RUNS.with(|runs| {
        let mut runs = runs.borrow_mut();
        runs.retain(|(k, _)| *k != key);
        runs.push((key, current));
    });
}

fn remove(key: usize) -> Option<Current> {
    RUNS.with(|runs| {
        let mut runs = runs.borrow_mut();
        let at = runs.iter().position(|(k, _)| *k == key)?;
        Some(runs.swap_remove(at).1)
    })
}

/// Makes `current` the run the hook watches in `coroutine`'s state, `coroutine` one it may
/// pause; its slice starts now.
pub(crate) fn enter(mut current: Current, coroutine: *mut ffi::lua_State) {
    current.slice_end = Instant::now() + SLICE;
    if !current.ours.contains(&(coroutine as usize)) {
        current.ours.push(coroutine as usize);
    }
    // SAFETY: a live coroutine of this thread's Lua state.
    unsafe {
        watch(coroutine);
        insert(state_key(coroutine), current);
    }
}

/// The run the hook watched in `coroutine`'s state, taken back (the run paused or ended).
pub(crate) fn leave(coroutine: *mut ffi::lua_State) -> Option<Current> {
    // SAFETY: a live coroutine of this thread's Lua state.
    remove(unsafe { state_key(coroutine) })
}

/// A suspending run watched from its start to its end (see [`watch_state`]): off the board
/// and unwatched when dropped, also if its future is dropped half-way.
pub(crate) struct Watching {
    key: usize,
}

impl Watching {
    pub(crate) fn start(key: usize, current: Current) -> Watching {
        insert(key, current);
        Watching { key }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(current) = remove(self.key) {
            current.signals.finish();
        }
    }
}

/// Puts the hook on a suspending Lua state before any of its coroutines exists (they inherit
/// it); the key its runs are watched under.
pub(crate) fn watch_state(lua: &mlua::Lua) -> usize {
    // SAFETY: the state mlua runs code in; every coroutine it creates later is made from it.
    let key = unsafe {
        lua.exec_raw::<mlua::Integer>((), |state| {
            watch(state);
            ffi::lua_pushinteger(state, state_key(state) as mlua::Integer);
        })
    };
    key.map_or(0, |k| k as usize)
}

/// Puts the hook on a coroutine (the coroutines it creates inherit it).
///
/// # Safety
/// `state` is a live Lua state of this thread.
pub(crate) unsafe fn watch(state: *mut ffi::lua_State) {
    ffi::lua_sethook(state, Some(hook), ffi::LUA_MASKCOUNT, HOOK_EVERY);
}

impl Current {
    /// Whether `coroutine`'s last yield was the hook's pause (then it is taken: the caller
    /// passes it up or returns it).
    pub(crate) fn take_pause(&mut self, coroutine: *mut ffi::lua_State) -> bool {
        match self.paused.iter().position(|p| *p == coroutine as usize) {
            Some(at) => {
                self.paused.swap_remove(at);
                true
            }
            None => false,
        }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        self.signals.finish();
    }
}

/// `pcall`'s helper: whether coroutine `co` (argument 1), which just yielded, was paused by
/// the hook rather than by the script's own `coroutine.yield`. If so the caller, which yields
/// next to pass the pause up, is the one paused now.
pub(crate) unsafe extern "C-unwind" fn passing(state: *mut ffi::lua_State) -> c_int {
    let co = ffi::lua_tothread(state, 1);
    let passing = !co.is_null()
        && with_run(state, |c| {
            let paused = c.take_pause(co);
            if paused {
                c.paused.push(state as usize);
            }
            paused
        })
        .unwrap_or(false);
    ffi::lua_pushboolean(state, passing as c_int);
    1
}

fn kill_text() -> &'static CString {
    static TEXT: OnceLock<CString> = OnceLock::new();
    TEXT.get_or_init(|| CString::new(format!("{RAISED}{KILLED_TEXT}")).unwrap_or_default())
}

unsafe extern "C-unwind" fn hook(state: *mut ffi::lua_State, _ar: *mut ffi::lua_Debug) {
    let step = with_run(state, |c| c.step(state));
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
        && with_run(state, |c| c.may_pause && c.ours.contains(&(state as usize))).unwrap_or(false);
    if !may {
        ffi::lua_pushnil(state);
        return 1;
    }
    let co = ffi::lua_newthread(state);
    ffi::lua_pushvalue(state, 1);
    ffi::lua_xmove(state, co, 1);
    with_run(state, |c| c.ours.push(co as usize));
    1
}

/// `pcall`'s helper once its coroutine is done: no longer one the hook may pause (its memory
/// may be reused for a script's own coroutine).
pub(crate) unsafe extern "C-unwind" fn forget(state: *mut ffi::lua_State) -> c_int {
    let co = ffi::lua_tothread(state, 1);
    if !co.is_null() {
        with_run(state, |c| c.ours.retain(|p| *p != co as usize));
    }
    0
}
