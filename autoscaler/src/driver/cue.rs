//! Finding and editing one role's instance count in a Kumori deployment
//! manifest, in any CUE spelling of `scale: detail: <role>: hsize: N`:
//! chained labels on one line, braces on one line or several, quoted
//! labels, comments, `cue fmt`'s alignment, CRLF. A small scanner of CUE's
//! tokens, not a CUE evaluator: it follows field paths through structs (and
//! through structs inside a field's value, as in `x: a & {...}`), so it
//! finds every place that could set the count, and refuses to edit unless
//! exactly one does, with a plain number.
//!
//! [`set_count`] changes those digits and nothing else, byte for byte.

/// Where the count is in the text, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// Byte range of the number.
    pub span: std::ops::Range<usize>,
    pub value: u32,
    /// 1-based line.
    pub line: usize,
}

/// Why a manifest's count cannot be read or edited safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CueError {
    #[error("no `scale: detail: {0}: hsize: N` in the manifest")]
    Missing(String),
    #[error("the `{role}` count is set in {lines} places (lines {at}): which one the platform uses is not clear, so none is edited")]
    Ambiguous {
        role: String,
        lines: usize,
        at: String,
    },
    #[error("the `{role}` count at line {line} is `{expr}`, not a plain number: it cannot be edited safely")]
    NotANumber {
        role: String,
        line: usize,
        expr: String,
    },
    #[error("the manifest is not CUE this can read: {0}")]
    Syntax(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// An identifier, or a quoted string's contents.
    Label(String),
    Number,
    /// A string literal that is not a plain label (multi-line, interpolated).
    Text,
    Open(char),
    Close(char),
    Colon,
    Comma,
    Newline,
    /// Any other operator or punctuation (`&`, `|`, `*`, `.`, `=`, `?`, ...).
    Op(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    span: std::ops::Range<usize>,
    line: usize,
}

fn scan(text: &str) -> Result<Vec<Token>, CueError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let tok = match c {
            b'\n' => {
                i += 1;
                let t = Tok::Newline;
                out.push(Token {
                    tok: t,
                    span: start..i,
                    line,
                });
                line += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                let quote = c;
                let triple = b.get(i + 1) == Some(&quote) && b.get(i + 2) == Some(&quote);
                if triple {
                    i += 3;
                    let end = text[i..]
                        .find(if quote == b'"' { "\"\"\"" } else { "'''" })
                        .ok_or_else(|| CueError::Syntax(format!("line {line}: unclosed string")))?;
                    line += text[i..i + end].matches('\n').count();
                    i += end + 3;
                    Tok::Text
                } else {
                    i += 1;
                    let mut value = String::new();
                    let mut plain = true;
                    loop {
                        match b.get(i) {
                            None | Some(b'\n') => {
                                return Err(CueError::Syntax(format!(
                                    "line {line}: unclosed string"
                                )))
                            }
                            Some(&q) if q == quote => {
                                i += 1;
                                break;
                            }
                            Some(b'\\') => {
                                plain = false;
                                i += 2;
                            }
                            Some(_) => {
                                let ch = text[i..].chars().next().unwrap_or('\0');
                                value.push(ch);
                                i += ch.len_utf8();
                            }
                        }
                    }
                    if plain && quote == b'"' {
                        Tok::Label(value)
                    } else {
                        Tok::Text
                    }
                }
            }
            b'0'..=b'9' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.')
                {
                    i += 1;
                }
                Tok::Number
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'#' => {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$' | b'#'))
                {
                    i += 1;
                }
                Tok::Label(text[start..i].to_string())
            }
            b'{' | b'[' | b'(' => {
                i += 1;
                Tok::Open(c as char)
            }
            b'}' | b']' | b')' => {
                i += 1;
                Tok::Close(c as char)
            }
            b':' => {
                i += 1;
                Tok::Colon
            }
            b',' => {
                i += 1;
                Tok::Comma
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('\0');
                i += ch.len_utf8().max(1);
                Tok::Op(ch)
            }
        };
        out.push(Token {
            tok,
            span: start..i,
            line,
        });
    }
    Ok(out)
}

/// A place that sets the role's count: its tokens.
struct Candidate {
    value: Vec<Token>,
    line: usize,
}

struct Walker<'a> {
    toks: &'a [Token],
    suffix: [String; 4],
    found: Vec<Candidate>,
}

