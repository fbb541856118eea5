// Builds the eBPF programs (probe-ebpf) with the pinned nightly and bpf-linker, so that the
// object is embedded in the `async-inspect` binary. scripts/setup.sh installs both.
fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../probe-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize()?;
    let package = aya_build::Package {
        name: "probe-ebpf",
        root_dir: ebpf_dir.to_str().expect("UTF-8 path"),
        ..Default::default()
    };
    println!("cargo:rerun-if-changed=../probe-common/src");
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN))
}

/// Keep in step with scripts/setup.sh.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";
