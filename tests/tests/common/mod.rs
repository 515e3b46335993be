pub(crate) mod kafka;
