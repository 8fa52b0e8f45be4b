//! The systemd units in `packaging/systemd/`: each starts a real subcommand of the binary,
//! restarts on failure as a dedicated user with its own environment file, every variable
//! its example environment file sets is one the role reads, and `systemd-analyze verify`
//! (when installed) finds nothing to say about them.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROLES: [&str; 4] = ["streamer", "ingester", "processor", "api"];

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd")
}

/// Whether `help` (clap's) names the variable `name`: `[env: NAME]`, or `[env: NAME=...]`
/// when it is set.
fn reads(help: &str, name: &str) -> bool {
    help.contains(&format!("[env: {name}]")) || help.contains(&format!("[env: {name}="))
}

fn help(role: &str) -> String {
    let output = Command::new(weathervane_harness::weathervane_binary().unwrap())
        .args([role, "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "weathervane {role} --help failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn each_unit_runs_a_real_role_with_its_environment_and_restarts_on_failure() {
    for role in ROLES {
        let path = packaging().join(format!("weathervane-{role}.service"));
        let unit = std::fs::read_to_string(&path).unwrap();
        let value = |key: &str| -> Vec<&str> {
            unit.lines()
                .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .collect()
        };
        let exec = value("ExecStart");
        assert_eq!(exec.len(), 1, "{path:?}");
        let words: Vec<&str> = exec[0].split_whitespace().collect();
        assert_eq!(words, ["/usr/local/bin/weathervane", role], "{path:?}");
        assert_eq!(value("Restart"), ["on-failure"]);
        assert_eq!(value("User"), ["weathervane"]);
        assert_eq!(
            value("EnvironmentFile"),
            [format!("/etc/weathervane/{role}.env")]
        );
        assert_eq!(value("NoNewPrivileges"), ["yes"]);
        assert_eq!(value("ProtectSystem"), ["strict"]);

        let help = help(role);
        let example =
            std::fs::read_to_string(packaging().join(format!("{role}.env.example"))).unwrap();
        for line in example.lines() {
            let line = line.trim_start_matches('#');
            let Some((name, _)) = line.split_once('=') else {
                continue;
            };
            if name.contains(' ') {
                continue; // a comment
            }
            assert!(
                reads(&help, name),
                "{role}.env.example sets {name}, which `weathervane {role}` does not read"
            );
        }
        // The credentials' variables too.
        for name in unit
            .lines()
            .filter_map(|l| l.trim_start_matches('#').strip_prefix("Environment="))
            .filter_map(|v| v.split_once('=').map(|(name, _)| name))
        {
            assert!(reads(&help, name), "{role}: {name}");
        }
    }
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: only the parsing test runs");
        return;
    };
    assert!(probe.status.success());
    // verify wants ExecStart's program to exist: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let binary = weathervane_harness::weathervane_binary().unwrap();
    let mut units = Vec::new();
    for role in ROLES {
        let name = format!("weathervane-{role}.service");
        let text = std::fs::read_to_string(packaging().join(&name))
            .unwrap()
            .replace("/usr/local/bin/weathervane", binary.to_str().unwrap());
        std::fs::write(dir.path().join(&name), text).unwrap();
        units.push(dir.path().join(&name));
    }
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("weathervane-"))
        .collect();
    assert!(
        output.status.success() && about_ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}
