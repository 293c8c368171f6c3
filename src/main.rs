//! `vdar`: the command-line front end; all of it lives in [`vdar::cli`].

// Backup and restore allocate and free multi-MiB chunk buffers at a high rate; glibc hands
// such blocks back to the kernel and faults them in again (measured: a third of restore's
// time in page faults). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vdar::cli::vdar_main()
}
