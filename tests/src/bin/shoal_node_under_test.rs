//! The `shoal` CLI under another name, so that this package's integration tests can
//! start real node processes with `env!("CARGO_BIN_EXE_shoal-node-under-test")`.

fn main() -> std::process::ExitCode {
    shoal_node::main()
}
