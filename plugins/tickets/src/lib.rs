//! A support desk's tools, served by calling the desk's own HTTP API: the pattern for an
//! adapter in front of an existing application. The operator grants the desk's host in
//! the manifest (`grants.http`) and sets its address (`grants.config.base_url`).

wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::host::{self, HttpRequest};
use openport::plugin::types::{Effect, Risk};
use serde_json::{Value, json};

struct Tickets;

fn base_url() -> Result<String, Error> {
    host::config_get("base_url")?.ok_or_else(|| Error::Unavailable("`base_url` is not configured".into()))
}

fn call(method: &str, path: &str, body: Option<&Value>) -> Result<Value, Error> {
    let response = host::http_fetch(&HttpRequest {
        method: method.into(),
        url: format!("{}{path}", base_url()?),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.map(|b| b.to_string().into_bytes()),
    })?;
    let value: Value = serde_json::from_slice(&response.body).map_err(|_| {
        Error::Unavailable(format!(
            "the desk answered {} with a body that is not JSON",
            response.status
        ))
    })?;
    match response.status {
        200..=299 => Ok(value),
        404 => Err(Error::NotFound(value["error"].as_str().unwrap_or("not found").into())),
        400..=499 => Err(Error::InvalidInput(
            value["error"].as_str().unwrap_or("rejected by the desk").into(),
        )),
        status => Err(Error::Unavailable(format!("the desk answered {status}"))),
    }
}

fn payload(text: &str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::InvalidInput(format!("payload is not JSON: {e}")))
}

impl Guest for Tickets {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![
            ToolDescriptor {
                name: "ticket.list".into(),
                description: "List open support tickets.".into(),
                input_schema: json!({"type": "object", "properties": {"status": {"type": "string", "enum": ["open", "closed"]}}, "additionalProperties": false}).to_string(),
                output_schema: None,
                effect: Effect::Read,
                risk: Risk::Low,
                required_scopes: vec!["ticket.read".into()],
                requires_confirmation: false,
                http_path: Some("tickets".into()),
                idempotent: true,
            },
            ToolDescriptor {
                name: "ticket.create".into(),
                description: "Open a support ticket.".into(),
                input_schema: json!({"type": "object", "required": ["title"], "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 200}, "priority": {"type": "string", "enum": ["low", "normal", "urgent"]}}, "additionalProperties": false}).to_string(),
                output_schema: None,
                effect: Effect::Write,
                risk: Risk::Medium,
                required_scopes: vec!["ticket.write".into()],
                requires_confirmation: true,
                http_path: None,
                idempotent: false,
            },
        ])
    }

    fn plan(_ctx: CallContext, tool: String, payload_text: String) -> Result<Impact, Error> {
        let p = payload(&payload_text)?;
        match tool.as_str() {
            "ticket.create" => {
                let open = call("GET", "/tickets?status=open", None)?;
                let count = open["items"].as_array().map_or(0, Vec::len);
                Ok(Impact {
                    summary: "Open 1 support ticket".into(),
                    detail: json!({"ticket": {"title": p["title"], "priority": p.get("priority").cloned().unwrap_or(json!("normal"))}, "open_tickets": count}).to_string(),
                })
            }
            other => Err(Error::InvalidInput(format!("`{other}` has no plan"))),
        }
    }

    fn invoke(_ctx: CallContext, tool: String, payload_text: String) -> Result<ToolResult, Error> {
        let p = payload(&payload_text)?;
        let data = match tool.as_str() {
            "ticket.list" => {
                let status = p["status"].as_str().unwrap_or("open");
                call("GET", &format!("/tickets?status={status}"), None)?
            }
            "ticket.create" => call("POST", "/tickets", Some(&p))?,
            other => return Err(Error::UnknownTool(other.into())),
        };
        Ok(ToolResult {
            structured: Some(data.to_string()),
            content: Vec::new(),
        })
    }
}

export!(Tickets);
