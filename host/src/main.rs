//! The `openport` binary: all behaviour lives in the library.

fn main() -> std::process::ExitCode {
    openport::cli::main()
}
