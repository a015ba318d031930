//! The control plane yields the CPU to DNS.
//!
//! When a whole fleet reconnects at once, the hub's control plane (the
//! registry writer, the reaper, Export validation and state-file saves)
//! can keep every core busy for seconds. DNS answers must not wait behind
//! it: pods resolve through this server. The UDP workers and the admin
//! thread keep the default priority; control-plane threads run at a
//! higher nice value (`--control-plane-nice`), so when both want a core
//! the scheduler gives DNS the larger share (at nice 10, about 90%), and
//! when DNS is idle the control plane has the whole machine as before.
//!
//! Linux applies `setpriority(PRIO_PROCESS, tid)` to one thread. Raising
//! a nice value needs no privilege; lowering it again does, so a thread
//! is lowered once and stays so: the runtime's blocking pool threads that
//! ran validation or a save keep the lower priority for their lifetime,
//! which suits them (the hub's blocking pool runs only control-plane
//! work). The value is process-wide, like the nice value itself: `serve`
//! sets it once before starting any thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The most `--control-plane-nice` may be (the kernel's lowest priority).
pub const MAX_NICE: u8 = 19;

/// The default: DNS takes about nine tenths of a contended core.
pub const DEFAULT_NICE: u8 = 10;

static NICE: AtomicU8 = AtomicU8::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Sets the nice value control-plane threads take (0 leaves them at the
/// process's own). Call before the threads start.
pub fn set_control_plane_nice(nice: u8) {
    NICE.store(nice.min(MAX_NICE), Ordering::Relaxed);
}

/// The nice value control-plane threads take.
pub fn control_plane_nice() -> u8 {
    NICE.load(Ordering::Relaxed)
}

/// Marks the calling thread as control plane: lowers its priority to the
/// configured nice value. Cheap after the first call on a thread. A
/// refusal (a seccomp profile, an unusual kernel) is logged once and
/// changes nothing else.
pub fn control_plane_thread() {
    let nice = control_plane_nice();
    if nice == 0 || LOWERED.with(Cell::get) {
        return;
    }
    LOWERED.with(|lowered| lowered.set(true));
    if let Err(e) = lower_this_thread(nice)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            error = %e,
            nice,
            "cannot lower the control plane's priority (--control-plane-nice): DNS answers share the CPU equally with it"
        );
    }
}

#[cfg(target_os = "linux")]
fn lower_this_thread(nice: u8) -> std::io::Result<()> {
    let tid = rustix::thread::gettid();
    // On Linux the nice value is a thread's, not the process's: this
    // leaves the UDP workers as they are.
    let current = rustix::process::getpriority_process(Some(tid))?;
    let wanted = i32::from(nice);
    if current >= wanted {
        return Ok(());
    }
    rustix::process::setpriority_process(Some(tid), wanted)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn lower_this_thread(_nice: u8) -> std::io::Result<()> {
    // Elsewhere the nice value is the whole process's: lowering it would
    // lower DNS too.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[test]
    fn a_control_plane_thread_is_lowered_and_others_are_not() {
        let before = nice_of_this_thread();
        let wanted = (before.max(0) + 2).min(i32::from(MAX_NICE));
        set_control_plane_nice(u8::try_from(wanted).unwrap());
        let lowered = std::thread::spawn(|| {
            control_plane_thread();
            // A second call is a no-op, not an error.
            control_plane_thread();
            nice_of_this_thread()
        })
        .join()
        .unwrap();
        let untouched = std::thread::spawn(nice_of_this_thread).join().unwrap();
        assert_eq!(lowered, wanted);
        assert_eq!(untouched, before);
        assert_eq!(nice_of_this_thread(), before);
    }
}
