//! The workspace's tasks, run as `cargo xtask <task>` (an alias in .cargo/config.toml). Use them
//! through scripts/test.sh and scripts/bench.sh, which first install the toolchains.
//!
//! - `test [CARGO TEST ARG...]`: builds the demo binaries the integration tests probe, then runs
//!   `cargo test` over the workspace with the given arguments, and exits with its status.
//! - `bench [server|yield|memory|steady] [OPTION...]`: what probing costs (bench.rs). `server`
//!   (server_bench.rs): a request/response tokio server under loopback load, plain, probed (by
//!   default, `--exact`, `--floor`) and built with console-subscriber, in CPU per request.
//!   `yield`: the demo's poll-heavy workload with and without the probe. Neither named: both.
//!   `steady` (steady_bench.rs), only when named: the default probe left attached to one server
//!   under one unbroken load, its phases and its windows priced against plain phases.
//!
//! Loading eBPF programs needs root: when this does not run as root, the test binaries and the probe
//! run through `sudo` (and only they: the build stays the user's).

mod bench;
mod memory_bench;
mod server_bench;
mod steady_bench;

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
};

type Result<T, E = String> = std::result::Result<T, E>;

/// Builds the legacy-mangled fixture. Keep in step with scripts/setup.sh, which installs it.
const LEGACY_TOOLCHAIN: &str = "1.95.0";

/// The host triple the non-PIE fixture is built for (the fixtures are x86-64 only, like the probe).
const NOPIE_TARGET: &str = "x86_64-unknown-linux-gnu";

const USAGE: &str = "usage: cargo xtask test [CARGO TEST ARG...]
       cargo xtask bench server [--rounds N] [--seconds S] [--clients N] [--fanout N]
                                [--variants plain,probe,exact,floor,console]
       cargo xtask bench yield [--runs N] [--tasks N] [--yields N]
       cargo xtask bench [SERVER OR YIELD OPTION...]   (both workloads, server first)
       cargo xtask bench memory [--crowd N]            (the collector's memory, N parked tasks)
       cargo xtask bench steady [--pairs N] [--phase-seconds S]
                                         (the default probe left attached to one loaded server)";

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("bench") => bench::bench(args.collect()).map(|()| ExitCode::SUCCESS),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(format!("unknown task '{other}'\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    result.unwrap_or_else(|message| {
        eprintln!("xtask: {message}");
        ExitCode::FAILURE
    })
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// `cargo` of the toolchain that runs this task, in the workspace root. Fixtures and tests are found
/// at fixed paths under `target/`, so a `CARGO_TARGET_DIR` from the environment is not honoured.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root()).env_remove("CARGO_TARGET_DIR");
    command
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|error| format!("cannot run {}: {error}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", describe(command)))
    }
}

fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

