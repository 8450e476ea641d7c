//! A user-facing error anchored in a source file.
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An error in a file the user wrote, with enough context to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Path as shown to the user (workspace-relative where possible).
    pub file: PathBuf,
    /// 1-based line and column; 0 when the error has no position.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The source line the error points at, if any.
    pub source_line: Option<String>,
    /// Width of the underline under `source_line`.
    pub underline: u32,
    /// 1-based column of the underline within `source_line` (which may be
    /// an excerpt of a long line; `column` is the real one).
    pub caret: u32,
    pub help: Option<String>,
}

/// Characters of a source line shown under an error. A line of 10,000
/// entries must not be copied into each of its 10,000 diagnostics.
pub const MAX_SHOWN: usize = 160;

/// The part of `line` around `column` (1-based) to show, and the column
/// within it. Long lines are cut to [`MAX_SHOWN`] characters with `…` at
/// each cut end.
fn window(line: &str, column: usize) -> (String, usize) {
    let count = line.chars().count();
    if count <= MAX_SHOWN {
        return (line.to_owned(), column);
    }
    let first = column.saturating_sub(1).saturating_sub(40);
    let first = first.min(count.saturating_sub(MAX_SHOWN));
    let text: String = line.chars().skip(first).take(MAX_SHOWN).collect();
    let (lead, caret) = match first {
        0 => ("", column),
        _ => ("…", column - first + 1),
    };
    let tail = if first + MAX_SHOWN < count { "…" } else { "" };
    (format!("{lead}{text}{tail}"), caret)
}

/// Characters of one quoted value (`` `…` ``) kept in a message: serde and
/// other sources quote the offending input whole, and an unknown field name
/// of 400,000 characters must not become a message of that size.
const MAX_QUOTED: usize = 80;
/// Characters of a whole message, whatever quoted it.
const MAX_MESSAGE: usize = 2000;

/// `message` with each long back-quoted value cut to [`MAX_QUOTED`]
/// characters and the whole cut to [`MAX_MESSAGE`], each cut marked `…`.
fn bounded_message(message: String) -> String {
    if message.len() <= MAX_QUOTED {
        return message;
    }
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE + 8));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts sit between a pair of backquotes.
        if i % 2 == 1 && part.chars().count() > MAX_QUOTED {
            out.extend(part.chars().take(MAX_QUOTED));
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).collect();
        out.push('…');
    }
    out
}

impl Diagnostic {
    /// An error for `span` (byte offsets) in `source`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let mut diag = Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: bounded_message(message.into()),
            source_line: None,
            underline: 0,
            caret: 0,
            help: None,
        };
        if let Some(span) = span {
            let start = span.start.min(source.len());
            let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = source[start..]
                .find('\n')
                .map_or(source.len(), |i| start + i);
            let line_text = &source[line_start..line_end];
            diag.line = source[..start].matches('\n').count() + 1;
            diag.column = source[line_start..start].chars().count() + 1;
            let end = span.end.clamp(start, line_end);
            let underline = source[start..end].chars().count().max(1);
            let (shown, caret) = window(line_text.trim_end_matches('\r'), diag.column);
            diag.source_line = Some(shown);
            // Both fit: the excerpt is at most MAX_SHOWN characters wide.
            diag.caret = caret as u32;
            diag.underline = underline.min(MAX_SHOWN + 1 - caret.min(MAX_SHOWN)) as u32;
        }
        diag
    }

    /// An error about a whole file (no position).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic::at(file, "", None, message)
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        }
        if let Some(text) = &self.source_line {
            let gutter = self.line.to_string().len();
            write!(f, "\n{:gutter$} |\n{} | {}", "", self.line, text)?;
            write!(
                f,
                "\n{:gutter$} | {}{}",
                "",
                " ".repeat((self.caret as usize).saturating_sub(1)),
                "^".repeat(self.underline as usize)
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_quoted_values_in_messages_are_cut() {
        let name = "x".repeat(400_000);
        let d = Diagnostic::file(
            Path::new("BUILD.toml"),
            format!("unknown field `{name}`, expected one of `command`, `srcs`"),
        );
        assert_eq!(
            d.message,
            format!(
                "unknown field `{}…`, expected one of `command`, `srcs`",
                "x".repeat(MAX_QUOTED)
            )
        );
        let d = Diagnostic::file(Path::new("BUILD.toml"), "y".repeat(10_000));
        assert_eq!(d.message.chars().count(), MAX_MESSAGE + 1);
    }

    #[test]
    fn long_lines_are_shown_as_an_excerpt() {
        let entries: Vec<String> = (0..10_000).map(|i| format!("\"e{i}\"")).collect();
        let src = format!("srcs = [{}]\n", entries.join(", "));
        let at = src.find("\"e5000\"").unwrap();
        let d = Diagnostic::at(Path::new("BUILD.toml"), &src, Some(at..at + 7), "bad");
        assert_eq!(d.column, src[..at].chars().count() + 1);
        let text = d.to_string();
        assert!(text.len() < 600, "{} bytes", text.len());
        let shown = d.source_line.as_deref().unwrap();
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        // The caret still points at the entry.
        let caret_line = text.lines().last().unwrap();
        let caret_col = caret_line.find('^').unwrap() - caret_line.find('|').unwrap() - 2;
        let shown_line = text.lines().nth(2).unwrap();
        let offset = shown_line.find('|').unwrap() + 2;
        assert!(shown_line[offset..]
            .chars()
            .skip(caret_col)
            .collect::<String>()
            .starts_with("\"e5000\""));
    }

    #[test]
    fn points_at_line_and_column() {
        let src = "a = 1\nbad = \"x\"\n";
        let d = Diagnostic::at(
            Path::new("BUILD.toml"),
            src,
            Some(6..9),
            "unknown field `bad`",
        );
        assert_eq!((d.line, d.column, d.underline), (2, 1, 3));
        assert_eq!(
            d.to_string(),
            "BUILD.toml:2:1: unknown field `bad`\n  |\n2 | bad = \"x\"\n  | ^^^"
        );
    }
}
