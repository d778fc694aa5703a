//! Embedding calls upstream (SPEC 2.5): the URL and body of one call in each embedding API
//! (OpenAI's `/embeddings`, Gemini's `batchEmbedContents`, Cohere's `/v2/embed`) and the
//! vectors of its answer, in the order of the inputs. Pure: no I/O.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::Failure;
use crate::catalog::{Embedding, Model};
use crate::config::EmbedApi;

/// One input: text, or token ids (for upstreams that take them).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    Tokens(Vec<u32>),
}

impl Input {
    /// Tokens the ledger reserves for it before the upstream says.
    pub fn estimate(&self) -> u64 {
        match self {
            Input::Text(t) => (t.len() as u64).div_ceil(4).max(1),
            Input::Tokens(t) => t.len().max(1) as u64,
        }
    }
}

/// One upstream call: some inputs of a request.
pub struct Batch<'a> {
    pub inputs: &'a [Input],
    /// The vector size asked for, when not the model's own.
    pub dims: Option<u32>,
    /// The inputs are search queries (else documents).
    pub query: bool,
}

/// One vector as the upstream wrote it: a JSON array of numbers, passed on as text (reading
/// and printing a batch of long vectors as numbers costs ten times the rest of the request).
pub type Vector = Box<RawValue>;

/// A vector's numbers, for who needs them (base64 output).
pub fn numbers(v: &Vector) -> Result<Vec<f32>, String> {
    serde_json::from_str(v.get()).map_err(|e| format!("a vector is not a list of numbers ({e})"))
}

/// The vectors of one call, in input order, and the tokens the upstream counted.
pub struct Vectors {
    pub vectors: Vec<Vector>,
    /// The upstream's whole answer, to pass on as it came (see [`passable`]); `vectors` is
    /// then empty.
    pub raw: Option<Bytes>,
    pub tokens: Option<u64>,
}

