//! Puts the git commit the binary is built from into `weathervane --version`, or
//! "unknown" where there is no git checkout (a source tarball, a Docker build context
//! without `.git`).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WEATHERVANE_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout); absent files are ignored.
    for path in ["../../.git/HEAD", "../../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
