//! Project automation: `cargo xtask crash-matrix`, `cargo xtask bench`.

fn main() {
    let task = std::env::args().nth(1).unwrap_or_default();
    eprintln!("xtask: unknown task '{task}' (crash-matrix and bench are planned)");
    std::process::exit(2);
}
