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
    pub underline: usize,
    pub help: Option<String>,
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
            message: message.into(),
            source_line: None,
            underline: 0,
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
            diag.underline = source[start..end].chars().count().max(1);
            diag.source_line = Some(line_text.trim_end_matches('\r').to_string());
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
                " ".repeat(self.column.saturating_sub(1)),
                "^".repeat(self.underline)
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
