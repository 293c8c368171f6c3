//! The source layout: the top-level modules of src/ form layers (`LAYERS`) with no import
//! loops, nor loops between the files of one directory module; no `#[path]` includes; the test-fixture binary is never built
//! without its feature (so `cargo install` leaves it out).
//!
//! Imports are read from the text: `crate::a::…` paths (in `use` items or inline, groups
//! included) and, inside a directory module, `super::b::…`. Comments (doc comments and their
//! intra-doc links too), string and char literals, and `#[cfg(test)]` items are left out: a test
//! may use what it checks, and a doc link is not a dependency. Re-exports through a `mod.rs`
//! (`crate::san::LunSet`) count as an edge to the directory module, not to the file behind it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of src/, bottom up. A module imports only modules of its own layer or
/// below (a loop inside one layer is still caught): the input side (`input`, `blockio`, `san`)
/// never reaches up to the output side (`output`, `restore`, `pipeline`), the readers (`list`,
/// `verify`) sit on `restore`, and the front ends on everything. A new module gets a row here.
const LAYERS: &[&[&str]] = &[
    &["error", "cancel", "clock", "sniff"],
    &["input"],
    &["blockio", "chain"],
    &["san", "chunk"],
    &["archive"],
    &["base"],
    &["objstore"],
    &["output"],
    &["pipeline", "restore"],
    &["job"],
    &["vsphere"],
    &["list", "verify", "retention"],
    &["fixture", "cli", "lib"],
];

/// Imports that break the layering until they are moved, as (importing file, imported top-level
/// module), each with a line saying why. Each is reported while present and left out of both
/// checks; once its import is gone the test fails until the entry is deleted, so none lingers.
/// (`src/san/writeback.rs` -> `restore` went when SAN write-back left san/; `src/sniff.rs` ->
/// `archive` when the archive magic moved into sniff.)
const ALLOWED_UPWARD_IMPORTS: &[(&str, &str)] = &[];

/// The same for loops between the files of one directory module: (importing file, imported
/// sibling file stem). (`cli/verify_progress.rs` -> `archive_cmds` went when opening an archive
/// input moved to `cli/archive_input.rs`.)
const ALLOWED_FILE_LOOP_IMPORTS: &[(&str, &str)] = &[];

/// One import: the file it is written in and the path it names after `crate::` / `super::`.
struct Import {
    file: String,
    /// `crate::` (false) or `super::` (true).
    from_super: bool,
    /// The first one or two path segments (`["input", "sparse"]`).
    segments: Vec<String>,
}

/// importer -> imported -> the first file (`src/…`) that makes the import.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn add_edge(graph: &mut Graph, from: String, to: String, file: &str) {
    let tos = graph.entry(from).or_default();
    tos.entry(to).or_insert_with(|| file.to_string());
}

#[test]
fn top_level_modules_are_layered_without_loops() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = library_files(&root.join("src"));
    let mut allowed_seen = BTreeSet::new();
    let mut graph = Graph::new();
    for imp in files.iter().flat_map(|(rel, code)| imports_of(rel, code)) {
        let (from, to) = (top_module(&imp.file), imp.segments[0].clone());
        if imp.from_super || from == to || !files.keys().any(|f| top_module(f) == to) {
            continue;
        }
        if ALLOWED_UPWARD_IMPORTS.contains(&(imp.file.as_str(), to.as_str())) {
            allowed_seen.insert((imp.file, to));
            continue;
        }
        add_edge(&mut graph, from, to, &imp.file);
    }
    check_allowances(
        "ALLOWED_UPWARD_IMPORTS",
        ALLOWED_UPWARD_IMPORTS,
        &allowed_seen,
    );
    let loops = cycles(&graph);
    assert!(
        loops.is_empty(),
        "import loops between top-level modules of src/:\n{loops}"
    );
    let layer = |m: &str| {
        LAYERS
            .iter()
            .position(|l| l.contains(&m))
            .unwrap_or_else(|| panic!("src/{m}: a top-level module missing from LAYERS"))
    };
    let mut upward = String::new();
    for (from, tos) in &graph {
        for (to, file) in tos.iter().filter(|(to, _)| layer(from) < layer(to)) {
            upward += &format!("{from} -> {to} ({file})\n");
        }
    }
    assert!(
        upward.is_empty(),
        "imports of a higher layer (see LAYERS):\n{upward}"
    );
}

