//! Process settings of the `evalloop` binary for training and scoring: mimalloc (its global
//! allocator) and candle's element-wise thread pool.
//!
//! ## mimalloc
//!
//! A training step frees and re-allocates the same few hundred activation and gradient buffers
//! (up to 12.6 MB each at batch 16 x 128). By default mimalloc gives freed memory back to the
//! kernel after 10 ms (`purge_delay`), so every step page-faults and zero-fills it again
//! (`clear_page_erms` was 15-23% of a profile). Keeping it mapped costs only the peak footprint,
//! which the process reaches on every step anyway.

// The symbol lives in the mimalloc library that the `mimalloc` crate links.
extern crate mimalloc;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Tells mimalloc never to return freed memory to the kernel (`MIMALLOC_PURGE_DELAY=-1`).
/// Call once at start in a binary whose global allocator is `mimalloc::MiMalloc`; an explicit
/// `MIMALLOC_PURGE_DELAY` in the environment wins.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mi_option_set only stores an integer option; any value is valid.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

/// Makes candle run its own element-wise ops on the calling thread: sets `CANDLE_NUM_THREADS=1`
/// unless the environment sets it. Training and scoring run the shards of a batch side by side
/// on rayon's pool, one per thread (data parallelism), and the project's fused ops use rayon.
/// candle 0.11 hands each of its remaining element-wise ops (embedding sums, the pooler's tanh,
/// the loss, gradient sums) to a second pool of `CANDLE_NUM_THREADS - 1` spinning threads that
/// one caller at a time may use: with two shards on two cores that is a third busy thread and a
/// lock between the shards (two shards on two threads: training 11.1 -> 20.5-21.1 examples/s
/// with it off; docs/research/model-perf-notes.md, entry 14).
///
/// Call first thing in `main`, before any thread is started (it writes the environment).
pub fn candle_ops_inline() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, before the process has other threads, so no
        // other thread reads or writes the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") }
    }
}
