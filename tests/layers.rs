//! The module layering ARCHITECTURE.md draws ("Bird's-eye view"), checked against the code: every
//! `crate::<module>` a top-level module names (outside comments and `#[cfg(test)]` code) must be
//! in a lower layer, so there is no loop between modules; and OVN's NB table and column names
//! appear only in `src/nb/` (the typed rows) and `src/ovsdb/` (the schema-agnostic client).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each top-level module: a module may use only modules of lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("ovsdb", 0),
    ("ipam", 0),
    ("role", 0),
    ("config", 1),
    ("model", 1),
    ("telemetry", 2),
    ("store", 3),
    ("registry", 4),
    ("nb", 5),
    ("reconcile", 6),
    ("cluster", 6),
    ("api", 6),
    ("client", 6),
    ("daemon", 7),
    ("check", 7),
    ("cli", 7),
    ("cni", 7),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without comments and without what follows its first `#[cfg(test)]`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `src/<module>/…` or `src/<module>.rs` → `<module>` (None for `lib.rs` and the binaries).
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?.to_string();
    let module = first.trim_end_matches(".rs").to_string();
    (module != "lib" && module != "bin").then_some(module)
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = BTreeSet::new();
    for path in &files {
        let Some(module) = module_of(&src, path) else { continue };
        let Some(&layer) = layers.get(module.as_str()) else {
            panic!(
                "module {module} ({}) has no layer in tests/layers.rs and ARCHITECTURE.md",
                path.display()
            );
        };
        let code = code(path);
        for (index, _) in code.match_indices("crate::") {
            let used: String = code[index + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if used == module || used.is_empty() {
                continue;
            }
            match layers.get(used.as_str()) {
                Some(&used_layer) if used_layer < layer => {}
                Some(&used_layer) => {
                    wrong.insert(format!(
                        "{} (layer {layer}) uses {used} (layer {used_layer})",
                        path.strip_prefix(&src).unwrap().display()
                    ));
                }
                None => {
                    wrong.insert(format!("{} uses {used}, which has no layer", path.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "uses that point up or sideways:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn ovn_table_and_column_names_only_in_nb_and_ovsdb() {
    // Names only OVN's NB schema uses (quoted as they are written into rows or conditions).
    const OVN_NAMES: &[&str] = &[
        "\"Logical_Switch\"",
        "\"Logical_Switch_Port\"",
        "\"Logical_Router\"",
        "\"Logical_Router_Port\"",
        "\"Load_Balancer\"",
        "\"Load_Balancer_Health_Check\"",
        "\"virtual-parents\"",
        "\"virtual-ip\"",
        "\"ip_port_mappings\"",
        "\"port_security\"",
        "\"load_balancer\"",
        "\"router-port\"",
    ];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for path in &files {
        let module = module_of(&src, path).unwrap_or_default();
        if module == "nb" || module == "ovsdb" {
            continue;
        }
        let code = code(path);
        for name in OVN_NAMES {
            if code.contains(name) {
                found.push(format!("{}: {name}", path.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "OVN NB vocabulary outside src/nb/:\n{}",
        found.join("\n")
    );
}
