//! `moon-cli manifest show`.

use std::path::Path;

use anyhow::Context;
use moon_manifest::Manifest;

fn size(p: &Path) -> String {
    match std::fs::metadata(p) {
        Ok(m) => format!("{} bytes", m.len()),
        Err(_) => "absent".into(),
    }
}

pub fn run(dir: &Path) -> anyhow::Result<i32> {
    let _lock = crate::lock::lock(dir)?;
    let path = moon_manifest::manifest_path(dir);
    let manifest = moon_manifest::peek(dir)
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("no manifest at {}", path.display()))?;
    println!("manifest: {}", path.display());
    match manifest {
        Manifest::V1(m) => {
            println!("layout:   top-level (v1, legacy: one plain-RESP log for all shards)");
            println!("seq:      {}", m.seq);
            let aof = moon_manifest::aof_dir(dir);
            if let Some(base) = &m.base {
                println!("base:     {} ({})", base, size(&aof.join(base)));
            }
            println!("incr:     {} ({})", m.incr, size(&aof.join(&m.incr)));
            println!("migrate:  start with --shards 1 (automatic), or see docs/runbooks/multi-shard-aof.md");
        }
        Manifest::V2(m) => {
            println!("layout:   per-shard (v2)");
            println!("seq:      {}", m.seq);
            println!("shards:   {}", m.shards());
            println!("max LSN:  {} (over all shards)", m.global_max_lsn());
            for i in 0..m.shards() {
                let recorded = match m.bases.get(i).copied().flatten() {
                    Some(b) => format!(", recorded {} bytes crc32 {:08x}", b.bytes, b.crc32),
                    None => String::new(),
                };
                println!(
                    "shard {i}: max_lsn {:<10} base {} ({}{recorded})  incr {} ({})",
                    m.max_lsn[i],
                    file_name(&m.base_path(dir, i)),
                    size(&m.base_path(dir, i)),
                    file_name(&m.incr_path(dir, i)),
                    size(&m.incr_path(dir, i)),
                );
            }
        }
    }
    Ok(0)
}

fn file_name(p: &Path) -> String {
    p.strip_prefix(p.parent().and_then(Path::parent).unwrap_or(p))
        .unwrap_or(p)
        .display()
        .to_string()
}
