//! The Cedar schema, generated: a small hand-written base (apps, tenants, tools, the
//! request context) plus, for every loaded tool `T`, an action group `"T"` whose members
//! are `T`'s phases (`"T/read"`, `"T/propose"`, …), each also a member of its phase group
//! (`"read"`, `"propose"`, …), with `context.args` typed from `T`'s input schema.
//!
//! So `action in OpenPort::Action::"ticket.create"` matches every phase of a call to
//! `ticket.create`, and `action in OpenPort::Action::"propose"` every tool's proposals.

use cedar_policy::{Schema, SchemaFragment};
use serde_json::{Map, Value, json};

use super::{Action, AuthzError};
use crate::attr::ArgType;

/// What the schema needs of one tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolVocabulary<'a> {
    pub name: &'a str,
    pub is_read: bool,
    pub args: &'a ArgType,
}

impl Action {
    /// The phases a tool is decided in: discovery, then reads or the write lifecycle.
    pub fn phases(is_read: bool) -> &'static [Action] {
        if is_read {
            &[Action::Discover, Action::Read]
        } else {
            &[Action::Discover, Action::Propose, Action::AutoExecute, Action::Execute]
        }
    }

    pub const ALL: [Action; 5] = [
        Action::Discover,
        Action::Read,
        Action::Propose,
        Action::AutoExecute,
        Action::Execute,
    ];
}

/// The id of the action a request to `tool` in `phase` is decided as.
pub fn action_id(tool: &str, phase: Action) -> String {
    format!("{tool}/{}", phase.name())
}

const NAMESPACE: &str = "OpenPort";

/// The generated schema, in Cedar's JSON schema format.
pub fn generate(base: &str, tools: &[ToolVocabulary<'_>]) -> Result<Value, AuthzError> {
    let (fragment, _warnings) =
        SchemaFragment::from_cedarschema_str(base).map_err(|e| AuthzError::Schema(format!("{e}")))?;
    let mut json = fragment
        .to_json_value()
        .map_err(|e| AuthzError::Schema(format!("{e}")))?;
    let namespace = json
        .get_mut(NAMESPACE)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| AuthzError::Schema(format!("the base schema has no `{NAMESPACE}` namespace")))?;
    let context = namespace
        .get("commonTypes")
        .and_then(|t| t.get("RequestContext"))
        .and_then(|t| t.get("attributes"))
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| AuthzError::Schema("the base schema declares no record type `RequestContext`".into()))?;
    let actions = namespace
        .entry("actions")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| AuthzError::Schema("`actions` is not an object".into()))?;
    let mut declare = |name: String, body: Value, what: &str| {
        if actions.contains_key(&name) {
            return Err(AuthzError::Schema(format!(
                "action `{name}` is declared by the base schema and is also {what}: the phase actions and \
                 one action group per tool are generated (docs/policies.md)"
            )));
        }
        actions.insert(name, body);
        Ok(())
    };
    for phase in Action::ALL {
        declare(phase.name().to_string(), json!({}), "a generated phase group")?;
    }
    for tool in tools {
        declare(tool.name.to_string(), json!({}), "a loaded tool's name")?;
        for &phase in Action::phases(tool.is_read) {
            let mut attributes: Map<String, Value> = context.clone();
            if phase != Action::Discover {
                attributes.insert("args".into(), cedar_type(tool.args, true));
            }
            let body = json!({
                "memberOf": [{"id": tool.name}, {"id": phase.name()}],
                "appliesTo": {
                    "principalTypes": ["App"],
                    "resourceTypes": ["Tool"],
                    "context": {"type": "Record", "attributes": attributes},
                },
            });
            declare(action_id(tool.name, phase), body, "a generated tool phase")?;
        }
    }
    Ok(json)
}

/// A generated schema, checked by Cedar.
pub fn compile(json: &Value) -> Result<Schema, AuthzError> {
    Schema::from_json_value(json.clone()).map_err(|e| AuthzError::Schema(format!("{e}")))
}

/// The generated schema in Cedar's human-readable format.
pub fn to_cedarschema(json: &Value) -> Result<String, AuthzError> {
    let fragment = SchemaFragment::from_json_value(json.clone()).map_err(|e| AuthzError::Schema(format!("{e}")))?;
    fragment
        .to_cedarschema()
        .map_err(|e| AuthzError::Schema(format!("{e}")))
}

/// An argument's type in Cedar's JSON schema format.
fn cedar_type(ty: &ArgType, required: bool) -> Value {
    let mut out = match ty {
        ArgType::String => json!({"type": "String"}),
        ArgType::Long => json!({"type": "Long"}),
        ArgType::Bool => json!({"type": "Boolean"}),
        ArgType::Decimal => json!({"type": "Extension", "name": "decimal"}),
        ArgType::DateTime => json!({"type": "Extension", "name": "datetime"}),
        ArgType::Set(element) => json!({"type": "Set", "element": cedar_type(element, true)}),
        ArgType::Record(fields) => {
            let attributes: Map<String, Value> = fields
                .iter()
                .map(|(name, field)| (name.clone(), cedar_type(&field.ty, field.required)))
                .collect();
            json!({"type": "Record", "attributes": attributes})
        }
    };
    if !required {
        out["required"] = json!(false);
    }
    out
}
