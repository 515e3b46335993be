//! `PoolOptions` as a user or a config file gives them: what `validate()` refuses is named (field
//! and rule), and what it accepts builds a pool without a panic.
#![cfg(all(feature = "threadpool", not(loom)))]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use ace_std::threadpool::{Builder, PoolOptions, ThreadPoolManager};
use ace_std::{AimdConfig, ConfigRule};
use proptest::prelude::*;

/// Long enough for a loaded 2-core machine; reaching it means the pool hung.
const TIMEOUT: Duration = Duration::from_secs(30);

fn options(queue_capacity: Option<usize>, idle_timeout: Duration, name: &str) -> PoolOptions {
    let mut o = PoolOptions::default();
    o.queue_capacity = queue_capacity;
    o.idle_timeout = idle_timeout;
    o.thread_name = name.to_owned();
    o
}

#[test]
fn should_refuse_a_thread_name_with_a_nul_byte_naming_the_field_and_rule() {
    let e = options(None, Duration::from_secs(1), "ace\0pool")
        .validate()
        .unwrap_err();
    assert_eq!(e.field(), "thread_name");
    assert_eq!(e.rule(), ConfigRule::NoNulByte);
    assert_eq!(
        e.to_string(),
        r#"invalid config: `thread_name` is "ace\0pool", but it must not contain a NUL byte"#
    );
}

#[cfg(feature = "serde")]
#[test]
fn should_refuse_a_thread_name_with_a_nul_byte_from_a_file() {
    let err =
        ace_std::config::from_toml::<PoolOptions>(r#"thread_name = "ace\u0000pool""#).unwrap_err();
    match err {
        ace_std::config::ConfigFileError::Invalid(e) => {
            assert_eq!(
                (e.field(), e.rule()),
                ("thread_name", ConfigRule::NoNulByte)
            );
        }
        other => panic!("expected the rule, got {other}"),
    }
}

/// Builds a pool from `options`, runs one job, and returns the name of the thread that ran it;
/// on its own thread, so that a panic or a hang fails the test instead of stopping it.
fn run_one_job(options: PoolOptions) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let config = AimdConfig {
            min_limit: 1,
            max_limit: 2,
            initial_limit: 1,
            ..AimdConfig::default()
        };
        let builder: Builder = ThreadPoolManager::builder(config)
            .default_signals(false)
            .options(options);
        let pool = builder.build().expect("the AIMD config is valid");
        let name = pool
            .submit(|| thread::current().name().map(str::to_owned))
            .join()
            .expect("the job ran");
        pool.shutdown();
        let _ = tx.send(name.unwrap_or_default());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(name) => Ok(name),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()),
            Ok(()) => Err("the pool's thread ended without an answer".to_owned()),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => Err("the pool hung".to_owned()),
    }
}

fn thread_name() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // Short ASCII names, now and then with a NUL byte in them.
        "[a-z0-9\\-\\x00]{0,24}",
        // Names far longer than an operating system keeps (Linux keeps 15 bytes).
        "[a-zé]{16,80}",
    ]
}

fn idle_timeout() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..90_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        any::<(u64, u32)>().prop_map(|(s, n)| Duration::new(s, n % 1_000_000_000)),
        Just(Duration::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any options `validate()` accepts build a pool that runs a job on a thread named after
    /// them; any it refuses name a field it has.
    #[test]
    fn accepted_options_build_a_pool_without_panic(
        queue_capacity in proptest::option::of(0usize..1_000),
        idle_timeout in idle_timeout(),
        name in thread_name(),
    ) {
        let options = options(queue_capacity, idle_timeout, &name);
        match options.validate() {
            Ok(()) => {
                let ran_on = run_one_job(options);
                prop_assert!(ran_on.is_ok(), "accepted, then: {:?}", ran_on);
                let ran_on = ran_on.unwrap_or_default();
                prop_assert!(ran_on.starts_with(&format!("{name}-")), "{ran_on:?}");
            }
            Err(e) => prop_assert!(
                ["queue_capacity", "idle_timeout", "thread_name"].contains(&e.field()),
                "{e}"
            ),
        }
    }
}
