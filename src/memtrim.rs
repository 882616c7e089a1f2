//! Hands freed heap memory back to the OS after a burst (building the engine, a connection
//! flood). glibc keeps freed pages in its arenas otherwise; musl (the static gateway build)
//! returns them by itself, so this is a no-op there.

/// Returns freed heap pages to the OS (glibc `malloc_trim`). Takes a few milliseconds on a large
/// heap: call it off the request path.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
