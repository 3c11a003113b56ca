//! The shape of the house, checked by the compiler's neighbour: the HTTP adapter and the
//! domain name no driven adapter (in their manifests or their code), adapters know only the
//! domain, and no crate's modules import each other in a circle.
//!
//! The module graph is read from the sources as `cargo modules` would draw its "uses"
//! edges: every `use` and every `crate::`/`super::`/`self::` path, each resolved to the
//! module it names as written (a re-export counts as an edge to the module re-exporting).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ADAPTERS: [&str; 7] = [
    "nb-db",
    "nb-webhook",
    "nb-imagen",
    "nb-storage",
    "nb-redis",
    "nb-system",
    "nb-convert",
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A manifest without its comments.
fn manifest(krate: &str) -> String {
    let text = std::fs::read_to_string(crates_dir().join(krate).join("Cargo.toml")).unwrap();
    text.lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The workspace crates a manifest depends on (any table: normal, dev, build).
fn our_dependencies(krate: &str) -> BTreeSet<String> {
    let manifest = manifest(krate);
    let mut names = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim().trim_end_matches(".workspace").trim();
        let is_ours = name.starts_with("nb-") || name == "nanobanana";
        if is_ours && !line.contains("path = \".\"") {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn the_http_adapter_and_the_domain_depend_on_no_driven_adapter() {
    let api = our_dependencies("nb-api");
    assert_eq!(
        api,
        BTreeSet::from(["nb-domain".to_owned()]),
        "nb-api's manifest may name nb-domain only"
    );
    assert!(
        our_dependencies("nb-domain").is_empty(),
        "nb-domain depends on nothing of ours"
    );
}

#[test]
fn adapters_know_only_the_domain() {
    for adapter in ADAPTERS {
        let allowed: BTreeSet<String> = ["nb-domain", "nb-testkit"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let found = our_dependencies(adapter);
        assert!(
            found.is_subset(&allowed),
            "{adapter} depends on {found:?}: an adapter knows only the domain"
        );
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn no_adapter_is_named_in_the_http_adapter_or_the_domain() {
    for krate in ["nb-api", "nb-domain"] {
        for file in rust_files(&crates_dir().join(krate)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for adapter in ADAPTERS {
                let path = format!("{}::", adapter.replace('-', "_"));
                assert!(!text.contains(&path), "{} names {path}", file.display());
            }
        }
    }
}

type Module = Vec<String>;

/// Every module of a crate's `src`, by its path (`[]` for the root), and its file.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut modules = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut path: Module = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy().into_owned())
            .collect();
        if path.first().is_some_and(|first| first == "bin") {
            continue;
        }
        if path.last().is_some_and(|last| last == "mod") {
            path.pop();
        }
        if path == ["lib"] || path == ["main"] {
            path.clear();
        }
        modules.insert(path, file);
    }
    modules
}

/// The code of a file without its unit tests, comments, and string and char literals.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("'\"'") {
            i += 3;
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += 3 + raw.find("\"#").map_or(raw.len(), |end| end + 2);
            out.push_str("\"\"");
        } else if bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The paths a use tree names: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<Vec<String>> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return if path.is_empty() {
            Vec::new()
        } else {
            vec![path.split("::").map(|s| s.trim().to_owned()).collect()]
        };
    };
    let prefix: Vec<String> = tree[..open]
        .trim_end_matches(':')
        .split("::")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let close = tree.rfind('}').unwrap();
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, open + 1);
    for (at, c) in tree[open + 1..close].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&tree[start..open + 1 + at]);
                start = open + 2 + at;
            }
            _ => {}
        }
    }
    items.push(&tree[start..close]);
    items
        .into_iter()
        .flat_map(expand)
        .map(|path| {
            let path = if path == ["self"] { Vec::new() } else { path };
            prefix.iter().cloned().chain(path).collect()
        })
        .collect()
}

