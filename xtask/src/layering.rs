//! The layering rule of `docs/design.md` ("The layering"), enforced from `cargo metadata`:
//! which crate of ours may depend on which. No arrow points up or sideways. The table there
//! and `allowed` below change together.
//!
//! The test helpers (`ingestor-testkit`) sit beside the stack: any crate may take them as a
//! dev-dependency (never a normal or build one), and they depend on a crate of ours only
//! through an optional feature, so that no crate's tests make a cycle by default.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The test helpers: a dev-dependency of any crate.
const TESTKIT: &str = "ingestor-testkit";

/// For each library crate of ours, the crates of ours it may depend on (any dependency kind:
/// normal, build or dev). `None` marks a crate free to depend on anything (tooling).
pub(crate) fn allowed(package: &str) -> Option<Option<&'static [&'static str]>> {
    const CODEC: &str = "ingestor-codec";
    const FS: &str = "ingestor-fs";
    const WAL: &str = "ingestor-wal";
    const MEMSTORE: &str = "ingestor-memstore";
    const SNAPSHOT: &str = "ingestor-snapshot";
    const FACADE: &str = "ingestor";
    const PROTOCOLS: &str = "ingestor-protocols";
    const SERVER: &str = "ingestor-server";
    const FORWARD: &str = "ingestor-forward";
    Some(match package {
        // Optional dependencies only (checked in `violations`): the receiver decodes with
        // the protocols, the crash-point hooking file system wraps `Fs`.
        TESTKIT => Some(&[FS, PROTOCOLS]),
        "ingestor-codec" | "ingestor-fs" => Some(&[]),
        "ingestor-wal" => Some(&[CODEC, FS]),
        "ingestor-memstore" => Some(&[CODEC]),
        "ingestor-snapshot" => Some(&[CODEC, FS, MEMSTORE]),
        "ingestor" => Some(&[CODEC, FS, WAL, MEMSTORE, SNAPSHOT]),
        "ingestor-protocols" => Some(&[CODEC]),
        // The forwarder's outbox is a log of its own: it reuses ingestor-wal.
        "ingestor-forward" => Some(&[FACADE, WAL, PROTOCOLS]),
        // The durable `metrics` recorder: the facade alone.
        "ingestor-recorder" => Some(&[FACADE]),
        "ingestor-server" => Some(&[FACADE, PROTOCOLS, FORWARD]),
        "ingestor-cli" => Some(&[FACADE, PROTOCOLS, FORWARD, SERVER]),
        "xtask" | "ingestor-benches" | "ingestor-fuzz" => None,
        _ => return None,
    })
}

/// Every breach of the rule in a `cargo metadata --format-version 1 --no-deps` document.
pub(crate) fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let ours: BTreeSet<String> =
        packages.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect();
    let mut out = Vec::new();
    for package in &packages {
        let name = package["name"].as_str().unwrap_or("?");
        let Some(rule) = allowed(name) else {
            out.push(format!(
                "{name}: a crate the layering rule does not know; add it to xtask/src/layering.rs \
                 with the crates it may depend on"
            ));
            continue;
        };
        let Some(rule) = rule else { continue };
        let mut seen = BTreeMap::new();
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or("?");
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if dep_name == TESTKIT && ours.contains(dep_name) {
                if kind != "dev" {
                    out.push(format!(
                        "{name} depends on {TESTKIT} ({kind} dependency): the test helpers may \
                         only be a dev-dependency"
                    ));
                }
                continue;
            }
            if ours.contains(dep_name) && !rule.contains(&dep_name) {
                seen.entry(dep_name.to_string()).or_insert(kind.to_string());
            } else if name == TESTKIT && ours.contains(dep_name) && dep["optional"] != true {
                out.push(format!(
                    "{TESTKIT} depends on {dep_name} unconditionally: the test helpers may \
                     depend on a crate of ours only through an optional feature, or a crate \
                     below it could not use them without a cycle"
                ));
            }
        }
        for (dep, kind) in seen {
            out.push(format!(
                "{name} depends on {dep} ({kind} dependency), which the layering of \
                 docs/design.md forbids; {name} may depend only on [{}]",
                rule.join(", ")
            ));
        }
    }
    out
}

/// Runs `cargo metadata` on the workspace and returns the breaches.
pub(crate) fn check_workspace() -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    Ok(violations(&metadata))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn package(name: &str, deps: &[(&str, Option<&str>)]) -> Value {
        let deps: Vec<Value> =
            deps.iter().map(|(d, kind)| json!({ "name": d, "kind": kind })).collect();
        json!({ "name": name, "dependencies": deps })
    }

    #[test]
    fn the_real_workspace_keeps_the_layering() {
        assert_eq!(check_workspace().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn an_upward_or_sideways_dependency_is_reported() {
        let metadata = json!({ "packages": [
            package("ingestor-codec", &[("ingestor-fs", None), ("crc32c", None)]),
            package("ingestor-fs", &[]),
            package("ingestor-memstore", &[("ingestor-codec", None), ("ingestor-wal", Some("dev"))]),
            package("ingestor-wal", &[("ingestor-codec", None), ("ingestor-fs", None)]),
            package("xtask", &[("ingestor-wal", None)]),
        ]});
        let found = violations(&metadata);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(
            found[0].starts_with("ingestor-codec depends on ingestor-fs (normal"),
            "{}",
            found[0]
        );
        assert!(
            found[1].starts_with("ingestor-memstore depends on ingestor-wal (dev"),
            "{}",
            found[1]
        );
    }

    #[test]
    fn the_testkit_is_a_dev_dependency_of_anyone_and_depends_on_ours_only_optionally() {
        let optional = |name: &str| json!({ "name": name, "kind": null, "optional": true });
        let metadata = json!({ "packages": [
            package("ingestor-codec", &[("ingestor-testkit", Some("dev"))]),
            package("ingestor-fs", &[("ingestor-testkit", None)]),
            package("ingestor-protocols", &[("ingestor-codec", None)]),
            { "name": "ingestor-testkit", "dependencies": [optional("ingestor-protocols")] },
        ]});
        let found = violations(&metadata);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].starts_with("ingestor-fs depends on ingestor-testkit (normal"));
        let metadata = json!({ "packages": [
            package("ingestor-protocols", &[]),
            package("ingestor-wal", &[]),
            package("ingestor-testkit", &[("ingestor-protocols", None), ("ingestor-wal", None)]),
        ]});
        let found = violations(&metadata);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].contains("unconditionally"), "{}", found[0]);
        assert!(found[1].starts_with("ingestor-testkit depends on ingestor-wal"), "{}", found[1]);
    }

    #[test]
    fn an_unknown_crate_of_ours_is_reported() {
        let metadata = json!({ "packages": [package("ingestor-extra", &[])] });
        assert_eq!(violations(&metadata).len(), 1);
    }
}