fn is_root() -> bool {
    // The effective uid is the second field of the `Uid:` line.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// What to put before a command that needs root: nothing as root, else `sudo -E env PATH=…`.
fn root_prefix(what: &str) -> Result<Vec<OsString>> {
    if is_root() {
        return Ok(Vec::new());
    }
    let has_sudo = Command::new("sudo")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_sudo {
        return Err("loading eBPF programs and attaching uprobes needs root (or CAP_BPF, CAP_PERFMON, \
             CAP_SYS_PTRACE and, on some kernels, CAP_SYS_ADMIN), and sudo is not installed: run this as root"
            .into());
    }
    eprintln!("xtask: loading eBPF programs needs root: {what} through sudo");
    let mut path = OsString::from("PATH=");
    path.push(env::var_os("PATH").unwrap_or_default());
    Ok(vec!["sudo".into(), "-E".into(), "env".into(), path])
}

// ---------------------------------------------------------------------------------------------
// test

fn test(args: Vec<String>) -> Result<ExitCode> {
    build_fixtures()?;

    let mut command = cargo();
    if !is_root() {
        // Only the test binaries run as root: cargo runs each through this runner.
        command
            .arg("--config")
            .arg(runner_config(&root_prefix("the test binaries run")?));
    }
    command.arg("test");
    // probe-ebpf only builds for the BPF target (probe-user's build script builds it), so "the
    // workspace" leaves it out, unless the arguments choose packages themselves.
    let before_separator = args.iter().take_while(|arg| *arg != "--");
    let chooses_packages = before_separator.clone().any(|arg| {
        arg == "-p" || arg.starts_with("--package") || (arg.starts_with("-p") && arg.len() > 2)
    });
    let chooses_workspace = before_separator
        .clone()
        .any(|arg| arg == "--workspace" || arg == "--all");
    if !chooses_packages && !chooses_workspace {
        command.args(["--workspace", "--exclude", "probe-ebpf"]);
    }
    command.args(&args);
    eprintln!("xtask: {}", describe(&command));
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run cargo test: {error}"))?;
    // Pass the output through, and add up the per-binary results into one closing line, so a
    // log reader sees the whole run's count rather than the last (often empty) doc-test binary's.
    let mut totals = TestTotals::default();
    let stdout = child.stdout.take().expect("piped stdout");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.map_err(|error| format!("reading cargo test's output: {error}"))?;
        println!("{line}");
        totals.add(&line);
    }
    let status = child
        .wait()
        .map_err(|error| format!("cannot wait for cargo test: {error}"))?;
    println!(
        "\ntests: {} passed, {} failed",
        totals.passed, totals.failed
    );
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

/// Sums of the `test result: ok. N passed; M failed; ...` lines libtest prints per binary.
#[derive(Debug, Default, PartialEq)]
struct TestTotals {
    passed: u64,
    failed: u64,
}

impl TestTotals {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            match (
                words.next().and_then(|n| n.parse::<u64>().ok()),
                words.next(),
            ) {
                (Some(n), Some("passed")) => self.passed += n,
                (Some(n), Some("failed")) => self.failed += n,
                _ => {}
            }
        }
    }
}

/// A `--config` value that has cargo run the test binaries through `prefix`.
fn runner_config(prefix: &[OsString]) -> String {
    let words: Vec<String> = prefix
        .iter()
        .map(|word| toml_string(&word.to_string_lossy()))
        .collect();
    format!(
        "target.'cfg(target_os = \"linux\")'.runner = [{}]",
        words.join(", ")
    )
}

fn toml_string(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The demo binaries the integration tests probe, at fixed paths under the workspace root: one per
/// shape a user ships.
fn build_fixtures() -> Result<()> {
    let fixtures: [(&[&str], &str, &str); 3] = [
        (&[], "target/debug/inspect-demo", "debug: DWARF, v0 symbols"),
        (
            &["--profile", "release-debuginfo"],
            "target/release-debuginfo/inspect-demo",
            "optimised, DWARF, v0 symbols",
        ),
        (
            &["--release"],
            "target/release/inspect-demo",
            "optimised, no DWARF, v0 symbols",
        ),
    ];
    for (profile, path, what) in fixtures {
        run(cargo().args(["build", "-p", "inspect-demo"]).args(profile))?;
        fixture_built(path, what)?;
    }
    // A non-PIE executable (ET_EXEC): symbol addresses are absolute, not load-relative. The
    // explicit --target keeps RUSTFLAGS off the proc-macro crates built for the host.
    run(cargo()
        .env("RUSTFLAGS", "-C relocation-model=static")
        .args([
            "build",
            "-p",
            "inspect-demo",
            "--profile",
            "release-debuginfo",
        ])
        .args(["--target", NOPIE_TARGET, "--target-dir", "target/nopie"]))?;
    fixture_built(
        &format!("target/nopie/{NOPIE_TARGET}/release-debuginfo/inspect-demo"),
        "non-PIE, optimised, DWARF",
    )?;
    build_legacy_fixture()?;
    fixture_built(
        "target/legacy/release/inspect-demo",
        &format!("optimised, no DWARF, legacy symbols (rustc {LEGACY_TOOLCHAIN})"),
    )
}

fn fixture_built(path: &str, what: &str) -> Result<()> {
    if root().join(path).is_file() {
        eprintln!("xtask: fixture {path} ({what})");
        Ok(())
    } else {
        Err(format!("the build did not produce {path}"))
    }
}

/// `cargo` of the legacy toolchain. `rustup run` overrides rust-toolchain.toml; the variables that
/// would carry the workspace toolchain into it go.
fn legacy_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", LEGACY_TOOLCHAIN, "cargo"])
        .current_dir(root())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC");
    command
}

