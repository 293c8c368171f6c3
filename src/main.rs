//! `vdar`: the command-line front end. Everything happens in the library and `cli`; this file
//! maps the outcome to an exit code (0 ok, 1 damage found by verify, 2 error).

mod cli;

// Backup and restore allocate and free multi-MiB chunk buffers at a high rate; glibc hands
// such blocks back to the kernel and faults them in again (measured: a third of restore's
// time in page faults). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => cli::interrupted(&e).unwrap_or_else(|| {
            eprintln!("vdar: error: {e:#}");
            ExitCode::from(2)
        }),
    }
}
