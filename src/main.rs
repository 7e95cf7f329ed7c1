//! The `deva` command-line tool.

mod cli;

fn main() -> std::process::ExitCode {
    deva::heap::keep_freed_memory();
    cli::main()
}
