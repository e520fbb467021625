//! The `shoal` binary: see `shoal --help`.

/// mimalloc instead of glibc's allocator (feature `mimalloc`, on by default): a node
/// allocates per request (frames, objects, futures) on several threads, where glibc's
/// arenas cost more CPU (BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shoal_node::main()
}
