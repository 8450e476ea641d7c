//! The namespace sandbox's filesystem, as a list of [`Op`]s.
//!
//! The root is a fresh tmpfs (made read-only once built) holding only:
//! - the system toolchain, bound read-only: /usr and the /bin, /sbin, /lib*
//!   directories (recreated as symlinks where the host has symlinks);
//! - an allowlist of /etc entries tools need (dynamic loader config, Debian
//!   alternatives, name service config, TLS roots) plus a synthesized
//!   passwd/group/hosts/hostname naming the sandbox user, copied once per
//!   run into one directory bound read-only (etc.rs). Host-specific
//!   settings (/etc/localtime, gitconfig, npmrc, pip.conf, ld.so.preload...)
//!   are left out on purpose: they would make outputs depend on the machine;
//! - a minimal /dev (null, zero, full, random, urandom, tty, a private
//!   /dev/shm) and a /proc of the sandbox's own PID namespace;
//! - /vbuild/ws: an overlay of the staged inputs (read-only by mode; every
//!   write lands in a scratch upper layer, see overlay.rs),
//!   /vbuild/home and /vbuild/tmp (read-write, /tmp points there).

use std::ffi::{CStr, CString};
use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::plan::{cpath, NsPlan, Op};
use crate::{
    SandboxError, FIXED_HOME, FIXED_TMP, FIXED_WS, HOST_UNPRIVILEGED_ID, SANDBOX_GID,
    SANDBOX_HOSTNAME, SANDBOX_UID,
};

/// Top-level host directories holding the toolchain.
const SYSTEM_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Host-side inputs of [`build`].
pub(crate) struct RootSpec<'a> {
    /// Empty host directory the tmpfs root is mounted on.
    pub new_root: &'a Path,
    /// The staged workspace: the overlay's lower layer.
    pub ws: &'a Path,
    /// The overlay's upper and work directories (empty, same filesystem).
    pub upper: &'a Path,
    pub work: &'a Path,
    /// No overlay: `ws` is bound read-write (see `RunSpec::direct_ws`).
    pub direct_ws: bool,
    pub home: &'a Path,
    pub tmp: &'a Path,
    /// The prepared `/etc` (etc.rs).
    pub etc: &'a crate::etc::Etc,
    pub network: bool,
    pub extra_ro: &'a [(PathBuf, PathBuf)],
    pub extra_rw: &'a [(PathBuf, PathBuf)],
}

/// Flags for the read-only remount of a bind of `src`. Inside a user
/// namespace the kernel refuses a remount that would clear flags the host
/// mount has (nosuid, nodev, noexec, atime), so they are carried over.
fn ro_flags(src: &Path) -> MsFlags {
    let mut f = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    if let Ok(st) = statvfs(src) {
        let h = st.flags();
        if h.contains(FsFlags::ST_NOEXEC) {
            f |= MsFlags::MS_NOEXEC;
        }
        if h.contains(FsFlags::ST_NOATIME) {
            f |= MsFlags::MS_NOATIME;
        }
        if h.contains(FsFlags::ST_NODIRATIME) {
            f |= MsFlags::MS_NODIRATIME;
        }
        if h.contains(FsFlags::ST_RELATIME) {
            f |= MsFlags::MS_RELATIME;
        }
    }
    f
}

/// `inside` (absolute, as the action sees it) under the new root on the host.
fn under(root: &Path, inside: &Path) -> Result<PathBuf, SandboxError> {
    let mut out = root.to_path_buf();
    for c in inside.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => {
                return Err(SandboxError::InvalidSpec(format!(
                    "sandbox path {} must be absolute without `..`",
                    inside.display()
                )))
            }
        }
    }
    Ok(out)
}

struct Builder<'a> {
    plan: NsPlan,
    root: &'a Path,
}

