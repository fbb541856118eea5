//! `async-inspect test -- cargo test …`: every test binary cargo starts, under `test`.

use probe_user::{cli::TestArgs, target};

/// The variable through which cargo takes a runner for the host's binaries.
const CARGO_RUNNER_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER";

/// `async-inspect test -- cargo test …`: runs cargo with this program as its runner, so that
/// every test binary cargo starts is launched under `async-inspect test` with the same options,
/// probes in place before its `main`. Exits with cargo's status.
pub async fn test_through_cargo(args: &TestArgs) -> anyhow::Result<i32> {
    let mut runner = vec![
        std::env::current_exe()?.display().to_string(),
        "test".to_owned(),
        "--hang-timeout".to_owned(),
        format!("{}ms", args.hang_timeout.as_millis()),
    ];
    if args.fail_on_deadlock {
        runner.push("--fail-on-deadlock".to_owned());
    }
    if args.no_values {
        runner.push("--no-values".to_owned());
    }
    if let Some(dir) = &args.json {
        std::fs::create_dir_all(dir)
            .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", dir.display()))?;
        runner.push("--json-dir".to_owned());
        runner.push(std::path::absolute(dir)?.display().to_string());
    }
    runner.push("--".to_owned());
    if let Some(word) = runner
        .iter()
        .find(|word| word.contains(char::is_whitespace))
    {
        anyhow::bail!(
            "cargo splits its runner at spaces, and '{word}' has one: move it, or set the runner \
             yourself with cargo's --config target.<triple>.runner = [...]"
        );
    }
    let status = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env(CARGO_RUNNER_VAR, runner.join(" "))
        .status()
        .await
        .map_err(|source| target::TargetError::Spawn {
            program: args.command[0].to_string_lossy().into_owned(),
            source,
        })?;
    Ok(target::exit_code(status))
}
