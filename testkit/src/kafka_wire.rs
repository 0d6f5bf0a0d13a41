//! Just enough of the Kafka wire protocol for [`KafkaProxy`](crate::KafkaProxy)
//! to play a broker's part before authentication: length-prefixed frames,
//! request headers (v1, and v2 for flexible versions), response headers, and
//! the few primitive types `SaslHandshake` and `SaslAuthenticate` use.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Kafka API keys the proxy handles.
pub(crate) const API_VERSIONS: i16 = 18;
pub(crate) const SASL_HANDSHAKE: i16 = 17;
pub(crate) const SASL_AUTHENTICATE: i16 = 36;
/// Largest request frame accepted before authentication.
const MAX_PRE_AUTH_FRAME: usize = 1 << 20;

/// A client-side stream: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A parsed request header and the body after it.
pub(crate) struct Request {
    pub(crate) api_key: i16,
    pub(crate) api_version: i16,
    pub(crate) correlation_id: i32,
    /// The whole frame, length prefix included (for relaying).
    pub(crate) frame: Vec<u8>,
    /// Offset of the body in `frame`.
    pub(crate) body: usize,
}

pub(crate) fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "broker closed")
}

pub(crate) fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// One length-prefixed Kafka frame (prefix included), or `None` at a clean EOF.
pub(crate) async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    stream: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = usize::try_from(i32::from_be_bytes(len)).map_err(|_| invalid("negative size"))?;
    if size > MAX_PRE_AUTH_FRAME {
        return Err(invalid("frame too large before authentication"));
    }
    let mut frame = vec![0u8; 4 + size];
    frame[..4].copy_from_slice(&len);
    stream.read_exact(&mut frame[4..]).await?;
    Ok(Some(frame))
}

/// Reads a request frame and parses its header (v1, or v2 for flexible
/// SaslAuthenticate: the tagged fields after the client id are skipped).
pub(crate) async fn read_request(client: &mut Box<dyn Io>) -> std::io::Result<Option<Request>> {
    let Some(frame) = read_frame(client.as_mut()).await? else {
        return Ok(None);
    };
    let short = || invalid("short request header");
    let api_key = i16::from_be_bytes(
        frame
            .get(4..6)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let api_version = i16::from_be_bytes(
        frame
            .get(6..8)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let correlation_id = i32::from_be_bytes(
        frame
            .get(8..12)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let client_id_len = i16::from_be_bytes(
        frame
            .get(12..14)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let mut body = 14 + usize::try_from(client_id_len).unwrap_or(0);
    let flexible_header = (api_key == SASL_AUTHENTICATE && api_version >= 2)
        || (api_key == API_VERSIONS && api_version >= 3);
    if flexible_header {
        body = skip_tagged_fields(&frame, body).ok_or_else(short)?;
    }
    Ok(Some(Request {
        api_key,
        api_version,
        correlation_id,
        frame,
        body,
    }))
}

/// Writes a response: header v0 (correlation id) or v1 (plus empty tagged fields).
pub(crate) async fn write_response(
    client: &mut Box<dyn Io>,
    correlation_id: i32,
    flexible: bool,
    body: &[u8],
) -> std::io::Result<()> {
    let header = if flexible { 5 } else { 4 };
    let size = i32::try_from(header + body.len()).map_err(|_| invalid("response too large"))?;
    let mut out = Vec::with_capacity(4 + header + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if flexible {
        out.push(0);
    }
    out.extend_from_slice(body);
    client.write_all(&out).await?;
    client.flush().await
}

pub(crate) fn read_uvarint(buf: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn skip_tagged_fields(buf: &[u8], at: usize) -> Option<usize> {
    let (count, mut at) = read_uvarint(buf, at)?;
    for _ in 0..count {
        let (_tag, next) = read_uvarint(buf, at)?;
        let (size, next) = read_uvarint(buf, next)?;
        at = next + usize::try_from(size).ok()?;
    }
    (at <= buf.len()).then_some(at)
}

/// A non-flexible STRING (int16 length) at `at`.
pub(crate) fn read_string(buf: &[u8], at: usize) -> Option<String> {
    let len = usize::try_from(i16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?)).ok()?;
    let bytes = buf.get(at + 2..at + 2 + len)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// `auth_bytes` of a SaslAuthenticate request: BYTES (int32 length) or, when
/// flexible, COMPACT_BYTES (uvarint length + 1).
pub(crate) fn read_auth_bytes(request: &Request, flexible: bool) -> Option<Vec<u8>> {
    let buf = &request.frame;
    let at = request.body;
    if flexible {
        let (len, at) = read_uvarint(buf, at)?;
        let len = usize::try_from(len.checked_sub(1)?).ok()?;
        buf.get(at..at + len).map(<[u8]>::to_vec)
    } else {
        let len =
            usize::try_from(i32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?)).ok()?;
        buf.get(at + 4..at + 4 + len).map(<[u8]>::to_vec)
    }
}

pub(crate) fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::try_from(len).unwrap_or(0)]);
}

pub(crate) fn put_compact_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_uvarint(out, 0),
        Some(s) => {
            put_uvarint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarints_round_trip() {
        for value in [0u64, 1, 127, 128, 300, 16_384, u64::from(u32::MAX)] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            assert_eq!(read_uvarint(&buf, 0), Some((value, buf.len())));
        }
    }
}
