//! `kumulus`: the command line. Everything it does lives in the library.

fn main() -> std::process::ExitCode {
    kumulus::cli::main()
}
