//! `vdar-restore`: restore, verify and list only, for disaster-recovery media. The same code
//! and exit codes as the matching `vdar` commands (0 ok, 1 damage or data lost, 2 error).

// See src/main.rs: chunk-sized buffers are reused instead of faulted in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    vdar::cli::vdar_restore_main()
}
