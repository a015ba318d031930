//! One Export stream driven by hand, as a syncer — or a misbehaving
//! member — would: the first message of the test's choosing, then one
//! message at a time, each answered before the next is sent.

use meshdns_proto::wire::{self, export_request::Message as Req, registry_client::RegistryClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// An open Export stream.
#[derive(Debug)]
pub struct ExportStream {
    tx: mpsc::Sender<wire::ExportRequest>,
    rx: tonic::Streaming<wire::ExportResponse>,
    generation: u64,
    /// The answer to the first message (the Hello's acknowledgement).
    pub ack: wire::ExportResponse,
}

/// A Hello for `cluster` and nothing else.
pub fn hello(cluster: &str) -> wire::Hello {
    wire::Hello {
        cluster: cluster.into(),
        ..Default::default()
    }
}

impl ExportStream {
    /// Opens a stream to the registry at `url` (`http://...`) with
    /// `first` as generation 1, and waits for its answer. No message size
    /// limit on this side: tests send what a hostile member would.
    pub async fn open(url: String, first: Req) -> Result<Self, tonic::Status> {
        let mut client = RegistryClient::connect(url)
            .await
            .expect("the registry's gRPC port accepts a connection")
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(8);
        tx.send(wire::ExportRequest {
            generation: 1,
            message: Some(first),
        })
        .await
        .expect("the request channel is open");
        let mut rx = client.export(ReceiverStream::new(rx)).await?.into_inner();
        let ack = rx
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("closed"))?;
        assert_eq!(ack.generation, 1, "the first answer is for generation 1");
        Ok(ExportStream {
            tx,
            rx,
            generation: 1,
            ack,
        })
    }

    /// Sends `message` as the next generation and returns its answer, or
    /// the status the registry ended the stream with.
    pub async fn send(&mut self, message: Req) -> Result<wire::ExportResponse, tonic::Status> {
        self.generation += 1;
        let request = wire::ExportRequest {
            generation: self.generation,
            message: Some(message),
        };
        if self.tx.send(request).await.is_err() {
            // The registry already ended the stream: its status says why.
            return Err(self
                .rx
                .message()
                .await
                .err()
                .unwrap_or_else(|| tonic::Status::unknown("closed")));
        }
        let response = self
            .rx
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("closed"))?;
        assert_eq!(
            response.generation, self.generation,
            "the response carries the applied generation"
        );
        Ok(response)
    }
}
