//! The `xckpt` command.
fn main() {
    println!("xckpt");
}
