//! Object ids: a type prefix and a ULID (`app_01J...`), so an id says what it names.

/// The prefixes of SPEC section 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    App,
    Key,
    Draft,
    Execution,
    Preflight,
    Audit,
    Request,
    AdminToken,
    /// An MCP session (`Mcp-Session-Id`).
    McpSession,
    /// A step-up grant.
    StepUp,
    /// A read running in the background (MCP Tasks).
    Task,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Key => "key",
            Kind::Draft => "drf",
            Kind::Execution => "exe",
            Kind::Preflight => "pfl",
            Kind::Audit => "aud",
            Kind::Request => "req",
            Kind::AdminToken => "adm",
            Kind::McpSession => "mcs",
            Kind::StepUp => "stp",
            Kind::Task => "tsk",
        }
    }
}

/// A fresh id of the given kind.
pub fn new_id(kind: Kind) -> String {
    let mut buffer = [0_u8; ulid::ULID_LEN];
    let ulid = ulid::Ulid::new();
    let text = ulid.array_to_str(&mut buffer);
    let mut id = String::with_capacity(kind.prefix().len() + 1 + ulid::ULID_LEN);
    id.push_str(kind.prefix());
    id.push('_');
    id.extend(text.chars().map(|c| c.to_ascii_lowercase()));
    id
}

/// Whether `id` is well formed for `kind`: the prefix, then 26 base32 characters.
pub fn is_well_formed(kind: Kind, id: &str) -> bool {
    id.strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|ulid| ulid.len() == 26 && ulid.bytes().all(|b| b.is_ascii_alphanumeric()))
}
