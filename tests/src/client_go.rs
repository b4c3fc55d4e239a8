//! The client-go harness (`benches/client-go`, a Go program on the reference Go client):
//! building it and reading what it prints. Used by `tests/client_go.rs` and by the
//! `compare` bench.
//!
//! The harness is built with the `go` on the PATH into `<target>/client-go/`, once per
//! process. Go keeps its own caches (`GOMODCACHE` for downloaded modules, `GOCACHE` for
//! compiled packages, both under the user's home by default), so a rebuild after the first
//! takes about a second; a machine without Go skips everything that needs the harness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the harness's Go module lives.
pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/client-go")
}

/// `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Why the harness cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `go` on the PATH: callers skip, saying so.
    #[error("`go` is not on the PATH ({0})")]
    NoGo(String),
    /// `go build` failed (a real failure: Go is there but the module does not build).
    #[error("building the client-go harness failed: {0}")]
    Build(String),
}

/// The harness binary, built on first use: `Err(NoGo)` when Go is missing.
pub fn harness() -> Result<PathBuf, HarnessError> {
    static BUILT: OnceLock<Result<PathBuf, HarnessError>> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> Result<PathBuf, HarnessError> {
    let version = Command::new("go")
        .arg("version")
        .output()
        .map_err(|err| HarnessError::NoGo(err.to_string()))?;
    if !version.status.success() {
        return Err(HarnessError::NoGo(format!(
            "`go version` exited with {}",
            version.status
        )));
    }
    let out_dir = target_dir().join("client-go");
    let binary = out_dir.join("client-go-harness");
    // -mod=readonly: go.mod and go.sum are committed and must already be complete;
    // -buildvcs=false: the module sits inside a git work tree Go need not stamp.
    let output = Command::new("go")
        .args(["build", "-mod=readonly", "-buildvcs=false", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(source_dir())
        .output()
        .map_err(|err| HarnessError::Build(err.to_string()))?;
    if !output.status.success() {
        return Err(HarnessError::Build(format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(binary)
}

/// What one harness run printed, parsed.
#[derive(Clone, Debug, Default)]
pub struct HarnessRun {
    /// Names of the scenarios that passed.
    pub passed: Vec<String>,
    /// Scenarios that failed, with the error client-go gave.
    pub failed: Vec<(String, String)>,
    /// `KEY=value` facts the run printed (timestamps, keys).
    pub facts: Vec<(String, String)>,
    /// Other lines of standard output (bench rounds).
    pub other: Vec<String>,
    /// Whether the process exited with status 0.
    pub success: bool,
    /// Standard error, for messages on failure.
    pub stderr: String,
}

impl HarnessRun {
    /// The value of fact `key`, if printed.
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.facts
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// A summary for assertion messages: every failure and the tail of stderr.
    pub fn describe(&self) -> String {
        let failures: Vec<String> = self
            .failed
            .iter()
            .map(|(name, error)| format!("  FAIL {name}: {error}"))
            .collect();
        let tail: String = self
            .stderr
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "{} passed, {} failed\n{}\nstderr (tail):\n{tail}",
            self.passed.len(),
            self.failed.len(),
            failures.join("\n")
        )
    }
}

/// Parses the harness's standard output (see `benches/client-go/main.go`).
pub fn parse(stdout: &str) -> HarnessRun {
    let mut run = HarnessRun::default();
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("PASS ") {
            run.passed.push(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, error) = rest.split_once(' ').unwrap_or((rest, ""));
            run.failed.push((name.to_owned(), error.to_owned()));
        } else if let Some((key, value)) = line.split_once('=').filter(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        }) {
            run.facts.push((key.to_owned(), value.to_owned()));
        } else {
            run.other.push(line.to_owned());
        }
    }
    run
}

/// Runs the harness with `args` and parses its output; `Err` only when it cannot start.
pub fn run(binary: &Path, args: &[String]) -> std::io::Result<HarnessRun> {
    let output = Command::new(binary).args(args).output()?;
    let mut run = parse(&String::from_utf8_lossy(&output.stdout));
    run.success = output.status.success();
    run.stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_results_facts_and_other_lines() {
        let run = parse(
            "PREFIX=p/\nPASS raw_get_put\nFAIL txn_1pc commit: boom = bad\n\
             ROUND case=get ops=3\n1 passed, 1 failed\n",
        );
        assert_eq!(run.passed, ["raw_get_put"]);
        assert_eq!(
            run.failed,
            [("txn_1pc".to_owned(), "commit: boom = bad".to_owned())]
        );
        assert_eq!(run.fact("PREFIX"), Some("p/"));
        assert_eq!(run.other, ["ROUND case=get ops=3", "1 passed, 1 failed"]);
    }
}
