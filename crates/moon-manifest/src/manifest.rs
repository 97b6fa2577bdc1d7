//! The manifest's two versions, their text, and the paths they imply.
//!
//! v1 (legacy, "top-level"): `seq`, `base`, `incr` lines naming files directly inside
//! `appendonlydir/`; the incr file is plain RESP. v2 ("per-shard"): `version 2`, `seq`,
//! `shards K` and K lines `shard <i> max_lsn <lsn> [base_bytes <n> base_crc32 <hex>]`,
//! contiguous from 0; each shard's files are `shard-<i>/moon.aof.<seq>.{base.rdb,incr.aof}`. The text is untrusted input: every line is
//! checked, sizes are bounded, and anything unexpected is a [`ManifestError::Corrupt`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::fsio::TEMP_SUFFIX;

/// The manifest's file name inside `appendonlydir/`.
pub const MANIFEST_NAME: &str = "moon.aof.manifest";
/// The directory inside the data directory that holds every AOF file.
pub const AOF_DIR: &str = "appendonlydir";
/// A sanity bound on `shards` (and so on the manifest's size).
pub const MAX_SHARDS: usize = 4096;
/// Manifests are a few lines; a larger file is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// `<data dir>/appendonlydir`.
pub fn aof_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(AOF_DIR)
}

/// `<data dir>/appendonlydir/moon.aof.manifest`.
pub fn manifest_path(data_dir: &Path) -> PathBuf {
    aof_dir(data_dir).join(MANIFEST_NAME)
}

/// The legacy layout: one log for every shard, directly in `appendonlydir/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopLevel {
    pub seq: u64,
    /// File name of the base, if the log was ever rewritten.
    pub base: Option<String>,
    /// File name of the plain-RESP incr log.
    pub incr: String,
}

/// The per-shard layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerShard {
    pub seq: u64,
    /// `max_lsn[i]`: the highest LSN shard `i` had when this manifest was written. The shard's
    /// files may hold higher ones; LSNs resume above the larger of the two.
    pub max_lsn: Vec<u64>,
    /// `bases[i]`: what shard `i`'s base file must be, exactly, when a rewrite or migration
    /// wrote one (`None`: no base, or one written before manifests recorded it).
    pub bases: Vec<Option<BaseInfo>>,
}

