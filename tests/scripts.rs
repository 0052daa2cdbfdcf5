//! Rules for the project's shell scripts (`scripts/`, `tests/*.sh`, `.ci/run`).
//!
//! Under `set -o pipefail` a pipeline fails when any part fails. `producer | grep -q pattern`
//! exits at the first match; the producer then dies of SIGPIPE if it writes more, and the
//! pipeline reports failure although the pattern was found: a check that fails at random, by how
//! the producer buffers its output (CI met it: `journalctl … | grep -qi "watchdog timeout"` in
//! `tests/systemd-unit.sh`). Such scripts read a producer's whole output (`grep -c … >/dev/null`).

use std::fs;
use std::path::{Path, PathBuf};

fn scripts(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["scripts", "tests", ".ci"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_script =
                path.is_file() && (path.extension().is_some_and(|e| e == "sh") || path.extension().is_none());
            if is_script {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// True when `line` pipes into `grep` with `-q` (alone or among other short flags).
fn pipes_into_grep_quiet(line: &str) -> bool {
    line.split('|').skip(1).any(|part| {
        let mut words = part.split_whitespace();
        words.next() == Some("grep")
            && words
                .take_while(|w| w.starts_with('-'))
                .any(|w| w == "--quiet" || w == "--silent" || (!w.starts_with("--") && w.contains('q')))
    })
}

#[test]
fn pipefail_scripts_do_not_pipe_into_an_early_exiting_grep() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    let mut offenders = Vec::new();
    for path in scripts(root) {
        let Ok(text) = fs::read_to_string(&path) else { continue };
        if !text.contains("pipefail") {
            continue;
        }
        checked += 1;
        for (n, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with('#') && pipes_into_grep_quiet(line) {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(checked >= 5, "found only {checked} pipefail scripts");
    assert!(
        offenders.is_empty(),
        "`| grep -q` under pipefail (read the whole output: `grep -c … >/dev/null`):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_rule_sees_the_forms_it_forbids() {
    assert!(pipes_into_grep_quiet(
        "journalctl -u x | grep -qi \"watchdog timeout\" ||"
    ));
    assert!(pipes_into_grep_quiet("a | grep -F -q x"));
    assert!(pipes_into_grep_quiet("a|grep -q x"));
    assert!(!pipes_into_grep_quiet("a | grep -c x >/dev/null"));
    assert!(!pipes_into_grep_quiet("grep -q x file"));
    assert!(pipes_into_grep_quiet("a | grep --quiet x"));
    assert!(!pipes_into_grep_quiet("a | grep --quiet-not-a-flag x"));
}
