//! The official `openai` Python client against the real server (server/tests/openai_client.py).
//! Needs the project venv (`make setup`); `RYZANSTEIN_PYTHON` overrides the interpreter.

mod api_harness;
mod common;

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    let python = std::env::var_os("RYZANSTEIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/ryzanstein/venv/bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run `make setup` (or set RYZANSTEIN_PYTHON to a python with `openai`)",
        python.display()
    );
    let probe = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; run `make setup`", python.display()));
    assert!(
        probe.status.success(),
        "{} cannot import openai: run `make setup`\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

#[test]
fn the_openai_python_client_works_against_the_server() {
    let python = python();
    let server = api_harness::Server::start(&["--served-name", "smollm2"]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([server.base.as_str(), "smollm2"])
        .output()
        .expect("run openai_client.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai_client.py failed ({}):\n{stdout}\n{stderr}\nserver stderr:\n{}",
        out.status,
        server.stderr()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
