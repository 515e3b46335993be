pub(crate) mod kafka;
pub(crate) mod wait;
