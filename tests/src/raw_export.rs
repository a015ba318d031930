//! An Export stream whose request body is written byte by byte by the
//! test: gRPC's framing (a flag byte, a 4-byte length, the message) built
//! by hand, so a test can send a message slowly, cut it anywhere, or
//! announce a length it never sends — what tonic's client cannot do.
//! The responses are read back the same way, with the status the
//! registry ends the stream with.

use std::convert::Infallible;
use std::future::poll_fn;

use meshdns_proto::wire;
use prost::Message;
use prost::bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{Body as _, Service, http};
use tonic::transport::Channel;

/// The Export RPC's path.
const EXPORT: &str = "/meshdns.v1.Registry/Export";

/// `message` in gRPC's framing: uncompressed, its length, its bytes.
pub fn framed(message: &wire::ExportRequest) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let len = u32::try_from(bytes.len()).expect("a test message under 4 GiB");
    let mut out = vec![0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// An Export request: `message` as generation `generation`.
pub fn request(generation: u64, message: wire::export_request::Message) -> wire::ExportRequest {
    wire::ExportRequest {
        generation,
        message: Some(message),
    }
}

/// An open Export stream, its request body written by hand.
#[derive(Debug)]
pub struct RawExport {
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    body: tonic::body::Body,
    buf: BytesMut,
    /// The registry's status, once the stream has ended.
    ended: Option<tonic::Status>,
}

impl RawExport {
    /// Opens an Export stream to the registry at `url` (`http://...`);
    /// nothing is sent yet.
    pub async fn open(url: String) -> Result<Self, tonic::Status> {
        let mut channel = Channel::from_shared(url)
            .expect("a registry URL")
            .connect()
            .await
            .expect("the registry's gRPC port accepts a connection");
        let (tx, rx) = mpsc::channel(64);
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(EXPORT)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(tonic::body::Body::new(axum::body::Body::from_stream(
                ReceiverStream::new(rx),
            )))
            .expect("a well-formed request");
        poll_fn(|cx| channel.poll_ready(cx))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let response = channel
            .call(request)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        // A stream refused at once answers with its status in the headers.
        let ended = tonic::Status::from_header_map(response.headers());
        Ok(RawExport {
            tx,
            body: response.into_body(),
            buf: BytesMut::new(),
            ended,
        })
    }

    /// Opens a stream to the registry at `url` and says Hello as
    /// `cluster`, waiting (up to 30 s) for its acknowledgement.
    pub async fn said_hello(url: String, cluster: &str) -> Self {
        use wire::export_request::Message as Req;
        let mut raw = RawExport::open(url).await.expect("the stream opens");
        let hello = crate::export_stream::hello(cluster);
        assert!(raw.write(framed(&request(1, Req::Hello(hello)))).await);
        let ack = tokio::time::timeout(std::time::Duration::from_secs(30), raw.next())
            .await
            .expect("the Hello is answered")
            .expect("an acknowledgement, not an ended stream")
            .expect("an acknowledgement");
        assert_eq!(ack.generation, 1);
        raw
    }

    /// Writes `bytes` to the request body as they are (one DATA frame,
    /// or a few if they are big). False once the registry has stopped
    /// reading.
    pub async fn write(&self, bytes: Vec<u8>) -> bool {
        self.tx.send(Ok(Bytes::from(bytes))).await.is_ok()
    }

    /// The next response, `Ok(None)` when the stream ended with OK, or
    /// the status the registry ended it with.
    pub async fn next(&mut self) -> Result<Option<wire::ExportResponse>, tonic::Status> {
        loop {
            if let Some(response) = self.message() {
                return Ok(Some(response));
            }
            if let Some(status) = &self.ended {
                return match status.code() {
                    tonic::Code::Ok => Ok(None),
                    _ => Err(status.clone()),
                };
            }
            match poll_fn(|cx| std::pin::Pin::new(&mut self.body).poll_frame(cx)).await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        self.ended = Some(
                            tonic::Status::from_header_map(&trailers)
                                .unwrap_or_else(|| tonic::Status::unknown("no grpc-status")),
                        );
                    }
                },
                Some(Err(status)) => self.ended = Some(status),
                None => {
                    self.ended = Some(tonic::Status::unknown("ended without trailers"));
                }
            }
        }
    }

    /// A whole response in the buffer, if one is there.
    fn message(&mut self) -> Option<wire::ExportResponse> {
        let header = self.buf.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if self.buf.len() < 5 + len {
            return None;
        }
        self.buf.advance(5);
        let bytes = self.buf.split_to(len);
        Some(wire::ExportResponse::decode(bytes).expect("the registry's responses decode"))
    }
}
