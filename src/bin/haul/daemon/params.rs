//! The shapes of a call: aria2's error object, the JSON-RPC envelope around a result, and the
//! parameters as front-ends send them (a GID as 16 hex digits, lists of strings, an options
//! object, integers given as numbers or numeric strings).

use serde_json::{Value, json};

use super::entry::Gid;
use super::options::{self, Options};

/// A failed call, as aria2 answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
}

impl RpcError {
    /// A call that could not be done (aria2's code 1).
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// Parameters of the wrong shape (aria2 answers these with code 1 too).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(message)
    }

    pub(crate) fn parse_error() -> Self {
        Self {
            code: -32700,
            message: "Parse error.".into(),
        }
    }

    pub(crate) fn invalid_request() -> Self {
        Self {
            code: -32600,
            message: "Invalid Request.".into(),
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new("Unauthorized")
    }

    pub(crate) fn to_value(&self) -> Value {
        json!({"code": self.code, "message": self.message})
    }
}

pub(super) fn envelope(id: &Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => json!({"id": id, "jsonrpc": "2.0", "result": result}),
        Err(error) => json!({"id": id, "jsonrpc": "2.0", "error": error.to_value()}),
    }
}

pub(super) fn gid_value(gid: Gid) -> Value {
    Value::String(gid.to_string())
}

pub(super) fn gid_param(params: &[Value], index: usize) -> Result<Gid, RpcError> {
    match params.get(index) {
        Some(Value::String(text)) => Gid::parse(text),
        _ => Err(RpcError::invalid(
            "a GID (a string of 16 hex digits) is required",
        )),
    }
}

pub(super) fn string_list(value: Option<&Value>, what: &str) -> Result<Vec<String>, RpcError> {
    let Some(Value::Array(items)) = value else {
        return Err(RpcError::invalid(format!(
            "{what} must be an array of strings"
        )));
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| RpcError::invalid(format!("{what} must be an array of strings")))
        })
        .collect()
}

pub(super) fn options_param(value: Option<&Value>) -> Result<Options, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(Options::new()),
        Some(value) => options::parse(value),
    }
}

pub(super) fn keys_param(value: Option<&Value>) -> Result<Option<Vec<String>>, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => string_list(Some(value), "keys").map(Some),
    }
}

/// An integer given as a JSON number or a numeric string.
pub(super) fn integer(value: Option<&Value>, what: &str) -> Result<i64, RpcError> {
    let number = match value {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(text)) => text.trim().parse().ok(),
        _ => None,
    };
    number.ok_or_else(|| RpcError::invalid(format!("{what} must be an integer")))
}

pub(super) fn position_param(value: Option<&Value>) -> Result<Option<usize>, RpcError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        value => {
            let position = integer(value, "position")?;
            usize::try_from(position)
                .map(Some)
                .map_err(|_| RpcError::invalid("position must not be negative"))
        }
    }
}
