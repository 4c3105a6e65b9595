//! Finds the line and column of a key path in YAML text, for errors found after parsing.
//!
//! A small scanner of YAML's block structure: it knows indentation, `- ` list items, comments
//! and quoted keys. Keys inside flow collections (`{a: 1}`) are not found; the location of the
//! deepest enclosing key that is found is returned instead.

/// One step of a path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug)]
struct Tok {
    line: usize,
    col: usize, // 0-based column of the token
    item: bool, // a `- ` list-item marker (else a text token)
    text: String,
}

fn strip_comment(s: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return &s[..i],
            _ => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    s
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim_end();
        let mut col = line.len() - line.trim_start().len();
        let mut rest = line.trim_start();
        if rest.is_empty() || rest == "---" || rest == "..." {
            continue;
        }
        while rest == "-" || rest.starts_with("- ") {
            out.push(Tok {
                line: n + 1,
                col,
                item: true,
                text: String::new(),
            });
            let after = rest[1..].trim_start();
            col += rest.len() - after.len();
            rest = after;
        }
        if !rest.is_empty() {
            out.push(Tok {
                line: n + 1,
                col,
                item: false,
                text: rest.to_string(),
            });
        }
    }
    out
}

/// The key of a `key: value` token, unquoted.
fn key_of(text: &str) -> Option<String> {
    let t = text.trim_start();
    if let Some(q) = t.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = t[1..].find(q)? + 1;
        let after = &t[end + 1..];
        if after.trim_start().starts_with(':') {
            return Some(t[1..end].to_string());
        }
        return None;
    }
    let bytes = t.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t') {
            return Some(t[..i].trim_end().to_string());
        }
    }
    None
}

/// Finds `path` in `text`. Returns the position of the deepest segment found (the whole path when
/// found), and whether the whole path was found.
pub fn locate(text: &str, path: &[Seg]) -> (Option<Pos>, bool) {
    let toks = tokens(text);
    let mut range = 0..toks.len();
    let mut found: Option<Pos> = None;
    // Column of the block we are in: tokens of its direct children start there.
    let mut min_col = 0usize;
    for seg in path {
        // Children of the current node: tokens in `range` with col >= min_col; the block column
        // is the column of the first one.
        let Some(first) = toks[range.clone()].iter().position(|t| t.col >= min_col) else {
            return (found, false);
        };
        let start = range.start + first;
        let block_col = toks[start].col;
        let siblings: Vec<usize> = (start..range.end).filter(|&i| toks[i].col == block_col).collect();
        let pick = match seg {
            Seg::Key(k) => siblings
                .iter()
                .copied()
                .find(|&i| !toks[i].item && key_of(&toks[i].text).as_deref() == Some(k.as_str())),
            Seg::Index(n) => siblings.iter().copied().filter(|&i| toks[i].item).nth(*n),
        };
        let Some(i) = pick else {
            return (found, false);
        };
        found = Some(Pos {
            line: toks[i].line,
            column: toks[i].col + 1,
        });
        // The node's content: following tokens deeper than it (for an item: the tokens after the
        // marker, which may sit on the same line at a larger column).
        let end = (i + 1..range.end)
            .find(|&j| toks[j].col <= toks[i].col)
            .unwrap_or(range.end);
        range = i + 1..end;
        min_col = toks[i].col + 1;
    }
    (found, true)
}

/// Position of `path` or of its deepest located prefix; line 1 column 1 when nothing matches.
pub fn position(text: &str, path: &[Seg]) -> Pos {
    locate(text, path).0.unwrap_or(Pos { line: 1, column: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: x   # a comment
grid:
  loss.alpha: [0.5, 1]
  'loss.lambda': [1]
zip:
  - label: [a, b]
    augment.remove: [[], [crop]]
  -
    seed: [1, 2]
profiles:
  cpu:
    model:
      width: 16
";

    fn p(path: &[Seg]) -> (Option<(usize, usize)>, bool) {
        let (pos, all) = locate(TEXT, path);
        (pos.map(|p| (p.line, p.column)), all)
    }

    #[test]
    fn finds_keys_items_and_nesting() {
        assert_eq!(p(&["name".into()]), (Some((1, 1)), true));
        assert_eq!(p(&["grid".into(), "loss.alpha".into()]), (Some((3, 3)), true));
        assert_eq!(p(&["grid".into(), "loss.lambda".into()]), (Some((4, 3)), true));
        assert_eq!(p(&["zip".into(), 0.into()]), (Some((6, 3)), true));
        assert_eq!(
            p(&["zip".into(), 0.into(), "augment.remove".into()]),
            (Some((7, 5)), true)
        );
        assert_eq!(p(&["zip".into(), 0.into(), "label".into()]), (Some((6, 5)), true));
        assert_eq!(p(&["zip".into(), 1.into(), "seed".into()]), (Some((9, 5)), true));
        assert_eq!(
            p(&["profiles".into(), "cpu".into(), "model".into(), "width".into()]),
            (Some((13, 7)), true)
        );
        // Not found: the deepest prefix.
        assert_eq!(
            p(&["profiles".into(), "cpu".into(), "loss".into()]),
            (Some((11, 3)), false)
        );
        assert_eq!(p(&["zip".into(), 2.into()]), (Some((5, 1)), false));
        assert_eq!(p(&["nope".into()]), (None, false));
    }
}
