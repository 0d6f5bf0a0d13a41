//! The Redis key of a request, `<key_prefix><namespace>:<key>`: written
//! straight into the command buffer (so a single-key command builds no key
//! of its own: one allocation and one copy less per call), or as bytes where
//! a key must be held (multi-key commands grouped by hash slot, scripts,
//! scans).

use redis::{RedisWrite, ToRedisArgs};

/// The parts of a namespaced key, borrowed from the config and the request.
#[derive(Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) key: &'a str,
}

impl Key<'_> {
    /// Length of the whole key in bytes.
    pub(crate) fn len(&self) -> usize {
        self.prefix.len() + self.namespace.len() + 1 + self.key.len()
    }

    /// The whole key as bytes.
    pub(crate) fn to_vec(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut impl std::io::Write) {
        for part in [
            self.prefix.as_bytes(),
            self.namespace.as_bytes(),
            b":",
            self.key.as_bytes(),
        ] {
            // Both writers (a Vec, a command's buffer) only append: no error.
            let _ = out.write_all(part);
        }
    }
}

impl ToRedisArgs for Key<'_> {
    /// One argument, appended to the command's buffer in place.
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        self.write(&mut out.writer_for_next_arg());
    }
}

#[cfg(test)]
mod tests {
    use super::Key;

    #[test]
    fn key_is_prefix_namespace_colon_key_in_bytes_and_in_a_command() {
        let key = Key {
            prefix: "prism:",
            namespace: "ns",
            key: "k:1",
        };
        assert_eq!(key.to_vec(), b"prism:ns:k:1");
        assert_eq!(key.len(), 12);
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        assert_eq!(
            cmd.get_packed_command(),
            b"*2\r\n$3\r\nGET\r\n$12\r\nprism:ns:k:1\r\n"
        );
    }
}
