//! The scenario summary: one row per scenario with pass/fail, duration and what was measured,
//! printed to stderr and written to `<target>/<profile>/e2e-summary.txt` (which `make e2e`
//! prints) when the test ends, also when it fails.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Row {
    name: String,
    passed: bool,
    took: Duration,
    details: Vec<String>,
}

/// Scenarios run one after another; the open one fails if the test panics.
pub struct Summary {
    title: String,
    started: Instant,
    rows: Vec<Row>,
    open: Option<(Row, Instant)>,
}

impl Summary {
    pub fn new(title: &str) -> Summary {
        Summary {
            title: title.to_owned(),
            started: Instant::now(),
            rows: Vec::new(),
            open: None,
        }
    }

    /// Ends the open scenario as passed and starts `name`.
    pub fn scenario(&mut self, name: &str) {
        self.close(true);
        eprintln!("=== scenario: {name}");
        self.open = Some((
            Row {
                name: name.to_owned(),
                passed: false,
                took: Duration::ZERO,
                details: Vec::new(),
            },
            Instant::now(),
        ));
    }

    /// Adds a measurement to the open scenario's row.
    pub fn detail(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("    {text}");
        if let Some((row, _)) = self.open.as_mut() {
            row.details.push(text);
        }
    }

    /// Ends the open scenario as passed.
    pub fn done(&mut self) {
        self.close(true);
    }

    fn close(&mut self, passed: bool) {
        if let Some((mut row, started)) = self.open.take() {
            row.passed = passed;
            row.took = started.elapsed();
            self.rows.push(row);
        }
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} — {:.0} s in all",
            self.title,
            self.started.elapsed().as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| {:width$} | result | seconds | measured |",
            "scenario"
        );
        let _ = writeln!(
            out,
            "|{}|--------|---------|----------|",
            "-".repeat(width + 2)
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {:width$} | {} | {:>7.1} | {} |",
                r.name,
                if r.passed { "pass  " } else { "FAIL  " },
                r.took.as_secs_f64(),
                r.details.join("; ")
            );
        }
        out
    }

    fn path() -> Option<PathBuf> {
        // target/<profile>/deps/<test>-<hash> → target/<profile>/e2e-summary.txt
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.join("e2e-summary.txt"))
    }
}

impl Drop for Summary {
    fn drop(&mut self) {
        self.close(!std::thread::panicking());
        let table = self.render();
        eprintln!("\n{table}");
        if let Some(path) = Summary::path() {
            let _ = std::fs::write(path, &table);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_record_pass_and_details() {
        let mut s = Summary::new("t");
        s.scenario("one");
        s.detail("3 requests");
        s.scenario("two");
        s.done();
        let text = s.render();
        assert!(text.contains("| one      | pass   |"), "{text}");
        assert!(text.contains("3 requests"), "{text}");
        assert!(text.contains("| two      | pass   |"), "{text}");
        std::mem::forget(s);
    }
}