/// A base file as its writer left it, fsynced, before the manifest named it: recovery refuses
/// a base that differs (missing, empty, partial, or another rewrite's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseInfo {
    /// The file's length.
    pub bytes: u64,
    /// CRC-32 (IEEE, as the records') of the whole file.
    pub crc32: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    V1(TopLevel),
    V2(PerShard),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {} is corrupt ({reason}); refusing to start: overwriting it would lose data, inspect manually before deleting. See docs/runbooks/aof-corruption.md", .file.display())]
    Corrupt { file: PathBuf, reason: String },
    #[error("ERR shard count changed (manifest={manifest}, config={config}); refusing to start to avoid data loss. See docs/runbooks/shard-count-change.md")]
    ShardCountChanged { manifest: usize, config: usize },
    #[error("{} holds a legacy top-level AOF (one log for all shards); refusing to start with shards = {shards}. Migrate it with `moon-cli migrate-aof --dir {} --shards {shards}`. See docs/runbooks/multi-shard-aof.md", .aof_dir.display(), .data_dir.display())]
    LegacyMultiShard {
        aof_dir: PathBuf,
        data_dir: PathBuf,
        shards: usize,
    },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io_err(
    what: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ManifestError {
    let path = path.to_path_buf();
    move |source| ManifestError::Io { what, path, source }
}

impl PerShard {
    /// A fresh directory's manifest: seq 1, every shard at LSN 0.
    pub fn fresh(shards: usize) -> PerShard {
        PerShard::new(1, vec![0; shards])
    }

    /// A layout at `seq` whose shards have no recorded base.
    pub fn new(seq: u64, max_lsn: Vec<u64>) -> PerShard {
        let bases = vec![None; max_lsn.len()];
        PerShard {
            seq,
            max_lsn,
            bases,
        }
    }

    pub fn shards(&self) -> usize {
        self.max_lsn.len()
    }

    /// The global max LSN: computed over shards, never stored.
    pub fn global_max_lsn(&self) -> u64 {
        self.max_lsn.iter().copied().max().unwrap_or(0)
    }

    /// `appendonlydir/shard-<i>`.
    pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
        aof_dir(data_dir).join(format!("shard-{shard}"))
    }

    pub fn base_path(&self, data_dir: &Path, shard: usize) -> PathBuf {
        Self::shard_dir(data_dir, shard).join(format!("moon.aof.{}.base.rdb", self.seq))
    }

    pub fn incr_path(&self, data_dir: &Path, shard: usize) -> PathBuf {
        Self::shard_dir(data_dir, shard).join(format!("moon.aof.{}.incr.aof", self.seq))
    }

    /// SPEC §4: the configured shard count must equal the manifest's.
    pub fn verify_shard_count(&self, expected: usize) -> Result<(), ManifestError> {
        if self.shards() == expected {
            Ok(())
        } else {
            Err(ManifestError::ShardCountChanged {
                manifest: self.shards(),
                config: expected,
            })
        }
    }

    pub fn render(&self) -> String {
        let mut s = format!("version 2\nseq {}\nshards {}\n", self.seq, self.shards());
        for (i, lsn) in self.max_lsn.iter().enumerate() {
            let _ = write!(s, "shard {i} max_lsn {lsn}");
            if let Some(Some(b)) = self.bases.get(i) {
                let _ = write!(s, " base_bytes {} base_crc32 {:08x}", b.bytes, b.crc32);
            }
            s.push('\n');
        }
        s
    }
}

impl TopLevel {
    pub fn render(&self) -> String {
        let mut s = format!("seq {}\n", self.seq);
        if let Some(base) = &self.base {
            let _ = writeln!(s, "base {base}");
        }
        let _ = writeln!(s, "incr {}", self.incr);
        s
    }
}

impl Manifest {
    /// SPEC §4. A v1 directory counts as one shard.
    pub fn verify_shard_count(&self, expected: usize) -> Result<(), ManifestError> {
        match self {
            Manifest::V1(_) if expected == 1 => Ok(()),
            Manifest::V1(_) => Err(ManifestError::ShardCountChanged {
                manifest: 1,
                config: expected,
            }),
            Manifest::V2(m) => m.verify_shard_count(expected),
        }
    }

    /// Parses a manifest's text; `Err` is the reason it is corrupt.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let lines: Vec<(usize, Vec<&str>)> = text
            .lines()
            .enumerate()
            .map(|(n, l)| (n + 1, l.split_whitespace().collect::<Vec<_>>()))
            .filter(|(_, w)| !w.is_empty())
            .collect();
        let Some((_, first)) = lines.first() else {
            return Err("the file is empty".into());
        };
        if first[0] == "version" {
            parse_v2(&lines)
        } else {
            parse_v1(&lines)
        }
    }
}

fn number(n: usize, word: Option<&&str>, what: &str) -> Result<u64, String> {
    let w = word.ok_or_else(|| format!("line {n}: {what} is missing"))?;
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("line {n}: {what} `{w}` is not a number"));
    }
    w.parse::<u64>()
        .map_err(|_| format!("line {n}: {what} `{w}` is out of range"))
}

fn arity(n: usize, words: &[&str], expected: usize) -> Result<(), String> {
    if words.len() == expected {
        Ok(())
    } else {
        Err(format!(
            "line {n}: `{}` should have {} field(s)",
            words.join(" "),
            expected
        ))
    }
}

