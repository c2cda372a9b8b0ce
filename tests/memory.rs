//! Agent memory against a real redis-server (TEAM_OPERATOR_REDIS_URL, default
//! redis://127.0.0.1:16379). Every test uses its own random namespace.

use proptest::prelude::*;
use team_operator::bus::{Bus, MEMORY_CAP_BYTES, Memory, MemoryKey, WriteOutcome, keep_head, keep_tail};

mod support;

use support::bus_config as config;

async fn memory() -> Memory {
    Bus::connect(config()).await.expect("connect to redis").memory()
}

fn unique_key() -> MemoryKey {
    let id = uuid::Uuid::new_v4().simple().to_string();
    MemoryKey::new(format!("ns-{}", &id[..12]), "project", "coder")
}

/// The stored bytes as Redis has them, to check validity without the reader's lossy decoding.
async fn raw(key: &MemoryKey) -> Vec<u8> {
    let redis_key = format!("team-operator:memory:{{{}/{}}}:{}", key.namespace, key.project, key.agent);
    let mut get = redis::cmd("GET");
    get.arg(redis_key);
    let value: Option<Vec<u8>> = support::raw_redis(&get).await;
    value.unwrap_or_default()
}

#[tokio::test]
async fn an_empty_memory_reads_as_a_fresh_start() {
    let memory = memory().await;
    assert_eq!(memory.read(&unique_key()).await.expect("read"), None);
}

#[tokio::test]
async fn write_keeps_the_head_and_says_it_truncated() {
    let memory = memory().await;
    let key = unique_key();
    let small = memory.write(&key, "notes").await.expect("write");
    assert_eq!(small, WriteOutcome { stored_bytes: 5, truncated: false });
    assert_eq!(memory.read(&key).await.expect("read").as_deref(), Some("notes"));

    // 'é' is two bytes; the cap falls in the middle of one.
    let text = format!("a{}", "é".repeat(MEMORY_CAP_BYTES / 2));
    let outcome = memory.write(&key, &text).await.expect("write");
    assert!(outcome.truncated);
    assert_eq!(outcome.stored_bytes, MEMORY_CAP_BYTES - 1);
    let stored = memory.read(&key).await.expect("read").expect("some memory");
    assert!(text.starts_with(&stored));
}

#[tokio::test]
async fn append_keeps_the_newest_text_when_full() {
    let memory = memory().await;
    let key = unique_key();
    memory.write(&key, &"😀".repeat(MEMORY_CAP_BYTES / 4)).await.expect("fill");
    let outcome = memory.append(&key, "\nnewest").await.expect("append");
    assert!(outcome.truncated);
    let stored = String::from_utf8(raw(&key).await).expect("valid UTF-8");
    assert!(stored.ends_with("😀\nnewest"));
    assert!(stored.len() <= MEMORY_CAP_BYTES);
    assert_eq!(outcome.stored_bytes, stored.len());

    let huge = format!("x{}", "é".repeat(MEMORY_CAP_BYTES));
    memory.append(&key, &huge).await.expect("append over the cap");
    let stored = String::from_utf8(raw(&key).await).expect("valid UTF-8");
    assert_eq!(stored, keep_tail(&huge, MEMORY_CAP_BYTES));
}

#[tokio::test]
async fn twenty_concurrent_appenders_lose_nothing() {
    let memory = memory().await;
    let key = unique_key();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (memory, key) = (memory.clone(), key.clone());
            tokio::spawn(async move {
                for j in 0..10 {
                    memory.append(&key, &format!("[appender {i} line {j}]\n")).await.expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender task");
    }
    let stored = memory.read(&key).await.expect("read").expect("some memory");
    for i in 0..20 {
        for j in 0..10 {
            assert_eq!(stored.matches(&format!("[appender {i} line {j}]\n")).count(), 1, "appender {i} line {j}");
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(String),
    Append(String),
}

/// Short notes most of the time, sometimes text big enough to hit the cap in a few steps.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::collection::vec(any::<char>(), 0..64),
        1 => proptest::collection::vec(any::<char>(), 10_000..40_000),
    ]
    .prop_map(|chars| chars.into_iter().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![1 => text().prop_map(Op::Write), 3 => text().prop_map(Op::Append)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn memory_stays_valid_capped_and_ends_with_the_last_append(ops in proptest::collection::vec(op(), 1..8)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let memory = memory().await;
            let key = unique_key();
            let mut model = String::new();
            for op in ops {
                match op {
                    Op::Write(text) => {
                        let outcome = memory.write(&key, &text).await.expect("write");
                        model = keep_head(&text, MEMORY_CAP_BYTES).to_string();
                        prop_assert_eq!(outcome.truncated, model.len() < text.len());
                    }
                    Op::Append(text) => {
                        memory.append(&key, &text).await.expect("append");
                        model = keep_tail(&format!("{model}{text}"), MEMORY_CAP_BYTES).to_string();
                        if text.len() <= MEMORY_CAP_BYTES {
                            prop_assert!(model.ends_with(&text));
                        }
                    }
                }
                let bytes = raw(&key).await;
                prop_assert!(bytes.len() <= MEMORY_CAP_BYTES);
                let stored = std::str::from_utf8(&bytes);
                prop_assert!(stored.is_ok(), "stored memory is not valid UTF-8");
                prop_assert_eq!(stored.ok(), Some(model.as_str()));
            }
            Ok(())
        })?;
    }
}
