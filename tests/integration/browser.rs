//! The reviewer page in a real headless browser (Debian `chromium`), driven over the Chrome
//! DevTools Protocol: the test types into the page and clicks its buttons as a reviewer
//! would. Without chromium the test says so and passes, unless `OPENPORT_REQUIRE_BROWSER`
//! is set (CI sets it, so there it must run).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::TestGateway;

/// A headless chromium with its DevTools endpoint.
struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch() -> Option<Browser> {
        let binary = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })?;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // Chromium prints `DevTools listening on ws://127.0.0.1:PORT/...` when ready.
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromium exited before DevTools listened")
                .expect("line");
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().expect("port").parse().expect("port number");
            }
        };
        // Keep draining stderr so chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(Browser {
            child,
            port,
            _profile: profile,
        })
    }

    /// The first page target, over its own DevTools connection.
    fn page(&self) -> Page {
        let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let targets: Value = client
            .get(&format!("http://127.0.0.1:{}/json/list", self.port))
            .call()
            .expect("targets")
            .body_mut()
            .read_json()
            .expect("json");
        let url = targets
            .as_array()
            .expect("targets")
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        Page::connect(&url)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One page, driven over a minimal WebSocket client (RFC 6455 text frames).
struct Page {
    stream: TcpStream,
    next_id: u64,
}

impl Page {
    fn connect(ws_url: &str) -> Page {
        let rest = ws_url.strip_prefix("ws://").expect("ws URL");
        let (authority, path) = rest.split_at(rest.find('/').expect("path"));
        let mut stream = TcpStream::connect(authority).expect("connect to DevTools");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: b3BlbnBvcnQtdGVzdHMtY2Rw\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .expect("handshake");
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).expect("handshake answer");
            head.push(byte[0]);
        }
        assert!(
            String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
            "no WebSocket upgrade: {}",
            String::from_utf8_lossy(&head)
        );
        Page { stream, next_id: 1 }
    }

    fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81_u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | u8::try_from(n).expect("small")),
            n if n < 65_536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&u16::try_from(n).expect("medium").to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a_u8, 0x17, 0xc3, 0x8e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).expect("send frame");
    }

    fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0_u8; 2];
            self.stream.read_exact(&mut head).expect("frame head");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0_u8; 2];
                    self.stream.read_exact(&mut b).expect("len");
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0_u8; 8];
                    self.stream.read_exact(&mut b).expect("len");
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut payload = vec![0_u8; usize::try_from(len).expect("length")];
            self.stream.read_exact(&mut payload).expect("payload");
            match opcode {
                0x0 | 0x1 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("utf-8");
                    }
                }
                0x8 => panic!("DevTools closed the connection"),
                _ => {} // ping, pong: nothing to do for a short test
            }
        }
    }

    /// One DevTools command; events in between are skipped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|message| panic!("{method}: {message}"))
    }

    /// One DevTools command: its result, or the whole reply when DevTools answered an error.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send_text(&json!({"id": id, "method": method, "params": params}).to_string());
        loop {
            let message: Value = serde_json::from_str(&self.read_message()).expect("json");
            if message["id"] == id {
                return match message.get("error") {
                    None => Ok(message["result"].clone()),
                    Some(_) => Err(message),
                };
            }
        }
    }

    fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .try_eval(expression)
            .unwrap_or_else(|reply| panic!("Runtime.evaluate: {reply}"));
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {result}");
        result["result"]["value"].clone()
    }

    /// `Runtime.evaluate` of an expression: DevTools' result, or its error reply.
    fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        self.try_call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )
    }

    fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            "the page to load",
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        );
    }

    /// Polls a JavaScript condition until it is true.
    fn wait_for(&mut self, what: &str, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let expression = format!("(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()");
        loop {
            // A form post navigates the page; an evaluation that the navigation interrupts
            // ("Inspected target navigated or closed") is only "not yet", so poll again.
            match self.try_eval(&expression) {
                Ok(result) if result["result"]["value"] == json!(true) => return,
                Ok(_) => {}
                Err(reply) if is_interrupted_by_navigation(&reply) => {}
                Err(reply) => panic!("Runtime.evaluate while waiting for {what}: {reply}"),
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Types a credential into the sign-in form and submits it, as a person would.
    fn sign_in(&mut self, token: &str) {
        self.eval(&format!(
            "document.querySelector('input[name=token]').value = {}; \
             document.querySelector('#sign-in button').click(); true",
            json!(token)
        ));
    }
}

/// DevTools' answer to an evaluation that a navigation cut short: the page it ran in went
/// away (or its execution context did) before the result came back.
fn is_interrupted_by_navigation(reply: &Value) -> bool {
    let message = reply["error"]["message"].as_str().unwrap_or("");
    message.contains("Inspected target navigated or closed")
        || message.contains("Cannot find context with specified id")
        || message.contains("Execution context was destroyed")
}

fn draft(gw: &TestGateway, title: &str) -> String {
    let reply = gw.post(
        "/api/agent/v1/actions",
        Some(&gw.full()),
        &json!({"action": "transaction.create", "payload": {"ledgerId": "ledger_main", "kind": "expense", "title": title, "amount_home": 7}, "justification": "team offsite"}),
    );
    reply.expect(200, "common.success");
    reply.data()["draft"]["id"].as_str().expect("draft").to_string()
}

#[test]
fn a_reviewer_signs_in_and_decides_drafts_in_a_real_browser() {
    let Some(browser) = Browser::launch() else {
        assert!(
            std::env::var_os("OPENPORT_REQUIRE_BROWSER").is_none(),
            "OPENPORT_REQUIRE_BROWSER is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium installed (apt-get install chromium)");
        return;
    };
    let gw = TestGateway::start();
    let approve = draft(&gw, "Offsite lunch");
    let reject = draft(&gw, "Offsite karaoke");
    let reviewer = gw.admin_token("reviewer");
    let mut page = browser.page();

    page.goto(&format!("{}/review", gw.admin));
    assert!(page.text().contains("Sign in to review"), "{}", page.text());

    // A wrong credential, and a credential of another role, do not get in.
    page.sign_in("opa_not_a_real_credential_at_all_AAAAAAAAAAAAA");
    page.wait_for("the refusal", "document.getElementById('error')");
    assert!(page.text().contains("was not accepted"));
    page.sign_in(&gw.admin_token("operator"));
    page.wait_for(
        "the role refusal",
        "document.getElementById('error') && document.body.innerText.includes('reviewer credential')",
    );

    // The reviewer gets in and sees both drafts with their impact.
    page.sign_in(&reviewer);
    page.wait_for(
        "the draft list",
        &format!("document.getElementById({})", json!(approve)),
    );
    let text = page.text();
    assert!(
        text.contains("Drafts waiting for review") && text.contains(&reject),
        "{text}"
    );
    assert!(
        text.contains("Impact (computed from live state)") && text.contains("Offsite lunch"),
        "{text}"
    );
    // The credential stays on the server: not in the page, not readable as a cookie.
    let html = page.eval("document.documentElement.outerHTML");
    assert!(!html.as_str().expect("html").contains(&reviewer));
    assert_eq!(page.eval("document.cookie"), json!(""));

    // Approve one: it executes, and the page says so.
    page.eval(&format!(
        "document.getElementById({}).querySelector('form[action$=\"/approve\"] button').click(); true",
        json!(approve)
    ));
    page.wait_for("the approval notice", "document.getElementById('notice')");
    let notice = page.eval("document.getElementById('notice').innerText");
    assert_eq!(notice, json!(format!("Approved {approve}: execution success")));
    let state = gw.admin_get(&format!("/api/agent-admin/v1/drafts/{approve}"), Some(&reviewer));
    assert_eq!(state.data()["draft"]["status"], "confirmed");
    assert_eq!(state.data()["execution"]["status"], "success");

    // Reject the other.
    page.eval(&format!(
        "document.getElementById({}).querySelector('form[action$=\"/reject\"] button').click(); true",
        json!(reject)
    ));
    page.wait_for(
        "the rejection notice",
        "document.getElementById('notice') && document.getElementById('notice').innerText.startsWith('Rejected')",
    );
    let state = gw.admin_get(&format!("/api/agent-admin/v1/drafts/{reject}"), Some(&reviewer));
    assert_eq!(state.data()["draft"]["status"], "canceled");
    page.wait_for("an empty list", "document.getElementById('empty')");

    // A form posted from elsewhere, with the session cookie but without the CSRF token,
    // is refused and changes nothing.
    let third = draft(&gw, "Offsite boat");
    let cookies = page.call("Network.getCookies", json!({"urls": [format!("{}/review", gw.admin)]}));
    let session = cookies["cookies"]
        .as_array()
        .expect("cookies")
        .iter()
        .find(|c| c["name"] == "openport_review")
        .expect("session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    let forged = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}/review/drafts/{third}/approve", gw.admin))
        .header(
            "Cookie",
            format!("openport_review={}", session["value"].as_str().expect("value")),
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(b"decision=approve".to_vec())
        .expect("request");
    let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let status = client.run(forged).expect("answered").status().as_u16();
    assert_eq!(status, 403);
    let state = gw.admin_get(&format!("/api/agent-admin/v1/drafts/{third}"), Some(&reviewer));
    assert_eq!(state.data()["draft"]["status"], "draft", "nothing happened");

    // Every page request and decision is in the audit trail, under the reviewer's name.
    let events = gw.audit();
    let decided: Vec<_> = events
        .iter()
        .filter(|e| e.details["surface"] == "review-page" && e.action == "admin.drafts.approve")
        .collect();
    assert!(
        decided
            .iter()
            .any(|e| e.code == "common.success" && e.draft_id.as_deref() == Some(approve.as_str()))
    );
    assert!(
        decided
            .iter()
            .any(|e| e.code == "admin.forbidden" && e.draft_id.as_deref() == Some(third.as_str()))
    );
    assert!(decided.iter().all(|e| e.performed_by_user_id.is_some()));

    // Signing out ends the session.
    page.eval("document.querySelector('form[action=\"/review/logout\"] button').click(); true");
    page.wait_for("the sign-in page", "document.getElementById('sign-in')");
}