fn parse_v2(lines: &[(usize, Vec<&str>)]) -> Result<Manifest, String> {
    let mut it = lines.iter();
    let (n, w) = it.next().ok_or("the file is empty")?;
    arity(*n, w, 2)?;
    if w[1] != "2" {
        return Err(format!("line {n}: unsupported manifest version `{}`", w[1]));
    }
    let (n, w) = it.next().ok_or("truncated: no `seq` line")?;
    if w[0] != "seq" {
        return Err(format!("line {n}: expected `seq`, found `{}`", w[0]));
    }
    arity(*n, w, 2)?;
    let seq = number(*n, w.get(1), "seq")?;
    if seq == 0 {
        return Err(format!("line {n}: seq must be at least 1"));
    }
    let (n, w) = it.next().ok_or("truncated: no `shards` line")?;
    if w[0] != "shards" {
        return Err(format!("line {n}: expected `shards`, found `{}`", w[0]));
    }
    arity(*n, w, 2)?;
    let shards = number(*n, w.get(1), "shards")?;
    if shards == 0 || shards > MAX_SHARDS as u64 {
        return Err(format!(
            "line {n}: shards must be between 1 and {MAX_SHARDS}, not {shards}"
        ));
    }
    let mut max_lsn = Vec::with_capacity(shards as usize);
    let mut bases = Vec::with_capacity(shards as usize);
    for (n, w) in it {
        if w[0] != "shard" {
            return Err(format!("line {n}: unknown directive `{}`", w[0]));
        }
        if w.len() != 8 {
            arity(*n, w, 4)?;
        }
        let id = number(*n, w.get(1), "shard id")?;
        if id != max_lsn.len() as u64 {
            return Err(format!("line {n}: shard ids must be contiguous from 0: expected shard {}, found shard {id}", max_lsn.len()));
        }
        if max_lsn.len() as u64 == shards {
            return Err(format!("line {n}: more shard lines than `shards {shards}`"));
        }
        if w[2] != "max_lsn" {
            return Err(format!("line {n}: expected `max_lsn`, found `{}`", w[2]));
        }
        max_lsn.push(number(*n, w.get(3), "max_lsn")?);
        bases.push(if w.len() == 8 {
            if w[4] != "base_bytes" || w[6] != "base_crc32" {
                return Err(format!(
                    "line {n}: expected `base_bytes <n> base_crc32 <hex>`, found `{}`",
                    w[4..].join(" ")
                ));
            }
            let crc = w[7];
            if crc.len() != 8 || !crc.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "line {n}: base_crc32 `{crc}` is not 8 hexadecimal digits"
                ));
            }
            Some(BaseInfo {
                bytes: number(*n, w.get(5), "base_bytes")?,
                crc32: u32::from_str_radix(crc, 16).map_err(|e| format!("line {n}: {e}"))?,
            })
        } else {
            None
        });
    }
    if max_lsn.len() as u64 != shards {
        return Err(format!(
            "`shards {shards}` but {} shard line(s)",
            max_lsn.len()
        ));
    }
    Ok(Manifest::V2(PerShard {
        seq,
        max_lsn,
        bases,
    }))
}

/// A file name a v1 manifest may name: plain, inside `appendonlydir/`.
fn plain_file_name(n: usize, name: &str) -> Result<String, String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\\') {
        return Err(format!("line {n}: `{name}` is not a plain file name"));
    }
    Ok(name.to_string())
}

fn parse_v1(lines: &[(usize, Vec<&str>)]) -> Result<Manifest, String> {
    let (mut seq, mut base, mut incr) = (None, None, None);
    for (n, w) in lines {
        arity(*n, w, 2)?;
        let slot = match w[0] {
            "seq" => {
                if seq.replace(number(*n, w.get(1), "seq")?).is_some() {
                    return Err(format!("line {n}: duplicate `seq`"));
                }
                continue;
            }
            "base" => &mut base,
            "incr" => &mut incr,
            other => return Err(format!("line {n}: unknown directive `{other}`")),
        };
        if slot.replace(plain_file_name(*n, w[1])?).is_some() {
            return Err(format!("line {n}: duplicate `{}`", w[0]));
        }
    }
    let seq = seq.ok_or("truncated: no `seq` line")?;
    let incr = incr.ok_or("truncated: no `incr` line")?;
    Ok(Manifest::V1(TopLevel { seq, base, incr }))
}

