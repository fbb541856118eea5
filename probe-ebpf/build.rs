// Linking the eBPF object needs the `bpf-linker` binary, which cargo cannot express as a
// dependency: rebuild when it changes (scripts/setup.sh installs the pinned version).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo::warning=bpf-linker not found on PATH: run scripts/setup.sh (it installs the pinned version)"
        ),
    }
}
