//! The gRPC codec of every meshdns RPC: prost, with small starting
//! buffers. tonic's default gives each stream an 8 KiB decode and an
//! 8 KiB encode buffer up front; a registry holds an Export stream open
//! per cluster, mostly idle between heartbeats, so at a thousand clusters
//! that is 16 MiB before anything is sent. The buffers still grow to the
//! largest message a stream carries.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial buffer per direction per stream; heartbeats and responses fit.
const INITIAL_BUFFER: usize = 512;
/// tonic's default: encoded messages are flushed to the transport in
/// batches of about this much.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(INITIAL_BUFFER, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`INITIAL_BUFFER`]-byte starting buffers; named in
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
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
