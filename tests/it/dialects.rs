//! Recorded fixtures through each dialect's translators, checked by snapshots; and the same
//! streams cut at random boundaries, which must decode to the same client events.

use freeway::catalog::{Catalog, Dialect};
use freeway::providers::{self, Dialects};
use freeway::sse;
use freeway::wire::{Frames, anthropic, completions, openai, responses};
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn request() -> freeway::chat::Request {
    openai::parse(&fixture("openai_request.json")).unwrap()
}

#[test]
fn openai_dialect_bodies_per_vendor() {
    let catalog = Catalog::builtin().unwrap();
    let req = request();
    for reference in [
        "groq/llama-3.3-70b-versatile",
        "mistral/mistral-small-latest",
        "github/openai/gpt-4.1",
        "cloudflare/@cf/openai/gpt-oss-120b",
        "cohere/command-a-03-2025",
        "nvidia/deepseek-ai/deepseek-v3.1",
    ] {
        let m = catalog.model(reference).unwrap();
        let body: Value = serde_json::from_slice(&providers::openai::body(
            &req,
            catalog.provider_of(m),
            m,
            None,
        ))
        .unwrap();
        let name = reference.replace(['/', '@', ':', '.'], "_");
        insta::assert_json_snapshot!(format!("openai_body__{name}"), body);
    }
}

#[test]
fn gemini_request_translation() {
    let body = Value::Object(request().to_map());
    let out = providers::gemini::to_upstream(&body, &|id| {
        (id == "call_1").then(|| "remembered-sig".to_string())
    })
    .unwrap();
    insta::assert_json_snapshot!("gemini_request", out);
}

#[test]
fn gemini_answer_translation() {
    let v: Value = serde_json::from_slice(&fixture("gemini_answer_tools.json")).unwrap();
    let catalog = Catalog::builtin().unwrap();
    let m = catalog.model("google/gemini-2.5-flash").unwrap();
    let (answer, usage) = dialects()
        .reader(catalog.provider_of(m), m, "chatcmpl-fixture")
        .answer(serde_json::to_vec(&v).unwrap().into())
        .unwrap();
    assert_eq!(usage.map(|u| (u.input, u.output)), Some((31, 17)));
    let bytes = openai::answer_body(answer, "chatcmpl-fixture", 1700000000);
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    insta::assert_json_snapshot!("gemini_answer", out);
}

/// The stream decoder of a provider's dialect (its first model's).
fn stream_decoder(catalog: &Catalog, provider: &freeway::catalog::Provider) -> providers::Decoder {
    let model = catalog
        .models
        .iter()
        .find(|m| m.provider == provider.id)
        .unwrap();
    dialects()
        .reader(provider, model, "chatcmpl-fixture")
        .stream()
}

fn dialects() -> Dialects {
    Dialects::new(Box::new(|_, _| {}))
}

/// Decode a stream delivered in `chunks` through one dialect and frame it for an OpenAI chat
/// client; the client's events.
fn client_events(dialect: Dialect, hide_usage: bool, chunks: &[&[u8]]) -> Vec<String> {
    let catalog = Catalog::builtin().unwrap();
    let provider = match dialect {
        Dialect::Gemini => catalog.provider("google").unwrap(),
        Dialect::Openai => catalog.provider("groq").unwrap(),
    };
    let mut sse = sse::Decoder::new(1 << 20);
    let mut decoder = stream_decoder(&catalog, provider);
    let mut framer = openai::Framer::new("chatcmpl-fixture", "model-x", 1700000000, !hide_usage);
    let mut out = Vec::new();
    let mut push = |events: Vec<sse::Event>, decoder: &mut providers::Decoder| {
        for e in events {
            let d = decoder.on_event(e);
            assert!(d.error.is_none(), "{:?}", d.error);
            if let Some(bytes) = d.piece.and_then(|p| framer.frame(p)) {
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                out.extend(text.split_inclusive("\n\n").map(str::to_string));
            }
        }
    };
    for c in chunks {
        let events = sse.feed(c).unwrap();
        push(events, &mut decoder);
    }
    push(sse.finish().into_iter().collect(), &mut decoder);
    out
}