/// Reads the manifest of `data_dir`. `Ok(None)`: there is none (a fresh directory). A temp file
/// left by a crash during a manifest write is removed first: the rename never happened, so the
/// manifest in place is the current one.
pub fn load(data_dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    let path = manifest_path(data_dir);
    let mut tmp = path.clone().into_os_string();
    tmp.push(TEMP_SUFFIX);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::warn!(file = %Path::new(&tmp).display(), "removed a manifest temp file left by an interrupted write")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ManifestError::Io {
                what: "cannot remove stale manifest temp file",
                path: tmp.into(),
                source: e,
            })
        }
    }
    read(&path)
}

/// Reads and parses a manifest without touching anything.
fn read(path: &Path) -> Result<Option<Manifest>, ManifestError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot read manifest", path)(e)),
    };
    let corrupt = |reason: String| ManifestError::Corrupt {
        file: path.to_path_buf(),
        reason,
    };
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(corrupt(format!(
            "{} bytes, far larger than any manifest",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(io_err("cannot read manifest", path))?;
    let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".into()))?;
    Manifest::parse(&text).map(Some).map_err(corrupt)
}

/// Whether `data_dir` holds a legacy top-level (v1) layout. Reads only; never changes anything.
pub fn is_legacy(data_dir: &Path) -> bool {
    matches!(peek(data_dir), Ok(Some(Manifest::V1(_))))
}

/// Reads `data_dir`'s manifest without changing anything (not even a stale temp file): for
/// tools that inspect.
pub fn peek(data_dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    read(&manifest_path(data_dir))
}

/// The seq of a shard directory's log file name (`moon.aof.<seq>.base.rdb` / `.incr.aof`).
fn seq_of(name: &str) -> Option<u64> {
    name.strip_prefix("moon.aof.")
        .and_then(|r| {
            r.strip_suffix(".base.rdb")
                .or_else(|| r.strip_suffix(".incr.aof"))
        })
        .and_then(|n| n.parse::<u64>().ok())
}

impl PerShard {
    /// Removes the log files of other seqs from the shard directories — what an interrupted
    /// rewrite or migration left: files of the previous seq after the new manifest committed,
    /// or of the next seq before it did. Only `moon.aof.<n>.base.rdb` / `.incr.aof` with
    /// `n != seq` are touched. Returns the files removed.
    pub fn remove_other_seqs(&self, data_dir: &Path) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for i in 0..self.shards() {
            let Ok(entries) = std::fs::read_dir(Self::shard_dir(data_dir, i)) else {
                continue;
            };
            for e in entries.flatten() {
                let seq = seq_of(&e.file_name().to_string_lossy());
                if seq.is_some_and(|n| n != self.seq) && std::fs::remove_file(e.path()).is_ok() {
                    removed.push(e.path());
                }
            }
        }
        removed
    }

    /// The seq the next rewrite or migration may use: above this manifest's and above every
    /// seq a file in any `shard-*` directory carries. Files of a seq above the manifest's are
    /// what a rewrite that failed at its commit left, and a manifest on disk (the one a crash
    /// would bring back) may name them: a new generation must never reuse their names.
    pub fn next_free_seq(&self, data_dir: &Path) -> u64 {
        let mut highest = self.seq;
        if let Ok(dirs) = std::fs::read_dir(aof_dir(data_dir)) {
            for d in dirs.flatten() {
                if !d.file_name().to_string_lossy().starts_with("shard-") {
                    continue;
                }
                for e in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                    if let Some(seq) = seq_of(&e.file_name().to_string_lossy()) {
                        highest = highest.max(seq);
                    }
                }
            }
        }
        highest.saturating_add(1)
    }
}