impl Builder<'_> {
    fn at(&self, inside: &str) -> Result<CString, SandboxError> {
        cpath(&under(self.root, Path::new(inside))?)
    }

    fn mkdir(&mut self, inside: &str) -> Result<(), SandboxError> {
        let p = self.at(inside)?;
        self.plan.push(Op::Mkdir(p), format!("mkdir {inside}"));
        Ok(())
    }

    /// mkdir -p of `inside`'s ancestors and, when `leaf_dir`, of itself.
    fn mkdir_p(&mut self, inside: &Path, leaf_dir: bool) -> Result<(), SandboxError> {
        let full = under(Path::new("/"), inside)?;
        let mut cur = PathBuf::from("/");
        let comps: Vec<_> = full.components().skip(1).collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            if i + 1 < comps.len() || leaf_dir {
                let host = cpath(&under(self.root, &cur)?)?;
                self.plan
                    .push(Op::Mkdir(host), format!("mkdir {}", cur.display()));
            }
        }
        Ok(())
    }

    /// Binds host `src` at `inside`, creating the mountpoint.
    fn bind(&mut self, src: &Path, inside: &Path, ro: bool) -> Result<(), SandboxError> {
        let meta = fs::metadata(src).map_err(|e| SandboxError::Setup {
            step: format!("bind {}", src.display()),
            source: e,
        })?;
        self.mkdir_p(inside, meta.is_dir())?;
        if !meta.is_dir() {
            let dst = cpath(&under(self.root, inside)?)?;
            self.plan
                .push(Op::Touch(dst), format!("mountpoint {}", inside.display()));
        }
        self.bind_existing(src, inside, ro)
    }

    /// Binds where the mountpoint already exists (inside the ws bind, or
    /// created earlier): no mkdir/touch syscalls.
    fn bind_existing(&mut self, src: &Path, inside: &Path, ro: bool) -> Result<(), SandboxError> {
        let dst = cpath(&under(self.root, inside)?)?;
        let remount = ro.then(|| ro_flags(src));
        let what = if ro { "read-only" } else { "read-write" };
        self.plan.push(
            Op::Bind {
                src: cpath(src)?,
                dst,
                remount,
            },
            format!("bind {} at {} {what}", src.display(), inside.display()),
        );
        Ok(())
    }

    /// Recreates a host symlink (cheaper than a mount, and keeps e.g.
    /// `/bin -> usr/bin` exactly as tools expect).
    fn copy_symlink(&mut self, host: &Path, inside: &str) -> Result<bool, SandboxError> {
        match fs::read_link(host) {
            Ok(target) => {
                let link = self.at(inside)?;
                self.plan.push(
                    Op::Symlink {
                        target: cpath(&target)?,
                        link,
                    },
                    format!("symlink {inside}"),
                );
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// A host path as-is: symlink recreated, directory or file bound
    /// read-only, absent skipped.
    fn mirror(&mut self, host: &str) -> Result<(), SandboxError> {
        let hp = Path::new(host);
        match fs::symlink_metadata(hp) {
            Ok(m) if m.file_type().is_symlink() => {
                self.copy_symlink(hp, host)?;
            }
            Ok(_) => self.bind(hp, hp, true)?,
            Err(_) => {}
        }
        Ok(())
    }

    fn mount(
        &mut self,
        fstype: &'static CStr,
        inside: &str,
        flags: MsFlags,
        data: &str,
    ) -> Result<(), SandboxError> {
        let dst = self.at(inside)?;
        let data = crate::plan::cstr(data.as_bytes())?;
        self.plan.push(
            Op::Mount {
                fstype,
                dst,
                flags,
                data,
            },
            format!("mount {} on {inside}", fstype.to_string_lossy()),
        );
        Ok(())
    }
}

/// The id maps: the caller's ids become [`SANDBOX_UID`]/[`SANDBOX_GID`] so
/// `id -u` (and files' owners as tools see them) is the same on every
/// machine. Not uid 0: the action then loses all capabilities on `execve`
/// and cannot undo the read-only mounts.
///
/// A root caller's own id is not what 1000 stands for: uid 1000 inside would
/// be root on the host, with root's access to every file the sandbox can
/// reach. 1000 is [`HOST_UNPRIVILEGED_ID`] instead, a mapping only a
/// privileged parent can write, so vbuild writes it from outside (see
/// `launch.rs`); the supervisor stays 0 to build the root, and the action
/// drops every group and becomes 1000 (losing all capabilities) before
/// `execve`.
fn id_maps(plan: &mut NsPlan) {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if root_caller() {
        // 0 stays 0 for the supervisor, which creates the root's mountpoints
        // (a file cannot be created by an unmapped id); the action is 1000.
        let map = format!("0 0 1\n{SANDBOX_UID} {HOST_UNPRIVILEGED_ID} 1\n").into_bytes();
        let gmap = format!("0 0 1\n{SANDBOX_GID} {HOST_UNPRIVILEGED_ID} 1\n").into_bytes();
        plan.parent_maps = Some((map, gmap));
        return;
    }
    plan.push_gate(
        Op::WriteProc {
            path: c"/proc/self/setgroups",
            data: b"deny".to_vec(),
        },
        "write /proc/self/setgroups (deny)",
    );
    plan.push_gate(
        Op::WriteProc {
            path: c"/proc/self/uid_map",
            data: format!("{SANDBOX_UID} {uid} 1\n").into_bytes(),
        },
        "write /proc/self/uid_map",
    );
    plan.push_gate(
        Op::WriteProc {
            path: c"/proc/self/gid_map",
            data: format!("{SANDBOX_GID} {gid} 1\n").into_bytes(),
        },
        "write /proc/self/gid_map",
    );
}

/// Whether the caller is root with [`HOST_UNPRIVILEGED_ID`] mapped in its
/// own user namespace (the host's root, or a container's). A root of a user
/// namespace without that id (a nested test sandbox) keeps the plain map.
pub(crate) fn root_caller() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let mapped = |file: &str| {
            fs::read_to_string(file).is_ok_and(|map| {
                map.lines().any(|line| {
                    let f: Vec<u64> = line
                        .split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect();
                    let id = u64::from(HOST_UNPRIVILEGED_ID);
                    f.len() == 3 && f[0] <= id && id < f[0] + f[2]
                })
            })
        };
        nix::unistd::geteuid().is_root()
            && mapped("/proc/self/uid_map")
            && mapped("/proc/self/gid_map")
    })
}

