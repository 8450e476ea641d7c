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
