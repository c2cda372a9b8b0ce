//! The Lua scripts of the bus, loaded once per process. `Script::invoke_async` sends EVALSHA and
//! reloads a script after a Redis restart has flushed the script cache.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!(concat!("scripts/", $file))));
    };
    // A script that starts with the shared `ack_entries` function.
    ($name:ident, acking $file:literal) => {
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!(include_str!("scripts/ack_entries.lua"), include_str!(concat!("scripts/", $file)))));
    };
}

script!(SYNC_ROSTER, "sync_roster.lua");
script!(UPDATE_ROSTER, "update_roster.lua");
script!(MARK_DISBANDED, "mark_disbanded.lua");
script!(TEARDOWN, "teardown.lua");
script!(SEND, "send.lua");
script!(WAIT_READY, acking "wait_ready.lua");
script!(ACK, acking "ack.lua");
script!(INBOX_COUNTS, "inbox_counts.lua");
script!(LAST_DELIVERED, "last_delivered.lua");
script!(MEMORY_APPEND, "memory_append.lua");
script!(PEEK, "peek.lua");
