//! The result shapes of aria2's status methods. Every number is a JSON string, as aria2 sends
//! them (front-ends parse strings; a numeric `0` shows as a spinner in some). A status object
//! holds every key unless the call asked for some (`keys`).

use serde_json::{Map, Value, json};

use super::entry::{Entry, Status, Table};

/// aria2 shows one piece of 1 MiB granularity for HTTP downloads; haul does not track pieces
/// per download, so the bitfield says "all" or "none" at this size.
const PIECE_LENGTH: u64 = 1024 * 1024;

/// The status object of `entry`, with only `keys` when given.
pub(crate) fn status(entry: &Entry, keys: Option<&[String]>) -> Value {
    let mut object = Map::new();
    let mut put = |key: &str, value: Value| {
        if keys.is_none_or(|keys| keys.iter().any(|k| k == key)) {
            object.insert(key.to_owned(), value);
        }
    };
    let text = |n: u64| Value::String(n.to_string());
    let speed = if entry.status == Status::Active {
        entry.speed.bytes_per_second()
    } else {
        0
    };
    let pieces = entry.total.div_ceil(PIECE_LENGTH).max(1);
    put("gid", Value::String(entry.gid.to_string()));
    put("status", Value::String(entry.status.as_str().to_owned()));
    put("totalLength", text(entry.total));
    put("completedLength", text(entry.completed));
    put("uploadLength", text(0));
    put("downloadSpeed", text(speed));
    put("uploadSpeed", text(0));
    put(
        "connections",
        text(u64::from(entry.status == Status::Active)),
    );
    put("pieceLength", text(PIECE_LENGTH));
    put("numPieces", text(pieces));
    put("bitfield", Value::String(bitfield(entry, pieces)));
    put(
        "dir",
        Value::String(entry.dir.to_string_lossy().into_owned()),
    );
    put("files", files(entry));
    put("verifiedLength", text(0));
    put("verifyIntegrityPending", Value::String("false".into()));
    if let Some((code, message)) = &entry.error {
        put("errorCode", Value::String(code.to_string()));
        put("errorMessage", Value::String(message.clone()));
    } else if entry.status == Status::Complete {
        put("errorCode", Value::String("0".into()));
        put("errorMessage", Value::String(String::new()));
    }
    Value::Object(object)
}

/// Whole pieces done, highest bit first, as hex (what aria2's progress displays read).
fn bitfield(entry: &Entry, pieces: u64) -> String {
    let done = if entry.status == Status::Complete {
        pieces
    } else {
        entry.completed / PIECE_LENGTH
    };
    let mut bytes = vec![0u8; pieces.div_ceil(8) as usize];
    for piece in 0..done.min(pieces) {
        bytes[(piece / 8) as usize] |= 0x80 >> (piece % 8);
    }
    hex::encode(bytes)
}

/// `getFiles`: one file per download.
pub(crate) fn files(entry: &Entry) -> Value {
    json!([{
        "index": "1",
        "path": entry.path.to_string_lossy(),
        "length": entry.total.to_string(),
        "completedLength": entry.completed.to_string(),
        "selected": "true",
        "uris": uris(entry),
    }])
}

/// `getUris`: the first URI is the one in use, the others (mirrors) wait.
pub(crate) fn uris(entry: &Entry) -> Value {
    Value::Array(
        entry
            .uris
            .iter()
            .enumerate()
            .map(|(i, uri)| json!({"uri": uri, "status": if i == 0 { "used" } else { "waiting" }}))
            .collect(),
    )
}

/// `getServers`: the server of an active download (an empty list otherwise).
pub(crate) fn servers(entry: &Entry) -> Value {
    if entry.status != Status::Active {
        return json!([]);
    }
    let uri = entry.uris.first().cloned().unwrap_or_default();
    json!([{
        "index": "1",
        "servers": [{
            "uri": uri,
            "currentUri": uri,
            "downloadSpeed": entry.speed.bytes_per_second().to_string(),
        }],
    }])
}

/// `getGlobalStat`.
pub(crate) fn global(table: &Table) -> Value {
    let mut speed = 0;
    let mut active = 0u64;
    for entry in table.entries.values() {
        if entry.status == Status::Active {
            active += 1;
            speed += entry.speed.bytes_per_second();
        }
    }
    json!({
        "downloadSpeed": speed.to_string(),
        "uploadSpeed": "0",
        "numActive": active.to_string(),
        "numWaiting": table.waiting.len().to_string(),
        "numStopped": table.stopped.len().to_string(),
        "numStoppedTotal": table.stopped_total.to_string(),
    })
}

/// The entries `tellWaiting`/`tellStopped` return from `list`: `num` from `offset`, or, for a
/// negative offset, counted from the end and in reverse order (aria2's rule).
pub(crate) fn window<T: Copy>(list: &[T], offset: i64, num: i64) -> Vec<T> {
    let num = usize::try_from(num).unwrap_or(0);
    match usize::try_from(offset) {
        Ok(offset) => list.iter().skip(offset).take(num).copied().collect(),
        Err(_) => {
            // Counted from the end: -1 is the last; then backwards.
            let back = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
            let Some(start) = list.len().checked_sub(back) else {
                return Vec::new();
            };
            list[..=start].iter().rev().take(num).copied().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::window;

    #[test]
    fn windows_count_from_either_end() {
        let list = [0, 1, 2, 3, 4];
        assert_eq!(window(&list, 1, 2), vec![1, 2]);
        assert_eq!(window(&list, 3, 10), vec![3, 4]);
        assert_eq!(window(&list, -1, 2), vec![4, 3]);
        assert_eq!(window(&list, -5, 3), vec![0]);
        assert_eq!(window(&list, 9, 3), Vec::<i32>::new());
        assert_eq!(window(&list, -9, 3), Vec::<i32>::new());
    }
}
