//! Planning, with no I/O: which models may serve a request, in chain order.

use crate::catalog::chain::Link;
use crate::catalog::{Catalog, Model, Provider};
use crate::chat::Facts;
use crate::error::ApiError;
use crate::providers::openai::max_tokens_ceiling;

/// What the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Auto,
    /// A canonical model, on any provider.
    Model(String),
    /// One provider's model, by reference.
    Pinned(String),
}

/// Resolve the requested model into a target and its models in chain order (enabled only).
pub fn resolve<'a>(
    catalog: &'a Catalog,
    chain: &[Link],
    requested: Option<&str>,
) -> Result<(Target, Vec<&'a Model>), ApiError> {
    let enabled = |m: &Model| chain.iter().any(|l| l.model == m.reference && l.enabled);
    let retired = |m: &Model| {
        chain
            .iter()
            .find(|l| l.model == m.reference)
            .and_then(|l| l.retired.clone())
    };
    let in_chain_order = |filter: &dyn Fn(&Model) -> bool| -> Vec<&'a Model> {
        chain
            .iter()
            .filter(|l| l.enabled)
            .filter_map(|l| catalog.model(&l.model))
            .filter(|m| filter(m))
            .collect()
    };
    let Some(name) = requested else {
        return Ok((Target::Auto, in_chain_order(&|_| true)));
    };
    if let Some((provider, _)) = name.split_once('/') {
        if catalog.provider(provider).is_some() {
            return match catalog.model(name) {
                Some(m) if enabled(m) => Ok((Target::Pinned(m.reference.clone()), vec![m])),
                Some(m) if retired(m).is_some() => Err(ApiError::ModelNotFound(format!(
                    "the model `{name}` was retired ({}); `freeway chain enable {}` if it is back",
                    retired(m).unwrap_or_default(),
                    m.reference
                ))),
                Some(m) => Err(ApiError::ModelNotFound(format!(
                    "the model `{name}` is disabled; enable it with `freeway chain enable {}`",
                    m.reference
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
    let models = in_chain_order(&|m| m.canonical == canonical);
    if models.is_empty() {
        let serving: Vec<&Model> = catalog
            .models
            .iter()
            .filter(|m| m.canonical == canonical)
            .collect();
        if !serving.is_empty() && serving.iter().all(|m| retired(m).is_some()) {
            return Err(ApiError::ModelNotFound(format!(
                "the model `{name}` was retired by every provider that served it ({})",
                retired(serving[0]).unwrap_or_default()
            )));
        }
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

/// Drop models that cannot take this request (context, tools, vision, several choices where
/// `many_choices` says the model's dialect cannot give them). Errors when none can.
pub fn fit<'a>(
    models: Vec<&'a Model>,
    facts: &Facts,
    many_choices: &dyn Fn(&Model) -> bool,
    // Whether the model still takes this request's tools and images: upstreams can take them
    // away at run time (SPEC 3.9).
    still_takes: &dyn Fn(&Model) -> bool,
) -> Result<Vec<&'a Model>, ApiError> {
    if models.is_empty() {
        return Ok(models);
    }
    let models: Vec<&Model> = match facts.choices {
        Some(n) => {
            let can: Vec<&Model> = models.into_iter().filter(|m| many_choices(m)).collect();
            if can.is_empty() {
                return Err(ApiError::InvalidRequest(format!(
                    "`n` = {n}: no candidate can answer with several choices (Gemini gives one); send n = 1, or pick an OpenAI-compatible provider's model"
                )));
            }
            can
        }
        None => models,
    };
    let need = facts.prompt_tokens;
    let biggest = models.iter().map(|m| m.context).max().unwrap_or(0);
    let fits_context: Vec<&Model> = models.into_iter().filter(|m| m.context >= need).collect();
    if fits_context.is_empty() {
        return Err(ApiError::ContextTooLong(format!(
            "the prompt is about {need} tokens, more than any candidate model's context window (largest: {biggest}); shorten it"
        )));
    }
    let capable: Vec<&Model> = fits_context
        .into_iter()
        .filter(|m| {
            (!facts.has_tools || m.tools)
                && (!facts.has_images || m.vision)
                && (!(facts.has_tools || facts.has_images) || still_takes(m))
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

/// The least answer a request is sent for where the vendor charges `max_tokens` up front (or
/// the client's own `max_tokens`, if smaller): a prompt that leaves less under one minute's
/// token cap goes elsewhere rather than come back cut short.
const MIN_ANSWER: u64 = 1024;

/// The tokens a request claims against `model`'s caps: the prompt and the answer reserve,
/// or, where the vendor charges it up front, the prompt (with the same allowance for the
/// estimate as [`max_tokens_ceiling`](crate::providers::openai::max_tokens_ceiling)) and the whole `max_tokens` as sent. When that would
/// leave too small an answer, the claim is more than the minute's cap can hold, so the ledger
/// skips the model without a call.
pub fn claim(facts: &Facts, provider: &Provider, model: &Model) -> u64 {
    match facts.max_tokens {
        Some(m) if provider.quirks.reserve_max_tokens => {
            let prompt = facts.prompt_tokens + facts.prompt_tokens / 4;
            let answer = m.min(max_tokens_ceiling(facts, provider, model));
            prompt + answer.max(m.min(MIN_ANSWER))
        }
        _ => facts.token_estimate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::chain::chain;
    use crate::config::Config;
    use crate::wire::openai::parse;
    use serde_json::{Value, json};

    fn catalog() -> Catalog {
        Catalog::builtin().unwrap()
    }

    fn refs(models: &[&Model]) -> Vec<String> {
        models.iter().map(|m| m.reference.clone()).collect()
    }

    #[test]
    fn resolution_rules() {
        let c = catalog();
        let ch = chain(&c, &[], &[], &[]);
        let (t, models) = resolve(&c, &ch, Some("llama-3.3-70b")).unwrap();
        assert_eq!(t, Target::Model("llama-3.3-70b".into()));
        assert_eq!(models.len(), 2, "Groq's is retired");
        let (_, by_upstream) = resolve(&c, &ch, Some("llama-3.3-70b-versatile")).unwrap();
        assert_eq!(
            refs(&models),
            refs(&by_upstream),
            "an upstream id means its canonical model"
        );
        let (t, models) = resolve(&c, &ch, Some("groq/openai/gpt-oss-20b")).unwrap();
        assert!(matches!(t, Target::Pinned(_)));
        assert_eq!(models[0].reference, "groq/openai/gpt-oss-20b");
        let retired = resolve(&c, &ch, Some("groq/llama-3.3-70b")).unwrap_err();
        assert_eq!(retired.status(), 404);
        assert!(retired.to_string().contains("retired"), "{retired}");
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
        let small = c.model("a/small").unwrap();
        let big = c.model("a/big").unwrap();
        let facts = Facts {
            prompt_tokens: 500,
            ..Facts::default()
        };
        assert_eq!(
            refs(&fit(vec![small, big], &facts, &|_| true, &|_| true).unwrap()),
            ["a/big"]
        );
        let huge = Facts {
            prompt_tokens: 10_000_000,
            ..Facts::default()
        };
        assert_eq!(
            fit(vec![small, big], &huge, &|_| true, &|_| true)
                .unwrap_err()
                .status(),
            413
        );
        let tools = Facts {
            has_tools: true,
            ..Facts::default()
        };
        assert_eq!(
            fit(vec![small], &tools, &|_| true, &|_| true)
                .unwrap_err()
                .status(),
            400
        );
        let many = Facts {
            choices: Some(2),
            ..Facts::default()
        };
        let only_big = |m: &Model| m.id == "big";
        assert_eq!(
            refs(&fit(vec![small, big], &many, &only_big, &|_| true).unwrap()),
            ["a/big"]
        );
        let err = fit(vec![small], &many, &only_big, &|_| true).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("several choices"));
    }

    #[test]
    fn vendors_that_charge_max_tokens_up_front_are_claimed_the_same() {
        let c = Catalog::builtin().unwrap();
        let claim = |model: &str, body: Value| {
            let m = c.model(model).unwrap();
            let req = parse(body.to_string().as_bytes()).unwrap();
            (super::claim(&req.facts, c.provider_of(m), m), req.facts)
        };
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6000});
        let (groq, facts) = claim("groq/openai/gpt-oss-120b", body.clone());
        let prompt = facts.prompt_tokens + facts.prompt_tokens / 4;
        assert_eq!(groq, prompt + 6000, "Groq counts all of max_tokens");
        let (mistral, facts) = claim("mistral/mistral-small-latest", body);
        assert_eq!(
            mistral,
            facts.token_estimate(),
            "others: the usual estimate"
        );
        assert!(mistral < groq);
        let agent = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64000});
        let (groq, _) = claim("groq/openai/gpt-oss-120b", agent);
        assert!(groq <= 8000, "{groq}: clamped to what one minute allows");
        // A prompt that leaves less than a useful answer under the minute's 8000 is claimed at
        // more than the cap holds: the ledger skips Groq instead of a call cut short.
        let long = "word ".repeat(4800);
        let big = json!({"messages": [{"role": "user", "content": long}], "max_tokens": 64000});
        let (groq, _) = claim("groq/openai/gpt-oss-120b", big);
        assert!(groq > 8000, "{groq}");
        let small = json!({"messages": [{"role": "user", "content": long}], "max_tokens": 200});
        let (groq, _) = claim("groq/openai/gpt-oss-120b", small);
        assert!(groq <= 8000, "{groq}: a small answer asked for still fits");
    }
}
