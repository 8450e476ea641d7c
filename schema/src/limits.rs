//! Bounds on what a BUILD.toml or vbuild.toml may hold. Files can come from
//! anyone (a dependency, a pull request); without bounds one entry can make
//! loading panic, take minutes (a glob of 100,000 characters is quadratic to
//! compile) or print gigabytes of errors. No real workspace comes near them.
use crate::diagnostic::Diagnostic;
use std::path::Path;
use toml::Spanned;

/// Longest `srcs`/`outs`/`inputs`/`exclude` entry, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest label in `deps`.
pub const MAX_LABEL_LEN: usize = 1024;
/// Longest target name or env variable name.
pub const MAX_NAME_LEN: usize = 256;
/// Entries in one list (`srcs`, `deps`, ...).
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes of all entries of one list together.
pub const MAX_LIST_BYTES: usize = 256 << 10;

const HELP: &str = "no real pattern, label or name is this long; shorten it or split the target";

/// Checks one list field: each entry's length, the count and total size.
pub(crate) fn check_list(
    file: &Path,
    source: &str,
    field: &str,
    items: &[Spanned<String>],
    max_len: usize,
) -> Result<(), Diagnostic> {
    for item in items {
        if item.get_ref().len() > max_len {
            return Err(Diagnostic::at(
                file,
                source,
                Some(item.span()),
                format!(
                    "{field} entry of {} bytes is longer than the limit of {max_len}",
                    item.get_ref().len()
                ),
            )
            .with_help(HELP));
        }
    }
    let bytes: usize = items.iter().map(|i| i.get_ref().len()).sum();
    if items.len() > MAX_ENTRIES || bytes > MAX_LIST_BYTES {
        let span = items.first().map(|i| i.span());
        return Err(Diagnostic::at(
            file,
            source,
            span,
            format!(
                "{field} has {} entries ({bytes} bytes); the limit is {MAX_ENTRIES} entries and {MAX_LIST_BYTES} bytes",
                items.len()
            ),
        )
        .with_help(HELP));
    }
    Ok(())
}

/// The same for a list without positions (`[defaults]` fields, `secret_env`).
pub(crate) fn check_plain(
    file: &Path,
    source: &str,
    span: Option<std::ops::Range<usize>>,
    field: &str,
    items: &[String],
    max_len: usize,
) -> Result<(), Diagnostic> {
    let too_long = items.iter().find(|i| i.len() > max_len);
    let bytes: usize = items.iter().map(String::len).sum();
    if too_long.is_some() || items.len() > MAX_ENTRIES || bytes > MAX_LIST_BYTES {
        let what = match too_long {
            Some(i) => format!("an entry of {} bytes (limit {max_len})", i.len()),
            None => format!(
                "{} entries, {bytes} bytes (limit {MAX_ENTRIES} entries, {MAX_LIST_BYTES} bytes)",
                items.len()
            ),
        };
        return Err(
            Diagnostic::at(file, source, span, format!("{field} has {what}")).with_help(HELP),
        );
    }
    Ok(())
}

/// A name (target, env variable) at `span`.
pub(crate) fn check_name(
    file: &Path,
    source: &str,
    span: Option<std::ops::Range<usize>>,
    what: &str,
    name: &str,
) -> Result<(), Diagnostic> {
    if name.len() > MAX_NAME_LEN {
        return Err(Diagnostic::at(
            file,
            source,
            span,
            format!(
                "{what} of {} bytes is longer than the limit of {MAX_NAME_LEN}",
                name.len()
            ),
        )
        .with_help(HELP));
    }
    Ok(())
}

/// Deepest nesting of arrays and inline tables. The TOML parser recurses
/// once per level with no bound of its own: `[{[{…` 100,000 levels deep
/// overflowed the stack and aborted vbuild. No real file nests past a few.
pub const MAX_NESTING: usize = 64;

