//! Agent memory: one capped text per (namespace, project, agent type), kept across runs.
//!
//! The cap holds on the server: `write` cuts in the client before one `SET` (keeping the head),
//! `append` runs a Lua script that concatenates and drops the oldest bytes (keeping the newest),
//! so concurrent appenders never lose each other's text. Cuts land on UTF-8 character
//! boundaries, so the stored value is always valid UTF-8 and never over the cap.

use serde::{Deserialize, Serialize};

use super::conn::{Conn, retrying};
use super::error::BusError;
use super::keys;
use super::scripts::MEMORY_APPEND;

/// Most bytes one agent type's memory may hold.
pub const MEMORY_CAP_BYTES: usize = 102_400;

/// Whose memory: an agent type within a project of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemoryKey {
    pub namespace: String,
    pub project: String,
    pub agent: String,
}

impl MemoryKey {
    pub fn new(namespace: impl Into<String>, project: impl Into<String>, agent: impl Into<String>) -> Self {
        MemoryKey { namespace: namespace.into(), project: project.into(), agent: agent.into() }
    }

    fn redis_key(&self) -> String {
        keys::memory(&self.namespace, &self.project, &self.agent)
    }
}

/// What a write or append stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Bytes now stored.
    pub stored_bytes: usize,
    /// Whether text was cut to fit the cap (the tail of a write, the oldest text on append).
    pub truncated: bool,
}

/// Reads and writes agent memory; cheap to clone (shares the bus connection).
#[derive(Clone)]
pub struct Memory {
    conn: Conn,
}

impl Memory {
    pub(crate) fn new(conn: Conn) -> Self {
        Memory { conn }
    }

    /// The stored memory, or `None` when there is none yet (a fresh start).
    pub async fn read(&self, key: &MemoryKey) -> Result<Option<String>, BusError> {
        let redis_key = key.redis_key();
        let raw: Option<Vec<u8>> = retrying(|| {
            let (mut conn, cmd) = (self.conn.clone(), redis::cmd("GET").arg(&redis_key).to_owned());
            async move { Ok(cmd.query_async(&mut conn).await?) }
        })
        .await?;
        Ok(raw.filter(|bytes| !bytes.is_empty()).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Replaces the memory with `text`, keeping its head when it is over the cap.
    pub async fn write(&self, key: &MemoryKey, text: &str) -> Result<WriteOutcome, BusError> {
        let kept = keep_head(text, MEMORY_CAP_BYTES);
        let redis_key = key.redis_key();
        retrying(|| {
            let (mut conn, cmd) = (self.conn.clone(), redis::cmd("SET").arg(&redis_key).arg(kept).to_owned());
            async move { Ok(cmd.query_async::<()>(&mut conn).await?) }
        })
        .await?;
        Ok(WriteOutcome { stored_bytes: kept.len(), truncated: kept.len() < text.len() })
    }

    /// Adds `text` at the end; when the result is over the cap the oldest text is dropped.
    /// Not retried after a dropped connection: the script may have run, and a second run would
    /// append twice. The caller sees [`BusError::Unavailable`] and decides.
    pub async fn append(&self, key: &MemoryKey, text: &str) -> Result<WriteOutcome, BusError> {
        let (stored_bytes, dropped): (usize, u8) =
            MEMORY_APPEND.key(key.redis_key()).arg(text).arg(MEMORY_CAP_BYTES).invoke_async(&mut self.conn.clone()).await?;
        Ok(WriteOutcome { stored_bytes, truncated: dropped == 1 })
    }
}

/// The longest prefix of `text` that fits in `cap` bytes and ends on a character boundary.
pub fn keep_head(text: &str, cap: usize) -> &str {
    if text.len() <= cap {
        return text;
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The longest suffix of `text` that fits in `cap` bytes and starts on a character boundary;
/// the same cut the append script makes on the server.
pub fn keep_tail(text: &str, cap: usize) -> &str {
    if text.len() <= cap {
        return text;
    }
    let mut start = text.len() - cap;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The block at the top of a member's prompt when its agent type has `memory: local`.
pub fn prompt_block(memory: Option<&str>) -> String {
    let header = "## Your memory\n";
    let usage = format!(
        "Keep it current with the agent_memory tool (read | write | append); it holds at most \
         {MEMORY_CAP_BYTES} bytes and append drops the oldest text when full."
    );
    match memory.filter(|m| !m.trim().is_empty()) {
        None => format!("{header}This is a fresh start: you have no memory from earlier runs yet.\n{usage}\n"),
        Some(text) => format!("{header}What you saved in earlier runs, oldest first:\n\n<memory>\n{text}\n</memory>\n\n{usage}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_cut_keeps_whole_characters() {
        assert_eq!(keep_head("héllo", 2), "h");
        assert_eq!(keep_head("héllo", 3), "hé");
        assert_eq!(keep_head("abc", 10), "abc");
        assert_eq!(keep_head("😀😀", 7), "😀");
        assert_eq!(keep_head("😀", 3), "");
    }

    #[test]
    fn tail_cut_keeps_whole_characters() {
        assert_eq!(keep_tail("héllo", 4), "llo");
        assert_eq!(keep_tail("hé", 2), "é");
        assert_eq!(keep_tail("😀😀", 7), "😀");
        assert_eq!(keep_tail("😀", 3), "");
        assert_eq!(keep_tail("abc", 3), "abc");
    }

    #[test]
    fn prompt_block_says_fresh_start_when_empty() {
        for empty in [None, Some(""), Some("  \n")] {
            let block = prompt_block(empty);
            assert!(block.contains("fresh start"), "{block}");
            assert!(!block.contains("<memory>"));
        }
    }

    #[test]
    fn prompt_block_carries_the_memory() {
        let block = prompt_block(Some("use cargo nextest"));
        assert!(block.contains("<memory>\nuse cargo nextest\n</memory>"), "{block}");
        assert!(!block.contains("fresh start"));
    }
}
