//! The tools the official MCP conformance suite (`@modelcontextprotocol/conformance`) calls
//! in its tools-server scenarios, as an ordinary adapter: the suite then exercises the
//! gateway's real MCP path (authentication, admission, Cedar, the plugin sandbox, audit).
//! The names and results are the suite's, not OpenPort's `domain.verb` convention.

wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::host;
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
            no_arguments.clone(),
        ),
        (
            "test_region_header",
            "Echoes a region that also travels in the Mcp-Param-Region header.",
            json!({
                "type": "object",
                "properties": {"region": {"type": "string", "x-mcp-header": "Region"}},
                "required": ["region"],
                "additionalProperties": false
            }),
        ),
        (
            "test_tool_with_progress",
            "Reports progress 0, 50 and 100 of 100, then answers.",
            no_arguments.clone(),
        ),
        (
            "test_logging_tool",
            "Writes to the operator's log (never to the client), then answers.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_elicitation",
            "Asks the client for a name, then greets it.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_request_state",
            "Asks for a confirmation, carrying state to the next round.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_multiple_inputs",
            "Asks for a name, a sampled greeting and the client's roots at once.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_multi_round",
            "Asks for a name, then a colour, in two rounds.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_tampered_state",
            "Asks for a confirmation; the state it carries is sealed by the gateway.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_capabilities",
            "Asks only for what the client declared it can answer.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_sampling",
            "Asks the client's model a question, then repeats its answer.",
            no_arguments.clone(),
        ),
        (
            "test_input_required_result_list_roots",
            "Asks for the client's roots, then counts them.",
            no_arguments.clone(),
        ),
        (
            "test_streaming_elicitation",
            "Asks the client for a name.",
            no_arguments.clone(),
        ),
        (
            "test_missing_capability",
            "Needs sampling, whether or not the client declared it.",
            no_arguments.clone(),
        ),
        (
            "greet",
            "Greets someone by name, at once (never a task).",
            json!({
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": false
            }),
        ),
        (
            "slow_compute",
            "Works for `seconds` seconds, as a task for a client that takes tasks.",
            json!({
                "type": "object",
                "properties": {
                    "seconds": {"type": "integer", "minimum": 0, "maximum": 600},
                    "label": {"type": "string"}
                },
                "required": ["seconds"],
                "additionalProperties": false
            }),
        ),
        (
            "failing_job",
            "Runs as a task and reports an error after about a second.",
            no_arguments.clone(),
        ),
        (
            "protocol_error_job",
            "Runs as a task and crashes (a trap), which fails the task.",
            no_arguments.clone(),
        ),
        (
            "confirm_delete",
            "Runs as a task that asks the client to confirm before it answers.",
            json!({
                "type": "object",
                "properties": {"filename": {"type": "string"}},
                "required": ["filename"],
                "additionalProperties": false
            }),
        ),
        (
            "multi_input",
            "Runs as a task that asks the client two questions at once.",
            no_arguments.clone(),
        ),
        (
            "test_tool_with_task",
            "Asks for a name inline, then greets it from a task.",
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
                        "$anchor": "addressDef",
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}}
                    }
                },
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"}
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
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

/// The answers the client gave this round, if it is not the first.
fn responses() -> Option<Value> {
    host::input_responses().and_then(|text| serde_json::from_str(&text).ok())
}

/// The accepted content of the answer named `key`, if the client accepted.
fn accepted<'a>(responses: &'a Value, key: &str) -> Option<&'a Value> {
    let answer = responses.get(key)?;
    (answer["action"] == "accept").then(|| &answer["content"])
}

/// Ends the call with input requests; the gateway answers `input_required`.
fn ask(requests: Value, state: Option<&str>) -> Result<ToolResult, Error> {
    host::require_input(&requests.to_string(), state)?;
    Ok(text_only(Vec::new()))
}

fn elicitation(message: &str, field: &str, kind: &str) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {field: {"type": kind}},
                "required": [field]
            }
        }
    })
}

