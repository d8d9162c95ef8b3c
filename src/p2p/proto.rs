//! The peer protocol's messages, as defined in `proto/shoal.proto`, and the codec that frames
//! them on a stream. The structs mirror the schema field by field (prost derives the encoding),
//! so other implementations can interoperate from the `.proto` file alone.

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::Message;

/// The piece protocol's name.
pub const PIECE_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/piece/1");

/// Largest request accepted.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// Largest response accepted: the largest piece plus room for the envelope.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024 + 4 * 1024;
/// Largest gossip message accepted.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;

/// `Request` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct Request {
    /// What is asked.
    #[prost(oneof = "RequestKind", tags = "1, 2, 3")]
    pub kind: Option<RequestKind>,
}

/// `Request.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RequestKind {
    /// A blob's piece map.
    #[prost(message, tag = "1")]
    Map(PieceMapRequest),
    /// One piece.
    #[prost(message, tag = "2")]
    Piece(PieceRequest),
    /// What a file identity is.
    #[prost(message, tag = "3")]
    File(FileLookup),
}

/// `FileLookup` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct FileLookup {
    /// The identity (64 hex digits).
    #[prost(string, tag = "1")]
    pub id: String,
    /// The URL, to fetch it if unknown.
    #[prost(string, tag = "2")]
    pub url: String,
}

/// `FileAnswer` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct FileAnswer {
    /// The content's digest; empty while pending.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Its size.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// The origin's `Content-Type`.
    #[prost(string, tag = "3")]
    pub content_type: String,
    /// Being fetched; ask again.
    #[prost(bool, tag = "4")]
    pub pending: bool,
}

/// `PieceMapRequest` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct PieceMapRequest {
    /// `sha256:<hex>`.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Fetch hint: the registry to fetch from when nothing is held (empty: no hint).
    #[prost(string, tag = "2")]
    pub registry: String,
    /// Fetch hint: the repository.
    #[prost(string, tag = "3")]
    pub repository: String,
    /// Fetch hint for a file: its URL.
    #[prost(string, tag = "4")]
    pub url: String,
}

/// `PieceRequest` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct PieceRequest {
    /// `sha256:<hex>`.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Piece index.
    #[prost(uint32, tag = "2")]
    pub index: u32,
}

/// `Response` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct Response {
    /// The answer.
    #[prost(oneof = "ResponseKind", tags = "1, 2, 3, 4")]
    pub kind: Option<ResponseKind>,
}

/// `Response.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseKind {
    /// A piece map.
    #[prost(message, tag = "1")]
    Map(PieceMap),
    /// A piece.
    #[prost(message, tag = "2")]
    Piece(Piece),
    /// A refusal.
    #[prost(message, tag = "3")]
    Error(Error),
    /// What a file identity is.
    #[prost(message, tag = "4")]
    File(FileAnswer),
}

/// `PieceMap` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct PieceMap {
    /// `sha256:<hex>`.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Blob size.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// Piece size.
    #[prost(uint32, tag = "3")]
    pub piece_size: u32,
    /// Piece hashes (32 bytes each; empty where unknown).
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub hashes: Vec<Vec<u8>>,
    /// Bitmap of pieces held.
    #[prost(bytes = "vec", tag = "5")]
    pub have: Vec<u8>,
}

/// `Piece` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct Piece {
    /// `sha256:<hex>`.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Piece index.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    /// The piece's bytes.
    #[prost(bytes = "bytes", tag = "3")]
    pub data: bytes::Bytes,
}

/// `Error` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct Error {
    /// `Error.Code`.
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    /// For people.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// `Error.Code` in the schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// Unset.
    CodeUnspecified = 0,
    /// The peer does not hold it.
    NotFound = 1,
    /// Upload slots full.
    Busy = 2,
    /// Another zone or banned.
    Refused = 3,
    /// Malformed request.
    BadRequest = 4,
    /// Sent to another peer moments ago while the upload is busy: ask a peer that has it.
    Elsewhere = 5,
}

/// `Task` in the schema (the cluster-wide topic).
#[derive(Clone, PartialEq, Message)]
pub struct Task {
    /// What is published.
    #[prost(oneof = "TaskKind", tags = "1, 2")]
    pub kind: Option<TaskKind>,
}

/// `Task.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum TaskKind {
    /// A preheat order.
    #[prost(message, tag = "1")]
    Preheat(PreheatOrder),
    /// A node's progress on one.
    #[prost(message, tag = "2")]
    Progress(PreheatProgress),
}

/// `PreheatOrder` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct PreheatOrder {
    /// Chosen by the ordering node.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Registry host.
    #[prost(string, tag = "2")]
    pub registry: String,
    /// Repository.
    #[prost(string, tag = "3")]
    pub repository: String,
    /// Tag or digest.
    #[prost(string, tag = "4")]
    pub reference: String,
    /// Platforms of an index to fetch; empty: all.
    #[prost(string, repeated, tag = "5")]
    pub platforms: Vec<String>,
    /// `seeds`, `zone` or `all`.
    #[prost(string, tag = "6")]
    pub scope: String,
    /// The zone, for `seeds` (empty: every zone) and `zone`.
    #[prost(string, tag = "7")]
    pub zone: String,
    /// A file's URL instead of an image.
    #[prost(string, tag = "8")]
    pub url: String,
    /// The file's digest, if known.
    #[prost(string, tag = "9")]
    pub digest: String,
}

