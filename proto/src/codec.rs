//! The gRPC codec of every meshdns RPC: prost, with small starting
//! buffers. tonic's default gives each stream an 8 KiB decode and an
//! 8 KiB encode buffer up front; a registry holds an Export stream open
//! per cluster, mostly idle between heartbeats, so at a thousand clusters
//! that is 16 MiB before anything is sent. The buffers still grow to the
//! largest message a stream carries.
//!
//! It is also where a message's cost is checked before prost allocates:
//! the first message of an Export stream (its Hello) may be at most
//! [`FIRST_EXPORT_MESSAGE_BYTES`], and no Export message may decode to
//! more than [`budget::allowed`] of its size (`crate::budget`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::{budget, wire};

/// Largest first message of an Export stream: it must be a Hello, and
/// until the Hello is authorized nothing bigger is read.
pub const FIRST_EXPORT_MESSAGE_BYTES: usize = 32 * 1024;

/// Initial buffer per direction per stream; heartbeats and responses fit.
const INITIAL_BUFFER: usize = 512;
/// tonic's default: encoded messages are flushed to the transport in
/// batches of about this much.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with 512-byte starting buffers; named in
/// `build.rs` as the codec of the generated clients and servers.
#[derive(Debug)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + Checked + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder {
            inner: ProstCodec::<T, U>::raw_decoder(settings()),
            first: true,
        }
    }
}

/// A decoded message type, with what is checked of its bytes first.
pub trait Checked {
    /// Refuses `bytes` (a whole message) before it is decoded; `first`
    /// says whether it is the stream's first message.
    fn check(_bytes: &[u8], _first: bool) -> Result<(), Status> {
        Ok(())
    }

    /// Refuses a message by the length its header announces, before its
    /// bytes arrive (a reader that frames messages itself calls this).
    fn check_length(_len: usize, _first: bool) -> Result<(), Status> {
        Ok(())
    }
}

impl Checked for wire::ExportRequest {
    fn check_length(len: usize, first: bool) -> Result<(), Status> {
        if first && len > FIRST_EXPORT_MESSAGE_BYTES {
            return Err(Status::resource_exhausted(format!(
                "the first message of an export stream must be a Hello of at most {FIRST_EXPORT_MESSAGE_BYTES} bytes; this one is {len} bytes"
            )));
        }
        Ok(())
    }

    fn check(bytes: &[u8], first: bool) -> Result<(), Status> {
        Self::check_length(bytes.len(), first)?;
        // Fails closed: bytes the walk cannot read (groups, truncated
        // fields) are refused rather than handed to prost unchecked.
        let Some(cost) = budget::export_request(bytes) else {
            return Err(Status::invalid_argument(
                "the message is not well-formed protobuf (meshdns.v1.ExportRequest)",
            ));
        };
        if cost > budget::allowed(bytes.len()) {
            return Err(Status::resource_exhausted(format!(
                "a message of {} bytes would take {cost} bytes decoded, over the limit of {} ({}x its size): too many empty entries",
                bytes.len(),
                budget::allowed(bytes.len()),
                budget::AMPLIFICATION
            )));
        }
        Ok(())
    }
}

impl Checked for wire::ExportResponse {}
impl Checked for wire::WatchRequest {}
impl Checked for wire::WatchEvent {}
impl Checked for wire::ListClustersRequest {}
impl Checked for wire::ListClustersResponse {}
impl Checked for wire::GetServiceRequest {}
impl Checked for wire::GetServiceResponse {}
impl Checked for wire::WatchImportsRequest {}
impl Checked for wire::ImportsEvent {}

/// [`ProstDecoder`] behind [`Checked::check`].
#[derive(Debug)]
pub struct CheckedDecoder<U> {
    inner: ProstDecoder<U>,
    first: bool,
}

impl<U: Message + Default + Checked> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use prost::bytes::Buf;
        let first = std::mem::replace(&mut self.first, false);
        // A whole message is buffered contiguously; should a future tonic
        // hand over a partial chunk, the check is skipped, not wrong.
        if buf.chunk().len() == buf.remaining() {
            U::check(buf.chunk(), first)?;
        }
        self.inner.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