fn sampling(text: &str) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {"messages": [{"role": "user", "content": {"type": "text", "text": text}}], "maxTokens": 50}
    })
}

fn say(text: String) -> Result<ToolResult, Error> {
    Ok(text_only(vec![Content::Text(text)]))
}

/// Asks for a name until the answers hold one: extra answers are ignored, a missing one is
/// asked again, and a malformed one is invalid input.
fn ask_name(tool: &str) -> Result<ToolResult, Error> {
    let Some(responses) = responses() else {
        return ask(
            json!({"user_name": elicitation("What is your name?", "name", "string")}),
            None,
        );
    };
    if responses.get("user_name").is_none() {
        return ask(
            json!({"user_name": elicitation("What is your name?", "name", "string")}),
            None,
        );
    }
    match accepted(&responses, "user_name").and_then(|c| c["name"].as_str()) {
        Some(name) => say(format!("Hello, {name}!")),
        None if responses["user_name"].is_object() => say(format!("{tool}: the client declined to give a name.")),
        None => Err(Error::InvalidInput("`user_name` must be an elicitation result".into())),
    }
}

/// Carries state across one round; the gateway seals it.
fn confirm() -> Result<ToolResult, Error> {
    match (responses(), host::input_state()) {
        (Some(responses), Some(state)) if state == "awaiting-confirmation" => {
            let ok = accepted(&responses, "confirm").and_then(|c| c["ok"].as_bool());
            say(format!("state-ok: confirmed={}", ok.unwrap_or(false)))
        }
        _ => ask(
            json!({"confirm": elicitation("Please confirm", "ok", "boolean")}),
            Some("awaiting-confirmation"),
        ),
    }
}

fn multiple_inputs() -> Result<ToolResult, Error> {
    match (responses(), host::input_state()) {
        (Some(responses), Some(_)) => {
            let name = accepted(&responses, "user_name")
                .and_then(|c| c["name"].as_str())
                .unwrap_or("?");
            let roots = responses["client_roots"]["roots"].as_array().map_or(0, Vec::len);
            say(format!("Hello, {name}! The client shares {roots} root(s)."))
        }
        _ => ask(
            json!({
                "user_name": elicitation("What is your name?", "name", "string"),
                "greeting": sampling("Generate a greeting"),
                "client_roots": {"method": "roots/list", "params": {}}
            }),
            Some("awaiting-all-three"),
        ),
    }
}

fn multi_round() -> Result<ToolResult, Error> {
    let responses = responses();
    match (host::input_state().as_deref(), responses) {
        (Some("step-1"), Some(responses)) => {
            let name = accepted(&responses, "step1")
                .and_then(|c| c["name"].as_str())
                .unwrap_or("?");
            ask(
                json!({"step2": elicitation("Step 2: What is your favorite color?", "color", "string")}),
                Some(&format!("step-2:{name}")),
            )
        }
        (Some(state), Some(responses)) if state.starts_with("step-2:") => {
            let color = accepted(&responses, "step2")
                .and_then(|c| c["color"].as_str())
                .unwrap_or("?");
            say(format!("{} likes {color}.", &state["step-2:".len()..]))
        }
        _ => ask(
            json!({"step1": elicitation("Step 1: What is your name?", "name", "string")}),
            Some("step-1"),
        ),
    }
}

