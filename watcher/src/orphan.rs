//! Plugins die with the watcher, however it dies: each child asks the kernel
//! (`PR_SET_PDEATHSIG`) for SIGTERM when the watcher goes away, so a watcher that
//! is SIGKILLed, OOM-killed or crashes leaves no plugin holding its port. (A
//! Ctrl-C or SIGTERM to the watcher stops the plugins itself, with a drain.)
//!
//! The signal fires when the *thread* that forked the child ends: the watcher
//! spawns plugins from its tokio worker threads, which live as long as the
//! runtime, i.e. as long as the watcher.
#![allow(unsafe_code)]

use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;
use nix::unistd::{Pid, getppid};

/// Makes `cmd`'s child receive SIGTERM when this process dies.
pub(crate) fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = Pid::this();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe syscalls (prctl, getppid, kill via raise); it touches
    // no lock and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            // The watcher may have died between fork and prctl: then nobody will
            // signal us, so do not start at all.
            if getppid() != parent {
                return Err(std::io::Error::other(
                    "the watcher exited before the plugin started",
                ));
            }
            Ok(())
        });
    }
}
