//! A linear pre-scan of YAML text that caps the nesting depth of flow collections before the text
//! reaches the YAML parser.
//!
//! libyaml (behind serde_norway) spends time quadratic in the flow depth: 20,000 nested `[` take
//! seconds, 100,000 a minute, before any error can be reported. [`too_deep`] walks the text once
//! and finds the first `[` / `{` that opens a flow collection deeper than the cap, so that such
//! text is refused at once with its line and column. One scanner guards the experiment files
//! (`protoclr_grid`) and the training configs and `--set` values (`protoclr_train`).
//!
//! The scan errs on the side of counting: a `[` / `{` counts when it can begin a node (at the
//! start of a line, after `- `, `? `, `: `, a node property such as `&anchor` or `!tag`) and
//! anywhere inside a flow collection; one inside a quoted scalar counts too (a closing `]` / `}`
//! there does not), so that a mis-detected quote can never hide real nesting. Comments and block
//! scalars (`|`, `>`) are skipped. Real configs nest 3–4 levels; the cap is [`MAX_DEPTH`].

/// The deepest nesting of flow collections a config or experiment file may have.
pub const MAX_DEPTH: usize = 64;

/// Where the text first opens a flow collection deeper than `max`: (line, column), 1-based.
pub fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    Scan {
        b: text.as_bytes(),
        text,
        i: 0,
        line: 1,
        line_start: 0,
        depth: 0,
        max,
    }
    .run()
}

/// What [`too_deep`]'s finding means, for error messages.
pub const DEPTH_MESSAGE: &str = "YAML nested deeper than 64 levels of `[`/`{` (refused before parsing)";

struct Scan<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
    line: usize,
    line_start: usize,
    depth: usize,
    max: usize,
}

