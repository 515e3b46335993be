//! [`KafkaMessage`]: what a handler receives, copied out of librdkafka in one allocation.

use std::fmt;
use std::sync::Arc;

use rdkafka::message::{
    BorrowedMessage, FromBytes, Message, OwnedHeaders, OwnedMessage, Timestamp,
};

/// A message handed to a handler: its key and payload in one shared buffer, its topic name shared
/// with every message of the partition. Cloning it (for a retry or the dead-letter callback)
/// copies no data.
///
/// Its methods mirror [`rdkafka::Message`]'s (`payload`, `key`, `topic`, `partition`, `offset`,
/// `timestamp`, `headers`, `payload_view`, `key_view`; it does not implement the trait, whose
/// `payload_mut` is an `unsafe fn` and this crate forbids unsafe code); [`detach`](Self::detach)
/// makes an rdkafka [`OwnedMessage`] of it if you need one.
///
/// # Examples
///
/// ```no_run
/// use ace_std::kafka::KafkaMessage;
///
/// async fn handle(msg: KafkaMessage) -> Result<(), std::str::Utf8Error> {
///     let text = msg.payload_view::<str>().transpose()?.unwrap_or_default();
///     println!("{}[{}]@{}: {text}", msg.topic(), msg.partition(), msg.offset());
///     Ok(())
/// }
/// # let _ = handle;
/// ```
#[derive(Clone)]
pub struct KafkaMessage {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    /// The key's bytes, then the payload's.
    data: Arc<[u8]>,
    /// Where the key ends in `data`; `None` for a message without a key.
    key_len: Option<usize>,
    /// False for a message without a payload (a tombstone), as opposed to an empty one.
    has_payload: bool,
    headers: Option<Arc<OwnedHeaders>>,
}

impl KafkaMessage {
    /// Copies `m` out of librdkafka: one allocation for key and payload (assembled in `scratch`,
    /// which is reused from message to message), none for the topic name.
    pub(crate) fn copy(m: &BorrowedMessage<'_>, topic: &Arc<str>, scratch: &mut Vec<u8>) -> Self {
        let (key, payload) = (m.key(), m.payload());
        Self {
            topic: Arc::clone(topic),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp(),
            data: pack(key, payload, scratch),
            key_len: key.map(<[u8]>::len),
            has_payload: payload.is_some(),
            headers: m.headers().map(|h| Arc::new(h.detach())),
        }
    }
}

impl KafkaMessage {
    /// A copy as an rdkafka [`OwnedMessage`] (allocates and copies key, payload, topic and
    /// headers).
    pub fn detach(&self) -> OwnedMessage {
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic.to_string(),
            self.timestamp,
            self.partition,
            self.offset,
            self.headers.as_deref().cloned(),
        )
    }
}

/// Key and payload in one buffer, in one allocation.
fn pack(key: Option<&[u8]>, payload: Option<&[u8]>, scratch: &mut Vec<u8>) -> Arc<[u8]> {
    match (key, payload) {
        (Some(k), Some(p)) => {
            scratch.clear();
            scratch.extend_from_slice(k);
            scratch.extend_from_slice(p);
            Arc::from(&scratch[..])
        }
        (Some(bytes), None) | (None, Some(bytes)) => Arc::from(bytes),
        (None, None) => Arc::from(&[][..]),
    }
}

impl KafkaMessage {
    /// The key, or `None` if there is none.
    pub fn key(&self) -> Option<&[u8]> {
        self.key_len.map(|len| &self.data[..len])
    }

    /// The payload, or `None` if there is none (a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.has_payload
            .then(|| &self.data[self.key_len.unwrap_or(0)..])
    }

    /// The payload as `P` (`str`, `[u8]`, …) without copying, if there is one.
    ///
    /// # Errors
    ///
    /// The inner `Result` is `P`'s conversion error (not UTF-8, for `str`).
    pub fn payload_view<P: ?Sized + FromBytes>(&self) -> Option<Result<&P, P::Error>> {
        self.payload().map(P::from_bytes)
    }

    /// The key as `K` without copying, if there is one.
    ///
    /// # Errors
    ///
    /// The inner `Result` is `K`'s conversion error.
    pub fn key_view<K: ?Sized + FromBytes>(&self) -> Option<Result<&K, K::Error>> {
        self.key().map(K::from_bytes)
    }

    /// The topic it came from.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition it came from.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Its offset in the partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Its timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// Its headers, if it has any (read them with [`rdkafka::message::Headers`]).
    pub fn headers(&self) -> Option<&OwnedHeaders> {
        self.headers.as_deref()
    }
}

impl fmt::Debug for KafkaMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaMessage")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key_len", &self.key().map(<[u8]>::len))
            .field("payload_len", &self.payload().map(<[u8]>::len))
            .field("headers", &self.headers.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl KafkaMessage {
    /// As [`copy`](Self::copy) does, from parts.
    pub(crate) fn copy_parts(
        topic: &Arc<str>,
        offset: i64,
        key: &[u8],
        payload: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Self {
        Self {
            topic: Arc::clone(topic),
            partition: 0,
            offset,
            timestamp: Timestamp::NotAvailable,
            data: pack(Some(key), Some(payload), scratch),
            key_len: Some(key.len()),
            has_payload: true,
            headers: None,
        }
    }

    pub(crate) fn for_test(offset: i64) -> Self {
        Self {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp: Timestamp::NotAvailable,
            data: Arc::from(&b"payload"[..]),
            key_len: None,
            has_payload: true,
            headers: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: Option<&[u8]>, payload: Option<&[u8]>) -> KafkaMessage {
        KafkaMessage {
            topic: Arc::from("t"),
            partition: 3,
            offset: 7,
            timestamp: Timestamp::NotAvailable,
            data: pack(key, payload, &mut Vec::new()),
            key_len: key.map(<[u8]>::len),
            has_payload: payload.is_some(),
            headers: None,
        }
    }

    #[test]
    fn splits_key_and_payload() {
        let m = message(Some(b"k1"), Some(b"hello"));
        assert_eq!(
            (m.key(), m.payload()),
            (Some(&b"k1"[..]), Some(&b"hello"[..]))
        );
        let m = message(None, Some(b"hello"));
        assert_eq!((m.key(), m.payload()), (None, Some(&b"hello"[..])));
        let m = message(Some(b"k1"), None);
        assert_eq!((m.key(), m.payload()), (Some(&b"k1"[..]), None));
        let m = message(Some(b""), Some(b""));
        assert_eq!((m.key(), m.payload()), (Some(&b""[..]), Some(&b""[..])));
        let m = message(None, None);
        assert_eq!((m.key(), m.payload()), (None, None));
    }

    #[test]
    fn detaches_into_an_owned_message() {
        let owned = message(Some(b"k"), Some(b"v")).detach();
        assert_eq!(
            (owned.topic(), owned.partition(), owned.offset()),
            ("t", 3, 7)
        );
        assert_eq!(
            (owned.key(), owned.payload()),
            (Some(&b"k"[..]), Some(&b"v"[..]))
        );
    }
}
