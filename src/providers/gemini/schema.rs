//! JSON Schema cleaning: tool parameter and response schemas reduced to the subset Gemini
//! accepts (`$ref`s inlined, cycles and depth bounded, unsupported keys and formats removed).

use serde_json::{Map, Value, json};

const MAX_SCHEMA_DEPTH: usize = 64;
/// Caps total output size: non-recursive `$ref`s that fan out can still expand exponentially.
const MAX_SCHEMA_NODES: usize = 10_000;
/// Gemini only accepts these `format` values; anything else (uri, email, ...) is a 400.
const GEMINI_FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];

struct SchemaCx<'a> {
    root: &'a Value,
    /// `$ref`s currently being expanded, to turn cycles into a placeholder.
    expanding: Vec<String>,
    budget: usize,
}

fn placeholder_schema() -> Value {
    json!({ "type": "object" })
}

fn is_null_schema(v: &Value) -> bool {
    match v.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => !ts.is_empty() && ts.iter().all(|t| t.as_str() == Some("null")),
        _ => false,
    }
}

fn enum_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl SchemaCx<'_> {
    fn clean(&mut self, node: &Value, depth: usize) -> Value {
        let Some(obj) = node.as_object() else {
            // `true` / non-schema values: "anything", which Gemini expresses as an empty schema.
            return json!({});
        };
        if depth > MAX_SCHEMA_DEPTH || self.budget == 0 {
            return placeholder_schema();
        }
        self.budget -= 1;
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            let mut resolved = self.resolve_ref(reference, depth);
            let mut siblings = obj.clone();
            siblings.remove("$ref");
            if !siblings.is_empty()
                && let Value::Object(extra) = self.clean_object(&siblings, depth)
                && let Some(target) = resolved.as_object_mut()
            {
                // Siblings (typically a description) are more specific than the shared definition.
                for (k, v) in extra {
                    target.insert(k, v);
                }
            }
            return resolved;
        }
        self.clean_object(obj, depth)
    }

    fn resolve_ref(&mut self, reference: &str, depth: usize) -> Value {
        let root = self.root;
        let target = if reference == "#" {
            Some(root)
        } else {
            reference
                .strip_prefix("#/$defs/")
                .map(|n| ("$defs", n))
                .or_else(|| {
                    reference
                        .strip_prefix("#/definitions/")
                        .map(|n| ("definitions", n))
                })
                .and_then(|(section, name)| {
                    let name = name.replace("~1", "/").replace("~0", "~");
                    root.get(section).and_then(|defs| defs.get(name.as_str()))
                })
        };
        let Some(target) = target else {
            return placeholder_schema();
        };
        if self.expanding.iter().any(|r| r == reference) {
            return placeholder_schema();
        }
        self.expanding.push(reference.to_string());
        let out = self.clean(target, depth + 1);
        self.expanding.pop();
        out
    }

    fn clean_object(&mut self, obj: &Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        let mut nullable = false;
        let mut enum_values: Option<Vec<String>> = None;
        let mut required: Vec<String> = Vec::new();
        let mut branches: Vec<Value> = Vec::new();
        let mut saw_null_branch = false;

        for (key, value) in obj {
            match key.as_str() {
                "type" => match value {
                    Value::String(t) if t == "null" => nullable = true,
                    Value::String(t) => {
                        out.insert("type".into(), json!(t));
                    }
                    Value::Array(types) => {
                        let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                        nullable |= names.contains(&"null");
                        let non_null: Vec<&str> =
                            names.into_iter().filter(|t| *t != "null").collect();
                        match non_null.as_slice() {
                            [] => {}
                            [one] => {
                                out.insert("type".into(), json!(one));
                            }
                            many => branches.extend(many.iter().map(|t| json!({ "type": t }))),
                        }
                    }
                    _ => {}
                },
                "description" | "pattern" if value.is_string() => {
                    out.insert(key.clone(), value.clone());
                }
                "format" if value.as_str().is_some_and(|f| GEMINI_FORMATS.contains(&f)) => {
                    out.insert(key.clone(), value.clone());
                }
                "nullable" => nullable |= value.as_bool() == Some(true),
                "enum" => {
                    if let Some(values) = value.as_array() {
                        nullable |= values.iter().any(Value::is_null);
                        enum_values = Some(
                            values
                                .iter()
                                .filter(|v| !v.is_null())
                                .map(enum_string)
                                .collect(),
                        );
                    }
                }
                "properties" => {
                    if let Some(props) = value.as_object() {
                        let cleaned: Map<String, Value> = props
                            .iter()
                            .map(|(name, schema)| (name.clone(), self.clean(schema, depth + 1)))
                            .collect();
                        if !cleaned.is_empty() {
                            out.insert("properties".into(), Value::Object(cleaned));
                        }
                    }
                }
                "required" => {
                    if let Some(names) = value.as_array() {
                        required.extend(names.iter().filter_map(Value::as_str).map(String::from));
                    }
                }
                "items" => match value {
                    Value::Object(_) => {
                        out.insert("items".into(), self.clean(value, depth + 1));
                    }
                    // Tuple form: Gemini has one item schema, the first is the best guess.
                    Value::Array(items) => {
                        if let Some(first) = items.first() {
                            out.insert("items".into(), self.clean(first, depth + 1));
                        }
                    }
                    _ => {}
                },
                "minItems" | "maxItems" | "minProperties" | "maxProperties" | "minLength"
                | "maxLength" | "minimum" | "maximum"
                    if value.is_number() =>
                {
                    out.insert(key.clone(), value.clone());
                }
                "example" => {
                    out.insert(key.clone(), value.clone());
                }
                "propertyOrdering"
                    if value
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string)) =>
                {
                    out.insert(key.clone(), value.clone());
                }
                "anyOf" | "oneOf" => {
                    for branch in value.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                        if is_null_schema(branch) {
                            saw_null_branch = true;
                        } else {
                            branches.push(self.clean(branch, depth + 1));
                        }
                    }
                }
                // Everything else ($schema, additionalProperties, title, default, x-*, if/then/else,
                // $defs, ...) is unknown to Gemini's Schema proto and would fail the request.
                _ => {}
            }
        }

        // `const` only matters when there is no `enum` already.
        if enum_values.is_none()
            && let Some(Value::String(c)) = obj.get("const")
        {
            enum_values = Some(vec![c.clone()]);
        }

        nullable |= saw_null_branch;
        match branches.len() {
            0 => {}
            1 => {
                if let Some(Value::Object(branch)) = branches.pop() {
                    for (k, v) in branch {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            _ => {
                out.insert("anyOf".into(), Value::Array(branches));
            }
        }

        if let Some(all_of) = obj.get("allOf").and_then(Value::as_array) {
            for branch in all_of {
                let Value::Object(branch) = self.clean(branch, depth + 1) else {
                    continue;
                };
                for (k, v) in branch {
                    match (k.as_str(), v) {
                        ("properties", Value::Object(props)) => {
                            let entry = out
                                .entry("properties")
                                .or_insert_with(|| Value::Object(Map::new()));
                            if let Some(existing) = entry.as_object_mut() {
                                for (name, schema) in props {
                                    existing.entry(name).or_insert(schema);
                                }
                            }
                        }
                        ("required", Value::Array(names)) => {
                            required
                                .extend(names.iter().filter_map(Value::as_str).map(String::from));
                        }
                        (_, v) => {
                            out.entry(k).or_insert(v);
                        }
                    }
                }
            }
        }

        if let Some(values) = enum_values
            && !values.is_empty()
        {
            out.insert("type".into(), json!("string"));
            out.insert("enum".into(), json!(values));
        }
        if nullable {
            out.insert("nullable".into(), json!(true));
        }
        // Gemini rejects `required` entries that name no declared property.
        if let Some(props) = out.get("properties").and_then(Value::as_object) {
            let mut kept: Vec<String> = Vec::new();
            for name in required {
                if props.contains_key(&name) && !kept.contains(&name) {
                    kept.push(name);
                }
            }
            if !kept.is_empty() {
                out.insert("required".into(), json!(kept));
            }
        } else {
            out.remove("required");
        }
        Value::Object(out)
    }
}

/// Clean a JSON Schema of what Gemini rejects (see below). Pure.
///
/// Gemini's `Schema` is an OpenAPI 3.0 subset, so this keeps only the fields it knows
/// (an allow-list is safer than chasing every JSON Schema keyword), inlines local `$ref`s,
/// turns `null` unions into `nullable`, and makes `enum` values strings.
pub fn clean_schema(schema: &Value) -> Value {
    let mut cx = SchemaCx {
        root: schema,
        // The root is already being expanded, so `$ref: "#"` is a cycle from the start.
        expanding: vec!["#".to_string()],
        budget: MAX_SCHEMA_NODES,
    };
    cx.clean(schema, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_cycles_depth_and_enums() {
        let recursive = json!({
            "type": "object",
            "properties": {"root": {"$ref": "#/definitions/Node"}, "me": {"$ref": "#"}, "ext": {"$ref": "http://x/y"}},
            "definitions": {"Node": {"type": "object", "properties": {
                "value": {"type": "integer", "exclusiveMinimum": 0},
                "children": {"type": "array", "items": {"$ref": "#/definitions/Node"}},
            }}},
        });
        assert_eq!(
            clean_schema(&recursive),
            json!({"type": "object", "properties": {
                "root": {"type": "object", "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"type": "object"}},
                }},
                "me": {"type": "object"},
                "ext": {"type": "object"},
            }})
        );

        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"type": "array", "items": deep});
        }
        let cleaned = clean_schema(&deep);
        let mut depth = 0;
        let mut node = &cleaned;
        while let Some(next) = node.get("items") {
            node = next;
            depth += 1;
        }
        assert!(depth <= MAX_SCHEMA_DEPTH + 1, "{depth}");

        assert_eq!(
            clean_schema(&json!({"type": "integer", "enum": [1, 2, 3], "format": "int32"})),
            json!({"type": "string", "enum": ["1", "2", "3"], "format": "int32"})
        );
        assert_eq!(
            clean_schema(
                &json!({"oneOf": [{"type": "string"}, {"type": "number"}], "x-foo": 1, "not": {}})
            ),
            json!({"anyOf": [{"type": "string"}, {"type": "number"}]})
        );
        assert_eq!(
            clean_schema(&json!({"type": ["string", "integer", "null"]})),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": true})
        );
        assert_eq!(
            clean_schema(
                &json!({"allOf": [{"$ref": "#/$defs/A"}], "description": "d",
                "$defs": {"A": {"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}}}})
            ),
            json!({"description": "d", "type": "object", "properties": {"a": {"type": "string"}}})
        );

        // Fan-out of non-recursive refs must not explode.
        let mut defs = Map::new();
        for i in 0..40 {
            defs.insert(format!("D{i}"), json!({"type": "object", "properties": {
                "l": {"$ref": format!("#/$defs/D{}", i + 1)}, "r": {"$ref": format!("#/$defs/D{}", i + 1)}}}));
        }
        let fan = json!({"$ref": "#/$defs/D0", "$defs": defs});
        let cleaned = clean_schema(&fan);
        assert!(cleaned.to_string().len() < 2_000_000);
    }
}