/// Asks only for what the client can answer: elicitation if declared, else sampling.
fn within_capabilities() -> Result<ToolResult, Error> {
    let declared: Value = host::client_capabilities()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    if let Some(responses) = responses() {
        return say(format!("Answered: {}", responses.as_object().map_or(0, |o| o.len())));
    }
    if declared.get("elicitation").is_some() {
        ask(
            json!({"user_name": elicitation("What is your name?", "name", "string")}),
            None,
        )
    } else {
        ask(json!({"capital": sampling("What is the capital of France?")}), None)
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
            "test_tool_with_progress" => {
                for done in [0.0, 50.0, 100.0] {
                    host::progress(done, Some(100.0), None);
                }
                text_only(vec![Content::Text("Progress reported: 0, 50, 100 of 100.".into())])
            }
            "test_region_header" => {
                let args: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                say(format!("Region: {}", args["region"].as_str().unwrap_or("?")))?
            }
            "test_logging_tool" => {
                host::log(host::Level::Info, "test_logging_tool was called");
                text_only(vec![Content::Text("Logged to the operator's log.".into())])
            }
            "test_input_required_result_elicitation" | "test_streaming_elicitation" => {
                return ask_name(&tool);
            }
            "test_input_required_result_request_state" | "test_input_required_result_tampered_state" => {
                return confirm();
            }
            "test_input_required_result_multiple_inputs" => return multiple_inputs(),
            "test_input_required_result_multi_round" => return multi_round(),
            "test_input_required_result_capabilities" => return within_capabilities(),
            "test_input_required_result_sampling" => {
                return match responses() {
                    Some(responses) => {
                        let answer = responses["capital_question"]["content"]["text"].as_str().unwrap_or("?");
                        say(format!("The model said: {answer}"))
                    }
                    None => ask(
                        json!({"capital_question": sampling("What is the capital of France?")}),
                        None,
                    ),
                };
            }
            "test_input_required_result_list_roots" => {
                return match responses() {
                    Some(responses) => {
                        let roots = responses["client_roots"]["roots"].as_array().map_or(0, Vec::len);
                        say(format!("The client shares {roots} root(s)."))
                    }
                    None => ask(json!({"client_roots": {"method": "roots/list", "params": {}}}), None),
                };
            }
            "test_missing_capability" => {
                return ask(json!({"question": sampling("Say hello")}), None);
            }
            "greet" => {
                let args: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                say(format!("Hello, {}!", args["name"].as_str().unwrap_or("?")))?
            }
            "slow_compute" => {
                let args: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                let seconds = args["seconds"].as_u64().unwrap_or(0).min(600);
                let label = args["label"].as_str().unwrap_or("job");
                if seconds > 0 {
                    host::run_as_task();
                    std::thread::sleep(std::time::Duration::from_secs(seconds));
                }
                say(format!("Computed {label} in {seconds} s."))?
            }
            "failing_job" => {
                host::run_as_task();
                std::thread::sleep(std::time::Duration::from_secs(1));
                return Err(Error::Conflict("failing_job always fails".into()));
            }
            "protocol_error_job" => {
                host::run_as_task();
                panic!("protocol_error_job crashes on purpose");
            }
            "confirm_delete" => {
                host::run_as_task();
                let args: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                let file = args["filename"].as_str().unwrap_or("?");
                return match responses() {
                    Some(responses) if accepted(&responses, "confirm").is_some_and(|c| c["confirm"] == true) => {
                        say(format!("Deleted {file}."))
                    }
                    Some(_) => say(format!("Kept {file}: not confirmed.")),
                    None => ask(
                        json!({"confirm": elicitation(&format!("Delete {file}?"), "confirm", "boolean")}),
                        None,
                    ),
                };
            }
            "multi_input" => {
                host::run_as_task();
                return match responses() {
                    Some(responses) => {
                        let name = accepted(&responses, "name")
                            .and_then(|c| c["name"].as_str())
                            .unwrap_or("?");
                        let sure = accepted(&responses, "confirm").is_some_and(|c| c["confirm"] == true);
                        say(format!("{name} answered; confirmed: {sure}."))
                    }
                    None => ask(
                        json!({
                            "name": elicitation("What is your name?", "name", "string"),
                            "confirm": elicitation("Are you sure?", "confirm", "boolean")
                        }),
                        None,
                    ),
                };
            }
            "test_tool_with_task" => {
                let Some(responses) = responses() else {
                    return ask(
                        json!({"user_name": elicitation("What is your name?", "name", "string")}),
                        None,
                    );
                };
                host::run_as_task();
                let name = accepted(&responses, "user_name")
                    .and_then(|c| c["name"].as_str())
                    .unwrap_or("?");
                say(format!("Hello, {name}! (from a task)"))?
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
