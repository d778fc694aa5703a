//! `POST /v1/embeddings` in OpenAI's shape (SPEC 2.5): the request read into the inputs the
//! router embeds, and the vectors framed back, as floats or as base64 (little-endian `f32`s,
//! what the OpenAI SDKs ask for by default and decode).

use base64::Engine;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::providers::embed::{Input, Vector, numbers};

/// Inputs in one request at most (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;

/// A request, as read.
pub struct Parsed {
    pub model: String,
    pub inputs: Vec<Input>,
    pub base64: bool,
    pub dims: Option<u32>,
    pub query: bool,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(default)]
    model: Option<String>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    input_type: Option<String>,
}

/// What `input` may be.
#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// Read a request body.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let body: Body = super::read::body(bytes, "`model` and `input`")?;
    let model = body.model.filter(|m| !m.trim().is_empty()).ok_or(
        "`model` is required: name an embedding model (a vector space is never chosen for you)",
    )?;
    let raw = body
        .input
        .ok_or("`input` is required: a string or a list of strings")?;
    let inputs = match serde_json::from_str::<Inputs>(raw.get()) {
        Ok(Inputs::One(t)) => vec![Input::Text(t)],
        Ok(Inputs::Texts(t)) => t.into_iter().map(Input::Text).collect(),
        Ok(Inputs::Tokens(t)) => vec![Input::Tokens(t)],
        Ok(Inputs::TokenLists(t)) => t.into_iter().map(Input::Tokens).collect(),
        Err(_) => {
            return Err(
                "`input` must be a string, a list of strings, a list of token ids or a list of such lists".into(),
            );
        }
    };
    if inputs.is_empty() {
        return Err("`input`: give at least one text to embed".into());
    }
    if inputs.len() > MAX_INPUTS {
        return Err(format!(
            "`input`: {} inputs; at most {MAX_INPUTS} per request",
            inputs.len()
        ));
    }
    if let Some(i) = inputs.iter().position(|i| match i {
        Input::Text(t) => t.is_empty(),
        Input::Tokens(t) => t.is_empty(),
    }) {
        return Err(format!("`input[{i}]` is empty: there is nothing to embed"));
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(format!(
                "`encoding_format`: {other:?} must be \"float\" or \"base64\""
            ));
        }
    };
    if body.dimensions == Some(0) {
        return Err("`dimensions` must be at least 1".into());
    }
    let query = match body.input_type.as_deref() {
        None | Some("document" | "search_document" | "passage") => false,
        Some("query" | "search_query") => true,
        Some(other) => {
            return Err(format!(
                "`input_type`: {other:?} must be \"query\" or \"document\""
            ));
        }
    };
    Ok(Parsed {
        model,
        inputs,
        base64,
        dims: body.dimensions,
        query,
    })
}

/// One vector as base64 of its little-endian `f32`s.
pub fn base64_of(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The answer body: the vectors as the upstream wrote them, or as base64 of their `f32`s.
pub fn answer_body(
    vectors: &[Vector],
    base64: bool,
    model: &str,
    tokens: u64,
) -> Result<String, String> {
    let text: usize = vectors.iter().map(|v| v.get().len()).sum();
    let mut out: Vec<u8> = Vec::with_capacity(128 + vectors.len() * 64 + text);
    out.extend_from_slice(br#"{"object":"list","data":["#);
    for (i, v) in vectors.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"object":"embedding","index":"#);
        out.extend_from_slice(i.to_string().as_bytes());
        out.extend_from_slice(br#","embedding":"#);
        // Writing into a Vec cannot fail.
        if base64 {
            let _ = serde_json::to_writer(&mut out, &base64_of(&numbers(v)?));
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
    }
    out.extend_from_slice(br#"],"model":"#);
    let _ = serde_json::to_writer(&mut out, model);
    out.extend_from_slice(
        format!(r#","usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#).as_bytes(),
    );
    // Only JSON was written: valid UTF-8.
    Ok(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_shape_is_read() {
        let p = parse(br#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(p.inputs, vec![Input::Text("hi".into())]);
        assert!(!p.base64 && !p.query);
        let p = parse(br#"{"model":"m","input":["a","b"],"encoding_format":"base64","input_type":"query","dimensions":8}"#).unwrap();
        assert_eq!(p.inputs.len(), 2);
        assert!(p.base64 && p.query);
        assert_eq!(p.dims, Some(8));
        let p = parse(br#"{"model":"m","input":[1,2]}"#).unwrap();
        assert_eq!(p.inputs, vec![Input::Tokens(vec![1, 2])]);
        let p = parse(br#"{"model":"m","input":[[1],[2,3]]}"#).unwrap();
        assert_eq!(p.inputs.len(), 2);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, field) in [
            (r#"{"input":"x"}"#, "`model`"),
            (r#"{"model":"m"}"#, "`input`"),
            (r#"{"model":"m","input":{"a":1}}"#, "`input`"),
            (r#"{"model":"m","input":[]}"#, "`input`"),
            (r#"{"model":"m","input":["a",""]}"#, "`input[1]`"),
            (
                r#"{"model":"m","input":"a","encoding_format":"hex"}"#,
                "`encoding_format`",
            ),
            (
                r#"{"model":"m","input":"a","input_type":"x"}"#,
                "`input_type`",
            ),
            (
                r#"{"model":"m","input":"a","dimensions":0}"#,
                "`dimensions`",
            ),
            (r#"{"model":"m","input":"a","dimensions":-1}"#, "dimensions"),
            ("[", "JSON"),
        ] {
            let e = parse(body.as_bytes()).err().unwrap();
            assert!(e.contains(field), "{body}: {e}");
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let b = base64_of(&[1.0, -2.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
        assert_eq!(&bytes[..4], &1.0f32.to_le_bytes());
        assert_eq!(&bytes[4..], &(-2.5f32).to_le_bytes());
        let vector = serde_json::value::RawValue::from_string("[0.5]".into()).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&answer_body(&[vector], false, "m", 3).unwrap()).unwrap();
        assert_eq!(v["data"][0]["embedding"][0], 0.5);
        assert_eq!(v["usage"]["total_tokens"], 3);
        assert_eq!(v["object"], "list");
    }
}
