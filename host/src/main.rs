//! The `openport` binary: all behaviour lives in the library.

/// mimalloc instead of glibc's malloc: allocation was a quarter of a governed read's CPU
/// (BENCHMARKS.md, "the allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    openport::cli::main()
}