/// Decode a stream delivered in `chunks` through one dialect and frame it with `framer` (and
/// its end): the bytes a client gets.
fn framed(dialect: Dialect, mut framer: Box<dyn Frames>, chunks: &[&[u8]]) -> String {
    let catalog = Catalog::builtin().unwrap();
    let provider = match dialect {
        Dialect::Gemini => catalog.provider("google").unwrap(),
        Dialect::Openai => catalog.provider("groq").unwrap(),
    };
    let mut sse = sse::Decoder::new(1 << 20);
    let mut decoder = stream_decoder(&catalog, provider);
    let mut out = Vec::new();
    let mut events: Vec<sse::Event> = Vec::new();
    for c in chunks {
        events.extend(sse.feed(c).unwrap());
    }
    events.extend(sse.finish());
    for e in events {
        let d = decoder.on_event(e);
        assert!(d.error.is_none(), "{:?}", d.error);
        if let Some(bytes) = d.piece.and_then(|p| framer.frame(p)) {
            out.extend_from_slice(&bytes);
        }
    }
    out.extend_from_slice(&framer.end().unwrap_or_default());
    String::from_utf8(out).unwrap()
}

/// The framers of the other surfaces, fresh.
fn surface_framers() -> Vec<(&'static str, Box<dyn Frames>)> {
    vec![
        (
            "messages",
            Box::new(anthropic::Framer::new("msg_fixture", "claude-x", true, 10)),
        ),
        (
            "responses",
            Box::new(responses::Framer::new(
                responses::Context {
                    id: "resp_fixture".into(),
                    created: 1700000000,
                    echo: responses::Echo::default(),
                    namespaces: Default::default(),
                },
                "model-x",
            )),
        ),
        (
            "completions",
            Box::new(completions::Framer::new(
                "cmpl-fixture",
                "model-x",
                1700000000,
                true,
            )),
        ),
    ]
}

#[test]
fn every_surface_frames_both_upstream_dialects() {
    for (dialect, file) in [
        (Dialect::Gemini, "gemini_stream_tools.sse"),
        (Dialect::Openai, "openai_stream.sse"),
    ] {
        let raw = fixture(file);
        for (name, framer) in surface_framers() {
            let text = framed(dialect, framer, &[&raw]);
            insta::assert_snapshot!(format!("{name}_from_{file}"), text);
        }
    }
}

#[test]
fn every_surface_frames_the_same_stream_cut_at_every_byte() {
    for (dialect, file) in [
        (Dialect::Gemini, "gemini_stream_tools.sse"),
        (Dialect::Openai, "openai_stream.sse"),
    ] {
        let raw = fixture(file);
        for (i, (name, framer)) in surface_framers().into_iter().enumerate() {
            let whole = framed(dialect, framer, &[&raw]);
            for at in 0..=raw.len() {
                let framer = surface_framers().swap_remove(i).1;
                let cut = framed(dialect, framer, &[&raw[..at], &raw[at..]]);
                assert_eq!(cut, whole, "{name} from {file}, cut at byte {at}");
            }
        }
    }
}

#[test]
fn gemini_stream_translation() {
    let raw = fixture("gemini_stream_tools.sse");
    let events: Vec<Value> = client_events(Dialect::Gemini, false, &[&raw])
        .iter()
        .map(|e| serde_json::from_str(e.trim().strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    insta::assert_json_snapshot!("gemini_stream", events);
}

#[test]
fn openai_stream_passthrough() {
    let raw = fixture("openai_stream.sse");
    let shown = client_events(Dialect::Openai, false, &[&raw]);
    let hidden = client_events(Dialect::Openai, true, &[&raw]);
    assert_eq!(
        shown.len(),
        hidden.len() + 1,
        "only the usage chunk is hidden"
    );
    insta::assert_snapshot!("openai_stream", shown.concat());
}

fn cut<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(&bytes[last..p]);
        last = p;
    }
    out.push(&bytes[last..]);
    out
}

proptest! {
    #[test]
    fn gemini_streams_decode_the_same_whatever_the_cuts(cuts in proptest::collection::vec(0usize..2000, 0..40)) {
        let raw = fixture("gemini_stream_tools.sse");
        let whole = client_events(Dialect::Gemini, false, &[&raw]);
        prop_assert_eq!(client_events(Dialect::Gemini, false, &cut(&raw, &cuts)), whole);
    }

    #[test]
    fn openai_streams_decode_the_same_whatever_the_cuts(cuts in proptest::collection::vec(0usize..2000, 0..40)) {
        let raw = fixture("openai_stream.sse");
        let whole = client_events(Dialect::Openai, true, &[&raw]);
        prop_assert_eq!(client_events(Dialect::Openai, true, &cut(&raw, &cuts)), whole);
    }
}