#[test]
fn no_import_loops_between_files_of_a_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = library_files(&root.join("src"));
    let mut allowed_seen = BTreeSet::new();
    let mut graph = Graph::new();
    for imp in files.iter().flat_map(|(rel, code)| imports_of(rel, code)) {
        let Some((dir, from)) = file_in_dir_module(&imp.file) else {
            continue;
        };
        // `super::b` from dir/a.rs, or `crate::dir::b` from anywhere in dir/.
        let to = match (imp.from_super, imp.segments.as_slice()) {
            (true, [b, ..]) => b.clone(),
            (false, [d, b, ..]) if *d == dir => b.clone(),
            _ => continue,
        };
        if !files.contains_key(&format!("src/{dir}/{to}.rs")) || to == from {
            continue;
        }
        if ALLOWED_FILE_LOOP_IMPORTS.contains(&(imp.file.as_str(), to.as_str())) {
            allowed_seen.insert((imp.file.clone(), to));
            continue;
        }
        let (from, to) = (format!("{dir}/{from}"), format!("{dir}/{to}"));
        add_edge(&mut graph, from, to, &imp.file);
    }
    check_allowances(
        "ALLOWED_FILE_LOOP_IMPORTS",
        ALLOWED_FILE_LOOP_IMPORTS,
        &allowed_seen,
    );
    let loops = cycles(&graph);
    assert!(
        loops.is_empty(),
        "import loops between files of one module:\n{loops}"
    );
}

/// Reports each allowed import still present; fails on an entry whose import is gone.
fn check_allowances(name: &str, list: &[(&str, &str)], seen: &BTreeSet<(String, String)>) {
    for (file, to) in list {
        let present = seen.contains(&(file.to_string(), to.to_string()));
        assert!(
            present,
            "{file} no longer imports {to}: delete its entry from {name}"
        );
        eprintln!("layout: allowed import still present ({name}): {file} -> {to}");
    }
}

#[test]
fn no_path_attributes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut with_path: Vec<String> = Vec::new();
    for (rel, code) in library_files(&root.join("src")) {
        let squeezed: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        if squeezed.contains("#[path=") {
            with_path.push(rel);
        }
    }
    // The binaries' mains as well: they were the ones that included CLI files twice.
    for main in ["src/main.rs", "src/bin/vdar-restore.rs"] {
        let code = strip(&std::fs::read_to_string(root.join(main)).unwrap());
        if code
            .split_whitespace()
            .collect::<String>()
            .contains("#[path=")
        {
            with_path.push(main.into());
        }
    }
    assert!(with_path.is_empty(), "#[path] includes in {with_path:?}");
}

#[test]
fn fixture_binary_needs_its_feature() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vdar")
        .unwrap();
    let bin = pkg["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "vdar-fixture")
        .expect("a vdar-fixture target");
    assert_eq!(
        bin["required-features"],
        serde_json::json!(["fixture"]),
        "{bin:#}"
    );
}

