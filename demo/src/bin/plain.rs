//! A program without tokio, so tests can check that async-inspect says so.
fn main() {
    println!("no async here");
}
