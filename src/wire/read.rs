//! Reading a surface's JSON body into its `#[derive(Deserialize)]` request types, with errors
//! that name the field at fault (`messages[2].content[0].source.type`), and the pieces those
//! types share: string-or-list fields, `type`-tagged objects, fields read leniently.
//!
//! `type`-tagged objects (content blocks, input items, tools) are read in two steps, the tag
//! and then the variant's own struct, instead of with `#[serde(tag = "type")]`: serde's tagged
//! enums buffer the object and lose the path to a fault inside it, cannot name an unknown tag
//! (the request log says which block was dropped), and cannot default a missing tag.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Marks a fault found inside a tagged object as it travels out through serde: the marker,
/// the fault's path inside the object, the marker again, then the message.
const NESTED: char = '\u{1f}';

type Fault = serde_path_to_error::Error<serde_json::Error>;

/// Read a whole body; `wants` ends "send a JSON object with …" (e.g. "`input`").
pub(crate) fn body<'a, T: Deserialize<'a>>(bytes: &'a [u8], wants: &str) -> Result<T, String> {
    // serde's derived structs also take an array of field values; a body never was one.
    let object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if object && let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    // Only a refused body pays for tracking the path to its fault: read it again.
    let d = &mut serde_json::Deserializer::from_slice(bytes);
    let fault = match object.then(|| serde_path_to_error::deserialize::<_, T>(&mut *d)) {
        Some(Err(fault)) => Some(fault),
        _ => None,
    };
    // A body that is not JSON says so first, wherever its first wrong field is, in the words
    // of a plain JSON parse (the error path only pays for it).
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return Err(not_json(&e, wants));
    }
    match fault.map(|f| located(&f)) {
        Some((path, message)) if !path.is_empty() => Err(wording(&path, &message)),
        Some((_, message)) if !message.starts_with("invalid type") => Err(wording("", &message)),
        _ => Err(format!(
            "the request body must be a JSON object with {wants}"
        )),
    }
}

fn not_json(e: &serde_json::Error, wants: &str) -> String {
    format!("the request body is not valid JSON ({e}); send a JSON object with {wants}")
}

/// Read one piece of a body already split off (a content block of a known role, a tool) into
/// its type; `at` is where it sits in the body, for the error.
pub(crate) fn piece<'a, T: Deserialize<'a>>(raw: &'a RawValue, at: &str) -> Result<T, String> {
    tracked(raw).map_err(|e| {
        let (path, message) = located(&e);
        wording(&join(at, &path), &message)
    })
}

/// A `type`-tagged object: its variant chosen by the tag (`None`: not an object with a string
/// `type`) and read from the object's JSON text.
pub(crate) trait Tagged<'a>: Sized {
    fn read<E: de::Error>(tag: Option<Cow<'a, str>>, raw: &'a RawValue) -> Result<Self, E>;
}

/// Deserialize a `Tagged` type (its `Deserialize` impl is this one line).
pub(crate) fn tagged<'de: 'a, 'a, T: Tagged<'a>, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    let raw: &'de RawValue = Deserialize::deserialize(d)?;
    T::read(tag(raw), raw)
}

/// A fault in a field of the object being read (`field` is its path inside the object).
pub(crate) fn inside<E: de::Error>(field: &str, message: &str) -> E {
    E::custom(format!("{NESTED}{field}{NESTED}{message}"))
}

/// Read a tagged object's variant struct from the object's text; a fault inside keeps its path.
pub(crate) fn variant<'a, T: Deserialize<'a>, E: de::Error>(raw: &'a RawValue) -> Result<T, E> {
    tracked(raw).map_err(|e| {
        let (path, message) = located(&e);
        inside(&path, &message)
    })
}

/// Read a piece of JSON text; only a failure pays for tracking the path to the fault (the
/// text is read again with `serde_path_to_error`).
fn tracked<'a, T: Deserialize<'a>>(raw: &'a RawValue) -> Result<T, Fault> {
    serde_json::from_str(raw.get()).or_else(|_| {
        let d = &mut serde_json::Deserializer::from_str(raw.get());
        serde_path_to_error::deserialize(d)
    })
}