/// `/etc`: the run's prepared directory (see etc.rs), bound read-only,
/// with its large host directories bound read-only over their places.
fn etc(b: &mut Builder, prepared: &crate::etc::Etc) -> Result<(), SandboxError> {
    b.bind(&prepared.dir, Path::new("/etc"), true)?;
    for host in &prepared.binds {
        b.bind_existing(host, host, true)?;
    }
    Ok(())
}

fn dev(b: &mut Builder) -> Result<(), SandboxError> {
    b.mkdir("/dev")?;
    for node in DEV_NODES {
        let host = PathBuf::from(format!("/dev/{node}"));
        if host.exists() {
            // Bound read-write and without nodev: they are devices.
            b.bind(&host, &host, false)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let link = b.at(&format!("/dev/{name}"))?;
        b.plan.push(
            Op::Symlink {
                target: crate::plan::cstr(target.as_bytes())?,
                link,
            },
            format!("symlink /dev/{name}"),
        );
    }
    b.mkdir("/dev/shm")?;
    b.mount(
        c"tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777,size=256m",
    )
}

fn workspace(b: &mut Builder, r: &RootSpec) -> Result<(), SandboxError> {
    b.mkdir("/vbuild")?;
    for d in [FIXED_WS, FIXED_HOME, FIXED_TMP] {
        b.mkdir(d)?;
    }
    // Writable staging (see overlay.rs): every write lands in `upper`;
    // without an overlay, the staged tree (of copies) itself is written.
    if r.direct_ws {
        b.bind_existing(r.ws, Path::new(FIXED_WS), false)?;
    } else {
        let data = crate::overlay::options(r.ws, r.upper, r.work)?;
        let dst = b.at(FIXED_WS)?;
        b.plan.push(
            Op::Mount {
                fstype: c"overlay",
                dst,
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data,
            },
            format!("mount overlay on {FIXED_WS}"),
        );
    }
    b.bind_existing(r.home, Path::new(FIXED_HOME), false)?;
    b.bind_existing(r.tmp, Path::new(FIXED_TMP), false)?;
    // Tools that ignore TMPDIR still write to the action's own tmp.
    b.mkdir("/var")?;
    for (link, target) in [("/tmp", "vbuild/tmp"), ("/var/tmp", "../vbuild/tmp")] {
        let at = b.at(link)?;
        b.plan.push(
            Op::Symlink {
                target: crate::plan::cstr(target.as_bytes())?,
                link: at,
            },
            format!("symlink {link}"),
        );
    }
    Ok(())
}

/// The whole plan for one namespace sandbox.
pub(crate) fn build(r: &RootSpec) -> Result<NsPlan, SandboxError> {
    let mut b = Builder {
        plan: NsPlan {
            network: r.network,
            ..NsPlan::default()
        },
        root: r.new_root,
    };
    id_maps(&mut b.plan);
    let root_c = cpath(r.new_root)?;
    b.plan.push_gate(
        Op::Mount {
            fstype: c"tmpfs",
            dst: root_c.clone(),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: crate::plan::cstr(b"mode=0755,size=4m,nr_inodes=4096")?,
        },
        "mount tmpfs as the sandbox root",
    );
    for d in SYSTEM_DIRS {
        b.mirror(&format!("/{d}"))?;
    }
    etc(&mut b, r.etc)?;
    dev(&mut b)?;
    b.mkdir("/proc")?;
    workspace(&mut b, r)?;
    for (list, ro) in [(r.extra_ro, true), (r.extra_rw, false)] {
        for (host, inside) in list {
            if !inside.is_absolute() {
                return Err(SandboxError::InvalidSpec(format!(
                    "bind target {} must be absolute",
                    inside.display()
                )));
            }
            b.bind(host, inside, ro)?;
        }
    }
    // A fresh /proc shows only the sandbox's own processes. The kernel
    // refuses it where the host /proc is partly masked (some containers).
    b.plan.push_gate(
        Op::Mount {
            fstype: c"proc",
            dst: b.at("/proc")?,
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: crate::plan::cstr(b"")?,
        },
        "mount proc on /proc",
    );
    b.plan.push(Op::Hostname(SANDBOX_HOSTNAME), "sethostname");
    if !r.network {
        b.plan.push(Op::LoopbackUp, "bring up loopback (lo)");
    }
    b.plan.push_gate(Op::PivotRoot(root_c), "pivot_root");
    b.plan
        .push(Op::RemountRootRo, "remount the sandbox root read-only");
    Ok(b.plan)
}
