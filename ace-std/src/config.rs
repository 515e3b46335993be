//! Configuration from a file, as services do it: [`from_toml`] reads a TOML text into a config
//! type and validates it, so a bad file fails at load with the field named.
//!
//! ```
//! use ace_std::AimdConfig;
//!
//! let config: AimdConfig = ace_std::config::from_toml(r#"
//!     min_limit = 4
//!     max_limit = 64
//!     adjustment_interval = "500ms"
//! "#)?;
//! assert_eq!(config.max_limit, 64);
//!
//! let err = ace_std::config::from_toml::<AimdConfig>("min_limit = 0").unwrap_err();
//! assert_eq!(err.to_string(), "invalid config: `min_limit` is 0, but it must be at least 1");
//! # Ok::<(), ace_std::config::ConfigFileError>(())
//! ```
//!
//! Durations are text (`"2s"`, `"50ms"`, `"1.5s"`, `"1h"`), a missing field takes its default,
//! and an unknown field is an error (a typo never passes silently).

use std::fmt;
use std::path::Path;

use ace_core::{AimdConfig, ConfigError};
use serde::de::DeserializeOwned;

/// A config type a file can hold: it deserializes, then validates.
pub trait FromConfigFile: DeserializeOwned {
    /// The type's own rules (for [`AimdConfig`], [`AimdConfig::validate`]).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of the first rule broken.
    fn validate_loaded(&self) -> Result<(), ConfigError>;
}

impl FromConfigFile for AimdConfig {
    fn validate_loaded(&self) -> Result<(), ConfigError> {
        self.validate()
    }
}

/// Reading a config file failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The text is not TOML of the expected shape (a syntax error, an unknown field, a
    /// duration without a unit, …); the TOML error says where.
    Parse(toml::de::Error),
    /// The values break a rule; the error names the field.
    Invalid(ConfigError),
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(_) => f.write_str("cannot read the config file"),
            // The TOML error is the message (line, column, field): nothing to add to it.
            Self::Parse(e) => write!(f, "{e}"),
            Self::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Parse(_) | Self::Invalid(_) => None,
        }
    }
}

impl From<ConfigError> for ConfigFileError {
    fn from(e: ConfigError) -> Self {
        Self::Invalid(e)
    }
}

/// Reads `text` as TOML into `T` and validates it.
///
/// # Errors
///
/// [`ConfigFileError::Parse`] for bad TOML, an unknown field or a bad value;
/// [`ConfigFileError::Invalid`] for a value that breaks a rule of `T`.
pub fn from_toml<T: FromConfigFile>(text: &str) -> Result<T, ConfigFileError> {
    let value: T = toml::from_str(text).map_err(ConfigFileError::Parse)?;
    value.validate_loaded()?;
    Ok(value)
}

/// Reads the file at `path` with [`from_toml`].
///
/// # Errors
///
/// [`ConfigFileError::Io`] if it cannot be read; otherwise those of [`from_toml`].
pub fn from_toml_file<T: FromConfigFile>(path: impl AsRef<Path>) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(ConfigFileError::Io)?;
    from_toml(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_names_the_field() {
        let e =
            from_toml::<AimdConfig>("min_limit = 2\nmax_limit = 3\ninitial_limit = 4").unwrap_err();
        assert!(matches!(&e, ConfigFileError::Invalid(c) if c.field() == "max_limit"));
        let e = from_toml::<AimdConfig>("cooldown = \"forever\"").unwrap_err();
        assert!(matches!(e, ConfigFileError::Parse(_)));
        assert!(e.to_string().contains("cooldown"), "{e}");
        let e = from_toml::<AimdConfig>("[aimd]\nmin_limit = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field `aimd`"), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let e = from_toml_file::<AimdConfig>("/nonexistent/ace.toml").unwrap_err();
        assert!(matches!(e, ConfigFileError::Io(_)));
    }
}