/// The `type` of an object, if it is an object with a string `type`.
pub(crate) fn tag(raw: &RawValue) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<&'a RawValue>,
    }
    if !raw.get().starts_with('{') {
        return None;
    }
    let kind = serde_json::from_str::<Tag>(raw.get()).ok()?.kind?;
    serde_json::from_str::<Cow<str>>(kind.get()).ok()
}

/// A fault's full path ("" at the top) and its message without serde_json's position.
fn located(e: &Fault) -> (String, String) {
    let mut path = e.path().to_string();
    if path == "." {
        path.clear();
    }
    let inner = e.inner();
    let text = inner.to_string();
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    match message
        .strip_prefix(NESTED)
        .and_then(|m| m.split_once(NESTED))
    {
        Some((inside, rest)) => (join(&path, inside), rest.to_string()),
        None => (path, message.to_string()),
    }
}

fn join(outer: &str, inner: &str) -> String {
    match (outer, inner) {
        (o, "") => o.to_string(),
        ("", i) => i.to_string(),
        (o, i) if i.starts_with('[') => format!("{o}{i}"),
        (o, i) => format!("{o}.{i}"),
    }
}

/// A serde message about the field at `path`, said the way Freeway's other errors say it.
fn wording(path: &str, message: &str) -> String {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return format!("`{}` is required", join(path, field));
    }
    if let Some(field) = message
        .strip_prefix("duplicate field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        return format!("`{}` appears twice", join(path, field));
    }
    let wrong = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|m| m.rsplit_once(", expected "));
    if let Some((got, want)) = wrong {
        let got = match got {
            "map" => "an object",
            "sequence" => "an array",
            got => got,
        };
        return format!("`{path}` must be {}, got {got}", plain(want));
    }
    if let Some((got, want)) = message
        .strip_prefix("unknown variant ")
        .and_then(|m| m.split_once(", expected "))
    {
        return format!("`{path}` must be {want}, got {got}");
    }
    if message.starts_with("must ") || message.starts_with("is ") {
        return format!("`{path}` {message}");
    }
    format!("`{path}`: {message}")
}

/// serde's names of what it expected, in the words of a JSON API.
fn plain(want: &str) -> &str {
    match want {
        "a sequence" => "an array",
        "a map" => "an object",
        "u64" | "u32" => "a non-negative integer",
        "f64" | "a JSON number" => "a number",
        w if w.starts_with("struct ") => "an object",
        w => w,
    }
}

/// What a string-or-list field holds besides strings, for its error message.
pub(crate) trait Listed {
    /// Completes "a string or an array of …".
    const ITEMS: &'static str;
}

/// A field that is a string or a list (`content`, `system`, `input`, `output`); the list is
/// read as it comes, so a fault in an element keeps its path (serde's untagged enums lose it).
#[derive(Debug)]
pub(crate) enum StrOr<'a, T> {
    Str(Cow<'a, str>),
    List(Vec<T>),
}

impl<'de: 'a, 'a, T: Deserialize<'de> + Listed> Deserialize<'de> for StrOr<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de> + Listed> Visitor<'de> for V<'a, T> {
            type Value = StrOr<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string or an array of {}", T::ITEMS)
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(StrOr::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(StrOr::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(StrOr::Str(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some(item) = seq.next_element()? {
                    list.push(item);
                }
                Ok(StrOr::List(list))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object read into a struct: serde's derived structs also take an array of the fields'
/// values in order, which no surface ever accepted for an object.
#[derive(Debug)]
pub(crate) struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        if !raw.get().starts_with('{') {
            return Err(de::Error::custom("must be an object"));
        }
        variant(raw).map(Obj)
    }
}

/// A field read only when it has the expected type and ignored otherwise, as the surfaces have
/// always treated optional extras (a tool's `description`, an image's `detail`).
#[derive(Debug)]
pub(crate) struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Borrowed JSON text costs no copy; a value of another type is skipped.
        let raw = <&'de RawValue>::deserialize(d)?;
        Ok(Lenient(serde_json::from_str(raw.get()).ok()))
    }
}
