//! The `weathervane` binary: parses the command line and hands over to a role's `run`.
mod gen;

fn main() {}
