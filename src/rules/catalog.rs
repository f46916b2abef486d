//! Ownership from a Backstage service catalog: `catalog-info.yaml` files with
//! `kind: Component` entities. The squad named by `spec.owner` owns the
//! component's alerts (its `metadata.name` is the service); an annotation marks
//! core services. Rule files override: a service they assign keeps its squad.
//!
//! Reading the directory happens in `rules::load_dir` (the edge); this module
//! parses text and applies components to a compiled rule set.

use super::{RuleError, RuleSet, SquadId};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The annotation that marks a component as a core service (value `"true"`).
pub const CORE_ANNOTATION: &str = "squadron.io/core-service";

/// `ownership.catalog` in a rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Directory of Backstage catalog files (`*.yaml`, searched recursively),
    /// relative to the rules directory.
    pub path: String,
    /// Annotation marking core services; default `squadron.io/core-service`.
    #[serde(default)]
    pub core_annotation: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Entity {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct Spec {
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    lifecycle: Option<String>,
}

/// A component as squadron uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub name: String,
    /// `spec.owner` reduced to a name: `group:default/payments` -> `payments`.
    pub owner: String,
    pub system: Option<String>,
    pub lifecycle: Option<String>,
    pub core: bool,
    pub file: PathBuf,
}

/// What applying a catalog did, for `squadron check` and the logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatalogReport {
    pub components: usize,
    /// Services whose owner came from the catalog.
    pub assigned: usize,
    /// Components whose service a rule file already assigns (the rule file wins).
    pub overridden: Vec<String>,
    /// Components whose owner is not a squad.
    pub unknown_owners: Vec<(String, String)>,
}

/// Parses one catalog file (several YAML documents); non-Component entities are skipped.
pub fn parse(path: &Path, text: &str, core_annotation: &str) -> Result<Vec<Component>, RuleError> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let entity = match Entity::deserialize(doc) {
            Ok(e) => e,
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                return Err(RuleError {
                    file: path.into(),
                    line,
                    column,
                    rule: Some("catalog".into()),
                    message: super::strip_location(&e.to_string()),
                });
            }
        };
        if entity.kind != "Component" || entity.metadata.name.is_empty() {
            continue;
        }
        let Some(owner) = entity.spec.owner.filter(|o| !o.is_empty()) else {
            continue;
        };
        // Backstage entity references: [kind:][namespace/]name.
        let owner = owner.rsplit([':', '/']).next().unwrap_or(&owner).to_owned();
        out.push(Component {
            core: entity
                .metadata
                .annotations
                .get(core_annotation)
                .is_some_and(|v| v == "true"),
            name: entity.metadata.name,
            owner,
            system: entity.spec.system,
            lifecycle: entity.spec.lifecycle,
            file: path.into(),
        });
    }
    Ok(out)
}

impl RuleSet {
    /// Gives each catalog component's service to the squad owning it, unless a
    /// rule file already assigns that service.
    pub fn apply_catalog(&mut self, components: &[Component]) -> CatalogReport {
        let mut report = CatalogReport {
            components: components.len(),
            ..CatalogReport::default()
        };
        for c in components {
            let Some(squad) = self.squad_by_name(&c.owner) else {
                report
                    .unknown_owners
                    .push((c.name.clone(), c.owner.clone()));
                continue;
            };
            if self.service_owner.contains_key(c.name.as_str()) {
                report.overridden.push(c.name.clone());
                continue;
            }
            self.service_owner
                .insert(c.name.as_str().into(), squad as SquadId);
            let sq = &mut self.squads[squad as usize];
            sq.services.push(c.name.clone());
            if c.core {
                sq.core_services.insert(c.name.as_str().into());
            }
            report.assigned += 1;
        }
        report
    }
}

/// Every `*.yaml`/`*.yml` file under `dir`, in name order.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_components_and_owner_references() {
        let text = "apiVersion: backstage.io/v1alpha1\nkind: Component\nmetadata:\n  name: ledger\n  annotations: {squadron.io/core-service: \"true\"}\nspec: {type: service, lifecycle: production, owner: group:default/payments, system: money}\n---\nkind: System\nmetadata: {name: money}\nspec: {owner: payments}\n---\nkind: Component\nmetadata: {name: ranker}\nspec: {owner: search}\n";
        let c = parse(Path::new("c.yaml"), text, CORE_ANNOTATION).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (
                c[0].name.as_str(),
                c[0].owner.as_str(),
                c[0].core,
                c[0].system.as_deref()
            ),
            ("ledger", "payments", true, Some("money"))
        );
        assert_eq!((c[1].owner.as_str(), c[1].core), ("search", false));
        let err = parse(
            Path::new("bad.yaml"),
            "kind: Component\nmetadata: [",
            CORE_ANNOTATION,
        )
        .unwrap_err();
        assert_eq!(err.file, PathBuf::from("bad.yaml"));
    }
}
