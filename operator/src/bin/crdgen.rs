//! Writes the CustomResourceDefinitions generated from `operator/src/crd/` into `crds/` and
//! `charts/ryzanstein/crds/` (`make crds`), or with `--check` exits non-zero naming every file
//! that differs (`make crds-check`). `--root DIR` picks another repository root.

use std::path::PathBuf;
use std::process::ExitCode;

use ryzanstein_operator::crd::generate;

const USAGE: &str = "usage: crdgen [--check] [--root DIR]";

fn main() -> ExitCode {
    let mut check = false;
    let mut root = generate::repo_root();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--root" => match args.next() {
                Some(dir) => root = PathBuf::from(dir),
                None => {
                    eprintln!("crdgen: --root needs a directory\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("crdgen: unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }

    if check {
        match generate::check(&root) {
            Ok(drift) if drift.is_empty() => {
                println!("crdgen: CRDs under {} are up to date", root.display());
                ExitCode::SUCCESS
            }
            Ok(drift) => {
                for d in drift {
                    let what = if d.missing {
                        "is missing"
                    } else {
                        "differs from the Rust types"
                    };
                    eprintln!("crdgen: {} {what}", d.path.display());
                }
                eprintln!("crdgen: run `make crds` and commit the result");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("crdgen: {e}");
                ExitCode::FAILURE
            }
        }
    } else {
        match generate::write(&root) {
            Ok(paths) => {
                for p in paths {
                    println!("crdgen: wrote {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("crdgen: {e}");
                ExitCode::FAILURE
            }
        }
    }
}
