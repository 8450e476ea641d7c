//! `vbuild migrate`.
