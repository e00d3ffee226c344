//! The tools the official MCP conformance suite (`@modelcontextprotocol/conformance`) calls
//! in its tools-server scenarios, as an ordinary adapter: the suite then exercises the
//! gateway's real MCP path (authentication, admission, Cedar, the plugin sandbox, audit).
//! The names and results are the suite's, not OpenPort's `domain.verb` convention.

wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::types::{Content, Effect, EmbeddedResource, Media, Risk};
use serde_json::{Value, json};

/// The scope the suite's tools require; grant it only to a local test integration.
const SCOPE: &str = "conformance.read";

/// A 1x1 red PNG.
const RED_PIXEL_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49,
    0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xfc, 0xcf, 0xc0, 0xf0, 0x1f, 0x00, 0x05, 0x05, 0x02, 0x00, 0x5f, 0xc8, 0xf1,
    0xd2, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The suite's tools: name, description, input schema.
fn tools() -> Vec<(&'static str, &'static str, Value)> {
    let no_arguments = json!({"type": "object", "properties": {}, "additionalProperties": false});
    vec![
        (
            "test_simple_text",
            "Returns a simple text response.",
            no_arguments.clone(),
        ),
        ("test_image_content", "Returns a 1x1 PNG image.", no_arguments.clone()),
        ("test_audio_content", "Returns a short WAV clip.", no_arguments.clone()),
        (
            "test_embedded_resource",
            "Returns an embedded text resource.",
            no_arguments.clone(),
        ),
        (
            "test_multiple_content_types",
            "Returns text, an image and an embedded resource.",
            no_arguments.clone(),
        ),
        (
            "test_error_handling",
            "Always fails, to test error reporting.",
            no_arguments,
        ),
        (
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {
                    "address": {
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                    }
                },
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false
            }),
        ),
    ]
}

/// A mono 8 kHz 16-bit WAV holding 10 ms of silence.
fn silent_wav() -> Vec<u8> {
    let samples: u32 = 80;
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16_u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1_u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000_u32.to_le_bytes()); // sample rate
    wav.extend_from_slice(&16000_u32.to_le_bytes()); // byte rate
    wav.extend_from_slice(&2_u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16_u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(44 + data_len as usize, 0);
    wav
}

fn png() -> Content {
    Content::Image(Media {
        mime_type: "image/png".into(),
        data: RED_PIXEL_PNG.to_vec(),
    })
}

fn text_only(content: Vec<Content>) -> ToolResult {
    ToolResult {
        structured: None,
        content,
    }
}

struct Conformance;

impl Guest for Conformance {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(tools()
            .into_iter()
            .map(|(name, description, schema)| ToolDescriptor {
                name: name.into(),
                description: description.into(),
                input_schema: schema.to_string(),
                output_schema: None,
                effect: Effect::Read,
                risk: Risk::Low,
                required_scopes: vec![SCOPE.into()],
                requires_confirmation: false,
                http_path: None,
                idempotent: true,
            })
            .collect())
    }

    fn plan(_ctx: CallContext, tool: String, _payload: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput(format!("`{tool}` is a read and has no plan")))
    }

    fn invoke(_ctx: CallContext, tool: String, payload: String) -> Result<ToolResult, Error> {
        Ok(match tool.as_str() {
            "test_simple_text" => text_only(vec![Content::Text(
                "This is a simple text response for testing.".into(),
            )]),
            "test_image_content" => text_only(vec![png()]),
            "test_audio_content" => text_only(vec![Content::Audio(Media {
                mime_type: "audio/wav".into(),
                data: silent_wav(),
            })]),
            "test_embedded_resource" => text_only(vec![Content::Embedded(EmbeddedResource {
                uri: "test://embedded-resource".into(),
                mime_type: Some("text/plain".into()),
                text: Some("This is an embedded resource content.".into()),
                blob: None,
            })]),
            "test_multiple_content_types" => text_only(vec![
                Content::Text("Multiple content types test:".into()),
                png(),
                Content::Embedded(EmbeddedResource {
                    uri: "test://mixed-content-resource".into(),
                    mime_type: Some("application/json".into()),
                    text: Some(json!({"test": "data", "value": 123}).to_string()),
                    blob: None,
                }),
            ]),
            // A tool failure: the gateway reports `agent.execution_failed` and logs the text.
            "test_error_handling" => {
                return Err(Error::Internal(
                    "This tool intentionally returns an error for testing".into(),
                ));
            }
            "json_schema_2020_12_tool" => ToolResult {
                structured: Some(
                    json!({"received": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null)}).to_string(),
                ),
                content: vec![Content::Text(format!("Received: {payload}"))],
            },
            _ => return Err(Error::UnknownTool(tool)),
        })
    }
}

export!(Conformance);
