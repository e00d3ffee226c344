//! A tiny support desk on loopback: the example application the `tickets` adapter fronts
//! over HTTP. It exists for the demo and the tests; a real deployment points the adapter's
//! `base_url` at its own desk.
//!
//! Like any real backend it can be slow or down, and the demo lets a caller make it so, to
//! show (and let the conformance profiles check) what the gateway does then: a ticket whose
//! title contains `[desk:slow]` takes 1.5 s to create, `[desk:stall]` is created at once but
//! answered after 5 s (longer than the adapter's 3 s budget), and `[desk:down]` gets a `503`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Starts the desk on `127.0.0.1` (port 0: any free port) in a background thread.
pub fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let tickets = Arc::new(Mutex::new(vec![
        json!({"id": "T-1", "title": "Printer on fire", "priority": "urgent", "status": "open"}),
        json!({"id": "T-2", "title": "Reset my password", "priority": "normal", "status": "closed"}),
    ]));
    std::thread::Builder::new().name("demo-desk".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            // A connection per thread: one slow request must not hold up the others.
            let tickets = tickets.clone();
            let _ = std::thread::Builder::new()
                .name("demo-desk-conn".into())
                .spawn(move || serve(stream, &tickets));
        }
    })?;
    Ok(addr)
}

fn serve(mut stream: std::net::TcpStream, tickets: &Mutex<Vec<Value>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0).min(64 * 1024);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let fault = Fault::of(&body);
    if fault == Some(Fault::Slow) {
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let mut tickets = tickets
        .lock()
        .map_err(|_| std::io::Error::other("desk state poisoned"))?;
    let (status, reply) = match (method, path) {
        ("POST", "/tickets") if fault == Some(Fault::Down) => {
            ("503 Service Unavailable", json!({"error": "the desk is down"}))
        }
        ("GET", "/tickets") => {
            let wanted = query.strip_prefix("status=").unwrap_or("open");
            let items: Vec<Value> = tickets.iter().filter(|t| t["status"] == wanted).cloned().collect();
            ("200 OK", json!({"items": items}))
        }
        ("POST", "/tickets") => match serde_json::from_slice::<Value>(&body) {
            Ok(sent) if sent["title"].is_string() => {
                let ticket = json!({
                    "id": format!("T-{}", tickets.len() + 1),
                    "title": sent["title"],
                    "priority": sent.get("priority").cloned().unwrap_or(json!("normal")),
                    "status": "open",
                });
                tickets.push(ticket.clone());
                ("201 Created", json!({"ticket": ticket}))
            }
            _ => ("400 Bad Request", json!({"error": "a ticket needs a title"})),
        },
        _ => ("404 Not Found", json!({"error": "no such route"})),
    };
    drop(tickets);
    // A stalled desk has done the work and answers past the adapter's budget: its ticket
    // exists from the start, not seconds after the caller gave up (when it would change
    // what another request's plan counts).
    if fault == Some(Fault::Stall) {
        std::thread::sleep(std::time::Duration::from_secs(5));
    }
    let text = reply.to_string();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// A fault a caller asked for in a new ticket's title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Slow,
    Stall,
    Down,
}

impl Fault {
    fn of(body: &[u8]) -> Option<Fault> {
        let title = serde_json::from_slice::<Value>(body).ok()?["title"]
            .as_str()?
            .to_string();
        [
            ("[desk:slow]", Fault::Slow),
            ("[desk:stall]", Fault::Stall),
            ("[desk:down]", Fault::Down),
        ]
        .into_iter()
        .find(|(marker, _)| title.contains(marker))
        .map(|(_, fault)| fault)
    }
}
