//! A power-loss file system: what a disk really holds when the power goes.
//!
//! `crash-matrix --power-loss` puts the server's data directory on this FUSE file system (the
//! idea of LazyFS, as Jepsen uses it). The test SIGKILLs the server, calls
//! [`PowerLossFs::cut`], which throws away everything written but never made durable, and
//! restarts the server on what is left. A SIGKILL alone loses nothing the kernel accepted; a
//! cut also loses what was never fsynced, as a real power loss does.
//!
//! Everything lives in memory, in two layers per inode:
//!
//! - a regular file has its *current* data (what processes read) and its *durable* data.
//!   `fsync`/`fdatasync` make the durable data equal the current data (size included); writes,
//!   truncations and `fallocate` change only the current data and are remembered, in order,
//!   until the next fsync;
//! - a directory has current and durable entries; `fsync` of the directory makes the durable
//!   entries equal the current ones. Creating, linking, renaming and removing names change
//!   only the current entries. The root always exists.
//!
//! A cut sets every directory's entries to its durable ones and drops every inode the root no
//! longer reaches: a file whose data was fsynced but whose directory was not is gone (the
//! strict POSIX reading; ext4 and XFS are kinder). File data goes back to the durable data
//! ([`CutMode::DiscardUnsynced`]) or keeps a seeded random prefix of the unsynced writes, the
//! last one possibly torn ([`CutMode::KeepPrefix`]).
//!
//! Not modelled: directory changes become durable only through their directory's fsync, never
//! partly or through a journal; no reordering across files (each file keeps a prefix of its
//! own writes, independently); attributes other than the size (mode, owner, times) are not
//! rolled back; a write tears at any byte, not at a sector; no symlinks, xattrs or device
//! nodes. Files are opened with `FOPEN_DIRECT_IO` and every reply has a zero TTL, so the
//! kernel caches neither data nor names and reads after a cut see the cut state. Locks
//! (`flock`, `fcntl`) are left to the kernel, which handles them locally.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use fuser::{
    AccessFlags, BackgroundSession, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, MountOption, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// The kernel caches no entry and no attribute: a cut must show at once.
const TTL: Duration = Duration::ZERO;
const ROOT: u64 = 1;
const BLOCK: u32 = 4096;
/// Larger files are refused (`EFBIG`) rather than risking an allocation failure.
const MAX_FILE_SIZE: u64 = 1 << 32;
const NAME_MAX: usize = 255;

/// What a cut keeps of the writes made since each file's last fsync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutMode {
    /// Nothing: every file goes back to what its last fsync made durable.
    DiscardUnsynced,
    /// Each file's unsynced writes and truncations are replayed in order onto its durable
    /// data up to a point drawn from `seed` (and the inode number), the last write possibly
    /// only partly (a torn write): a kernel that had written back part of its cache.
    KeepPrefix { seed: u64 },
}

/// What a cut threw away.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CutStats {
    /// Inodes (files and directories) the root no longer reaches.
    pub files_dropped: usize,
    /// Unsynced bytes written to surviving files and not kept, plus the size of dropped files.
    pub bytes_discarded: u64,
}

/// A mounted power-loss file system. Dropping it unmounts it.
pub struct PowerLossFs {
    session: Option<BackgroundSession>,
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    longest: Arc<AtomicU64>,
}

