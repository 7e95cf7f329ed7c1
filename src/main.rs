//! The `deva` command-line tool.

mod cli;

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    cli::main()
}

/// Lets glibc keep freed blocks of up to 256 MiB in the heap instead of returning them to the
/// kernel: the networks free and allocate feature maps of the same sizes on every frame, and
/// fresh pages cost a page fault each (most of the system time of a saliency run).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: plain integer settings of the allocator, made before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