impl Walker<'_> {
    fn peek(&self, i: usize) -> Option<&Tok> {
        self.toks.get(i).map(|t| &t.tok)
    }

    /// A struct's fields from `i` to its closing brace (or the end);
    /// returns the index after it.
    fn fields(&mut self, mut i: usize, path: &[String]) -> usize {
        loop {
            while matches!(self.peek(i), Some(Tok::Newline | Tok::Comma)) {
                i += 1;
            }
            match self.peek(i) {
                None => return i,
                Some(Tok::Close(_)) => return i + 1,
                _ => {}
            }
            // A field: `a: b: "c": value`, labels optional (`?`) or
            // required (`!`); anything else (package, import, let, an
            // embedding, a comprehension) is an expression to step over.
            let mut chain = Vec::new();
            while let Some(Tok::Label(name)) = self.peek(i) {
                let mut j = i + 1;
                if matches!(self.peek(j), Some(Tok::Op('?' | '!'))) {
                    j += 1;
                }
                if self.peek(j) != Some(&Tok::Colon) {
                    break;
                }
                chain.push(name.clone());
                i = j + 1;
            }
            if chain.is_empty() && matches!(self.peek(i), Some(Tok::Open('['))) {
                // A pattern constraint `[Name=string]: ...`: no fixed path.
                let close = self.matching(i);
                if self.peek(close) == Some(&Tok::Colon) {
                    chain.push("[]".into());
                    i = close + 1;
                }
            }
            let mut here = path.to_vec();
            here.extend(chain.iter().cloned());
            i = self.value(i, &here, !chain.is_empty());
        }
    }

    /// Past the bracket that closes the one at `i`.
    fn matching(&self, mut i: usize) -> usize {
        let mut depth = 0usize;
        while let Some(t) = self.peek(i) {
            match t {
                Tok::Open(_) => depth += 1,
                Tok::Close(_) => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    }

    /// A value (or any expression) from `i` to the end of its field; the
    /// structs in it are walked at `path`. Returns the index of the
    /// separator (or closing brace) after it.
    fn value(&mut self, mut i: usize, path: &[String], is_field: bool) -> usize {
        let start = i;
        let mut tokens = Vec::new();
        let mut struct_value = false;
        loop {
            match self.peek(i) {
                None | Some(Tok::Newline | Tok::Comma | Tok::Close(_)) => break,
                Some(Tok::Open('{')) => {
                    struct_value = true;
                    i = self.fields(i + 1, path);
                }
                Some(Tok::Open(_)) => {
                    // A list or parentheses: their structs are no fields of
                    // this path, but are walked for what they hold.
                    let close = self.matching(i);
                    let mut inner = path.to_vec();
                    inner.push("[]".into());
                    let mut k = i + 1;
                    while k < close.saturating_sub(1) {
                        if self.peek(k) == Some(&Tok::Open('{')) {
                            k = self.fields(k + 1, &inner);
                        } else {
                            k += 1;
                        }
                    }
                    tokens.extend_from_slice(&self.toks[i..close]);
                    i = close;
                }
                Some(_) => {
                    tokens.push(self.toks[i].clone());
                    i += 1;
                }
            }
        }
        if is_field && path.ends_with(&self.suffix) && i > start {
            let line = self.toks[start].line;
            if struct_value {
                tokens.push(Token {
                    tok: Tok::Text,
                    span: self.toks[start].span.clone(),
                    line,
                });
            }
            self.found.push(Candidate {
                value: tokens,
                line,
            });
        }
        i
    }
}

/// The role's count in `text`, if exactly one plain number sets it.
pub fn find_count(text: &str, role: &str) -> Result<Count, CueError> {
    let toks = scan(text)?;
    let mut w = Walker {
        toks: &toks,
        suffix: [
            "scale".into(),
            "detail".into(),
            role.to_string(),
            "hsize".into(),
        ],
        found: Vec::new(),
    };
    let mut i = 0;
    while i < toks.len() {
        i = w.fields(i, &[]);
    }
    match w.found.as_slice() {
        [] => Err(CueError::Missing(role.into())),
        [one] => match one.value.as_slice() {
            [t] if t.tok == Tok::Number => {
                let digits = &text[t.span.clone()];
                let value = digits.parse::<u32>().map_err(|_| CueError::NotANumber {
                    role: role.into(),
                    line: one.line,
                    expr: digits.into(),
                })?;
                Ok(Count {
                    span: t.span.clone(),
                    value,
                    line: one.line,
                })
            }
            tokens => {
                let from = tokens.first().map_or(0, |t| t.span.start);
                let to = tokens.last().map_or(0, |t| t.span.end);
                Err(CueError::NotANumber {
                    role: role.into(),
                    line: one.line,
                    expr: text.get(from..to).unwrap_or("").trim().to_string(),
                })
            }
        },
        many => Err(CueError::Ambiguous {
            role: role.into(),
            lines: many.len(),
            at: many
                .iter()
                .map(|c| c.line.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `text` with the role's count set to `n`: only those digits change.
pub fn set_count(text: &str, role: &str, n: u32) -> Result<String, CueError> {
    let count = find_count(text, role)?;
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str(&text[..count.span.start]);
    out.push_str(&n.to_string());
    out.push_str(&text[count.span.end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of the same count, and the same edit.
    #[test]
    fn every_spelling_of_the_count_is_read_and_edited_byte_for_byte() {
        let cases = [
            // The usual one.
            "config: {\n\tscale: detail: {\n\t\tfrontend: hsize: 1\n\t\tworker: hsize: 2\n\t}\n}\n",
            // Braces on one line.
            "config: scale: detail: {frontend: hsize: 1, worker: {hsize: 2}}\n",
            // Braces on several lines.
            "config: scale: detail: {\n  worker: {\n    hsize: 2\n  }\n}\n",
            // All chained on one line.
            "config: scale: detail: worker: hsize: 2\n",
            // A quoted label, a trailing comment, cue fmt's alignment.
            "config: scale: detail: {\n\t\"frontend\": hsize: 1\n\t\"worker\":   hsize: 2 // the autoscaler edits this\n}\n",
            // CRLF line endings stay CRLF.
            "config: {\r\n  scale: detail: {\r\n    worker: hsize: 2\r\n  }\r\n}\r\n",
            // Inside a definition unified with the platform's.
            "package deployment\n\nimport (\n\tk \"kumori.systems/kumori:kumori\"\n)\n\n#Deployment: {\n\tname: \"x\"\n\tconfig: {\n\t\tparameter: {name: \"a: b\"}\n\t\tscale: detail: {\n\t\t\tkafka: 1\n\t\t\tworker: hsize: 2\n\t\t}\n\t\tresilience: 0\n\t}\n}\n\ndeployment: k.#Deployment & #Deployment\n",
            // Inside a struct that is part of an expression.
            "deployment: k.#Deployment & {config: scale: detail: worker: hsize: 2}\n",
            // A role that merely mentions worker is another role.
            "config: scale: detail: {worker_b: hsize: 9, worker: hsize: 2}\n// worker: hsize: 7\n",
        ];
        for text in cases {
            let c = find_count(text, "worker").unwrap_or_else(|e| panic!("{e}:\n{text}"));
            assert_eq!(c.value, 2, "{text}");
            let edited = set_count(text, "worker", 17).unwrap();
            // Exactly the two bytes of the number changed, to three.
            assert_eq!(edited.len(), text.len() + 1, "{text}");
            assert_eq!(&edited[..c.span.start], &text[..c.span.start]);
            assert_eq!(&edited[c.span.start + 2..], &text[c.span.end..]);
            assert_eq!(find_count(&edited, "worker").unwrap().value, 17);
        }
    }

    #[test]
    fn what_cannot_be_edited_safely_is_refused_with_the_reason() {
        let refused = [
            (
                "config: scale: detail: worker: hsize: #workers\n#workers: 2\n",
                "`#workers`, not a plain number",
            ),
            (
                "config: scale: detail: worker: hsize: *2 | int\n",
                "`*2 | int`, not a plain number",
            ),
            (
                "a: config: scale: detail: worker: hsize: 2\nb: config: scale: detail: worker: hsize: 3\n",
                "set in 2 places (lines 1, 2)",
            ),
            (
                "config: scale: detail: {worker: hsize: 2}\nconfig: scale: detail: worker: hsize: 2\n",
                "set in 2 places",
            ),
            ("config: scale: detail: frontend: hsize: 1\n", "no `scale: detail: worker: hsize: N`"),
            ("config: scale: detail: worker: hsize: 99999999999\n", "not a plain number"),
            ("config: \"worker\n", "not CUE"),
        ];
        for (text, why) in refused {
            let e = find_count(text, "worker").expect_err(text).to_string();
            assert!(e.contains(why), "{text}: {e}");
            assert!(set_count(text, "worker", 3).is_err());
        }
    }

    #[test]
    fn the_shipped_manifest_has_one_worker_count() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kumori/deployments/system/manifest.cue");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(find_count(&text, "worker").is_ok());
    }
}
