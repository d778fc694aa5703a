//! Planning, with no I/O: the chain order, and which models may serve a request.

use crate::catalog::Catalog;
use crate::error::ApiError;
use crate::store::ChainRow;
use crate::wire::openai::Facts;

/// One chain entry: a model (index into the catalog) and whether it is switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub model: usize,
    pub enabled: bool,
}

/// The chain: stored order (the CLI's edits) first, then the config's `routing.chain`, then
/// every other model by rank (ties by provider order in the catalog). A model is enabled when
/// its provider and the catalog say so and the stored chain has not switched it off.
pub fn chain(catalog: &Catalog, config_chain: &[String], stored: &[ChainRow]) -> Vec<Link> {
    let mut order: Vec<usize> = Vec::with_capacity(catalog.models.len());
    let mut seen = vec![false; catalog.models.len()];
    let mut push = |i: usize, order: &mut Vec<usize>| {
        if !seen[i] {
            seen[i] = true;
            order.push(i);
        }
    };
    for row in stored {
        if let Some(i) = catalog.find_reference(&row.model) {
            push(i, &mut order);
        }
    }
    for reference in config_chain {
        if let Some(i) = catalog.find_reference(reference) {
            push(i, &mut order);
        }
    }
    let mut rest: Vec<usize> = (0..catalog.models.len()).collect();
    rest.sort_by_key(|&i| (catalog.models[i].rank, catalog.models[i].provider));
    for i in rest {
        push(i, &mut order);
    }
    order
        .into_iter()
        .map(|i| {
            let m = &catalog.models[i];
            let switched_off = stored
                .iter()
                .any(|r| !r.enabled && catalog.find_reference(&r.model) == Some(i));
            Link {
                model: i,
                enabled: m.enabled && catalog.provider_of(m).enabled && !switched_off,
            }
        })
        .collect()
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Auto,
    /// A canonical model, on any provider.
    Model(String),
    /// One provider's model.
    Pinned {
        provider: usize,
        model: usize,
    },
}

/// Resolve the requested model into a target and its models in chain order (enabled only).
pub fn resolve(
    catalog: &Catalog,
    chain: &[Link],
    requested: Option<&str>,
) -> Result<(Target, Vec<usize>), ApiError> {
    let enabled = |i: usize| chain.iter().any(|l| l.model == i && l.enabled);
    let in_chain_order = |filter: &dyn Fn(usize) -> bool| -> Vec<usize> {
        chain
            .iter()
            .filter(|l| l.enabled && filter(l.model))
            .map(|l| l.model)
            .collect()
    };
    let Some(name) = requested else {
        return Ok((Target::Auto, in_chain_order(&|_| true)));
    };
    if let Some((provider, rest)) = name.split_once('/') {
        if let Some(p) = catalog.provider_index(provider) {
            let found = catalog
                .models
                .iter()
                .position(|m| m.provider == p && m.id == rest)
                .or_else(|| {
                    catalog
                        .models
                        .iter()
                        .position(|m| m.provider == p && m.canonical == rest)
                });
            return match found {
                Some(i) if enabled(i) => Ok((
                    Target::Pinned {
                        provider: p,
                        model: i,
                    },
                    vec![i],
                )),
                Some(_) => Err(ApiError::ModelNotFound(format!(
                    "the model `{name}` is disabled; enable it with `freeway chain enable {}`",
                    catalog.reference(found.unwrap_or_default())
                ))),
                None => Err(not_found(name)),
            };
        }
    }
    // A canonical id, or any provider's upstream id for one.
    let canonical = catalog
        .models
        .iter()
        .find(|m| m.canonical == name)
        .or_else(|| catalog.models.iter().find(|m| m.id == name))
        .or_else(|| {
            let lower = name.to_ascii_lowercase();
            catalog.models.iter().find(|m| m.canonical == lower)
        })
        .map(|m| m.canonical.clone())
        .ok_or_else(|| not_found(name))?;
    let models = in_chain_order(&|i| catalog.models[i].canonical == canonical);
    if models.is_empty() {
        return Err(ApiError::ModelNotFound(format!(
            "the model `{name}` is disabled on every provider that serves it"
        )));
    }
    Ok((Target::Model(canonical), models))
}

fn not_found(name: &str) -> ApiError {
    ApiError::ModelNotFound(format!(
        "the model `{name}` does not exist; GET /v1/models lists what is available (or use \"auto\")"
    ))
}

