//! Allocator settings of the tool, shared by the command line and the benches so that both
//! measure the same allocator behaviour.

/// Lets glibc keep freed blocks of up to 256 MiB in the heap instead of returning them to the
/// kernel: the networks and the optical flow free and allocate buffers of the same sizes on
/// every frame, and fresh pages cost a page fault each (most of the system time of a saliency
/// run). Call it first, before any other thread exists; elsewhere than Linux/glibc it does
/// nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: plain integer settings of the allocator, made before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Does nothing: the setting is glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
