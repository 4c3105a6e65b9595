//! The import graph of `crates/train/src` between its top-level modules has no cycle.
//!
//! Every `*.rs` file under `src/` is parsed (syn) and attributed to its top-level module
//! (`src/model.rs` → `model`, `src/ops/conv.rs` → `ops`); each path that starts with `crate::`
//! (in a `use` tree or anywhere in code: `crate::optim::Optimizer::new`) adds an edge from that
//! module to the top-level module it names. Items under `#[cfg(test)]` are left out: a module's
//! unit tests may drive the layers above it (e.g. `source`'s tests run a whole `run::train`), which
//! is not a dependency of the library. Comments and doc links are not code and are not parsed as
//! paths. Names of the crate root that are not modules (`crate::NUMERICS_VERSION`, the
//! re-exported `crate::yamlscan`) add no edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::Visit;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string() == "test")
    })
}

/// Collects the first segment after `crate::` of every path and `use` tree outside `#[cfg(test)]`.
#[derive(Default)]
struct Refs(BTreeSet<String>);

impl Refs {
    fn use_tree(&mut self, t: &syn::UseTree, at_crate: bool) {
        match t {
            syn::UseTree::Path(p) if !at_crate => self.use_tree(&p.tree, p.ident == "crate"),
            syn::UseTree::Path(p) => {
                self.0.insert(p.ident.to_string());
            }
            syn::UseTree::Name(n) if at_crate => {
                self.0.insert(n.ident.to_string());
            }
            syn::UseTree::Rename(r) if at_crate => {
                self.0.insert(r.ident.to_string());
            }
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| self.use_tree(t, at_crate)),
            _ => {}
        }
    }
}

impl<'a> Visit<'a> for Refs {
    fn visit_item(&mut self, i: &'a syn::Item) {
        let attrs = match i {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Impl(m) => &m.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Const(c) => &c.attrs,
            _ => return syn::visit::visit_item(self, i),
        };
        if !is_cfg_test(attrs) {
            syn::visit::visit_item(self, i);
        }
    }
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        self.use_tree(&u.tree, false);
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        let mut s = p.segments.iter();
        if let (Some(first), Some(second)) = (s.next(), s.next()) {
            if first.ident == "crate" {
                self.0.insert(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, p);
    }
    fn visit_macro(&mut self, m: &'a syn::Macro) {
        // Paths inside macro calls (`format!`, `bail!`, `serde_json::json!`) are tokens, not
        // syntax: parse them as comma-separated expressions where they are.
        use syn::punctuated::Punctuated;
        if let Ok(args) = m.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated) {
            args.iter().for_each(|e| self.visit_expr(e));
        }
        syn::visit::visit_macro(self, m);
    }
}

/// The import graph of the crate rooted at `src` (its top-level modules and their edges).
fn graph(src: &Path) -> Graph {
    let mut files = vec![];
    rs_files(src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(src).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_string();
            (first != "lib.rs" && first != "main.rs").then(|| first.trim_end_matches(".rs").to_string())
        })
        .collect();
    let mut g: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &files {
        let rel = f.strip_prefix(src).unwrap();
        let module = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = module.trim_end_matches(".rs").to_string();
        if !modules.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let mut refs = Refs::default();
        refs.visit_file(&file);
        for to in refs.0 {
            if to != module && modules.contains(&to) {
                g.get_mut(&module).unwrap().insert(to);
            }
        }
    }
    g
}

/// Every cycle's modules, as the strongly connected components of more than one module
/// (Tarjan's algorithm), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = vec![];
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn the_module_graph_of_train_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    // The parser sees the edges it should: a few that the crate cannot do without.
    for (from, to) in [
        ("run", "checkpoint"),
        ("fastpath", "model"),
        ("optim", "config"),
        ("source", "input"),
    ] {
        assert!(
            g[from].contains(to),
            "edge {from} → {to} not found: {:?}",
            g[from]
        );
    }
    let found = cycles(&g);
    let edges = |c: &Vec<String>| {
        c.iter()
            .flat_map(|m| {
                g[m].iter()
                    .filter(|t| c.contains(t))
                    .map(move |t| format!("{m} → {t}"))
            })
            .collect::<Vec<_>>()
    };
    assert!(
        found.is_empty(),
        "import cycles between the top-level modules of crates/train/src: {:?}",
        found.iter().map(edges).collect::<Vec<_>>()
    );
}

#[test]
fn the_cycle_finder_finds_planted_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert!(cycles(&g(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    assert_eq!(
        cycles(&g(&[
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "d"),
            ("d", "e"),
            ("e", "d")
        ])),
        vec![
            vec!["d".to_string(), "e".into()],
            vec!["a".into(), "b".into(), "c".into()]
        ]
    );
}

#[test]
fn the_parser_reads_grouped_uses_and_code_paths_but_not_tests_or_comments() {
    let dir = tempfile::tempdir().unwrap();
    let w = |f: &str, s: &str| std::fs::write(dir.path().join(f), s).unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    w("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e;");
    w(
        "a.rs",
        "//! [`crate::e`]\nuse crate::{b::X, c};\nfn f() { let _ = crate::d::g(); }\n#[cfg(test)]\nmod tests { use crate::e; }",
    );
    w("b.rs", "fn f() { println!(\"{}\", crate::e::N); }");
    w("c.rs", "");
    w("d/mod.rs", "mod inner;");
    w("d/inner.rs", "use crate::a::*; use super::x;");
    w("e.rs", "const V: u32 = crate::NUMERICS_VERSION;");
    let g = graph(dir.path());
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(g["a"], set(&["b", "c", "d"]));
    assert_eq!(g["b"], set(&["e"]));
    assert_eq!(g["d"], set(&["a"]));
    assert!(g["e"].is_empty());
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "d".into()]]);
}
