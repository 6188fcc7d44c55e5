//! Placeholder while the benches are rewritten.
fn main() {}