/// Refuses `source` if its arrays and inline tables nest deeper than
/// [`MAX_NESTING`], before the parser sees it. Brackets inside strings and
/// comments do not count; table headers (`[a]`, `[[a]]`) close on their
/// line, so they never add up.
pub fn check_nesting(file: &Path, source: &str) -> Result<(), Diagnostic> {
    match deepest_opening(source) {
        None => Ok(()),
        Some(at) => Err(Diagnostic::at(
            file,
            source,
            Some(at..at + 1),
            format!("arrays and inline tables nest deeper than {MAX_NESTING} levels"),
        )
        .with_help("no BUILD.toml or vbuild.toml needs this; flatten the value")),
    }
}

/// The byte offset of the first bracket that opens level `MAX_NESTING + 1`.
fn deepest_opening(source: &str) -> Option<usize> {
    let bytes = source.as_bytes();
    // No level can be deeper than the number of openers: a file with few
    // of them (every usual BUILD.toml) needs no scan of its strings and
    // comments. Counting is one vectorized pass; the scan below was ~9 K
    // instructions per BUILD.toml of a 1000-package no-op.
    if bytes.iter().filter(|&&b| b == b'[' || b == b'{').count() <= MAX_NESTING {
        return None;
    }
    let mut open_stack: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => i = find_from(bytes, i, b"\n").unwrap_or(bytes.len()),
            quote @ (b'"' | b'\'') => {
                let triple = [quote; 3];
                let (close, escapes): (&[u8], bool) = if bytes[i..].starts_with(&triple) {
                    i += 3;
                    (&triple, quote == b'"')
                } else {
                    i += 1;
                    (&triple[..1], quote == b'"')
                };
                i = string_end(bytes, i, close, escapes);
                continue;
            }
            open @ (b'[' | b'{') => {
                open_stack.push(open);
                if open_stack.len() > MAX_NESTING {
                    return Some(i);
                }
            }
            // Only a matching closer ends a level: the parser recovers from
            // a stray one without leaving the level it is in.
            b']' if open_stack.last() == Some(&b'[') => {
                open_stack.pop();
            }
            b'}' if open_stack.last() == Some(&b'{') => {
                open_stack.pop();
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Just past the `close` that ends a string whose body starts at `i`
/// (a backslash escapes the next byte in basic strings).
fn string_end(bytes: &[u8], mut i: usize, close: &[u8], escapes: bool) -> usize {
    while i < bytes.len() {
        if escapes && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i..].starts_with(close) {
            return i + close.len();
        } else if close.len() == 1 && bytes[i] == b'\n' {
            // A one-line string ends at the line end, closed or not.
            return i;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

#[cfg(test)]
mod nesting_tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("x = {}1{}", "[{a=".repeat(40_000), "}]".repeat(40_000));
        let err = check_nesting(Path::new("BUILD.toml"), &deep).unwrap_err();
        assert!(err.message.contains("nest deeper than 64"), "{err}");
        // Level 65 is the `[` of the 33rd "[{a=", after "x = ".
        assert_eq!((err.line, err.column), (1, 4 + 4 * 32 + 1));
    }

    #[test]
    fn brackets_in_strings_comments_and_headers_do_not_count() {
        let many = "[".repeat(200);
        let source = format!(
            "[target.a]\n# {many}\ncommand = \"{many}\"\nsrcs = ['{many}', \"\"\"\n{many}\\\"\"\"\"]\n[[x]]\ny = '''{many}'''\nz = [[1], [2], {{ a = [3] }}]\n"
        );
        assert!(check_nesting(Path::new("BUILD.toml"), &source).is_ok());
    }

    #[test]
    fn sixty_four_levels_are_fine() {
        let ok = format!("x = {}1{}", "[".repeat(64), "]".repeat(64));
        assert!(check_nesting(Path::new("BUILD.toml"), &ok).is_ok());
        let deep = format!("x = {}1{}", "[".repeat(65), "]".repeat(65));
        assert!(check_nesting(Path::new("BUILD.toml"), &deep).is_err());
    }
}
