//! `AimdConfig` through serde: readable durations, defaults for missing fields, unknown fields
//! refused, `"off"` for the optional ones, and a lossless round trip.
#![cfg(feature = "serde")]

use core::time::Duration;

use ace_core::AimdConfig;

#[test]
fn reads_readable_durations_and_defaults_the_rest() {
    let c: AimdConfig = toml::from_str(
        r#"
        min_limit = 4
        max_limit = 64
        adjustment_interval = "500ms"
        cooldown = "1.5s"
        latency_baseline_window = "1m"
        latency_probe_interval = "10m"
        "#,
    )
    .unwrap();
    assert_eq!((c.min_limit, c.max_limit), (4, 64));
    assert_eq!(c.adjustment_interval, Duration::from_millis(500));
    assert_eq!(c.cooldown, Duration::from_millis(1_500));
    assert_eq!(c.latency_baseline_window, Duration::from_secs(60));
    assert_eq!(c.latency_probe_interval, Some(Duration::from_secs(600)));
    assert_eq!(c.initial_limit, AimdConfig::default_initial_limit());
    assert_eq!(c.latency_tolerance, Some(1.5));
}

#[test]
fn off_turns_the_optional_signals_off() {
    let c: AimdConfig =
        toml::from_str("latency_tolerance = \"off\"\nlatency_probe_interval = false").unwrap();
    assert_eq!(
        (c.latency_tolerance, c.latency_probe_interval),
        (None, None)
    );
    let c: AimdConfig = serde_json::from_str(r#"{"latency_tolerance": null}"#).unwrap();
    assert_eq!(c.latency_tolerance, None);
}

#[test]
fn refuses_unknown_fields_and_unitless_durations_naming_them() {
    let e = toml::from_str::<AimdConfig>("max_limt = 10")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `max_limt`"), "{e}");
    let e = toml::from_str::<AimdConfig>("cooldown = \"5\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cooldown") && e.contains("needs a unit"), "{e}");
    let e = toml::from_str::<AimdConfig>("cooldown = 5")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cooldown"), "{e}");
}

#[test]
fn round_trips_through_toml_and_json() {
    let c = AimdConfig {
        cooldown: Duration::from_millis(2_500),
        latency_tolerance: None,
        latency_probe_interval: Some(Duration::from_secs(120)),
        ..AimdConfig::default()
    };
    let text = toml::to_string(&c).unwrap();
    assert!(text.contains("cooldown = \"2500ms\""), "{text}");
    assert!(text.contains("adjustment_interval = \"2s\""), "{text}");
    assert_eq!(toml::from_str::<AimdConfig>(&text).unwrap(), c);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<AimdConfig>(&json).unwrap(), c);
    let defaults = toml::to_string(&AimdConfig::default()).unwrap();
    assert_eq!(
        toml::from_str::<AimdConfig>(&defaults).unwrap(),
        AimdConfig::default()
    );
}
