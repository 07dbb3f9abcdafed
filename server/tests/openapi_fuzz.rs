//! Schemathesis (from PyPI, installed by `make setup`) fuzzes the real server from its own
//! `/openapi.json`: valid and invalid bodies for every operation, with an API key and tenant
//! limits in force; no answer may be a 5xx. The server runs with the real chat and embedding
//! models and a small context, so the valid requests it generates finish quickly.
//! `RYZANSTEIN_SCHEMATHESIS` overrides the program.

mod api_harness;
mod common;

use std::path::PathBuf;
use std::process::Command;

fn schemathesis() -> PathBuf {
    let program = std::env::var_os("RYZANSTEIN_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/ryzanstein/venv/bin/schemathesis")
        });
    assert!(
        program.exists(),
        "{} is missing: run `make setup` (or set RYZANSTEIN_SCHEMATHESIS)",
        program.display()
    );
    program
}

#[test]
fn schemathesis_finds_no_server_error() {
    let program = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"default": {"requestsPerMinute": 100000, "tokensPerMinute": 10000000}}"#,
    )
    .unwrap();
    let server = api_harness::Server::start(&[
        "--ctx-size",
        "96",
        "--parallel",
        "4",
        "--api-key",
        "sk-fuzz",
        "--tenant-limits",
        limits.to_str().unwrap(),
        "--embedding-model",
        "bundled://all-minilm-l6-v2",
    ]);
    let report = dir.path().join("report");
    let out = Command::new(&program)
        .arg("run")
        .arg(server.url("/openapi.json"))
        .args(["--checks", "not_a_server_error"])
        .args(["--header", "Authorization: Bearer sk-fuzz"])
        .args(["--max-examples", "40", "--seed", "7", "--workers", "1"])
        .args(["--request-timeout", "60"])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its cache of found failures goes to the temporary directory, not into the tree.
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}\nserver stderr:\n{}",
        out.status,
        server.stderr()
    );
    // It tested every operation it selected (a schema it could not read would test none),
    // and every generated case passed.
    let line = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no `{key}` in\n{stdout}"))
            .trim()
            .to_owned()
    };
    let selected = line("Selected:");
    let tested = line("Tested:");
    assert_eq!(
        selected.split('/').next(),
        Some(tested.as_str()),
        "{stdout}"
    );
    assert!(tested.parse::<u32>().unwrap() >= 9, "{stdout}");
    let cases = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no test case count in\n{stdout}"));
    let n: Vec<&str> = cases.split_whitespace().collect();
    assert!(n.len() == 4 && n[0] == n[2] && n[3] == "passed", "{cases}");
}
