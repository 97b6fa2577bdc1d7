//! `cargo xtask layers`: no crate's modules import each other in a circle.
//!
//! Layers point one way inside a crate as between crates (`ARCHITECTURE.md`): state at the
//! bottom, handlers in the middle, loops and startup on top. This check reads every crate's
//! source (and xtask's), takes the module a path names wherever code writes `crate::m...` or
//! `super::m...` (comments and `#[cfg(test)] mod tests` left out: a doc link or a test is not
//! a dependency of the code), and fails on any strongly connected set of two or more modules,
//! naming them and the edges that close the circle. It is deliberately simple — text, not the
//! compiler's name resolution — so it needs nothing installed; `cargo modules dependencies`
//! gives the compiler's view when a finer picture is wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::server::root;

/// Module name → the text of its file (comments and test modules removed).
fn modules(src: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src)?.with_extension("");
            let mut name = rel.to_string_lossy().replace('/', "::");
            if name == "lib" || name == "main" {
                name = "crate".into();
            }
            if let Some(parent) = name.strip_suffix("::mod") {
                name = parent.to_string();
            }
            let text = std::fs::read_to_string(&path)?;
            out.insert(name, strip(&text));
        }
    }
    Ok(out)
}

/// The code of a file without its comments and its `#[cfg(test)] mod tests`.
fn strip(text: &str) -> String {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `text` (module `me`) names through `crate::` or `super::` paths.
fn references(me: &str, text: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent = me.rsplit_once("::").map(|(p, _)| p.to_string());
    for (prefix, base) in [("crate::", None), ("super::", parent.as_deref())] {
        for (i, _) in text.match_indices(prefix) {
            let path: String = text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
            for n in (1..=parts.len()).rev() {
                let candidate = match base {
                    Some(b) => format!("{b}::{}", parts[..n].join("::")),
                    None => parts[..n].join("::"),
                };
                if names.contains(&candidate) {
                    if candidate != me {
                        out.insert(candidate);
                    }
                    break;
                }
            }
        }
    }
    out
}

/// Tarjan's strongly connected components with two or more members.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// Checks every crate; true if none has a circle.
pub fn run() -> anyhow::Result<bool> {
    let root = root();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("src")))
        .filter(|p| p.is_dir())
        .collect();
    sources.sort();
    sources.push(root.join("xtask/src"));
    let mut ok = true;
    for src in sources {
        let mods = modules(&src)?;
        let names: BTreeSet<String> = mods.keys().cloned().collect();
        let graph: BTreeMap<String, BTreeSet<String>> = mods
            .iter()
            .map(|(m, text)| (m.clone(), references(m, text, &names)))
            .collect();
        let found = circles(&graph);
        let krate = src
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if found.is_empty() {
            println!("{krate:<14} {} modules, no import circle", mods.len());
            continue;
        }
        ok = false;
        for circle in found {
            println!("{krate:<14} import circle: {}", circle.join(", "));
            for m in &circle {
                let within: Vec<&String> = graph[m].iter().filter(|t| circle.contains(t)).collect();
                println!("    {m} -> {within:?}");
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let names: BTreeSet<String> = ["a", "b", "c", "c::d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = |t: &str| strip(t);
        let mut g = BTreeMap::new();
        g.insert(
            "a".to_string(),
            references("a", &text("use crate::b::X;"), &names),
        );
        g.insert(
            "b".to_string(),
            references("b", &text("fn f() { crate::c::d::g() }"), &names),
        );
        g.insert(
            "c".to_string(),
            references("c", &text("/// see [`crate::a`]"), &names),
        );
        g.insert(
            "c::d".to_string(),
            references("c::d", &text("use super::super::a;"), &names),
        );
        assert_eq!(g["b"], BTreeSet::from(["c::d".to_string()]));
        assert!(g["c"].is_empty(), "a doc link is not a dependency");
        assert!(circles(&g).is_empty());
        g.insert(
            "c::d".to_string(),
            references("c::d", &text("use crate::a;"), &names),
        );
        assert_eq!(circles(&g), [["a", "b", "c::d"]]);
    }
}
