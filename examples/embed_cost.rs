//! Times reading an upstream embeddings answer (16 vectors of 768) and writing the client's
//! answer, as floats and as base64: `cargo run --release --example embed_cost`.
use std::time::Instant;
fn main() {
    let v: Vec<f32> = (0..768)
        .map(|i| ((i * 37) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let vs = serde_json::to_string(&v).unwrap();
    let mut out = String::from(r#"{"object":"list","data":["#);
    for i in 0..16 {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"object":"embedding","index":{i},"embedding":{vs}}}"#
        ));
    }
    out.push_str(r#"],"usage":{"prompt_tokens":5}}"#);
    let body = out.into_bytes();
    let n = 2000;
    let t = Instant::now();
    let mut keep = 0;
    for _ in 0..n {
        let r =
            freeway::providers::embed::read(freeway::config::EmbedApi::Openai, &body, 16).unwrap();
        keep += r.vectors.len();
    }
    println!("read: {:?}/req", t.elapsed() / n);
    let r = freeway::providers::embed::read(freeway::config::EmbedApi::Openai, &body, 16).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        keep += freeway::wire::embeddings::answer_body(&r.vectors, false, "m", 5)
            .unwrap()
            .len();
    }
    println!("write float: {:?}/req", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        keep += freeway::wire::embeddings::answer_body(&r.vectors, true, "m", 5)
            .unwrap()
            .len();
    }
    println!("write base64: {:?}/req {keep}", t.elapsed() / n);
}
