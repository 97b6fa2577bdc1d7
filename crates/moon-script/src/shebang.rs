//! A script's first line, `#!lua flags=no-writes,allow-oom`: the flags it declares (Redis 7).
//!
//! A script without a shebang runs in Redis's compatibility mode (it may write, and its keys
//! are what it touches); one with a shebang declares what it may do.

/// What a script declared about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    /// It has a `#!lua` line (without one, none of the flags below apply: Redis's eval
    /// compatibility mode).
    pub declared: bool,
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot_keys: bool,
}

/// The flags of `body` and the length of its shebang line (without its line break, which is
/// kept so that line numbers stay the user's); Redis's error text if the line is wrong.
pub fn parse_shebang(body: &[u8]) -> Result<(ScriptFlags, usize), String> {
    if !body.starts_with(b"#!") {
        return Ok((ScriptFlags::default(), 0));
    }
    let Some(end) = body.iter().position(|&b| b == b'\n') else {
        return Err("ERR Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&body[..end]);
    let mut parts = line.split_ascii_whitespace();
    let Some(engine) = parts.next() else {
        return Err("ERR Invalid engine in script shebang".into());
    };
    if engine != "#!lua" {
        return Err(format!("ERR Unexpected engine in script shebang: {engine}"));
    }
    let mut flags = ScriptFlags {
        declared: true,
        ..ScriptFlags::default()
    };
    for part in parts {
        let Some(list) = part.strip_prefix("flags=") else {
            return Err(format!("ERR Unknown lua shebang option: {part}"));
        };
        for flag in list.split(',') {
            match flag {
                "no-writes" => flags.no_writes = true,
                "allow-oom" => flags.allow_oom = true,
                "allow-stale" => flags.allow_stale = true,
                "no-cluster" => flags.no_cluster = true,
                "allow-cross-slot-keys" => flags.allow_cross_slot_keys = true,
                // `flags=` with nothing after it declares none.
                "" => {}
                other => return Err(format!("ERR Unexpected flag in script shebang: {other}")),
            }
        }
    }
    Ok((flags, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs_parse_as_redis_reads_them() {
        assert_eq!(parse_shebang(b"return 1"), Ok((ScriptFlags::default(), 0)));
        let (f, len) = parse_shebang(b"#!lua flags=no-writes,allow-oom\nreturn 1").unwrap();
        assert!(f.declared && f.no_writes && f.allow_oom && !f.no_cluster);
        assert_eq!(len, 31);
        assert_eq!(
            parse_shebang(b"#!lua\nreturn 1").map(|p| p.0.declared),
            Ok(true)
        );
        assert_eq!(
            parse_shebang(b"#!lua"),
            Err("ERR Invalid script shebang".into())
        );
        assert_eq!(
            parse_shebang(b"#!python\n"),
            Err("ERR Unexpected engine in script shebang: #!python".into())
        );
        assert_eq!(
            parse_shebang(b"#!lua flags=fly\n"),
            Err("ERR Unexpected flag in script shebang: fly".into())
        );
        assert_eq!(
            parse_shebang(b"#!lua name=x\n"),
            Err("ERR Unknown lua shebang option: name=x".into())
        );
    }
}