impl PowerLossFs {
    /// Mounts an empty in-memory filesystem on `mountpoint` (an existing empty directory).
    pub fn mount(mountpoint: &Path) -> anyhow::Result<PowerLossFs> {
        available().map_err(anyhow::Error::msg)?;
        let mountpoint = mountpoint
            .canonicalize()
            .with_context(|| format!("mount point {}", mountpoint.display()))?;
        let state = Arc::new(Mutex::new(State::new()));
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("powerfs".to_string())];
        // Two threads: one callback that is slow for a reason of the host's (a page fault, a
        // preempted thread) does not stop the others — the state's lock orders them, and an
        // fsync covers every write that returned before it was called, as POSIX asks.
        config.n_threads = Some(2);
        // The session's threads inherit the nice value of the thread that spawns them.
        let longest = Arc::new(AtomicU64::new(0));
        let fs = PowerFs {
            state: state.clone(),
            longest: longest.clone(),
        };
        let spawned = std::thread::scope(|s| {
            s.spawn(|| {
                raise_priority();
                fuser::spawn_mount(fs, &mountpoint, &config)
            })
            .join()
        });
        let session = spawned
            .map_err(|_| anyhow::anyhow!("mounting powerfs: the mounting thread panicked"))?
            .with_context(|| format!("mounting powerfs on {}", mountpoint.display()))?;
        let session = Some(session);
        Ok(PowerLossFs {
            session,
            state,
            mountpoint,
            longest,
        })
    }

    /// The longest any request took in this file system (its wait for the state's lock
    /// included) since the last call: a stalled "disk" shows here.
    pub fn take_longest_request(&self) -> Duration {
        Duration::from_nanos(self.longest.swap(0, Ordering::Relaxed))
    }

    /// The power cut. The caller guarantees no process still has files open on it (it was
    /// SIGKILLed and reaped).
    pub fn cut(&self, mode: CutMode) -> CutStats {
        lock(&self.state).cut(mode)
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts (also on Drop).
    pub fn unmount(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(e) = session.umount_and_join() {
            // Most likely EBUSY: a file or a cwd is still open there. Detach it: the kernel
            // finishes the unmount, and the FUSE thread ends, once nothing uses it.
            let at = self.mountpoint.display();
            eprintln!("powerfs: unmounting {at}: {e}; detaching it");
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl Drop for PowerLossFs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Raises the calling thread's scheduling priority (nice -10), so that the FUSE threads it
/// spawns answer the server's writes and fsyncs ahead of the load's client threads.
///
/// A disk does not queue for the CPU behind the clients that load the server; this file
/// system's threads do, in the test's own process. On a 2-CPU machine with a dozen busy
/// client threads it could fall seconds behind, and an `everysec` fsync waiting on it is then
/// late: a power cut would take acknowledged writes older than the policy allows, through
/// no fault of the server's. Best effort: without the privilege it stays at 0 (said once).
fn raise_priority() {
    // SAFETY: setpriority and gettid only read their integer arguments; no memory is shared.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, -10) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        eprintln!("powerfs: could not raise the FUSE thread's priority ({e}); it runs at nice 0");
    }
}

/// Detaches a mount left at `mountpoint` by a run that was killed before it could unmount
/// (its FUSE thread died with it; the stale mount answers ENOTCONN). Nothing if none.
pub fn detach_stale(mountpoint: &Path) {
    let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
}

/// Whether this machine can mount it (root, /dev/fuse present) — tests and the crash matrix
/// check this and fail with a clear message if not.
pub fn available() -> Result<(), String> {
    let what = "the power-loss file system needs";
    if !nix::unistd::geteuid().is_root() {
        return Err(format!(
            "{what} root: it mounts FUSE with mount(2), without fusermount"
        ));
    }
    let mut dev = std::fs::OpenOptions::new();
    if let Err(e) = dev.read(true).write(true).open("/dev/fuse") {
        return Err(format!(
            "{what} /dev/fuse ({e}): modprobe fuse, or pass the device in"
        ));
    }
    // CAP_SYS_ADMIN (bit 21 of the effective set) is what mount(2) wants.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"));
    if let Some(Ok(caps)) = caps.map(|c| u64::from_str_radix(c.trim(), 16)) {
        if caps & (1 << 21) == 0 {
            return Err(format!("{what} CAP_SYS_ADMIN to mount FUSE"));
        }
    }
    Ok(())
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One change to a file's data, remembered until the next fsync.
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    Truncate(u64),
}

impl DataOp {
    fn apply(&self, buf: &mut Vec<u8>) -> Result<(), Errno> {
        match self {
            DataOp::Write { offset, data } => write_at(buf, *offset, data),
            DataOp::Truncate(size) => checked_len(*size).map(|len| buf.resize(len, 0)),
        }
    }

    fn payload(&self) -> u64 {
        match self {
            DataOp::Write { data, .. } => data.len() as u64,
            DataOp::Truncate(_) => 0,
        }
    }
}

fn checked_len(end: u64) -> Result<usize, Errno> {
    match usize::try_from(end) {
        Ok(len) if end <= MAX_FILE_SIZE => Ok(len),
        _ => Err(Errno::EFBIG),
    }
}

fn write_at(buf: &mut Vec<u8>, offset: u64, data: &[u8]) -> Result<(), Errno> {
    if data.is_empty() {
        return Ok(());
    }
    let start = checked_len(offset)?;
    let end = checked_len(offset.saturating_add(data.len() as u64))?;
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
    Ok(())
}

/// splitmix64: seedable, and good enough to choose where a cut falls.
struct SplitMix(u64);

impl SplitMix {
    /// Roughly uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).checked_rem(n).unwrap_or(0)
    }
}

#[derive(Default)]
struct FileBody {
    data: Vec<u8>,
    durable: Vec<u8>,
    /// Invariant: `data` is `durable` with these applied in order.
    unsynced: Vec<DataOp>,
}

#[derive(Default)]
struct DirBody {
    parent: u64,
    entries: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

enum Body {
    File(FileBody),
    Dir(DirBody),
}

struct Inode {
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Names in the current tree.
    links: u32,
    /// Open handles: an inode without a name lives while one is open.
    open: u32,
    body: Body,
}

impl Inode {
    fn new(perm: u16, uid: u32, gid: u32, body: Body) -> Inode {
        let now = SystemTime::now();
        let (atime, mtime, ctime) = (now, now, now);
        Inode {
            perm,
            uid,
            gid,
            atime,
            mtime,
            ctime,
            links: 0,
            open: 0,
            body,
        }
    }

    fn kind(&self) -> FileType {
        match self.body {
            Body::File(_) => FileType::RegularFile,
            Body::Dir(_) => FileType::Directory,
        }
    }
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
}

impl State {
    fn new() -> State {
        let mut root = Inode::new(0o755, 0, 0, Body::Dir(DirBody::default()));
        root.links = 1;
        if let Body::Dir(d) = &mut root.body {
            d.parent = ROOT;
        }
        State {
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
        }
    }

    fn inode(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirBody, Errno> {
        match self.inodes.get(&ino).map(|i| &i.body) {
            Some(Body::Dir(d)) => Ok(d),
            Some(_) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirBody, Errno> {
        match &mut self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileBody, Errno> {
        match &mut self.inode(ino)?.body {
            Body::File(f) => Ok(f),
            _ => Err(Errno::EISDIR),
        }
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let d = self.dir(parent)?;
        d.entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.dir(ino).is_ok()
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let inode = self.inodes.get(&ino).ok_or(Errno::ENOENT)?;
        let (size, nlink) = match &inode.body {
            Body::File(f) => (f.data.len() as u64, inode.links),
            Body::Dir(_) if inode.links == 0 => (BLOCK as u64, 0),
            Body::Dir(d) => {
                let subdirs = d.entries.values().filter(|c| self.is_dir(**c)).count();
                (BLOCK as u64, 2 + subdirs as u32)
            }
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            crtime: inode.ctime,
            kind: inode.kind(),
            perm: inode.perm,
            nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        })
    }

    /// Sets mtime and ctime to now (a directory whose entries changed, a written file).
    fn touch(&mut self, ino: u64) {
        if let Ok(inode) = self.inode(ino) {
            let now = SystemTime::now();
            (inode.mtime, inode.ctime) = (now, now);
        }
    }

    /// Gives a new inode its first name.
    fn add(&mut self, parent: u64, name: &OsStr, inode: Inode) -> Result<FileAttr, Errno> {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, inode);
        let attr = self.link(parent, name, ino);
        if attr.is_err() {
            self.inodes.remove(&ino);
        }
        attr
    }

    /// Adds the name `name` in `parent` for `ino`.
    fn link(&mut self, parent: u64, name: &OsStr, ino: u64) -> Result<FileAttr, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if self.dir(parent)?.entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let inode = self.inode(ino)?;
        if inode.links > 0 && matches!(inode.body, Body::Dir(_)) {
            return Err(Errno::EPERM); // no hard links to directories
        }
        inode.links += 1;
        inode.ctime = SystemTime::now();
        self.set_parent(ino, parent);
        self.dir_mut(parent)?.entries.insert(name.to_owned(), ino);
        self.touch(parent);
        self.attr(ino)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, rmdir: bool) -> Result<(), Errno> {
        let ino = self.child(parent, name)?;
        match (self.dir(ino), rmdir) {
            (Ok(d), true) if !d.entries.is_empty() => return Err(Errno::ENOTEMPTY),
            (Ok(_), false) => return Err(Errno::EISDIR),
            (Err(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.dir_mut(parent)?.entries.remove(name);
        self.touch(parent);
        self.unlinked(ino);
        Ok(())
    }

    /// One name of `ino` is gone.
    fn unlinked(&mut self, ino: u64) {
        if let Ok(inode) = self.inode(ino) {
            inode.links = inode.links.saturating_sub(1);
            inode.ctime = SystemTime::now();
        }
        self.maybe_free(ino);
    }

    /// Forgets an inode without a name, an open handle or a durable name: no cut can bring it
    /// back. (The kernel's lookup counts do not matter: inode numbers are never reused.)
    fn maybe_free(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if ino == ROOT || inode.links > 0 || inode.open > 0 {
            return;
        }
        let durable =
            |i: &Inode| matches!(&i.body, Body::Dir(d) if d.durable.values().any(|c| *c == ino));
        if !self.inodes.values().any(durable) {
            self.inodes.remove(&ino);
        }
    }

    fn rename(
        &mut self,
        from: (u64, &OsStr),
        to: (u64, &OsStr),
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let noreplace = flags == RenameFlags::RENAME_NOREPLACE;
        if !flags.is_empty() && !noreplace {
            return Err(Errno::EINVAL);
        }
        if to.1.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let src = self.child(from.0, from.1)?;
        let dst = self.dir(to.0)?.entries.get(to.1).copied();
        if let Some(dst) = dst {
            if noreplace {
                return Err(Errno::EEXIST);
            }
            if dst == src {
                return Ok(());
            }
            match (self.is_dir(src), self.dir(dst)) {
                (true, Ok(d)) if !d.entries.is_empty() => return Err(Errno::ENOTEMPTY),
                (true, Err(_)) => return Err(Errno::ENOTDIR),
                (false, Ok(_)) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
        self.dir_mut(from.0)?.entries.remove(from.1);
        self.dir_mut(to.0)?.entries.insert(to.1.to_owned(), src);
        self.set_parent(src, to.0);
        self.touch(from.0);
        self.touch(to.0);
        if let Some(dst) = dst {
            self.unlinked(dst);
        }
        Ok(())
    }

    fn set_parent(&mut self, ino: u64, parent: u64) {
        if let Ok(d) = self.dir_mut(ino) {
            d.parent = parent;
        }
    }

    /// Applies a write or truncation to the current data and remembers it until fsync.
    fn data_op(&mut self, ino: u64, op: DataOp) -> Result<(), Errno> {
        let f = self.file_mut(ino)?;
        op.apply(&mut f.data)?;
        f.unsynced.push(op);
        self.touch(ino);
        Ok(())
    }

    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        if self.is_dir(ino) {
            return self.fsyncdir(ino);
        }
        let f = self.file_mut(ino)?;
        for op in std::mem::take(&mut f.unsynced) {
            let _ = op.apply(&mut f.durable); // cannot fail: it already succeeded on `data`
        }
        Ok(())
    }

    fn fsyncdir(&mut self, ino: u64) -> Result<(), Errno> {
        let d = self.dir_mut(ino)?;
        let old = std::mem::replace(&mut d.durable, d.entries.clone());
        old.values().for_each(|gone| self.maybe_free(*gone));
        Ok(())
    }

    fn cut(&mut self, mode: CutMode) -> CutStats {
        let mut stats = CutStats::default();
        for inode in self.inodes.values_mut() {
            if let Body::Dir(d) = &mut inode.body {
                d.entries = d.durable.clone();
            }
        }
        // What the root reaches through durable entries survives.
        let (mut links, mut parents) = (HashMap::<u64, u32>::new(), Vec::new());
        let (mut reached, mut stack) = (HashSet::from([ROOT]), vec![ROOT]);
        while let Some(dir) = stack.pop() {
            let Ok(d) = self.dir(dir) else { continue };
            for child in d.entries.values() {
                *links.entry(*child).or_default() += 1;
                if reached.insert(*child) && self.is_dir(*child) {
                    parents.push((*child, dir));
                    stack.push(*child);
                }
            }
        }
        self.inodes.retain(|ino, inode| {
            let keep = reached.contains(ino);
            if !keep {
                stats.files_dropped += 1;
                if let Body::File(f) = &inode.body {
                    stats.bytes_discarded += f.data.len() as u64;
                }
            }
            keep
        });
        for (dir, parent) in parents {
            self.set_parent(dir, parent);
        }
        // Open counts stay: the RELEASEs of the killed process's files may still be on their
        // way, and each must find the count it decrements.
        for (ino, inode) in &mut self.inodes {
            if *ino != ROOT {
                inode.links = links.get(ino).copied().unwrap_or(0);
            }
            let Body::File(f) = &mut inode.body else {
                continue;
            };
            if f.unsynced.is_empty() {
                continue;
            }
            let ops = std::mem::take(&mut f.unsynced);
            let (kept, torn) = match mode {
                CutMode::DiscardUnsynced => (0, 0),
                CutMode::KeepPrefix { seed } => {
                    let mut rng = SplitMix(seed ^ ino.wrapping_mul(0xA24B_AED4_963E_E407));
                    let kept = rng.below(ops.len() as u64 + 1) as usize;
                    let torn = ops.get(kept).map_or(0, |op| rng.below(op.payload()));
                    (kept, torn as usize)
                }
            };
            for op in &ops[..kept] {
                let _ = op.apply(&mut f.durable);
            }
            if let Some(DataOp::Write { offset, data }) = ops.get(kept) {
                let _ = write_at(&mut f.durable, *offset, &data[..torn]);
            }
            let lost: u64 = ops[kept..].iter().map(DataOp::payload).sum();
            stats.bytes_discarded += lost - torn as u64;
            f.data = f.durable.clone();
        }
        stats
    }
}

/// The FUSE side: every callback locks the state, does its work and replies; none panics.
struct PowerFs {
    state: Arc<Mutex<State>>,
    /// The longest a callback has held (or waited for) the state since the last
    /// [`PowerLossFs::take_longest_request`], in nanoseconds.
    longest: Arc<AtomicU64>,
}

/// The state, locked for one callback; on drop, how long that took is recorded.
struct Timed<'a> {
    guard: MutexGuard<'a, State>,
    started: Instant,
    longest: &'a AtomicU64,
}

impl std::ops::Deref for Timed<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Timed<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        let took = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.longest.fetch_max(took, Ordering::Relaxed);
    }
}

impl PowerFs {
    fn state(&self) -> Timed<'_> {
        let started = Instant::now();
        Timed {
            guard: lock(&self.state),
            started,
            longest: &self.longest,
        }
    }

    fn opened(&self, ino: INodeNo, dir: bool, reply: ReplyOpen) {
        let mut st = self.state();
        let is_dir = st.is_dir(ino.0);
        match st.inode(ino.0) {
            Ok(_) if is_dir != dir => reply.error(if dir { Errno::ENOTDIR } else { Errno::EISDIR }),
            Ok(inode) => {
                inode.open += 1;
                let flags = if dir {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_DIRECT_IO
                };
                reply.opened(FileHandle(0), flags);
            }
            Err(e) => reply.error(e),
        }
    }

    fn closed(&self, ino: INodeNo, reply: ReplyEmpty) {
        let mut st = self.state();
        if let Ok(inode) = st.inode(ino.0) {
            inode.open = inode.open.saturating_sub(1);
        }
        st.maybe_free(ino.0);
        reply.ok();
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(reply: ReplyAttr, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.attr(&TTL, &attr),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn new_inode(req: &Request, mode: u32, umask: u32, body: Body) -> Inode {
    let perm = (mode & !umask & 0o7777) as u16;
    Inode::new(perm, req.uid(), req.gid(), body)
}

impl Filesystem for PowerFs {
    fn init(&mut self, _: &Request, _: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_POSIX_LOCKS, no FUSE_FLOCK_LOCKS: the kernel handles locks locally.
        Ok(())
    }

    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let st = self.state();
        reply_entry(reply, st.child(parent.0, name).and_then(|ino| st.attr(ino)));
    }

    fn forget(&self, _: &Request, _: INodeNo, _: u64) {}

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(reply, self.state().attr(ino.0));
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _: Option<FileHandle>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut st = self.state();
        let mut apply = || {
            if let Some(size) = size {
                st.data_op(ino.0, DataOp::Truncate(size))?;
            }
            let inode = st.inode(ino.0)?;
            inode.perm = mode.map_or(inode.perm, |m| (m & 0o7777) as u16);
            inode.uid = uid.unwrap_or(inode.uid);
            inode.gid = gid.unwrap_or(inode.gid);
            inode.atime = atime.map_or(inode.atime, time);
            inode.mtime = mtime.map_or(inode.mtime, time);
            inode.ctime = ctime.unwrap_or_else(SystemTime::now);
            st.attr(ino.0)
        };
        reply_attr(reply, apply());
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM); // only regular files
        }
        let new = new_inode(req, mode, umask, Body::File(FileBody::default()));
        reply_entry(reply, self.state().add(parent.0, name, new));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let new = new_inode(req, mode, umask, Body::Dir(DirBody::default()));
        reply_entry(reply, self.state().add(parent.0, name, new));
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.state().remove(parent.0, name, false));
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.state().remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        let result = st.rename((parent.0, name), (newparent.0, newname), flags);
        reply_empty(reply, result);
    }

    fn link(&self, _: &Request, ino: INodeNo, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.state().link(parent.0, name, ino.0));
    }

    fn open(&self, _: &Request, ino: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        self.opened(ino, false, reply);
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.state();
        match st.file_mut(ino.0) {
            Ok(f) => {
                let start = usize::try_from(offset).map_or(f.data.len(), |o| o.min(f.data.len()));
                let end = start.saturating_add(size as usize).min(f.data.len());
                reply.data(&f.data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        data: &[u8],
        _: WriteFlags,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let op = DataOp::Write {
            offset,
            data: data.to_vec(),
        };
        match self.state().data_op(ino.0, op) {
            Ok(()) => reply.written(data.len() as u32), // at most max_write (16 MiB)
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        reply.ok(); // close() makes nothing durable
    }

    fn release(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        _: OpenFlags,
        _: Option<LockOwner>,
        _: bool,
        reply: ReplyEmpty,
    ) {
        self.closed(ino, reply);
    }

    fn fsync(&self, _: &Request, ino: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.state().fsync(ino.0));
    }

    fn opendir(&self, _: &Request, ino: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        self.opened(ino, true, reply);
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.state();
        let d = match st.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let dots = [(ino.0, OsStr::new(".")), (d.parent, OsStr::new(".."))];
        let children = d.entries.iter().map(|(name, c)| (*c, name.as_os_str()));
        let all = dots.into_iter().chain(children).enumerate();
        for (i, (child, name)) in all.skip(usize::try_from(offset).unwrap_or(usize::MAX)) {
            let kind = st.inodes.get(&child).map(Inode::kind);
            let kind = kind.unwrap_or(FileType::RegularFile);
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        _: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.closed(ino, reply);
    }

    fn fsyncdir(&self, _: &Request, ino: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.state().fsyncdir(ino.0));
    }

    fn statfs(&self, _: &Request, _: INodeNo, reply: ReplyStatfs) {
        // Plenty of room, always: 64 GiB in 4 KiB blocks, a million inodes.
        let (blocks, files) = (1 << 24, 1 << 20);
        reply.statfs(blocks, blocks, blocks, files, files, BLOCK, 255, BLOCK);
    }

    fn access(&self, _: &Request, ino: INodeNo, _: AccessFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.state().inode(ino.0).map(|_| ()));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.state();
        let new = new_inode(req, mode, umask, Body::File(FileBody::default()));
        match st.add(parent.0, name, new) {
            Ok(attr) => {
                if let Ok(inode) = st.inode(attr.ino.0) {
                    inode.open += 1;
                }
                let flags = FopenFlags::FOPEN_DIRECT_IO;
                reply.created(&TTL, &attr, Generation(0), FileHandle(0), flags);
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state();
        let mut apply = || {
            let size = st.file_mut(ino.0)?.data.len() as u64;
            let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
            match mode {
                0 if end > size => st.data_op(ino.0, DataOp::Truncate(end)),
                0 | libc::FALLOC_FL_KEEP_SIZE => Ok(()),
                _ => Err(Errno::EOPNOTSUPP),
            }
        };
        reply_empty(reply, apply());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File, OpenOptions};
    use std::io::Write;

    /// A file system mounted on a fresh temporary directory. Field order matters: it is
    /// unmounted before the directory is removed, also when a test panics.
    struct Fixture {
        fs: PowerLossFs,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            if let Err(e) = available() {
                panic!("powerfs cannot be mounted on this machine: {e}");
            }
            let dir = tempfile::tempdir().unwrap();
            let fs = PowerLossFs::mount(dir.path()).unwrap();
            Fixture { fs, dir }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn cut(&self) -> CutStats {
            self.fs.cut(CutMode::DiscardUnsynced)
        }

        /// Fsyncs a directory, `""` being the root.
        fn fsync_dir(&self, rel: &str) {
            File::open(self.path(rel)).unwrap().sync_all().unwrap();
        }

        /// Writes `data` to a new file; fsyncs it if `sync`, its directory too if `sync_dir`.
        fn create(&self, rel: &str, data: &[u8], sync: bool, sync_dir: bool) {
            let mut f = File::create(self.path(rel)).unwrap();
            f.write_all(data).unwrap();
            if sync {
                f.sync_all().unwrap();
            }
            if sync_dir {
                let parent = Path::new(rel).parent().unwrap();
                self.fsync_dir(parent.to_str().unwrap());
            }
        }

        fn append(&self, rel: &str, data: &[u8]) {
            let mut f = OpenOptions::new()
                .append(true)
                .open(self.path(rel))
                .unwrap();
            f.write_all(data).unwrap();
        }

        /// Reads through a new open file (never a cached one).
        fn read(&self, rel: &str) -> Vec<u8> {
            fs::read(self.path(rel)).unwrap()
        }
    }

    #[test]
    fn fsynced_data_survives_and_later_writes_are_lost() {
        let fx = Fixture::new();
        fx.create("a", b"hello", true, true);
        fx.append("a", b" world");
        assert_eq!(fx.read("a"), b"hello world");
        let stats = fx.cut();
        assert_eq!(fx.read("a"), b"hello");
        assert_eq!((stats.files_dropped, stats.bytes_discarded), (0, 6));
    }

    #[test]
    fn file_in_unsynced_directory_is_gone() {
        let fx = Fixture::new();
        fx.create("b", b"data", true, false);
        let stats = fx.cut();
        assert!(!fx.path("b").exists(), "its directory was never fsynced");
        assert_eq!((stats.files_dropped, stats.bytes_discarded), (1, 4));
        assert_eq!(fs::read_dir(fx.path("")).unwrap().count(), 0);
    }

    #[test]
    fn rename_is_durable_only_with_fsyncdir() {
        let fx = Fixture::new();
        fx.create("f", b"old", true, true);
        for sync_dir in [false, true] {
            fx.create("f.tmp", b"new", true, false);
            fs::rename(fx.path("f.tmp"), fx.path("f")).unwrap();
            assert_eq!(fx.read("f"), b"new");
            if sync_dir {
                fx.fsync_dir("");
            }
            fx.cut();
            let want: &[u8] = if sync_dir { b"new" } else { b"old" };
            assert_eq!(fx.read("f"), want, "sync_dir={sync_dir}");
            assert!(!fx.path("f.tmp").exists());
        }
    }

    #[test]
    fn new_directory_needs_its_parent_fsynced() {
        let fx = Fixture::new();
        for sync_root in [false, true] {
            fs::create_dir_all(fx.path("sub")).unwrap();
            fx.create("sub/x", b"inside", true, true);
            if sync_root {
                fx.fsync_dir("");
            }
            fx.cut();
            assert_eq!(fx.path("sub").exists(), sync_root);
        }
        assert_eq!(fx.read("sub/x"), b"inside");
    }

    #[test]
    fn unsynced_truncation_is_undone() {
        let fx = Fixture::new();
        let data: Vec<u8> = (0..100u8).collect();
        fx.create("t", &data, true, true);
        let f = OpenOptions::new().write(true).open(fx.path("t")).unwrap();
        f.set_len(10).unwrap();
        drop(f);
        assert_eq!(fx.read("t").len(), 10);
        fx.cut();
        assert_eq!(fx.read("t"), data);
    }

    /// On a fresh mount: 100 unsynced appends of `all`'s 10-byte records, a KeepPrefix cut.
    fn keep_prefix_run(seed: u64, all: &[u8]) -> (Vec<u8>, CutStats) {
        let fx = Fixture::new();
        fx.create("log", b"", true, true);
        for record in all.chunks(10) {
            fx.append("log", record);
        }
        let stats = fx.fs.cut(CutMode::KeepPrefix { seed });
        (fx.read("log"), stats)
    }

    #[test]
    fn keep_prefix_keeps_a_seeded_prefix() {
        let all: Vec<u8> = (0..100)
            .flat_map(|i| format!("rec{i:06}\n").into_bytes())
            .collect();
        let mut lengths = HashSet::new();
        for seed in 1..=6 {
            let (kept, stats) = keep_prefix_run(seed, &all);
            assert!(all.starts_with(&kept), "seed {seed}: not a prefix");
            assert_eq!(stats.bytes_discarded, (all.len() - kept.len()) as u64);
            lengths.insert(kept.len());
        }
        assert_eq!(keep_prefix_run(3, &all), keep_prefix_run(3, &all));
        assert!(lengths.iter().any(|l| *l > 0), "no seed kept anything");
        assert!(lengths.len() > 1, "always the same: {lengths:?}");
    }

    #[test]
    fn flock_is_exclusive() {
        let fx = Fixture::new();
        fx.create("moon.lock", b"", false, false);
        let open = || File::open(fx.path("moon.lock")).unwrap();
        let (a, b) = (open(), open());
        a.try_lock().unwrap();
        match b.try_lock() {
            Err(fs::TryLockError::WouldBlock) => {}
            other => panic!("second flock: want EWOULDBLOCK, got {other:?}"),
        }
        drop(a);
        b.try_lock().unwrap();
    }

    #[test]
    fn reads_after_a_cut_see_the_cut_state() {
        let fx = Fixture::new();
        fx.create("c", &[b'A'; 8192], true, true);
        let mut f = OpenOptions::new().write(true).open(fx.path("c")).unwrap();
        f.write_all(&[b'B'; 12000]).unwrap();
        drop(f);
        assert_eq!(fx.read("c"), [b'B'; 12000]);
        fx.create("unsynced", b"", false, false);
        fx.cut();
        assert_eq!(fx.read("c"), [b'A'; 8192]);
        assert_eq!(fs::metadata(fx.path("c")).unwrap().len(), 8192);
        let names: Vec<_> = fs::read_dir(fx.path(""))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn everyday_operations_work() {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        use std::os::unix::fs::FileExt;
        let fx = Fixture::new();
        fs::create_dir_all(fx.path("d/e")).unwrap();
        let f = File::create_new(fx.path("d/e/f")).unwrap();
        f.write_all_at(b"xyz", 5).unwrap();
        f.sync_data().unwrap();
        nix::fcntl::posix_fallocate(&f, 0, 16).unwrap();
        drop(f);
        assert_eq!(fx.read("d/e/f"), b"\0\0\0\0\0xyz\0\0\0\0\0\0\0\0");
        fs::hard_link(fx.path("d/e/f"), fx.path("d/g")).unwrap();
        fs::rename(fx.path("d/g"), fx.path("d/h")).unwrap();
        let (h, f) = (fx.path("d/h"), fx.path("d/e/f"));
        let noreplace = renameat2(AT_FDCWD, &h, AT_FDCWD, &f, RenameFlags::RENAME_NOREPLACE);
        assert_eq!(noreplace, Err(nix::errno::Errno::EEXIST));
        fs::remove_file(h).unwrap();
        assert!(fs::remove_dir(fx.path("d")).is_err(), "not empty");
        fs::remove_file(f).unwrap();
        fs::remove_dir(fx.path("d/e")).unwrap();
        assert_eq!(fs::read_dir(fx.path("d")).unwrap().count(), 0);
        fs::remove_dir(fx.path("d")).unwrap();
        // Removed inodes are freed once closed (the kernel sends RELEASE asynchronously).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while lock(&fx.fs.state).inodes.len() > 1 {
            assert!(std::time::Instant::now() < deadline, "never freed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(fx.cut(), CutStats::default());
        fx.fs.unmount();
    }
}
