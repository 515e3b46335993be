//! [`KafkaMessage`]: what a handler receives, copied out of librdkafka into chunks shared by
//! consecutive messages ([`Arena`]).

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rdkafka::message::{
    BorrowedMessage, FromBytes, Message, OwnedHeaders, OwnedMessage, Timestamp,
};

/// A message handed to a handler: its key and payload in a buffer shared with the messages
/// received around it, its topic name shared with every message of the partition. Cloning it
/// (for a retry or the dead-letter callback) copies no data.
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
    data: Bytes,
    /// Where the key ends in `data`; `None` for a message without a key.
    key_len: Option<usize>,
    /// False for a message without a payload (a tombstone), as opposed to an empty one.
    has_payload: bool,
    headers: Option<Arc<OwnedHeaders>>,
}

/// Where the consumer task copies received messages: chunks of [`CHUNK`] bytes, each shared by
/// the consecutive messages cut from it, so a message costs no allocation of its own. A chunk
/// is reused in place once every message cut from it is gone (handlers that finish at once), and
/// a message still held keeps only its own chunk alive.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    /// The current chunk's free part.
    free: BytesMut,
}

/// The size of a chunk.
// 16 KiB: about 150 messages of 100 bytes share one allocation, and a slow handler holding one
// message keeps at most 16 KiB alive (a limit of 1,000 stuck handlers: 16 MB at worst).
const CHUNK: usize = 16 * 1024;

impl Arena {
    /// Key and payload in one buffer: cut from the current chunk, or, for a message above a
    /// quarter of a chunk (whose copy costs more than its allocation), in one of its own.
    fn pack(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Bytes {
        let (key, payload) = (key.unwrap_or_default(), payload.unwrap_or_default());
        let len = key.len() + payload.len();
        if len == 0 {
            return Bytes::new();
        }
        if len > CHUNK / 4 {
            let mut own = Vec::with_capacity(len);
            own.extend_from_slice(key);
            own.extend_from_slice(payload);
            return Bytes::from(own);
        }
        if self.free.capacity() < len {
            // Takes the whole chunk back if nothing cut from it is alive, else a new one.
            self.free.reserve(CHUNK);
        }
        self.free.extend_from_slice(key);
        self.free.extend_from_slice(payload);
        self.free.split().freeze()
    }
}

impl KafkaMessage {
    /// Copies `m` out of librdkafka: key and payload into `arena`, no allocation for the topic
    /// name; its headers only if `headers` (librdkafka parses them on request, at a cost of its
    /// own even for a message that has none).
    pub(crate) fn copy(
        m: &BorrowedMessage<'_>,
        topic: &Arc<str>,
        arena: &mut Arena,
        headers: bool,
    ) -> Self {
        let (key, payload) = (m.key(), m.payload());
        Self {
            topic: Arc::clone(topic),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp(),
            data: arena.pack(key, payload),
            key_len: key.map(<[u8]>::len),
            has_payload: payload.is_some(),
            headers: if headers {
                m.headers().map(|h| Arc::new(h.detach()))
            } else {
                None
            },
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

    /// Its headers, if it has any (read them with [`rdkafka::message::Headers`]); always `None`
    /// when the manager was built with [`headers(false)`](super::Builder::headers).
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
        arena: &mut Arena,
    ) -> Self {
        Self {
            topic: Arc::clone(topic),
            partition: 0,
            offset,
            timestamp: Timestamp::NotAvailable,
            data: arena.pack(Some(key), Some(payload)),
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
            data: Bytes::from_static(b"payload"),
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
            data: Arena::default().pack(key, payload),
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
    fn reuses_a_chunk_once_its_messages_are_gone() {
        let mut arena = Arena::default();
        let first = arena.pack(Some(b"k"), Some(b"one"));
        let at = first.as_ptr();
        let second = arena.pack(Some(b"k"), Some(b"two"));
        assert_eq!(
            second.as_ptr(),
            at.wrapping_add(4),
            "cut from the same chunk"
        );
        drop((first, second));
        // Fill the chunk: the next message takes it back from the start.
        let mut n = 0;
        while arena.free.capacity() >= 4 {
            drop(arena.pack(None, Some(b"fill")));
            n += 1;
        }
        assert!(n > 4000, "one chunk: {n}");
        assert_eq!(arena.pack(None, Some(b"again")).as_ptr(), at);
    }

    #[test]
    fn a_message_held_keeps_its_bytes_while_the_arena_moves_on() {
        let mut arena = Arena::default();
        let held = arena.pack(Some(b"key"), Some(b"held"));
        for i in 0..10_000u32 {
            let m = arena.pack(None, Some(&i.to_le_bytes()));
            assert_eq!(&m[..], &i.to_le_bytes());
        }
        assert_eq!(&held[..], b"keyheld");
        let big = vec![7u8; CHUNK];
        let own = arena.pack(None, Some(&big));
        assert_eq!(&own[..], &big[..]);
        assert_eq!(arena.pack(None, None), Bytes::new());
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
