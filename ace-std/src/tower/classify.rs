//! What a finished call says about the downstream: [`Outcome`], [`Classify`] and its two
//! ready-made classifiers.

/// What one finished call tells the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The call went through: its time feeds the latency signal.
    Success,
    /// The downstream pushed back (an error, a timeout, an HTTP 429 or 503): counts as a failed
    /// task, which cuts the limit once the cycle's error rate is over `latency_max_error_rate`.
    BackPressure,
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Closures `Fn(&Result<T, E>) -> Outcome` are classifiers:
///
/// ```
/// use ace_std::tower::{Classify, Outcome};
///
/// // Only a `Busy` answer pushes back; other errors are the caller's own fault.
/// #[derive(Debug)]
/// enum Error { Busy, NotFound }
/// let busy_only = |r: &Result<u32, Error>| match r {
///     Err(Error::Busy) => Outcome::BackPressure,
///     _ => Outcome::Success,
/// };
/// assert_eq!(busy_only.classify(&Err(Error::Busy)), Outcome::BackPressure);
/// assert_eq!(busy_only.classify(&Err(Error::NotFound)), Outcome::Success);
/// ```
pub trait Classify<T, E> {
    /// The outcome of one call.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: an `Err` is back-pressure, an `Ok` a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorIsBackPressure;

impl<T, E> Classify<T, E> for ErrorIsBackPressure {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::BackPressure,
        }
    }
}

/// For HTTP clients: an `Err`, a `429 Too Many Requests` and a `503 Service Unavailable` are
/// back-pressure; every other response is a success (a 404 is an answer, not an overload).
///
/// ```
/// use ace_std::tower::{Classify, HttpStatusClassifier, Outcome};
///
/// let busy = http::Response::builder().status(503).body(()).unwrap();
/// let fine = http::Response::builder().status(404).body(()).unwrap();
/// let c = HttpStatusClassifier;
/// assert_eq!(c.classify(&Ok::<_, ()>(busy)), Outcome::BackPressure);
/// assert_eq!(c.classify(&Ok::<_, ()>(fine)), Outcome::Success);
/// assert_eq!(c.classify(&Err::<http::Response<()>, _>("reset")), Outcome::BackPressure);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatusClassifier;

impl<B, E> Classify<http::Response<B>, E> for HttpStatusClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(r) => match r.status() {
                http::StatusCode::TOO_MANY_REQUESTS | http::StatusCode::SERVICE_UNAVAILABLE => {
                    Outcome::BackPressure
                }
                _ => Outcome::Success,
            },
            Err(_) => Outcome::BackPressure,
        }
    }
}

/// For gRPC clients over a tower `http` stack: an `Err`, and a response whose `grpc-status`
/// header is `RESOURCE_EXHAUSTED` (8) or `UNAVAILABLE` (14), are back-pressure; every other
/// response is a success (an `INVALID_ARGUMENT` is an answer, not an overload).
///
/// A server that refuses a call at once answers "trailers only", with `grpc-status` among the
/// headers, which is what this reads; a status sent in trailers after a streamed body is not
/// seen here (the classifier runs when the response head arrives). No tonic dependency: the
/// header is read from `http::Response`.
///
/// ```
/// use ace_std::tower::{Classify, GrpcStatusClassifier, Outcome};
///
/// let refused = http::Response::builder().header("grpc-status", "8").body(()).unwrap();
/// let down = http::Response::builder().header("grpc-status", "14").body(()).unwrap();
/// let invalid = http::Response::builder().header("grpc-status", "3").body(()).unwrap();
/// let streaming = http::Response::builder().body(()).unwrap();
/// let c = GrpcStatusClassifier;
/// assert_eq!(c.classify(&Ok::<_, ()>(refused)), Outcome::BackPressure);
/// assert_eq!(c.classify(&Ok::<_, ()>(down)), Outcome::BackPressure);
/// assert_eq!(c.classify(&Ok::<_, ()>(invalid)), Outcome::Success);
/// assert_eq!(c.classify(&Ok::<_, ()>(streaming)), Outcome::Success);
/// assert_eq!(c.classify(&Err::<http::Response<()>, _>("reset")), Outcome::BackPressure);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcStatusClassifier;

impl GrpcStatusClassifier {
    /// gRPC's `RESOURCE_EXHAUSTED`.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// gRPC's `UNAVAILABLE`.
    pub const UNAVAILABLE: u32 = 14;
}

impl<B, E> Classify<http::Response<B>, E> for GrpcStatusClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        let Ok(response) = result else {
            return Outcome::BackPressure;
        };
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        match status {
            Some(Self::RESOURCE_EXHAUSTED | Self::UNAVAILABLE) => Outcome::BackPressure,
            _ => Outcome::Success,
        }
    }
}
