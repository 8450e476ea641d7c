//! The namespace sandbox's `/etc`, prepared once per scratch parent (one
//! per run) and bound read-only as a single mount.
//!
//! Binding each allowlisted entry took a bind and a read-only remount per
//! entry (24 of an action's 41 mounts, each also unmounted when the
//! namespace dies) and four files written per action. The prepared
//! directory holds copies of the allowlisted host entries (symlinks
//! recreated, directories copied, absent or unreadable ones left out: the
//! same view the binds gave) and the synthesized `passwd`, `group`,
//! `hosts` and `hostname`. It is a snapshot taken at the run's first
//! action: a host edit of, say, `ld.so.cache` during a build reaches the
//! next run, not the running one.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{SandboxError, FIXED_HOME, SANDBOX_GID, SANDBOX_HOSTNAME, SANDBOX_UID};

/// /etc entries copied from the host when present.
pub(crate) const ETC_ALLOW: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "nsswitch.conf",
    "host.conf",
    "protocols",
    "services",
    "mime.types",
    // TLS roots and OpenSSL's config only: /etc/ssl/private holds keys.
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "os-release",
    "mtab",
];

/// Only with `network = true`: resolver configuration, copied through
/// symlinks (resolv.conf often points into /run, which the sandbox lacks).
pub(crate) const ETC_NETWORK: &[&str] = &["resolv.conf", "gai.conf"];

/// A host directory with more entries than this is bound, not copied.
const COPY_MAX: usize = 16;

/// A prepared `/etc`: the directory, and the host directories to bind
/// over their (empty) places in it.
#[derive(Clone)]
pub(crate) struct Etc {
    pub dir: PathBuf,
    pub binds: Vec<PathBuf>,
}

/// Directories already prepared: (scratch parent, network) → `Etc`.
static PREPARED: Mutex<Vec<(PathBuf, bool, Etc)>> = Mutex::new(Vec::new());

/// The prepared `/etc` for actions whose scratch directories are in
/// `parent`, made on first use.
pub(crate) fn prepared(parent: &Path, network: bool) -> Result<Etc, SandboxError> {
    let mut done = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, etc)) = done
        .iter()
        .find(|(p, n, etc)| p == parent && *n == network && etc.dir.is_dir())
    {
        return Ok(etc.clone());
    }
    let dir = parent.join(if network { "etc-net" } else { "etc" });
    let setup = |e: io::Error| SandboxError::Setup {
        step: format!("preparing the sandbox's /etc in {}", dir.display()),
        source: e,
    };
    // Built under a temp name and renamed: a crash never leaves a partial
    // one under the final name (which is reused while it exists).
    // A leftover under the final name (this process made it: the parent
    // is the run's own) is rebuilt, so the bind list is always known.
    if dir.exists() {
        crate::remove::remove_tree(&dir).map_err(setup)?;
    }
    let tmp = tempfile::Builder::new()
        .prefix(".etc-")
        .tempdir_in(parent)
        .map_err(setup)?;
    let mut binds = Vec::new();
    fill(tmp.path(), network, &mut binds).map_err(setup)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).map_err(setup)?;
    fs::rename(tmp.keep(), &dir).map_err(setup)?;
    let etc = Etc { dir, binds };
    done.retain(|(p, n, _)| !(p == parent && *n == network));
    done.push((parent.to_path_buf(), network, etc.clone()));
    Ok(etc)
}

fn fill(etc: &Path, network: bool, binds: &mut Vec<PathBuf>) -> io::Result<()> {
    for name in ETC_ALLOW {
        let host = Path::new("/etc").join(name);
        let big = fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir())
            && fs::read_dir(&host).is_ok_and(|d| d.count() > COPY_MAX);
        if big {
            mkdir_755(&etc.join(name))?;
            binds.push(host);
        } else {
            copy_entry(&host, &etc.join(name), false)?;
        }
    }
    if network {
        for name in ETC_NETWORK {
            copy_entry(&Path::new("/etc").join(name), &etc.join(name), true)?;
        }
    }
    let files = [
        (
            "passwd",
            format!(
                "vbuild:x:{SANDBOX_UID}:{SANDBOX_GID}:vbuild:{FIXED_HOME}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("vbuild:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            format!(
                "127.0.0.1 localhost {SANDBOX_HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n"
            ),
        ),
        ("hostname", format!("{SANDBOX_HOSTNAME}\n")),
    ];
    for (name, data) in files {
        let path = etc.join(name);
        fs::write(&path, data)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Copies a host path: a symlink as a symlink (unless `follow`), a
/// directory with its entries, a regular file with its mode; anything
/// else, absent or unreadable, is left out.
fn copy_entry(src: &Path, dst: &Path, follow: bool) -> io::Result<()> {
    let meta = match follow {
        true => fs::metadata(src),
        false => fs::symlink_metadata(src),
    };
    let Ok(meta) = meta else { return Ok(()) };
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
    }
    let kind = meta.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
    } else if kind.is_dir() {
        let Ok(entries) = fs::read_dir(src) else {
            return Ok(());
        };
        mkdir_755(dst)?;
        for entry in entries.flatten() {
            copy_entry(&entry.path(), &dst.join(entry.file_name()), false)?;
        }
    } else if kind.is_file() {
        match fs::copy(src, dst) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn mkdir_755(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
        fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
    }
    fs::create_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}
