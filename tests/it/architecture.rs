//! The shape of the code, checked: module dependencies form no circle, and the few crates that
//! belong to one module stay there (ARCHITECTURE.md, "Invariants").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file under `src/` with its top-level module and its code before any test module.
fn modules() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).ok()?.to_string_lossy().to_string();
            let top = rel.split('/').next()?.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).ok()?;
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            Some((top, path, code))
        })
        .collect()
}

/// The top-level modules a piece of code names as `crate::<module>`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn modules_depend_on_each_other_without_circles() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, _, code) in modules() {
        if top == "main" || top == "lib" {
            continue;
        }
        let deps: Vec<String> = uses(&code).into_iter().filter(|d| *d != top).collect();
        graph.entry(top).or_default().extend(deps);
    }
    assert!(graph.len() > 15, "the module graph was read: {graph:?}");
    // Depth-first search for a path that comes back to where it started.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(circle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("an import circle: {}", circle.join(" -> "));
        }
    }
    // The router knows neither HTTP nor the App; the upstream dialects know no client surface.
    for (module, forbidden) in [
        ("router", ["app", "http", "ops", "cli"].as_slice()),
        (
            "providers",
            ["app", "http", "router", "ops", "wire"].as_slice(),
        ),
        ("config", ["wire", "http", "router", "providers"].as_slice()),
        (
            "chat",
            ["app", "http", "router", "providers", "wire"].as_slice(),
        ),
        ("ops", ["app", "http", "router", "cli"].as_slice()),
    ] {
        let deps = &graph[module];
        for f in forbidden {
            assert!(!deps.contains(*f), "{module} must not use {f}: {deps:?}");
        }
    }
}

#[test]
fn crates_stay_in_their_module() {
    // (what, the only top-level module that may name it)
    let owners = [
        ("axum::", "http"),
        ("rusqlite::", "store"),
        ("aes_gcm::", "crypto"),
    ];
    for (top, path, code) in modules() {
        for (what, owner) in owners {
            assert!(
                top == owner || !code.contains(what),
                "{} uses {what}, which belongs to {owner}",
                path.display()
            );
        }
    }
}

/// The sync methods of `ops` and `admin` that reach the store, found in their source: those
/// that name `self.store`, and those that call one that does.
fn store_methods() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src.join("ops"), &mut files);
    files.push(src.join("admin.rs"));
    // (name, body) of every sync `fn`; a body runs to the next `fn`.
    let mut fns: Vec<(String, String)> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut parts = code.split("fn ").peekable();
        let mut before = parts.next().unwrap_or("");
        for part in parts {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !before.trim_end().ends_with("async") {
                // Without white space: rustfmt breaks `self.store` over lines.
                fns.push((name, part.split_whitespace().collect()));
            }
            before = part;
        }
    }
    let mut found: BTreeSet<String> = BTreeSet::new();
    loop {
        let more: Vec<String> = fns
            .iter()
            .filter(|(name, body)| {
                !found.contains(name)
                    && (body.contains("self.store")
                        || body.contains("(&self.store")
                        || found.iter().any(|f| body.contains(&format!("self.{f}("))))
            })
            .map(|(name, _)| name.clone())
            .collect();
        if more.is_empty() {
            return found;
        }
        found.extend(more);
    }
}

/// `code` with the arguments of every call to one of `calls` blanked out.
fn without_calls(code: &str, calls: &[&str]) -> String {
    let mut out = code.to_string();
    for call in calls {
        let mut from = 0;
        while let Some(i) = out[from..].find(call) {
            let start = from + i + call.len();
            let mut depth = 1;
            let mut end = start;
            for (j, c) in out[start..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = start + j;
                    break;
                }
            }
            out.replace_range(start..end, &" ".repeat(end - start));
            from = end;
        }
    }
    out
}

#[test]
fn blocking_work_goes_through_offload() {
    // One way to the blocking pool, bounded: `offload::run`.
    for (top, path, code) in modules() {
        assert!(
            top == "offload" || !code.contains("spawn_blocking"),
            "{} calls spawn_blocking; use offload::run",
            path.display()
        );
    }
    let methods = store_methods();
    for expected in [
        "keys",
        "key",
        "client_keys",
        "analytics",
        "session",
        "login",
    ] {
        assert!(
            methods.contains(expected),
            "store methods were read: {methods:?}"
        );
    }
    // The HTTP handlers call them only inside an offloaded closure.
    for (top, path, code) in modules() {
        if top != "http" {
            continue;
        }
        let code: String = code.split_whitespace().collect();
        let outside = without_calls(
            &code,
            &["blocking(", "offload::run(", "offload::hash(", "page("],
        );
        for m in &methods {
            for receiver in ["ops.", "admin."] {
                let call = format!("{receiver}{m}(");
                assert!(
                    !outside.contains(&call),
                    "{} calls {call}…) on the event loop: wrap it in blocking(…), offload::run(…) or offload::hash(…)",
                    path.display()
                );
            }
        }
        assert!(
            !code.contains(".store.") && !code.contains(".store()") && !code.contains("store::"),
            "{} reaches the store directly",
            path.display()
        );
    }
}
