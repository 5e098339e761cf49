//! `kumulus`: the command line. Everything it does lives in the library.

/// jemalloc, with its background thread, in place of glibc's malloc: it
/// hands memory freed after a load back to the system within seconds,
/// where glibc keeps it in its arenas (an argon2 login's 19 MiB stayed for
/// good), and it is as fast on the request path (BENCHMARKS.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kumulus::cli::main()
}
