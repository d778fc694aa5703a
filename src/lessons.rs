//! What upstreams taught at run time about a model (SPEC 3.9): request fields it refuses and
//! capabilities it lost. The router learns them from an upstream's own words; the store keeps
//! them; `freeway models` and the Chain page show them; `freeway chain reset-quirks` forgets
//! them. Catalog facts stay as shipped: a lesson is laid over them, per model.

use std::fmt;

/// One thing an upstream said about a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lesson {
    /// A top-level request field the model refuses: dropped from its requests.
    Drop(String),
    /// A field inside messages the model refuses: dropped from every message.
    DropInMessages(String),
    /// The model no longer takes tools: tool requests go elsewhere.
    NoTools,
    /// The model no longer takes images: image requests go elsewhere.
    NoImages,
}

/// Top-level fields the answer's meaning depends on: never dropped (a refusal of one is the
/// client's 400, or, for tools, a lost capability).
const NEVER_DROP: &[&str] = &[
    "messages",
    "model",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "n",
    "stream",
];
/// Fields of a message that carry its meaning.
const NEVER_DROP_IN_MESSAGES: &[&str] = &["role", "content", "tool_calls", "tool_call_id"];

impl Lesson {
    /// The lesson an upstream's refusal of `field` teaches, if dropping it keeps the answer's
    /// meaning (tools refused mean the model lost them).
    pub fn from_refused_field(field: &str, in_messages: bool) -> Option<Lesson> {
        let field = field.trim();
        if field.is_empty() || field.len() > 64 {
            return None;
        }
        if in_messages {
            return (!NEVER_DROP_IN_MESSAGES.contains(&field))
                .then(|| Lesson::DropInMessages(field.to_string()));
        }
        match field {
            // A hint, added by catalog quirks too: dropping it keeps the meaning.
            "parallel_tool_calls" => Some(Lesson::Drop(field.to_string())),
            "tools" | "tool_choice" | "functions" | "function_call" => Some(Lesson::NoTools),
            f if NEVER_DROP.contains(&f) => None,
            f => Some(Lesson::Drop(f.to_string())),
        }
    }

    /// The stored form: (kind, field).
    pub fn encode(&self) -> (&'static str, &str) {
        match self {
            Lesson::Drop(f) => ("drop", f),
            Lesson::DropInMessages(f) => ("drop_in_messages", f),
            Lesson::NoTools => ("no_tools", ""),
            Lesson::NoImages => ("no_images", ""),
        }
    }

    pub fn decode(kind: &str, field: &str) -> Option<Lesson> {
        match kind {
            "drop" if !field.is_empty() => Some(Lesson::Drop(field.into())),
            "drop_in_messages" if !field.is_empty() => Some(Lesson::DropInMessages(field.into())),
            "no_tools" => Some(Lesson::NoTools),
            "no_images" => Some(Lesson::NoImages),
            _ => None,
        }
    }
}

impl fmt::Display for Lesson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lesson::Drop(x) => write!(f, "drops `{x}`"),
            Lesson::DropInMessages(x) => write!(f, "drops `{x}` from messages"),
            Lesson::NoTools => write!(f, "no tools"),
            Lesson::NoImages => write!(f, "no images"),
        }
    }
}

/// Everything learned about one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lessons {
    /// Each lesson with the upstream's words that taught it, oldest first.
    pub list: Vec<(Lesson, String)>,
}

impl Lessons {
    /// Add a lesson; whether it is news.
    pub fn add(&mut self, lesson: Lesson, why: &str) -> bool {
        if self.list.iter().any(|(l, _)| *l == lesson) {
            return false;
        }
        self.list.push((lesson, why.to_string()));
        true
    }

    pub fn has(&self, lesson: &Lesson) -> bool {
        self.list.iter().any(|(l, _)| l == lesson)
    }

    /// Top-level fields to drop.
    pub fn dropped(&self) -> impl Iterator<Item = &str> {
        self.list.iter().filter_map(|(l, _)| match l {
            Lesson::Drop(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// Fields to drop from every message.
    pub fn dropped_in_messages(&self) -> impl Iterator<Item = &str> {
        self.list.iter().filter_map(|(l, _)| match l {
            Lesson::DropInMessages(f) => Some(f.as_str()),
            _ => None,
        })
    }

    /// Whether this model can still take a request with tools / images.
    pub fn allows(&self, tools: bool, images: bool) -> bool {
        !(tools && self.has(&Lesson::NoTools) || images && self.has(&Lesson::NoImages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meaning_is_never_dropped() {
        assert_eq!(
            Lesson::from_refused_field("top_k", false),
            Some(Lesson::Drop("top_k".into()))
        );
        assert_eq!(Lesson::from_refused_field("messages", false), None);
        assert_eq!(Lesson::from_refused_field("response_format", false), None);
        assert_eq!(
            Lesson::from_refused_field("tools", false),
            Some(Lesson::NoTools)
        );
        assert_eq!(
            Lesson::from_refused_field("cache_control", true),
            Some(Lesson::DropInMessages("cache_control".into()))
        );
        assert_eq!(Lesson::from_refused_field("content", true), None);
        for l in [
            Lesson::Drop("seed".into()),
            Lesson::DropInMessages("name".into()),
            Lesson::NoTools,
            Lesson::NoImages,
        ] {
            let (kind, field) = l.encode();
            assert_eq!(Lesson::decode(kind, field), Some(l.clone()));
        }
    }

    #[test]
    fn lessons_gather_and_judge() {
        let mut ls = Lessons::default();
        assert!(ls.add(
            Lesson::Drop("top_k".into()),
            "property 'top_k' is unsupported"
        ));
        assert!(!ls.add(Lesson::Drop("top_k".into()), "again"));
        assert!(ls.add(Lesson::NoImages, "does not support images"));
        assert_eq!(ls.dropped().collect::<Vec<_>>(), ["top_k"]);
        assert!(ls.allows(true, false) && !ls.allows(false, true));
    }
}