/// A plain release build of the demo by rustc 1.95, whose symbols are legacy-mangled (rustc >= 1.98
/// mangles v0 by default). Built in the workspace against its Cargo.lock (left unchanged:
/// `--locked`) when that cargo can; otherwise a standalone copy of the demo is built in
/// target/legacy-src. `XTASK_LEGACY_STANDALONE=1` forces the copy.
fn build_legacy_fixture() -> Result<()> {
    let target_dir = root().join("target/legacy");
    if env::var_os("XTASK_LEGACY_STANDALONE").is_none() {
        let built = run(legacy_cargo()
            .args([
                "build",
                "-p",
                "inspect-demo",
                "--release",
                "--locked",
                "--target-dir",
            ])
            .arg(&target_dir));
        match built {
            Ok(()) => return Ok(()),
            Err(message) => eprintln!(
                "xtask: {message}\nxtask: cargo {LEGACY_TOOLCHAIN} cannot build inspect-demo in the workspace: \
                 building a standalone copy in target/legacy-src"
            ),
        }
    }
    let source = root().join("target/legacy-src");
    let copied_src = source.join("src");
    if copied_src.exists() {
        fs::remove_dir_all(&copied_src)
            .map_err(|error| format!("removing {}: {error}", copied_src.display()))?;
    }
    copy_dir(&root().join("demo/src"), &copied_src)?;
    // Keep these dependencies in step with demo/Cargo.toml.
    let manifest = "# Written by `cargo xtask test`: demo/ built alone, by an older toolchain.\n\
        [package]\n\
        name = \"inspect-demo\"\n\
        version = \"0.1.0\"\n\
        edition = \"2024\"\n\
        publish = false\n\n\
        [dependencies]\n\
        tokio = { version = \"1.54\", features = [\"full\"] }\n\n\
        [workspace]\n";
    fs::write(source.join("Cargo.toml"), manifest)
        .map_err(|error| format!("writing target/legacy-src/Cargo.toml: {error}"))?;
    run(legacy_cargo()
        .current_dir(&source)
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let error =
        |error: std::io::Error| format!("copying {} to {}: {error}", from.display(), to.display());
    fs::create_dir_all(to).map_err(error)?;
    for entry in fs::read_dir(from).map_err(error)? {
        let entry = entry.map_err(error)?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(error)?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target).map_err(error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_results_add_up() {
        let mut totals = TestTotals::default();
        totals.add("test result: ok. 22 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        totals
            .add("test result: FAILED. 9 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out");
        totals.add("running 3 tests");
        assert_eq!(
            totals,
            TestTotals {
                passed: 31,
                failed: 2
            }
        );
    }

    #[test]
    fn runner() {
        let prefix = ["sudo", "-E", "env", "PATH=/bin"].map(OsString::from);
        assert_eq!(
            runner_config(&prefix),
            r#"target.'cfg(target_os = "linux")'.runner = ["sudo", "-E", "env", "PATH=/bin"]"#
        );
    }

    #[test]
    fn toml_strings() {
        assert_eq!(toml_string(r#"PATH=/a"b\c"#), r#""PATH=/a\"b\\c""#);
    }
}
