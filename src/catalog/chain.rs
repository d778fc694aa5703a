//! The chain: every model of the catalog in the order routing tries them, each switched on or
//! off. Built from the catalog, the config's `routing.chain` and the order the user stored.

use super::{Catalog, Model};
use crate::store::ChainRow;

/// One chain entry: a model (by reference) and whether it is switched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub model: String,
    pub enabled: bool,
    /// Retired (why): by the catalog, or by its provider's answer (410); never routed.
    pub retired: Option<String>,
}

/// The chain: stored order (the CLI's and dashboard's edits) first, then the config's
/// `routing.chain`, then every other model by rank (ties by provider order in the catalog). A
/// model is enabled when its provider and the catalog say so and the stored chain has not
/// switched it off, and neither the catalog nor its provider (`retired`: reference, why)
/// retired it.
pub fn chain(
    catalog: &Catalog,
    config_chain: &[String],
    stored: &[ChainRow],
    retired: &[(String, String)],
) -> Vec<Link> {
    let mut rest: Vec<&Model> = catalog.models.iter().collect();
    rest.sort_by_key(|m| (m.rank, catalog.provider_position(m)));
    let wanted = stored
        .iter()
        .map(|r| r.model.as_str())
        .chain(config_chain.iter().map(String::as_str))
        .filter_map(|r| catalog.model(r));
    let mut order: Vec<&Model> = Vec::with_capacity(catalog.models.len());
    let mut seen = std::collections::HashSet::new();
    for m in wanted.chain(rest) {
        if seen.insert(m.reference.as_str()) {
            order.push(m);
        }
    }
    let switched_off: Vec<&str> = stored
        .iter()
        .filter(|r| !r.enabled)
        .filter_map(|r| catalog.model(&r.model))
        .map(|m| m.reference.as_str())
        .collect();
    order
        .into_iter()
        .map(|m| {
            let p = catalog.provider_of(m);
            let retired = m.retired.clone().or_else(|| p.retired.clone()).or_else(|| {
                retired
                    .iter()
                    .find(|(r, _)| *r == m.reference)
                    .map(|(_, why)| why.clone())
            });
            Link {
                model: m.reference.clone(),
                enabled: m.enabled
                    && p.enabled
                    && retired.is_none()
                    && !switched_off.contains(&m.reference.as_str()),
                retired,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_chain_is_by_rank_and_respects_enabled() {
        let c = Catalog::builtin().unwrap();
        let ch = chain(&c, &[], &[], &[]);
        assert_eq!(ch.len(), c.models.len());
        let ranks: Vec<u32> = ch.iter().map(|l| c.model(&l.model).unwrap().rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
        let link = |r: &str| ch.iter().find(|l| l.model == r).unwrap().clone();
        assert!(!link("google/gemini-2.5-pro").enabled);
        assert!(
            !link("nvidia/deepseek-ai/deepseek-v3.1").enabled,
            "provider off"
        );
    }

    #[test]
    fn stored_then_config_then_rank() {
        let c = Catalog::builtin().unwrap();
        let stored = [ChainRow {
            model: "groq/openai/gpt-oss-20b".into(),
            enabled: true,
        }];
        let cfg = ["google/gemini-2.5-flash".to_string()];
        let ch = chain(&c, &cfg, &stored, &[]);
        assert_eq!(ch[0].model, "groq/openai/gpt-oss-20b");
        assert_eq!(ch[1].model, "google/gemini-2.5-flash");
        let off = [ChainRow {
            model: "groq/openai/gpt-oss-20b".into(),
            enabled: false,
        }];
        assert!(!chain(&c, &[], &off, &[])[0].enabled);
        let gone = [("google/gemini-2.5-flash".to_string(), "410".to_string())];
        let ch = chain(&c, &[], &[], &gone);
        let flash = ch
            .iter()
            .find(|l| l.model == "google/gemini-2.5-flash")
            .unwrap();
        assert!(!flash.enabled && flash.retired.as_deref() == Some("410"));
        let llama = ch
            .iter()
            .find(|l| l.model == "groq/llama-3.1-8b-instant")
            .unwrap();
        assert!(
            !llama.enabled && llama.retired.is_some(),
            "retired by the catalog"
        );
        let github = ch
            .iter()
            .find(|l| l.model == "github/openai/gpt-4.1")
            .unwrap();
        assert!(
            !github.enabled && github.retired.is_some(),
            "a retired provider"
        );
    }
}
