//! The controller's use of mimalloc (the global allocator of the binaries, see `main.rs`).
//!
//! A fleet's stores churn: every watch event replaces a whole object, so freed memory is
//! everywhere in the heap. mimalloc returns free pages to the OS a second after they are freed
//! (its `purge_delay`); the controller has it do so at once, which keeps its resident memory
//! close to what it holds (README, Performance, P4) for a few more madvise calls, a cost only
//! the gateway's message path would notice (it keeps the default).

use std::ffi::c_long;

// The options' functions are mimalloc's C library, linked with the crate (the binaries name it
// as their allocator; a library test would not link it otherwise).
extern crate mimalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v3, `include/mimalloc.h`).
const PURGE_DELAY: i32 = 15;

unsafe extern "C" {
    fn mi_option_set(option: i32, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: i32) -> c_long;
}

/// Freed pages go back to the OS at once (the default waits a second).
pub fn purge_at_once() {
    // SAFETY: a plain option store, read by mimalloc on its next purge; called before the
    // controller starts its threads (mimalloc's option setters are not synchronized).
    unsafe { mi_option_set(PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_option_is_the_purge_delay() {
        // Its documented default (1000 ms in v3), so the index is the purge delay's.
        assert_eq!(unsafe { super::mi_option_get(super::PURGE_DELAY) }, 1000);
        super::purge_at_once();
        assert_eq!(unsafe { super::mi_option_get(super::PURGE_DELAY) }, 0);
    }
}
