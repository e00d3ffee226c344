//! Prompts a plugin ships in its manifest (MCP `prompts/list`, `prompts/get`): message
//! templates whose `{{argument}}` placeholders the client's arguments fill in. A prompt runs
//! no code: it is text (or media) the plugin's authors wrote for agents using its tools.

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Longest argument value a client may pass, in bytes.
const MAX_ARGUMENT_BYTES: usize = 4096;
/// Prompts per manifest.
const MAX_PROMPTS: usize = 100;

/// `[[prompts]]` in a manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    pub name: String,
    pub description: String,
    /// Every scope an integration must hold to list or get the prompt.
    pub scopes: Vec<String>,
    #[serde(default)]
    pub arguments: Vec<PromptArgument>,
    pub messages: Vec<PromptMessage>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptArgument {
    pub name: String,
    /// Also the question asked when a client left a required argument out.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptMessage {
    /// `user` or `assistant`.
    pub role: String,
    /// An MCP content block (`text`, `image`, `audio` or `resource`); placeholders may
    /// appear in any of its strings.
    pub content: Value,
}

/// Why a `prompts/get` cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// Required arguments the client did not give.
    Missing(Vec<String>),
    /// An argument that is not the prompt's, not a string, or too long.
    Invalid(String),
}

impl Prompt {
    /// Checks the prompts of one manifest.
    pub fn check_all(prompts: &[Prompt]) -> Result<(), String> {
        if prompts.len() > MAX_PROMPTS {
            return Err(format!("at most {MAX_PROMPTS} `prompts`"));
        }
        let mut names = std::collections::BTreeSet::new();
        for prompt in prompts {
            if !names.insert(prompt.name.as_str()) {
                return Err(format!("prompt `{}` is declared twice", prompt.name));
            }
            prompt.check().map_err(|e| format!("prompt `{}`: {e}", prompt.name))?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        if !name_ok(&self.name) {
            return Err("the name must be 1 to 64 letters, digits, `_`, `-` or `.`".into());
        }
        if self.messages.is_empty() {
            return Err("it needs at least one message".into());
        }
        for argument in &self.arguments {
            if !name_ok(&argument.name) {
                return Err(format!("argument `{}` has an invalid name", argument.name));
            }
        }
        for message in &self.messages {
            if !matches!(message.role.as_str(), "user" | "assistant") {
                return Err(format!("role `{}` is not `user` or `assistant`", message.role));
            }
            let kind = message.content["type"].as_str().unwrap_or_default();
            if !matches!(kind, "text" | "image" | "audio" | "resource") {
                return Err(format!("content type `{kind}` is not text, image, audio or resource"));
            }
            let mut unknown = None;
            visit_strings(&message.content, &mut |text| {
                for placeholder in placeholders(text) {
                    if !self.arguments.iter().any(|a| a.name == placeholder) {
                        unknown.get_or_insert_with(|| placeholder.to_string());
                    }
                }
            });
            if let Some(unknown) = unknown {
                return Err(format!("`{{{{{unknown}}}}}` names no argument"));
            }
        }
        Ok(())
    }

    /// The prompt as `prompts/list` shows it.
    pub fn listed(&self) -> Value {
        let arguments: Vec<Value> = self
            .arguments
            .iter()
            .map(|a| json!({"name": a.name, "description": a.description, "required": a.required}))
            .collect();
        json!({"name": self.name, "description": self.description, "arguments": arguments})
    }

    /// The messages with the arguments filled in (an optional one left out is empty).
    pub fn render(&self, arguments: &Map<String, Value>) -> Result<Vec<Value>, RenderError> {
        for (name, value) in arguments {
            if !self.arguments.iter().any(|a| &a.name == name) {
                return Err(RenderError::Invalid(format!(
                    "`{name}` is not an argument of this prompt"
                )));
            }
            match value.as_str() {
                Some(text) if text.len() <= MAX_ARGUMENT_BYTES => {}
                Some(_) => {
                    return Err(RenderError::Invalid(format!(
                        "`{name}` is longer than {MAX_ARGUMENT_BYTES} bytes"
                    )));
                }
                None => return Err(RenderError::Invalid(format!("`{name}` must be a string"))),
            }
        }
        let missing = self.missing(arguments);
        if !missing.is_empty() {
            return Err(RenderError::Missing(missing));
        }
        Ok(self
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": fill(&m.content, arguments)}))
            .collect())
    }

    /// Required arguments not among `arguments`.
    pub fn missing(&self, arguments: &Map<String, Value>) -> Vec<String> {
        self.arguments
            .iter()
            .filter(|a| a.required && !arguments.contains_key(&a.name))
            .map(|a| a.name.clone())
            .collect()
    }

    /// An elicitation asking the client's human for the `missing` arguments.
    pub fn ask_for(&self, missing: &[String]) -> Value {
        let argument = |name: &String| self.arguments.iter().find(|a| &a.name == name);
        let properties: Map<String, Value> = missing
            .iter()
            .map(|name| {
                let description = argument(name).map_or("", |a| a.description.as_str());
                (name.clone(), json!({"type": "string", "description": description}))
            })
            .collect();
        let questions: Vec<&str> = missing
            .iter()
            .filter_map(argument)
            .map(|a| {
                if a.description.is_empty() {
                    a.name.as_str()
                } else {
                    a.description.as_str()
                }
            })
            .collect();
        json!({
            "method": "elicitation/create",
            "params": {
                "message": questions.join(" "),
                "requestedSchema": {"type": "object", "properties": properties, "required": missing},
            }
        })
    }
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(text) => f(text),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

/// The names between `{{` and `}}` in `text`.
fn placeholders(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        names.push(after[..end].trim());
        rest = &after[end + 2..];
    }
    names
}

fn fill(value: &Value, arguments: &Map<String, Value>) -> Value {
    match value {
        Value::String(text) => {
            let mut out = String::with_capacity(text.len());
            let mut rest = text.as_str();
            while let Some(start) = rest.find("{{") {
                let after = &rest[start + 2..];
                let Some(end) = after.find("}}") else { break };
                out.push_str(&rest[..start]);
                let name = after[..end].trim();
                out.push_str(arguments.get(name).and_then(Value::as_str).unwrap_or_default());
                rest = &after[end + 2..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, arguments)).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), fill(v, arguments))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt() -> Prompt {
        toml::from_str(
            r#"
            name = "summarize"
            description = "Summarize a ledger"
            scopes = ["ledger.read"]
            arguments = [{ name = "ledger", description = "Which ledger?", required = true },
                         { name = "tone" }]
            messages = [{ role = "user", content = { type = "text", text = "Summarize {{ledger}} {{tone}}." } }]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn arguments_fill_the_placeholders_and_a_missing_one_is_named() {
        let p = prompt();
        Prompt::check_all(std::slice::from_ref(&p)).unwrap();
        let args = json!({"ledger": "ledger_main"});
        let messages = p.render(args.as_object().unwrap()).unwrap();
        assert_eq!(messages[0]["content"]["text"], "Summarize ledger_main .");
        assert_eq!(p.render(&Map::new()), Err(RenderError::Missing(vec!["ledger".into()])));
        let wrong = json!({"ledger": 1});
        assert!(matches!(
            p.render(wrong.as_object().unwrap()),
            Err(RenderError::Invalid(_))
        ));
        let unknown = json!({"ledger": "x", "other": "y"});
        assert!(matches!(
            p.render(unknown.as_object().unwrap()),
            Err(RenderError::Invalid(_))
        ));
        let ask = p.ask_for(&["ledger".into()]);
        assert_eq!(ask["params"]["message"], "Which ledger?");
        assert_eq!(ask["params"]["requestedSchema"]["required"], json!(["ledger"]));
    }

    #[test]
    fn a_placeholder_must_name_an_argument_and_a_role_be_known() {
        let mut p = prompt();
        p.messages[0].content["text"] = json!("{{nope}}");
        assert!(Prompt::check_all(&[p]).unwrap_err().contains("names no argument"));
        let mut p = prompt();
        p.messages[0].role = "system".into();
        assert!(Prompt::check_all(&[p]).is_err());
        assert!(Prompt::check_all(&[prompt(), prompt()]).is_err());
    }
}
