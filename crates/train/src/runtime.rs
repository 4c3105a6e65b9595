//! Process-wide settings that must be made before any work starts: the thread count that rayon
//! and candle read, and the allocator's treatment of large blocks.

/// Sets the worker-thread count (rayon's global pool and candle's CPU kernels both read
/// `RAYON_NUM_THREADS`) and keeps freed large blocks in the heap: training allocates and frees
/// the same multi-megabyte activations every step, and glibc's default returns them to the OS
/// each time, so every step paid for zeroing fresh pages (9 % of a step in the profile).
/// Call once at start-up, before any thread is spawned.
pub fn init(threads: usize) {
    std::env::set_var("RAYON_NUM_THREADS", threads.max(1).to_string());
    #[cfg(target_os = "linux")]
    // SAFETY: mallopt only changes allocator thresholds; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
