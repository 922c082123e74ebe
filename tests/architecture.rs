//! The shape of the code, checked from its imports (issue 13): dependencies between modules point
//! one way only, and the two fronts never import each other.
//!
//! Every `crate::…` and `super::…` path in `src/` is an edge from the file's module to the module
//! it names. Edges between a module and its own ancestors or descendants are the module tree
//! itself (a parent declares and re-exports its children, a child uses its parent's items) and do
//! not count. What must be acyclic: the top-level modules (`gateway`, `config`, …) among
//! themselves, and within every module, its children among themselves.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `src/a/b.rs` → `a::b`; `src/a/mod.rs` → `a`; `src/lib.rs` → ``.
fn module_of(file: &Path, src: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Paths named in `text` (`crate::a::b`, `super::c`), resolved to absolute module paths, with
/// `use x::{a, b::c}` groups expanded one level.
fn references(text: &str, module: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `super` is the parent of the file's module (inline `mod tests` blocks are read as their
    // file: their `super::*` is then an ancestor, which does not count).
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_owned())
    };
    let bytes = text.as_bytes();
    for (i, _) in text
        .match_indices("crate::")
        .chain(text.match_indices("super::"))
    {
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
            continue;
        }
        let rest = &text[i..];
        let (base, rest) = if let Some(r) = rest.strip_prefix("crate::") {
            (String::new(), r)
        } else {
            let mut base = parent(module);
            let mut r = &rest["super::".len()..];
            while let Some(more) = r.strip_prefix("super::") {
                base = parent(&base);
                r = more;
            }
            (base, r)
        };
        let join = |base: &str, path: &str| {
            if base.is_empty() {
                path.to_owned()
            } else if path.is_empty() {
                base.to_owned()
            } else {
                format!("{base}::{path}")
            }
        };
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':');
        let after = &rest[path.len()..];
        if let Some(group) = after
            .strip_prefix("::{")
            .or_else(|| after.strip_prefix('{'))
        {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                if !item.is_empty() && item != "self" {
                    out.push(join(&join(&base, path), item));
                }
            }
        }
        out.push(join(&base, path));
    }
    out
}

/// The deepest known module that `path` lies in.
fn owner(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut candidate = path.to_owned();
    loop {
        if modules.contains(&candidate) {
            return Some(candidate);
        }
        match candidate.rsplit_once("::") {
            Some((p, _)) => candidate = p.to_owned(),
            None => return None,
        }
    }
}

fn related(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| y.is_empty() || x == y || x.starts_with(&format!("{y}::"));
    under(a, b) || under(b, a)
}

/// The module graph: file module → modules it names (ancestors and descendants left out).
fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<String> = all.iter().map(|f| module_of(f, &src)).collect();
    let mut graph = Graph::new();
    for file in &all {
        let module = module_of(file, &src);
        if module.is_empty() || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for path in references(&text, &module) {
            if let Some(target) = owner(&path, &modules)
                && !target.is_empty()
                && !related(&module, &target)
            {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    graph
}

/// `graph` with each module replaced by its ancestor at `depth` segments under `within`
/// (`within` empty: the top level); edges leaving `within` dropped.
fn collapse(graph: &Graph, within: &str, depth: usize) -> Graph {
    let cut = |m: &str| -> Option<String> {
        let rest = if within.is_empty() {
            m
        } else {
            m.strip_prefix(within)?.strip_prefix("::")?
        };
        let head: Vec<&str> = rest.split("::").take(depth).collect();
        Some(head.join("::"))
    };
    let mut out = Graph::new();
    for (from, tos) in graph {
        let Some(f) = cut(from) else { continue };
        for to in tos {
            if let Some(t) = cut(to)
                && t != f
            {
                out.entry(f.clone()).or_default().insert(t);
            }
        }
    }
    out
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut found = stack[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                Some(_) => {}
                None => {
                    if let Some(found) = visit(next, graph, state, stack) {
                        return Some(found);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node.as_str())
            && let Some(found) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let graph = graph();
    let top = collapse(&graph, "", 1);
    assert!(
        top.contains_key("gateway") && top.contains_key("http"),
        "the check sees the imports: {top:?}"
    );
    if let Some(found) = cycle(&top) {
        panic!(
            "import cycle between top-level modules: {}",
            found.join(" -> ")
        );
    }
    let parents: BTreeSet<String> = graph
        .keys()
        .filter_map(|m| m.rsplit_once("::").map(|(p, _)| p.to_owned()))
        .collect();
    for parent in parents {
        if let Some(found) = cycle(&collapse(&graph, &parent, 1)) {
            panic!(
                "import cycle inside `{parent}`: {}",
                found
                    .iter()
                    .map(|m| format!("{parent}::{m}"))
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
        }
    }
}

#[test]
fn the_fronts_never_import_each_other() {
    let top = collapse(&graph(), "", 1);
    for (a, b) in [("http", "mqtt"), ("mqtt", "http")] {
        assert!(
            !top.get(a).is_some_and(|deps| deps.contains(b)),
            "{a} imports {b}"
        );
    }
}

#[test]
fn the_checker_finds_a_cycle_when_there_is_one() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let refs = references(
        "use crate::gateway::{Gateway, limits::Limits};\nuse super::super::x::Y;",
        "mqtt::session::inner",
    );
    assert!(refs.contains(&"gateway::Gateway".to_owned()), "{refs:?}");
    assert!(
        refs.contains(&"gateway::limits::Limits".to_owned()),
        "{refs:?}"
    );
    assert!(refs.contains(&"mqtt::x::Y".to_owned()), "{refs:?}");
}