/// Every library file under `src` (the binaries' mains excluded: they import `vdar::`), as
/// `src/…` path → code with comments, literals and `#[cfg(test)]` items removed. Files declared
/// `#[cfg(test)] mod x;` are test-only and left out too.
fn library_files(src: &Path) -> BTreeMap<String, String> {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    let mut files = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for p in paths {
        let rel = p.strip_prefix(src.parent().unwrap()).unwrap();
        let rel = rel.to_string_lossy().into_owned();
        if rel == "src/main.rs" || rel.starts_with("src/bin/") {
            continue;
        }
        let raw = strip(&std::fs::read_to_string(&p).unwrap());
        test_only.extend(test_only_modules(&rel, &raw));
        files.insert(rel, remove_cfg_test_items(&raw));
    }
    files.retain(|rel, _| !test_only.contains(rel));
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module of `src/x.rs` or `src/x/…` (`lib` for src/lib.rs).
fn top_module(rel: &str) -> String {
    let rest = rel.strip_prefix("src/").unwrap();
    let first = rest.split('/').next().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// (directory module, file stem) of `src/dir/file.rs`; None for mod.rs and top-level files.
fn file_in_dir_module(rel: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = rel.strip_prefix("src/")?.split('/').collect();
    match parts.as_slice() {
        [dir, file] if *file != "mod.rs" => {
            Some((dir.to_string(), file.strip_suffix(".rs")?.into()))
        }
        _ => None,
    }
}

/// The code of a Rust file with comments removed and string and char literals emptied, so that
/// neither a doc link nor a message mentioning `crate::x` counts, and braces balance.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if raw_string_hashes(&b[i..]).is_some() && !ident_byte(b, i) => {
                let hashes = raw_string_hashes(&b[i..]).unwrap();
                let close: Vec<u8> = std::iter::once(b'"').chain(vec![b'#'; hashes]).collect();
                i += 2 + hashes;
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => match char_literal_len(&b[i..]) {
                Some(n) => {
                    i += n;
                    out.push_str("' '");
                }
                // A lifetime or label.
                None => {
                    out.push('\'');
                    i += 1;
                }
            },
            _ => {
                let ch = src[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// Whether `b[i]` continues an identifier (so an `r` there does not start a raw string).
fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The number of `#` of a raw string starting at `s` (`r"`, `r#"`, …).
fn raw_string_hashes(s: &[u8]) -> Option<usize> {
    let hashes = s[1..].iter().take_while(|&&c| c == b'#').count();
    (s.get(1 + hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of a char literal starting at `s` (`'a'`, `'\n'`, `'\u{20ac}'`, `'€'`), or None
/// for a lifetime.
fn char_literal_len(s: &[u8]) -> Option<usize> {
    if s.get(1) == Some(&b'\\') {
        let end = s[2..].iter().position(|&c| c == b'\'')?;
        return Some(end + 3);
    }
    let text = std::str::from_utf8(&s[1..s.len().min(6)]).unwrap_or_else(|e| {
        std::str::from_utf8(&s[1..1 + e.valid_up_to()]).expect("a valid prefix")
    });
    let ch = text.chars().next()?;
    (s.get(1 + ch.len_utf8()) == Some(&b'\'')).then_some(2 + ch.len_utf8())
}

/// `code` without the items under `#[cfg(test)]` (a `mod tests { … }`, a helper, a `use`).
fn remove_cfg_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = find_cfg_test(rest) {
        out.push_str(&rest[..at.0]);
        rest = &rest[at.1..];
        rest = &rest[item_len(rest)..];
    }
    out.push_str(rest);
    out
}

/// (start, end) of the next `#[cfg(test)]` attribute, spacing ignored.
fn find_cfg_test(code: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = code[from..].find("#[") {
        let start = from + i;
        let end = start + code[start..].find(']')? + 1;
        let attr: String = code[start..end].split_whitespace().collect();
        if attr == "#[cfg(test)]" {
            return Some((start, end));
        }
        from = start + 2;
    }
    None
}

/// The length of the item at the start of `code`: through its `;` or its balanced `{ … }`,
/// whichever comes first.
fn item_len(code: &str) -> usize {
    let mut depth = 0;
    for (i, c) in code.char_indices() {
        match c {
            ';' if depth == 0 => return i + 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// The files that `rel` declares as `#[cfg(test)] mod x;`.
fn test_only_modules(rel: &str, code: &str) -> Vec<String> {
    let dir = match rel.strip_suffix("/mod.rs").or(rel.strip_suffix("lib.rs")) {
        Some(d) => d.trim_end_matches('/').to_string(),
        None => rel.strip_suffix(".rs").unwrap().to_string(),
    };
    let mut found = Vec::new();
    let mut rest = code;
    while let Some((_, end)) = find_cfg_test(rest) {
        rest = &rest[end..];
        let item: Vec<&str> = rest[..item_len(rest)].split_whitespace().collect();
        if let [.., "mod", name] = item.as_slice() {
            if let Some(name) = name.strip_suffix(';') {
                found.push(format!("{dir}/{name}.rs"));
                found.push(format!("{dir}/{name}/mod.rs"));
            }
        }
    }
    found
}

/// Every `crate::…` and `super::…` path in `code` (`$crate::` in macros too), groups expanded
/// one level: `crate::{a, b::c}` names `a` and `b`.
fn imports_of(rel: &str, code: &str) -> Vec<Import> {
    let mut found = Vec::new();
    for (prefix, from_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(i) = code[from..].find(prefix) {
            let at = from + i;
            from = at + prefix.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            for segments in paths_at(&code[from..]) {
                found.push(Import {
                    file: rel.to_string(),
                    from_super,
                    segments,
                });
            }
        }
    }
    found
}

/// The first two segments of each path starting at `s` (after `crate::`): one path, or one per
/// member of a `{…}` group.
fn paths_at(s: &str) -> Vec<Vec<String>> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let segments = |s: &str| -> Vec<String> {
        let first = ident(s);
        let mut v = vec![first.clone()];
        if let Some(rest) = s[first.len()..].trim_start().strip_prefix("::") {
            let second = ident(rest.trim_start());
            if !second.is_empty() {
                v.push(second);
            }
        }
        v
    };
    let Some(group) = s.strip_prefix('{') else {
        return vec![segments(s)];
    };
    // Split the group's members at top-level commas.
    let (mut depth, mut members, mut start) = (0, Vec::new(), 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                members.push(&group[start..i]);
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members
        .into_iter()
        .map(|m| segments(m.trim_start()))
        .filter(|s| !s[0].is_empty() && s[0] != "self")
        .collect()
}

/// One loop per strongly connected component of more than one node, as `a -> b -> a` and the
/// file making each import; empty if there is none.
fn cycles(graph: &Graph) -> String {
    let nodes: BTreeSet<&String> = graph
        .iter()
        .flat_map(|(k, v)| std::iter::once(k).chain(v.keys()))
        .collect();
    let mut done = BTreeSet::new();
    let mut out = String::new();
    for n in nodes {
        if done.contains(n) {
            continue;
        }
        let Some(path) = shortest_cycle(graph, n) else {
            continue;
        };
        out += &format!("{}\n", path.join(" -> "));
        for w in path.windows(2) {
            out += &format!("  {} -> {} in {}\n", w[0], w[1], graph[&w[0]][&w[1]]);
        }
        done.extend(path);
    }
    out
}

/// The shortest path from `n` back to itself (breadth first), `n` at both ends.
fn shortest_cycle(graph: &Graph, n: &String) -> Option<Vec<String>> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([n.clone()]);
    while let Some(cur) = queue.pop_front() {
        for m in graph.get(&cur).into_iter().flat_map(|tos| tos.keys()) {
            if m == n {
                // Walk back from `cur` to `n`, then read it forwards and close the loop.
                let mut path = vec![cur.clone()];
                while path.last() != Some(n) {
                    path.push(prev[path.last().unwrap()].clone());
                }
                path.reverse();
                path.push(n.clone());
                return Some(path);
            }
            if !prev.contains_key(m) && m != n {
                prev.insert(m.clone(), cur.clone());
                queue.push_back(m.clone());
            }
        }
    }
    None
}