/// The module `path` (as written in `from`) names, if it names one of ours.
fn resolve(modules: &BTreeMap<Module, PathBuf>, from: &Module, path: &[String]) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut base = from.clone();
            let mut rest = path;
            while rest.first().is_some_and(|first| first == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        Some(first) => {
            // A child module named without `self::`.
            let mut child = from.clone();
            child.push(first.to_owned());
            if !modules.contains_key(&child) {
                return None;
            }
            (from.clone(), path)
        }
        None => return None,
    };
    let mut found = None;
    for n in 0..=rest.len() {
        let mut candidate = base.clone();
        candidate.extend(rest[..n].iter().cloned());
        if modules.contains_key(&candidate) {
            found = Some(candidate);
        }
    }
    base.clear();
    found
}

fn uses_edges(modules: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in modules {
        let code = code(&std::fs::read_to_string(file).unwrap());
        let mut paths: Vec<Vec<String>> = Vec::new();
        // `use …;` statements.
        let mut search = code.as_str();
        while let Some(at) = search.find("use ") {
            let before = &search[..at];
            let starts_statement = before
                .trim_end_matches("pub ")
                .trim_end_matches("pub(crate) ")
                .ends_with(['\n', ';', '{', '}'])
                || before.is_empty();
            search = &search[at + 4..];
            if starts_statement && let Some(end) = search.find(';') {
                paths.extend(expand(&search[..end]));
            }
        }
        // `crate::…`, `super::…` and `self::…` paths anywhere.
        for anchor in ["crate::", "super::", "self::"] {
            for (at, _) in code.match_indices(anchor) {
                let preceded_by_word = code[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
                if preceded_by_word {
                    continue;
                }
                let path: Vec<String> = code[at..]
                    .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap()
                    .split("::")
                    .filter(|segment| !segment.is_empty())
                    .map(str::to_owned)
                    .collect();
                // `crate::{a, b}` is a use group, read with its statement above.
                if path.len() > 1 {
                    paths.push(path);
                }
            }
        }
        let targets = edges.entry(module.clone()).or_default();
        for path in paths {
            if let Some(target) = resolve(modules, module, &path)
                && &target != module
            {
                targets.insert(target);
            }
        }
    }
    edges
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flatten() {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

fn module_cycles(krate: &Path) -> Vec<String> {
    let modules = modules(&krate.join("src"));
    cycles(&uses_edges(&modules))
        .into_iter()
        .map(|component| {
            component
                .iter()
                .map(|module| {
                    if module.is_empty() {
                        "lib".to_owned()
                    } else {
                        module.join("::")
                    }
                })
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect()
}

#[test]
fn no_crate_has_an_import_cycle() {
    let mut found = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(crates_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("Cargo.toml").exists())
        .collect();
    crates.push(crates_dir().parent().unwrap().join("bench"));
    for krate in crates {
        for cycle in module_cycles(&krate) {
            found.push(format!("{}: {cycle}", krate.display()));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// The checker itself: it finds a cycle through a facade, and none where there is none.
#[test]
fn the_cycle_checker_sees_a_cycle_through_a_re_export() {
    let folder = tempfile::tempdir().unwrap();
    let src = folder.path().join("src");
    std::fs::create_dir_all(src.join("feature")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod feature;\npub mod other;\n").unwrap();
    std::fs::write(
        src.join("feature/mod.rs"),
        "pub mod model;\npub use model::Thing;\n",
    )
    .unwrap();
    std::fs::write(src.join("feature/model.rs"), "pub struct Thing;\n").unwrap();
    std::fs::write(
        src.join("other.rs"),
        "use crate::feature::Thing;\n// use crate::nothing;\npub fn f() -> Thing { Thing }\n",
    )
    .unwrap();
    assert!(module_cycles(folder.path()).is_empty());
    // The model reaches back through its facade: model -> feature -> model.
    std::fs::write(
        src.join("feature/model.rs"),
        "use crate::feature::Other;\npub struct Thing;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("feature/mod.rs"),
        "pub mod model;\npub use model::Thing;\npub struct Other;\n",
    )
    .unwrap();
    assert_eq!(module_cycles(folder.path()), ["feature::model <-> feature"]);
}