/// Drop models that cannot take this request (context, tools, vision). Errors when none can.
pub fn fit(catalog: &Catalog, models: Vec<usize>, facts: &Facts) -> Result<Vec<usize>, ApiError> {
    if models.is_empty() {
        return Ok(models);
    }
    let need = facts.prompt_tokens;
    let fits_context: Vec<usize> = models
        .iter()
        .copied()
        .filter(|&i| catalog.models[i].context >= need)
        .collect();
    if fits_context.is_empty() {
        let biggest = models
            .iter()
            .map(|&i| catalog.models[i].context)
            .max()
            .unwrap_or(0);
        return Err(ApiError::ContextTooLong(format!(
            "the prompt is about {need} tokens, more than any candidate model's context window (largest: {biggest}); shorten it"
        )));
    }
    let capable: Vec<usize> = fits_context
        .into_iter()
        .filter(|&i| {
            let m = &catalog.models[i];
            (!facts.has_tools || m.tools) && (!facts.has_images || m.vision)
        })
        .collect();
    if capable.is_empty() {
        let need = match (facts.has_tools, facts.has_images) {
            (true, true) => "tools and images",
            (true, false) => "tools",
            _ => "images",
        };
        return Err(ApiError::InvalidRequest(format!(
            "no candidate model supports {need}; pick a model that does (GET /v1/models shows capabilities)"
        )));
    }
    Ok(capable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    #[test]
    fn default_chain_is_by_rank_and_respects_enabled() {
        let c = catalog();
        let ch = chain(&c, &[], &[]);
        assert_eq!(ch.len(), c.models.len());
        let ranks: Vec<u32> = ch.iter().map(|l| c.models[l.model].rank).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]));
        let pro = c.find_reference("google/gemini-2.5-pro").unwrap();
        assert!(!ch.iter().find(|l| l.model == pro).unwrap().enabled);
        let nv = c
            .find_reference("nvidia/deepseek-ai/deepseek-v3.1")
            .unwrap();
        assert!(
            !ch.iter().find(|l| l.model == nv).unwrap().enabled,
            "provider off"
        );
    }

    #[test]
    fn stored_then_config_then_rank() {
        let c = catalog();
        let stored = [ChainRow {
            model: "groq/llama-3.1-8b-instant".into(),
            enabled: true,
        }];
        let cfg = ["google/gemini-2.5-flash".to_string()];
        let ch = chain(&c, &cfg, &stored);
        assert_eq!(c.reference(ch[0].model), "groq/llama-3.1-8b-instant");
        assert_eq!(c.reference(ch[1].model), "google/gemini-2.5-flash");
        let off = [ChainRow {
            model: "groq/llama-3.1-8b-instant".into(),
            enabled: false,
        }];
        assert!(!chain(&c, &[], &off)[0].enabled);
    }

    #[test]
    fn resolution_rules() {
        let c = catalog();
        let ch = chain(&c, &[], &[]);
        let (t, models) = resolve(&c, &ch, Some("llama-3.3-70b")).unwrap();
        assert_eq!(t, Target::Model("llama-3.3-70b".into()));
        assert_eq!(models.len(), 3);
        let (_, by_upstream) = resolve(&c, &ch, Some("llama-3.3-70b-versatile")).unwrap();
        assert_eq!(
            models, by_upstream,
            "an upstream id means its canonical model"
        );
        let (t, models) = resolve(&c, &ch, Some("groq/llama-3.3-70b")).unwrap();
        assert!(matches!(t, Target::Pinned { .. }));
        assert_eq!(c.reference(models[0]), "groq/llama-3.3-70b-versatile");
        let (_, models) = resolve(&c, &ch, Some("openai/gpt-oss-120b")).unwrap();
        assert_eq!(
            models.len(),
            4,
            "openai/ is not a provider id: the upstream id of gpt-oss-120b"
        );
        assert_eq!(resolve(&c, &ch, Some("gpt-9")).unwrap_err().status(), 404);
        assert_eq!(
            resolve(&c, &ch, Some("google/gemini-2.5-pro"))
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            resolve(&c, &ch, Some("groq/nope")).unwrap_err().status(),
            404
        );
        let (t, models) = resolve(&c, &ch, None).unwrap();
        assert_eq!(t, Target::Auto);
        assert!(models.len() > 20);
    }

    #[test]
    fn fitting_skips_what_cannot_serve() {
        let config = Config::from_toml(
            "[custom.a]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [{ id = \"small\", context = 100 }, { id = \"big\", context = 100000, tools = true }]",
            &|_| None,
        )
        .unwrap();
        let c = Catalog::from_config(&config).unwrap();
        let small = c.find_reference("a/small").unwrap();
        let big = c.find_reference("a/big").unwrap();
        let facts = Facts {
            prompt_tokens: 500,
            ..Facts::default()
        };
        assert_eq!(fit(&c, vec![small, big], &facts).unwrap(), vec![big]);
        let huge = Facts {
            prompt_tokens: 10_000_000,
            ..Facts::default()
        };
        assert_eq!(fit(&c, vec![small, big], &huge).unwrap_err().status(), 413);
        let tools = Facts {
            has_tools: true,
            ..Facts::default()
        };
        assert_eq!(fit(&c, vec![small], &tools).unwrap_err().status(), 400);
    }
}