/// The URL of one call to `model` at `base` (a provider's base URL, account already filled).
pub fn url(model: &Model, embed: &Embedding, base: &str) -> String {
    match embed.api {
        EmbedApi::Openai => format!("{base}/embeddings"),
        EmbedApi::Gemini => format!("{base}/models/{}:batchEmbedContents", model.id),
        // Cohere's own embed API lives at the root of the host its compatibility API is on.
        EmbedApi::Cohere => format!("{}/v2/embed", origin(base)),
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The body of one call. An error is a request this API cannot express (token ids where it
/// takes text).
pub fn body(model: &Model, embed: &Embedding, b: &Batch) -> Result<Bytes, String> {
    let texts = || -> Result<Vec<&str>, String> {
        b.inputs
            .iter()
            .map(|i| match i {
                Input::Text(t) => Ok(t.as_str()),
                Input::Tokens(_) => Err(format!(
                    "{} takes text, not token ids; send `input` as strings",
                    model.reference
                )),
            })
            .collect()
    };
    let v = match embed.api {
        EmbedApi::Openai => {
            let input: Vec<Value> = b
                .inputs
                .iter()
                .map(|i| match i {
                    Input::Text(t) => Value::from(t.as_str()),
                    Input::Tokens(t) => Value::from(t.clone()),
                })
                .collect();
            let mut v = json!({"model": model.id, "input": input, "encoding_format": "float"});
            if let Some(d) = b.dims {
                v[embed.dims_param.as_str()] = d.into();
            }
            if let Some([query, document]) = &embed.input_types {
                v["input_type"] = if b.query { query } else { document }.as_str().into();
            }
            v
        }
        EmbedApi::Gemini => {
            let task = if b.query {
                "RETRIEVAL_QUERY"
            } else {
                "RETRIEVAL_DOCUMENT"
            };
            let requests: Vec<Value> = texts()?
                .into_iter()
                .map(|t| {
                    let mut r = json!({
                        "model": format!("models/{}", model.id),
                        "content": {"parts": [{"text": t}]},
                        "taskType": task,
                    });
                    if let Some(d) = b.dims {
                        r["outputDimensionality"] = d.into();
                    }
                    r
                })
                .collect();
            json!({ "requests": requests })
        }
        EmbedApi::Cohere => {
            let mut v = json!({
                "model": model.id,
                "texts": texts()?,
                "input_type": if b.query { "search_query" } else { "search_document" },
                "embedding_types": ["float"],
            });
            if let Some(d) = b.dims {
                v["output_dimension"] = d.into();
            }
            v
        }
    };
    Ok(Bytes::from(v.to_string()))
}

#[derive(Deserialize)]
struct OpenaiAnswer {
    data: Vec<OpenaiVector>,
    #[serde(default)]
    usage: Option<OpenaiUsage>,
}

#[derive(Deserialize)]
struct OpenaiVector {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vector,
}

#[derive(Deserialize)]
struct OpenaiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct GeminiAnswer {
    embeddings: Vec<GeminiVector>,
}

#[derive(Deserialize)]
struct GeminiVector {
    values: Vector,
}

#[derive(Deserialize)]
struct CohereAnswer {
    embeddings: CohereVectors,
    #[serde(default)]
    meta: Option<CohereMeta>,
}

#[derive(Deserialize)]
struct CohereVectors {
    float: Vec<Vector>,
}

#[derive(Deserialize)]
struct CohereMeta {
    #[serde(default)]
    billed_units: Option<CohereUnits>,
}

#[derive(Deserialize)]
struct CohereUnits {
    #[serde(default)]
    input_tokens: Option<f64>,
}

/// An OpenAI-dialect answer that can go to an OpenAI client as it came (floats asked, one
/// call): a look at its bytes, not a parse, finds `inputs` vectors (`"embedding": [`), their
/// `"index"`es (if any) in order, and the `prompt_tokens` it reports. Reading and writing a
/// batch of long vectors would otherwise cost several times the rest of the request. `None`:
/// read it whole.
pub fn passable(body: &Bytes, inputs: usize) -> Option<(Bytes, Option<u64>)> {
    use memchr::memmem;
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' || !body.trim_ascii_end().ends_with(b"}") {
        return None;
    }
    let values = |key: &'static [u8]| {
        memmem::find_iter(body, key).filter_map(move |at| {
            // `"key"` then blanks then `:`; the value's text after blanks.
            let rest = body[at + key.len()..].trim_ascii_start();
            rest.strip_prefix(b":").map(<[u8]>::trim_ascii_start)
        })
    };
    let mut vectors = 0;
    for v in values(b"\"embedding\"") {
        if v.first() != Some(&b'[') {
            return None;
        }
        vectors += 1;
    }
    if vectors != inputs {
        return None;
    }
    // Indexes: none at all, or one per vector, 0, 1, 2… in order.
    let mut indexes = 0;
    for (i, v) in values(b"\"index\"").enumerate() {
        if number_at(v) != Some(i as u64) {
            return None;
        }
        indexes += 1;
    }
    if indexes != 0 && indexes != inputs {
        return None;
    }
    let tokens =
        memmem::rfind(body, b"\"prompt_tokens\":").and_then(|at| number_at(&body[at + 16..]));
    Some((body.clone(), tokens))
}

/// The unsigned number at the start of `text` (after blanks).
fn number_at(text: &[u8]) -> Option<u64> {
    let t = text.trim_ascii_start();
    let end = t
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(t.len());
    std::str::from_utf8(&t[..end]).ok()?.parse().ok()
}

/// The vectors of a 200 answer to a call of `inputs` inputs.
pub fn read(api: EmbedApi, body: &[u8], inputs: usize) -> Result<Vectors, Failure> {
    let bad = |e: serde_json::Error| {
        super::classify::error_in_answer(body)
            .unwrap_or_else(|| Failure::BadAnswer(format!("not an embedding answer ({e})")))
    };
    let out = match api {
        EmbedApi::Openai => {
            let a: OpenaiAnswer = serde_json::from_slice(body).map_err(bad)?;
            let mut data = a.data;
            if data.iter().all(|d| d.index.is_some()) {
                data.sort_by_key(|d| d.index);
                if data.iter().enumerate().any(|(i, d)| d.index != Some(i)) {
                    return Err(Failure::BadAnswer(
                        "the upstream's vector indexes are not 0, 1, 2…".into(),
                    ));
                }
            }
            Vectors {
                raw: None,
                vectors: data.into_iter().map(|d| d.embedding).collect(),
                tokens: a.usage.and_then(|u| u.prompt_tokens.or(u.total_tokens)),
            }
        }
        EmbedApi::Gemini => {
            let a: GeminiAnswer = serde_json::from_slice(body).map_err(bad)?;
            Vectors {
                raw: None,
                vectors: a.embeddings.into_iter().map(|e| e.values).collect(),
                tokens: None,
            }
        }
        EmbedApi::Cohere => {
            let a: CohereAnswer = serde_json::from_slice(body).map_err(bad)?;
            Vectors {
                raw: None,
                vectors: a.embeddings.float,
                tokens: a
                    .meta
                    .and_then(|m| m.billed_units)
                    .and_then(|u| u.input_tokens)
                    .map(|t| t as u64),
            }
        }
    };
    if let Some(v) = out.vectors.iter().find(|v| !v.get().starts_with('[')) {
        return Err(Failure::BadAnswer(format!(
            "a vector is not a list of numbers: {}",
            v.get().chars().take(40).collect::<String>()
        )));
    }
    if out.vectors.len() != inputs {
        return Err(Failure::BadAnswer(format!(
            "the upstream gave {} vector(s) for {inputs} input(s)",
            out.vectors.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn model(reference: &str) -> (Catalog, usize) {
        let c = Catalog::builtin().unwrap();
        let i = c
            .embeddings
            .iter()
            .position(|m| m.reference == reference)
            .unwrap();
        (c, i)
    }

    fn body_of(reference: &str, inputs: &[Input], dims: Option<u32>, query: bool) -> Value {
        let (c, i) = model(reference);
        let m = &c.embeddings[i];
        let b = Batch {
            inputs,
            dims,
            query,
        };
        let bytes = body(m, m.embed.as_deref().unwrap(), &b).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn each_api_gets_its_own_body() {
        let texts = [Input::Text("a".into()), Input::Text("b".into())];
        let g = body_of("google/gemini-embedding-001", &texts, Some(768), true);
        assert_eq!(g["requests"][1]["content"]["parts"][0]["text"], "b");
        assert_eq!(g["requests"][0]["taskType"], "RETRIEVAL_QUERY");
        assert_eq!(g["requests"][0]["outputDimensionality"], 768);
        assert_eq!(g["requests"][0]["model"], "models/gemini-embedding-001");
        let c = body_of("cohere/embed-v4.0", &texts, None, false);
        assert_eq!(c["texts"], json!(["a", "b"]));
        assert_eq!(c["input_type"], "search_document");
        assert_eq!(c["embedding_types"], json!(["float"]));
        let n = body_of(
            "nvidia/nvidia/llama-3.2-nv-embedqa-1b-v2",
            &texts,
            None,
            false,
        );
        assert_eq!(n["input_type"], "passage");
        assert_eq!(n["input"], json!(["a", "b"]));
        let m = body_of("mistral/codestral-embed", &texts, Some(256), false);
        assert_eq!(m["output_dimension"], 256);
        assert!(m.get("input_type").is_none());
    }

    #[test]
    fn token_ids_go_only_where_they_are_taken() {
        let tokens = [Input::Tokens(vec![1, 2, 3])];
        let o = body_of("mistral/mistral-embed", &tokens, None, false);
        assert_eq!(o["input"], json!([[1, 2, 3]]));
        let (c, i) = model("google/gemini-embedding-001");
        let m = &c.embeddings[i];
        let b = Batch {
            inputs: &tokens,
            dims: None,
            query: false,
        };
        let e = body(m, m.embed.as_deref().unwrap(), &b).unwrap_err();
        assert!(e.contains("takes text"), "{e}");
    }

    #[test]
    fn cohere_is_called_at_the_root_of_its_host() {
        let (c, i) = model("cohere/embed-v4.0");
        let m = &c.embeddings[i];
        let e = m.embed.as_deref().unwrap();
        assert_eq!(
            url(m, e, "https://api.cohere.ai/compatibility/v1"),
            "https://api.cohere.ai/v2/embed"
        );
        assert_eq!(
            url(m, e, "http://127.0.0.1:9/x"),
            "http://127.0.0.1:9/v2/embed"
        );
    }

    #[test]
    fn an_answer_passes_on_only_when_it_looks_whole_and_in_order() {
        let ok = Bytes::from_static(
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]},{"object": "embedding", "index": 1, "embedding": [0.2]}],"usage":{"prompt_tokens": 9,"total_tokens":9}}"#,
        );
        assert_eq!(passable(&ok, 2).map(|(_, t)| t), Some(Some(9)));
        assert!(passable(&ok, 3).is_none(), "a vector short");
        let swapped = Bytes::from_static(
            br#"{"data":[{"index":1,"embedding":[0.1]},{"index":0,"embedding":[0.2]}]}"#,
        );
        assert!(
            passable(&swapped, 2).is_none(),
            "out of order: read and sorted"
        );
        let spaced = Bytes::from_static(
            br#"{"data":[{"index" : 1, "embedding" : [0.1]},{"index" : 0, "embedding" : [0.2]}]}"#,
        );
        assert!(
            passable(&spaced, 2).is_none(),
            "spacing does not hide the order"
        );
        let partial =
            Bytes::from_static(br#"{"data":[{"index":0,"embedding":[0.1]},{"embedding":[0.2]}]}"#);
        assert!(
            passable(&partial, 2).is_none(),
            "an index on some vectors only"
        );
        let twice = br#"{"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[2]}]}"#;
        assert!(read(EmbedApi::Openai, twice, 2).is_err(), "indexes 0, 0");
        let base64 = Bytes::from_static(br#"{"data":[{"index":0,"embedding":"AAAA"}]}"#);
        assert!(passable(&base64, 1).is_none());
        assert!(passable(&Bytes::from_static(b"[]"), 0).is_none());
    }

    #[test]
    fn answers_are_read_in_input_order_and_counted() {
        let o = br#"{"data":[{"index":1,"embedding":[0.5]},{"index":0,"embedding":[0.25]}],"usage":{"prompt_tokens":7}}"#;
        let v = read(EmbedApi::Openai, o, 2).unwrap();
        let texts: Vec<&str> = v.vectors.iter().map(|v| v.get()).collect();
        assert_eq!(texts, ["[0.25]", "[0.5]"]);
        assert_eq!(numbers(&v.vectors[1]).unwrap(), vec![0.5]);
        assert_eq!(v.tokens, Some(7));
        let g = br#"{"embeddings":[{"values":[1.0,2.0]}]}"#;
        assert_eq!(
            read(EmbedApi::Gemini, g, 1).unwrap().vectors[0].get(),
            "[1.0,2.0]"
        );
        // Not a list of numbers: a bad answer.
        assert!(read(EmbedApi::Gemini, br#"{"embeddings":[{"values":"x"}]}"#, 1).is_err());
        let c = br#"{"embeddings":{"float":[[3.0]]},"meta":{"billed_units":{"input_tokens":4}}}"#;
        let v = read(EmbedApi::Cohere, c, 1).unwrap();
        assert_eq!(v.tokens, Some(4));
        // A short answer is a bad answer, not a silent misalignment.
        assert!(matches!(
            read(EmbedApi::Gemini, g, 2),
            Err(Failure::BadAnswer(_))
        ));
        assert!(read(EmbedApi::Openai, b"{}", 1).is_err());
    }
}