impl Scan<'_> {
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(b'\n')
    }

    fn newline(&mut self) {
        self.line += 1;
        self.line_start = self.i + 1;
    }

    /// Opens a flow collection at `self.i`; the position when it is one too many.
    fn open(&mut self) -> Option<(usize, usize)> {
        self.depth += 1;
        (self.depth > self.max).then(|| {
            let column = self.text[self.line_start..self.i].chars().count() + 1;
            (self.line, column)
        })
    }

    /// Indentation (spaces) of the line starting at `start`, and whether it is blank.
    fn indent_at(&self, start: usize) -> (usize, bool) {
        let mut j = start;
        while self.at(j) == b' ' && j < self.b.len() {
            j += 1;
        }
        let rest = self.at(j);
        (j - start, j >= self.b.len() || rest == b'\n' || rest == b'\r')
    }

    /// Skips the content lines of a block scalar whose header is on the current line (`self.i`
    /// at the indicator; `parent` is the current line's indentation), leaving `self.i` at the
    /// newline before the first line that is not content.
    fn skip_block_scalar(&mut self, parent: usize) {
        let mut content: Option<usize> = None;
        loop {
            while self.i < self.b.len() && self.b[self.i] != b'\n' {
                self.i += 1;
            }
            if self.i >= self.b.len() {
                return;
            }
            let (indent, blank) = self.indent_at(self.i + 1);
            let inside = match content {
                _ if blank => true,
                Some(m) => indent >= m,
                None if indent > parent => {
                    content = Some(indent);
                    true
                }
                None => false,
            };
            if !inside {
                return;
            }
            self.newline();
            self.i += 1;
        }
    }

    /// Skips a quoted scalar starting at `self.i`, counting the openers inside it (see the
    /// module doc); `self.i` ends at the closing quote (or the end of the text).
    fn skip_quoted(&mut self, quote: u8) -> Option<(usize, usize)> {
        self.i += 1;
        while self.i < self.b.len() {
            match self.b[self.i] {
                b'\\' if quote == b'"' => self.i += 1,
                b'\'' if quote == b'\'' && self.at(self.i + 1) == b'\'' => self.i += 1,
                c if c == quote => return None,
                b'[' | b'{' => {
                    if let Some(p) = self.open() {
                        return Some(p);
                    }
                }
                b'\n' => self.newline(),
                _ => {}
            }
            self.i += 1;
        }
        None
    }

    fn run(mut self) -> Option<(usize, usize)> {
        let n = self.b.len();
        // Whether a node may begin here (then `[`, `{`, quotes and `|`/`>` are indicators).
        let mut node_start = true;
        let mut indent = 0usize;
        let mut line_begins = true;
        while self.i < n {
            let c = self.b[self.i];
            match c {
                b'\n' => {
                    self.newline();
                    self.i += 1;
                    line_begins = true;
                    indent = 0;
                    if self.depth == 0 {
                        node_start = true;
                    }
                    continue;
                }
                b' ' | b'\t' | b'\r' => {
                    if line_begins && c == b' ' {
                        indent += 1;
                    }
                    self.i += 1;
                    continue;
                }
                _ => line_begins = false,
            }
            let flow = self.depth > 0;
            let after_space = self.i == 0 || matches!(self.b[self.i - 1], b' ' | b'\t' | b'\n' | b'\r');
            match c {
                b'#' if after_space => {
                    while self.i < n && self.b[self.i] != b'\n' {
                        self.i += 1;
                    }
                    continue;
                }
                b'"' | b'\'' if node_start => {
                    if let Some(p) = self.skip_quoted(c) {
                        return Some(p);
                    }
                    node_start = false;
                }
                b'[' | b'{' if node_start || flow => {
                    if let Some(p) = self.open() {
                        return Some(p);
                    }
                    node_start = true;
                }
                b']' | b'}' if flow => {
                    self.depth -= 1;
                    node_start = false;
                }
                b',' if flow => node_start = true,
                b'|' | b'>' if node_start && !flow => {
                    self.skip_block_scalar(indent);
                    continue;
                }
                b'-' | b'?' | b':' => {
                    let next = self.at(self.i + 1);
                    node_start = matches!(next, b' ' | b'\t' | b'\n' | b'\r') || (flow && c == b':');
                }
                b'&' | b'!' if node_start => {
                    // A node property: the node itself follows.
                    while self.i < n
                        && !matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[' | b'{')
                    {
                        self.i += 1;
                    }
                    continue;
                }
                _ => node_start = false,
            }
            self.i += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("seed: {}{}\n", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn deep_flow_nesting_is_found_with_its_position() {
        assert_eq!(too_deep(&nested(64), 64), None);
        assert_eq!(too_deep(&nested(65), 64), Some((1, 7 + 64)));
        assert_eq!(too_deep(&nested(100_000), 64), Some((1, 7 + 64)));
        let maps = format!("a: 1\nb:\n  c: {}1{}\n", "{x: ".repeat(70), "}".repeat(70));
        assert_eq!(too_deep(&maps, 64), Some((3, 6 + 64 * 4)));
        // Anchors, tags and sequence entries do not hide the collection they introduce.
        for prefix in ["- &a ", "k: !!seq ", "- - ", "? "] {
            let t = format!("{prefix}{}{}\n", "[".repeat(70), "]".repeat(70));
            assert!(too_deep(&t, 64).is_some(), "{prefix}");
        }
        // Closers inside quotes do not cancel real openers.
        let t = format!("x: {}\n", "[ 'a]]]]]]', ".repeat(70));
        assert!(too_deep(&t, 64).is_some());
        assert!(DEPTH_MESSAGE.contains(&format!(" {MAX_DEPTH} ")));
    }

    #[test]
    fn ordinary_configs_pass() {
        let ok = "\
name: t   # a comment with [[[[[[[[[[[[[[[[
description: >
  Text with [unbalanced brackets and {braces [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
  [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
base: {loss: {name: balanced}, augment: {remove: [crop, flip]}}
note: plain text [with brackets [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
quoted: 'it''s {fine}'
grid:
  loss.alpha: [0.5, 1, [2, [3, {a: [4]}]]]
";
        assert_eq!(too_deep(ok, 64), None);
        assert_eq!(too_deep("", 64), None);
        assert_eq!(too_deep("[]", 0).map(|p| p.0), Some(1));
    }
}
