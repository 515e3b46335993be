//! How a request gets its [`Priority`] and its deadline: [`Prioritize`], [`NoPriority`] (the
//! default: one class, the slot taken in `poll_ready`), closures, and [`HttpPriority`] (the
//! `x-priority` header, a [`Priority`] extension, a [`Deadline`] extension or `grpc-timeout`).

use std::time::{Duration, Instant};

use ace_core::Priority;

/// Reads a request's class and deadline, for
/// [`AdaptiveConcurrencyLayer::priority`](super::AdaptiveConcurrencyLayer::priority).
///
/// A closure `Fn(&Req) -> Priority` is one (with no deadline). With anything but
/// [`NoPriority`], the layer takes the slot in the response future, once it has seen the
/// request, rather than in `poll_ready`.
pub trait Prioritize<Req> {
    /// The request's class.
    fn priority(&self, req: &Req) -> Priority;

    /// How long the request may still take, if it carries a deadline: a call that would not
    /// get a slot in time is refused at once. `None` by default.
    fn deadline(&self, _req: &Req) -> Option<Duration> {
        None
    }

    /// True if the class is known before the request is seen: the slot is then taken in
    /// `poll_ready`, as tower's `ConcurrencyLimit` does. Only [`NoPriority`] says so.
    #[doc(hidden)]
    fn before_call(&self) -> bool {
        false
    }
}

impl<Req, F: Fn(&Req) -> Priority> Prioritize<Req> for F {
    fn priority(&self, req: &Req) -> Priority {
        self(req)
    }
}

/// Every request is [`Priority::Normal`] and the slot is taken in `poll_ready`: the layer's
/// default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPriority;

impl<Req> Prioritize<Req> for NoPriority {
    fn priority(&self, _: &Req) -> Priority {
        Priority::Normal
    }

    fn before_call(&self) -> bool {
        true
    }
}

/// The deadline of a request, as a tower/http extension: set it in a client (or an outer
/// server layer) and [`HttpPriority`] reads it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ace_std::tower::Deadline;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Deadline::after(Duration::from_millis(50)));
/// let left = req.extensions().get::<Deadline>().unwrap().remaining();
/// assert!(left <= Duration::from_millis(50));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline `at`.
    pub fn at(at: Instant) -> Self {
        Self(at)
    }

    /// The deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget)
    }

    /// The instant it falls.
    pub fn instant(&self) -> Instant {
        self.0
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// The class and deadline of an HTTP request: the class from a header (`x-priority` unless
/// [`header`](Self::header) names another; `critical`, `normal` or `sheddable`, any case), else
/// a [`Priority`] extension, else [`Priority::Normal`]; the deadline from a [`Deadline`]
/// extension, else a `grpc-timeout` header.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ace_std::tower::{HttpPriority, Prioritize};
/// use ace_std::Priority;
///
/// let req = http::Request::builder()
///     .header("x-priority", "Critical")
///     .header("grpc-timeout", "50m")
///     .body(())
///     .unwrap();
/// let p = HttpPriority::new();
/// assert_eq!(p.priority(&req), Priority::Critical);
/// assert_eq!(p.deadline(&req), Some(Duration::from_millis(50)));
/// ```
#[derive(Debug, Clone)]
pub struct HttpPriority {
    header: http::HeaderName,
}

impl Default for HttpPriority {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpPriority {
    /// Reads the `x-priority` header.
    pub fn new() -> Self {
        Self {
            header: http::HeaderName::from_static("x-priority"),
        }
    }

    /// Reads the class from `header` instead.
    #[must_use]
    pub fn header(mut self, header: http::HeaderName) -> Self {
        self.header = header;
        self
    }
}

impl<B> Prioritize<http::Request<B>> for HttpPriority {
    fn priority(&self, req: &http::Request<B>) -> Priority {
        req.headers()
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .or_else(|| req.extensions().get::<Priority>().copied())
            .unwrap_or_default()
    }

    fn deadline(&self, req: &http::Request<B>) -> Option<Duration> {
        if let Some(deadline) = req.extensions().get::<Deadline>() {
            return Some(deadline.remaining());
        }
        req.headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(grpc_timeout)
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use ace_std::tower::grpc_timeout;
///
/// assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(grpc_timeout("123456789S"), None); // more than 8 digits
/// assert_eq!(grpc_timeout("5x"), None);
/// ```
pub fn grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}