/// `PreheatProgress` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct PreheatProgress {
    /// The order's id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// The reporting node's zone.
    #[prost(string, tag = "2")]
    pub zone: String,
    /// Its role.
    #[prost(string, tag = "3")]
    pub role: String,
    /// Blobs it holds.
    #[prost(uint32, tag = "4")]
    pub blobs_done: u32,
    /// Blobs to fetch.
    #[prost(uint32, tag = "5")]
    pub blobs_total: u32,
    /// Bytes of the blobs it holds.
    #[prost(uint64, tag = "6")]
    pub bytes_done: u64,
    /// Bytes of all the blobs.
    #[prost(uint64, tag = "7")]
    pub bytes_total: u64,
    /// No more reports follow.
    #[prost(bool, tag = "8")]
    pub finished: bool,
    /// Why it failed (finished without success).
    #[prost(string, tag = "9")]
    pub error: String,
}

/// `Announcement` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct Announcement {
    /// What is announced.
    #[prost(oneof = "AnnouncementKind", tags = "1")]
    pub kind: Option<AnnouncementKind>,
}

/// `Announcement.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AnnouncementKind {
    /// Pieces held.
    #[prost(message, tag = "1")]
    Have(Have),
}

/// `Have` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct Have {
    /// `sha256:<hex>`.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Blob size.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// Piece size.
    #[prost(uint32, tag = "3")]
    pub piece_size: u32,
    /// Bitmap of pieces held.
    #[prost(bytes = "vec", tag = "4")]
    pub have: Vec<u8>,
    /// Whether the whole blob is held and verified.
    #[prost(bool, tag = "5")]
    pub complete: bool,
    /// Hashes of pieces newly held since the previous announcement.
    #[prost(message, repeated, tag = "6")]
    pub hashes: Vec<PieceHash>,
}

/// `PieceHash` in the schema.
#[derive(Clone, PartialEq, Message)]
pub struct PieceHash {
    /// Piece index.
    #[prost(uint32, tag = "1")]
    pub index: u32,
    /// SHA-256 of the piece.
    #[prost(bytes = "vec", tag = "2")]
    pub hash: Vec<u8>,
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response {
            kind: Some(ResponseKind::Error(Error {
                code: code as i32,
                message: message.into(),
            })),
        }
    }
}

/// Reads one length-prefixed message of at most `max` bytes.
async fn read_frame<T: AsyncRead + Unpin, M: Message + Default>(
    io: &mut T,
    max: usize,
) -> io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    // Decoding from `Bytes` lets a piece's data share this buffer instead of being copied.
    M::decode(bytes::Bytes::from(buf)).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one length-prefixed message.
async fn write_frame<T: AsyncWrite + Unpin, M: Message>(io: &mut T, msg: &M) -> io::Result<()> {
    let len = u32::try_from(msg.encoded_len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&msg.encode_to_vec()).await?;
    io.close().await
}

/// The `request_response` codec for `/shoal/piece/1`.
#[derive(Clone, Copy, Debug, Default)]
pub struct PieceCodec;

impl libp2p::request_response::Codec for PieceCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_REQUEST_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, MAX_RESPONSE_BYTES).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::futures::executor::block_on;
    use libp2p::futures::io::Cursor;
    use libp2p::request_response::Codec;
    use proptest::prelude::*;

    fn round_trip(req: Request) -> Request {
        let mut buf = Cursor::new(Vec::new());
        block_on(PieceCodec.write_request(&PIECE_PROTOCOL, &mut buf, req)).unwrap();
        buf.set_position(0);
        block_on(PieceCodec.read_request(&PIECE_PROTOCOL, &mut buf)).unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let req = Request {
            kind: Some(RequestKind::Piece(PieceRequest {
                digest: "sha256:ab".into(),
                index: 7,
            })),
        };
        assert_eq!(round_trip(req.clone()), req);
        let res = Response {
            kind: Some(ResponseKind::Piece(Piece {
                digest: "sha256:ab".into(),
                index: 1,
                data: bytes::Bytes::from_static(b"piece"),
            })),
        };
        let mut buf = Cursor::new(Vec::new());
        block_on(PieceCodec.write_response(&PIECE_PROTOCOL, &mut buf, res.clone())).unwrap();
        buf.set_position(0);
        assert_eq!(
            block_on(PieceCodec.read_response(&PIECE_PROTOCOL, &mut buf)).unwrap(),
            res
        );
    }

    #[test]
    fn oversized_and_garbage_frames_are_rejected() {
        let mut frame = (MAX_REQUEST_BYTES as u32 + 1).to_be_bytes().to_vec();
        frame.extend(vec![0u8; MAX_REQUEST_BYTES + 1]);
        let err = block_on(PieceCodec.read_request(&PIECE_PROTOCOL, &mut Cursor::new(frame)));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidData);
        // A length that promises more than the stream holds.
        let err = block_on(
            PieceCodec.read_request(&PIECE_PROTOCOL, &mut Cursor::new(vec![0, 0, 0, 9, 1, 2])),
        );
        assert!(err.is_err());
        // Bytes that are no protobuf.
        let err = block_on(PieceCodec.read_request(
            &PIECE_PROTOCOL,
            &mut Cursor::new(vec![0, 0, 0, 3, 0xff, 0xff, 0xff]),
        ));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    proptest! {
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = (data.len() as u32).to_be_bytes().to_vec();
            framed.extend(&data);
            let _ = block_on(PieceCodec.read_request(&PIECE_PROTOCOL, &mut Cursor::new(framed.clone())));
            let _ = block_on(PieceCodec.read_response(&PIECE_PROTOCOL, &mut Cursor::new(framed)));
            let _ = Announcement::decode(data.as_slice());
        }
    }
}
