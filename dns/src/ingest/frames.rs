//! An Export stream's requests, read from its HTTP/2 body here rather than
//! by tonic's `Streaming`: gRPC's framing (a flag byte, a 4-byte length,
//! the message) and the same checks before prost decodes
//! ([`Checked::check`]: the first message's size, the decoding budget).
//!
//! Why: tonic's decode buffer keeps the capacity of the largest message a
//! stream ever carried for as long as the stream is open. An Export stream
//! carries one big Snapshot and then heartbeats for hours, so at 1,000
//! clusters the registry held 71 MB of empty buffers (71 bytes per
//! endpoint, benches/README.md "Fleet scale, sixth session"). Here a
//! message bigger than [`KEEP`] is decoded from its own allocation, which
//! is freed once decoded; what follows it moves to a fresh buffer.
//!
//! What a client can make a stream hold: one message (at most `max`
//! bytes; the first at most a Hello's, refused by the length its header
//! announces, before its bytes arrive) and one DATA frame (in a buffer
//! that grows as a `Vec` does, so at most twice that), and only for
//! `deadline` once the message has started: a client that sends a body
//! slowly, or starts a message and never finishes it, is cut off with
//! DEADLINE_EXCEEDED. The time counts only while the registry waits for
//! the message, not while it applies the one before.
//!
//! Across streams, a message bigger than [`KEEP`] (but the first) is
//! buffered only once its announced length is reserved from the shared
//! [`Budget`] (`--max-export-bytes-in-flight`, budget.rs says why and what
//! waits for it). Until then the stream reads no more of its body, so
//! HTTP/2 flow control holds the client back at its stream window, and
//! its deadline does not run: the wait is the hub's, not the client's.

use std::future::Future as _;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use meshdns_proto::codec::Checked;
use prost::Message;
use prost::bytes::{Buf, BytesMut};
use tokio::time::{Duration, Instant, Sleep};
use tokio_stream::Stream;
use tonic::codegen::Body as _;
use tonic::{Code, Status};

use super::budget::{Budget, Reservation, Reserving};

/// The flag byte and the length.
const HEADER: usize = 5;

/// A buffer at most this big is kept from one message to the next
/// (heartbeats and small Deltas fit); bigger ones are let go.
pub(super) const KEEP: usize = 4 * 1024;

/// The messages of a gRPC request body, each at most `max` bytes and
/// each whole within `deadline` of its first byte.
pub(super) struct Frames<U> {
    body: tonic::body::Body,
    buf: BytesMut,
    max: usize,
    deadline: Duration,
    /// Armed when the registry starts waiting for the rest of a message.
    timer: Option<Pin<Box<Sleep>>>,
    /// What was left of the deadline when the stream began to wait for
    /// the budget: the timer runs on with it once the bytes are reserved.
    paused: Option<Duration>,
    budget: Budget,
    /// The bytes of the message being received, once reserved.
    reservation: Option<Reservation>,
    /// The reservation being waited for.
    reserving: Option<Reserving>,
    first: bool,
    done: bool,
    _message: PhantomData<fn() -> U>,
}

impl<U> Frames<U> {
    pub(super) fn new(
        body: tonic::body::Body,
        max: usize,
        deadline: Duration,
        budget: Budget,
    ) -> Self {
        Frames {
            body,
            buf: BytesMut::new(),
            max,
            deadline,
            timer: None,
            paused: None,
            budget,
            reservation: None,
            reserving: None,
            first: true,
            done: false,
            _message: PhantomData,
        }
    }

    /// The stream is over: what it reserved goes back now, whether or
    /// not the reader drops it soon.
    fn end(&mut self) {
        self.done = true;
        self.reservation = None;
        self.reserving = None;
    }

    /// The length of the message whose header is in the buffer, if it
    /// must be reserved and is not yet: bigger than [`KEEP`], not the
    /// first, not already whole (checked by [`Frames::message`] first).
    fn unreserved(&self) -> Option<u32> {
        if self.first || self.reservation.is_some() {
            return None;
        }
        let header = self.buf.get(..HEADER)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        (len as usize > KEEP).then_some(len)
    }

    /// Reserves `len` bytes from the budget: ready once they are, and
    /// the deadline paused meanwhile.
    fn reserve(&mut self, len: u32, cx: &mut Context<'_>) -> Poll<()> {
        if self.reserving.is_none() {
            if let Some(reservation) = self.budget.try_reserve(len) {
                self.reservation = Some(reservation);
                return Poll::Ready(());
            }
            self.paused = self
                .timer
                .take()
                .map(|t| t.deadline().saturating_duration_since(Instant::now()));
            self.reserving = Some(self.budget.reserve(len));
        }
        let Some(reserving) = self.reserving.as_mut() else {
            return Poll::Ready(());
        };
        let Poll::Ready(reservation) = reserving.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        self.reserving = None;
        self.reservation = Some(reservation);
        if let Some(left) = self.paused.take() {
            self.timer = Some(Box::pin(tokio::time::sleep(left)));
        }
        Poll::Ready(())
    }

    /// The status a message not whole within the deadline ends with.
    fn too_slow(&self) -> Status {
        let got = match self.buf.get(..HEADER) {
            Some(header) => format!(
                "{} of its {} bytes arrived",
                self.buf.len() - HEADER,
                u32::from_be_bytes([header[1], header[2], header[3], header[4]])
            ),
            None => format!("{} of its 5 header bytes arrived", self.buf.len()),
        };
        Status::deadline_exceeded(format!(
            "a message was not complete within --export-message-timeout ({:?}) of its first byte: {got}",
            self.deadline
        ))
    }

    /// Bytes held for messages not yet complete, and spare room.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.buf.capacity()
    }
}

impl<U: Message + Default + Checked> Frames<U> {
    /// The next whole message in the buffer, if one is there.
    fn message(&mut self) -> Result<Option<U>, Status> {
        let Some(header) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        match header[0] {
            0 => {}
            // No compression is accepted (tonic's rule: INTERNAL).
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ));
            }
            flag => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1)"
                )));
            }
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > self.max {
            return Err(Status::out_of_range(format!(
                "decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max
            )));
        }
        U::check_length(len, self.first)?;
        let have = self.buf.len();
        if have < HEADER + len {
            // Room for exactly this message, once, when the budget has it.
            if self.unreserved().is_none() {
                self.buf.reserve(HEADER + len - have);
            }
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let bytes = self.buf.split_to(len);
        if len > KEEP {
            // What came after the message (if anything) moves out of its
            // allocation, so that dropping `bytes` frees it.
            self.buf = BytesMut::from(&self.buf[..]);
        }
        let first = std::mem::replace(&mut self.first, false);
        U::check(&bytes, first)?;
        let message = U::decode(&bytes[..]).map_err(|e| Status::internal(e.to_string()));
        // Decoded (or refused): its bytes are freed, and go back.
        drop(bytes);
        self.reservation = None;
        message.map(Some)
    }
}

impl<U: Message + Default + Checked> Stream for Frames<U> {
    type Item = Result<U, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.message() {
                Ok(Some(message)) => {
                    this.timer = None;
                    return Poll::Ready(Some(Ok(message)));
                }
                Ok(None) => {}
                Err(status) => {
                    this.end();
                    return Poll::Ready(Some(Err(status)));
                }
            }
            // A big message reads no further until its bytes are reserved.
            if let Some(len) = this.unreserved() {
                if this.reserve(len, cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) else {
                // Nothing more yet: a started message has its deadline.
                if !this.buf.is_empty() {
                    let deadline = this.deadline;
                    let timer = this
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
                    if timer.as_mut().poll(cx).is_ready() {
                        this.end();
                        return Poll::Ready(Some(Err(this.too_slow())));
                    }
                }
                return Poll::Pending;
            };
            match frame {
                Some(Ok(frame)) => {
                    // Trailers of a request carry nothing we read.
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(status)) => {
                    this.end();
                    // The client cancelled: the stream simply ends.
                    if status.code() == Code::Cancelled {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    this.end();
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Status::internal(
                        "unexpected end of stream inside a message",
                    ))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::codec::FIRST_EXPORT_MESSAGE_BYTES;
    use meshdns_proto::wire;
    use meshdns_proto::wire::export_request::Message as Req;
    use prost::bytes::Bytes;
    use tokio_stream::StreamExt;

    /// A budget no test here exhausts unless it means to.
    fn roomy() -> Budget {
        Budget::new(64 << 20, crate::metrics::BudgetMetrics::default())
    }

    /// A deadline no test here reaches unless it stalls on purpose.
    const PATIENT: Duration = Duration::from_secs(3600);

    fn framed(message: &wire::ExportRequest) -> Vec<u8> {
        let bytes = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
        out
    }

    fn hello() -> wire::ExportRequest {
        wire::ExportRequest {
            generation: 1,
            message: Some(Req::Hello(wire::Hello {
                cluster: "east-1".into(),
                ..Default::default()
            })),
        }
    }

    fn heartbeat(generation: u64) -> wire::ExportRequest {
        wire::ExportRequest {
            generation,
            message: Some(Req::Heartbeat(wire::Heartbeat::default())),
        }
    }

    /// A Snapshot of `services` services of ten endpoints each, with a
    /// zone and a node on every endpoint.
    fn snapshot(services: usize) -> wire::ExportRequest {
        let services = (0..services)
            .map(|s| wire::ServiceExport {
                key: Some(wire::ServiceKey {
                    namespace: "shop".into(),
                    name: format!("svc-{s}"),
                }),
                ports: vec![wire::Port {
                    port: 80,
                    ..Default::default()
                }],
                endpoints: (0..10)
                    .map(|e| wire::Endpoint {
                        addresses: vec![format!("10.0.{s}.{e}")],
                        zone: format!("zone-{}", e % 3),
                        node: format!("node-{e}"),
                        ready: true,
                        serving: true,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        wire::ExportRequest {
            generation: 2,
            message: Some(Req::Snapshot(wire::Snapshot {
                services,
                more: false,
            })),
        }
    }

    /// A body delivering `chunks` as its DATA frames, in order.
    fn body(chunks: Vec<Vec<u8>>) -> tonic::body::Body {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
        tonic::body::Body::new(axum::body::Body::from_stream(tokio_stream::iter(frames)))
    }

    /// `bytes` cut into pieces of `size`: messages straddle DATA frames.
    fn pieces(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
        bytes.chunks(size).map(<[u8]>::to_vec).collect()
    }

    #[tokio::test]
    async fn messages_read_back_exactly_however_the_body_is_cut() {
        let sent = vec![
            hello(),
            snapshot(40),
            heartbeat(3),
            snapshot(2),
            heartbeat(4),
        ];
        let all: Vec<u8> = sent.iter().flat_map(framed).collect();
        for size in [1, 5, 7, 4096, 16 * 1024, all.len()] {
            let mut frames = Frames::<wire::ExportRequest>::new(
                body(pieces(&all, size)),
                4 << 20,
                PATIENT,
                roomy(),
            );
            let mut got = Vec::new();
            while let Some(m) = frames.next().await {
                got.push(m.unwrap());
            }
            assert_eq!(got, sent, "DATA frames of {size} bytes");
        }
    }

    /// Each message of `sent` read back after the body was cut at
    /// `cuts` (byte offsets, any order).
    fn read_back(sent: &[wire::ExportRequest], cuts: &[usize]) -> Vec<wire::ExportRequest> {
        let all: Vec<u8> = sent.iter().flat_map(framed).collect();
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (all.len() + 1)).collect();
        at.extend([0, all.len()]);
        at.sort_unstable();
        at.dedup();
        let chunks = at.windows(2).map(|w| all[w[0]..w[1]].to_vec()).collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut frames =
                Frames::<wire::ExportRequest>::new(body(chunks), 4 << 20, PATIENT, roomy());
            let mut got = Vec::new();
            while let Some(m) = frames.next().await {
                got.push(m.unwrap());
                // The buffer grows as a Vec does (up to twice what it
                // must hold): never more than twice the body, or KEEP.
                let bound = 2 * KEEP.max(all.len());
                assert!(
                    frames.held() <= bound,
                    "{} held of {}",
                    frames.held(),
                    all.len()
                );
            }
            got
        })
    }

    proptest::proptest! {
        /// Any sequence of Hello, Snapshots small and big, and
        /// heartbeats, cut anywhere into DATA frames, reads back exactly.
        #[test]
        fn any_cut_of_any_messages_reads_back_exactly(
            kinds in proptest::collection::vec(0usize..60, 0..8),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..40),
        ) {
            let mut sent = vec![hello()];
            sent.extend(kinds.iter().enumerate().map(|(i, k)| match k {
                0..20 => heartbeat(i as u64),
                n => snapshot(n - 19),
            }));
            proptest::prop_assert_eq!(read_back(&sent, &cuts), sent);
        }
    }

    #[tokio::test]
    async fn a_big_message_leaves_no_big_buffer_behind() {
        let big = framed(&snapshot(200));
        assert!(big.len() > 8 * KEEP, "{}", big.len());
        // The next message arrives in the same DATA frame as the big one's
        // end (it must move out of the big allocation too), and another
        // one later, on its own (the buffer must not grow back into it).
        let mut tail = big.clone();
        tail.extend(framed(&heartbeat(3)));
        let mut chunks = vec![framed(&hello())];
        chunks.extend(pieces(&tail, 16 * 1024));
        chunks.push(framed(&heartbeat(4)));
        let mut frames =
            Frames::<wire::ExportRequest>::new(body(chunks), 4 << 20, PATIENT, roomy());
        assert_eq!(frames.next().await.unwrap().unwrap(), hello());
        let Some(Ok(wire::ExportRequest {
            message: Some(Req::Snapshot(s)),
            ..
        })) = frames.next().await
        else {
            panic!("the Snapshot");
        };
        assert_eq!(s.services.len(), 200);
        for next in [heartbeat(3), heartbeat(4)] {
            assert!(frames.held() <= KEEP, "{} bytes held", frames.held());
            assert_eq!(frames.next().await.unwrap().unwrap(), next);
        }
        assert!(frames.held() <= KEEP, "{} bytes held", frames.held());
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn oversized_truncated_and_compressed_messages_are_refused() {
        // Over the limit: refused at its length, before it arrives.
        let mut frames = Frames::<wire::ExportRequest>::new(
            body(vec![framed(&snapshot(5))]),
            64,
            PATIENT,
            roomy(),
        );
        let e = frames.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e}");
        assert!(frames.next().await.is_none());
        // A first message bigger than a Hello may be.
        let big = snapshot(FIRST_EXPORT_MESSAGE_BYTES / 200);
        assert!(big.encoded_len() > FIRST_EXPORT_MESSAGE_BYTES);
        let mut frames =
            Frames::<wire::ExportRequest>::new(body(vec![framed(&big)]), 4 << 20, PATIENT, roomy());
        let e = frames.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        // The body ends inside a message.
        let mut cut = framed(&hello());
        cut.truncate(cut.len() - 1);
        let mut frames =
            Frames::<wire::ExportRequest>::new(body(vec![cut]), 4 << 20, PATIENT, roomy());
        let e = frames.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e}");
        // Compressed, or a flag gRPC does not define.
        for flag in [1, 7] {
            let mut m = framed(&hello());
            m[0] = flag;
            let mut frames =
                Frames::<wire::ExportRequest>::new(body(vec![m]), 4 << 20, PATIENT, roomy());
            let e = frames.next().await.unwrap().unwrap_err();
            assert_eq!(e.code(), Code::Internal, "{e}");
        }
        // Not protobuf.
        let mut junk = vec![0, 0, 0, 0, 3];
        junk.extend([0xff, 0xff, 0xff]);
        let mut frames =
            Frames::<wire::ExportRequest>::new(body(vec![junk]), 4 << 20, PATIENT, roomy());
        assert!(frames.next().await.unwrap().is_err());
    }

    /// A body whose DATA frames are sent by the test, when it chooses.
    fn sent_body() -> (
        tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
        tonic::body::Body,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        (
            tx,
            tonic::body::Body::new(axum::body::Body::from_stream(stream)),
        )
    }

    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_message_started_and_never_finished_is_cut_off_at_the_deadline() {
        let (tx, body) = sent_body();
        let mut frames = Frames::<wire::ExportRequest>::new(body, 4 << 20, DEADLINE, roomy());
        let big = framed(&snapshot(20));
        let mut first = framed(&hello());
        first.extend_from_slice(&big[..100]);
        tx.send(Ok(first.into())).await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), hello());
        let started = tokio::time::Instant::now();
        // A little more now and then, never all of it.
        let sender = tokio::spawn(async move {
            for piece in big[100..big.len() - 1].chunks(500) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(Ok(piece.to_vec().into())).await.is_err() {
                    break;
                }
            }
            // Held open: the body never ends.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let e = frames.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
        assert!(
            e.message().contains("--export-message-timeout"),
            "{}",
            e.message()
        );
        assert!(e.message().contains("bytes arrived"), "{}", e.message());
        assert_eq!(started.elapsed(), DEADLINE);
        assert!(frames.next().await.is_none());
        sender.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_never_finished_is_cut_off_too() {
        let (tx, body) = sent_body();
        let mut frames = Frames::<wire::ExportRequest>::new(body, 4 << 20, DEADLINE, roomy());
        tx.send(Ok(vec![0, 0].into())).await.unwrap();
        let e = frames.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
        assert!(
            e.message().contains("2 of its 5 header bytes"),
            "{}",
            e.message()
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_message_within_the_deadline_and_long_pauses_between_messages_are_fine() {
        let (tx, body) = sent_body();
        let mut frames = Frames::<wire::ExportRequest>::new(body, 4 << 20, DEADLINE, roomy());
        let sent = [hello(), snapshot(20), heartbeat(3), snapshot(3)];
        let wire: Vec<Vec<u8>> = sent.iter().map(framed).collect();
        let sender = tokio::spawn(async move {
            tx.send(Ok(wire[0].clone().into())).await.unwrap();
            for message in &wire[1..] {
                // Idle between messages for longer than the deadline, then
                // each message in pieces over most of it.
                tokio::time::sleep(3 * DEADLINE).await;
                let pieces = message.chunks(message.len().div_ceil(9));
                for piece in pieces {
                    tx.send(Ok(piece.to_vec().into())).await.unwrap();
                    tokio::time::sleep(DEADLINE / 10).await;
                }
            }
        });
        for message in sent {
            assert_eq!(frames.next().await.unwrap().unwrap(), message);
        }
        sender.await.unwrap();
        assert!(frames.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_elsewhere_does_not_count() {
        let (tx, body) = sent_body();
        let mut frames = Frames::<wire::ExportRequest>::new(body, 4 << 20, DEADLINE, roomy());
        let big = framed(&snapshot(20));
        let mut first = framed(&hello());
        first.extend_from_slice(&big[..100]);
        tx.send(Ok(first.into())).await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), hello());
        // The registry applies the Hello for twice the deadline while the
        // rest of the next message arrives; then it reads on.
        let rest = big[100..].to_vec();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(DEADLINE / 2).await;
            tx.send(Ok(rest.into())).await.unwrap();
            tokio::time::sleep(3600 * DEADLINE).await;
        });
        tokio::time::sleep(2 * DEADLINE).await;
        let Some(Ok(wire::ExportRequest {
            message: Some(Req::Snapshot(s)),
            ..
        })) = frames.next().await
        else {
            panic!("the Snapshot");
        };
        assert_eq!(s.services.len(), 20);
        sender.abort();
    }

    #[tokio::test]
    async fn a_first_message_too_big_for_a_hello_is_refused_at_its_header() {
        // Only the header: the registry must not wait for 1 MiB to refuse.
        let (tx, body) = sent_body();
        let mut frames = Frames::<wire::ExportRequest>::new(body, 4 << 20, PATIENT, roomy());
        let mut header = vec![0];
        header.extend_from_slice(&(1u32 << 20).to_be_bytes());
        tx.send(Ok(header.into())).await.unwrap();
        let e = tokio::time::timeout(Duration::from_secs(30), frames.next())
            .await
            .expect("refused at its header, without waiting for its bytes")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
        assert!(
            frames.held() < FIRST_EXPORT_MESSAGE_BYTES,
            "{}",
            frames.held()
        );
        drop(tx);
    }

    /// A budget of exactly `bytes`, and its metrics.
    fn tight(bytes: usize) -> Budget {
        Budget::new(bytes, crate::metrics::BudgetMetrics::default())
    }

    /// The announced length of a framed message.
    fn announced(framed: &[u8]) -> usize {
        framed.len() - HEADER
    }

    /// A stream that said Hello and sent `sent` bytes of `big`.
    async fn started(
        budget: &Budget,
        big: &[u8],
        sent: usize,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
        Frames<wire::ExportRequest>,
    ) {
        let (tx, body) = sent_body();
        let mut frames =
            Frames::<wire::ExportRequest>::new(body, 4 << 20, DEADLINE, budget.clone());
        let mut first = framed(&hello());
        first.extend_from_slice(&big[..sent]);
        tx.send(Ok(first.into())).await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), hello());
        (tx, frames)
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_stream_waits_for_the_budget_without_its_deadline_running() {
        let big = framed(&snapshot(20));
        let budget = tight(announced(&big));
        let (a_tx, mut a) = started(&budget, &big, 100).await;
        // A reserves its message when it is polled for it; then its
        // reader is busy elsewhere (applying what came before) for long.
        assert!(tokio::time::timeout(DEADLINE / 10, a.next()).await.is_err());
        assert_eq!(budget.free(), 0);
        let (b_tx, mut b) = started(&budget, &big, 100).await;
        let b_reads = tokio::spawn(async move {
            let got = b.next().await;
            (got, b, tokio::time::Instant::now())
        });
        // B waits far longer than its deadline, and is not cut off: the
        // wait is the hub's. Nor has it made room for its body.
        tokio::time::sleep(5 * DEADLINE).await;
        assert!(!b_reads.is_finished(), "B went on without the budget");
        assert_eq!(budget.metrics().waits.get(), 1);
        assert!(budget.metrics().reserved.get() <= announced(&big) as i64);
        // A's message completes and is decoded: B gets the bytes.
        a_tx.send(Ok(big[100..].to_vec().into())).await.unwrap();
        let got = a.next().await;
        assert!(matches!(got, Some(Ok(_))), "{got:?}");
        // B now reads on; its deadline runs from here, not from its first
        // byte: it is cut off DEADLINE after it got the budget.
        let reserved_at = tokio::time::Instant::now();
        let (got, b, ended_at) = b_reads.await.unwrap();
        let e = got.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
        assert_eq!(ended_at - reserved_at, DEADLINE);
        // Cut off: its reservation is back, before the stream is dropped.
        assert_eq!(budget.free(), announced(&big));
        assert_eq!(budget.metrics().reserved.get(), 0);
        assert!(budget.metrics().wait_seconds.get() >= (5 * DEADLINE).as_secs_f64());
        drop((a, b, a_tx, b_tx));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_stream_proceeds_when_the_first_message_is_decoded() {
        let big = framed(&snapshot(20));
        let budget = tight(announced(&big));
        let (a_tx, mut a) = started(&budget, &big, 100).await;
        let a_reads = tokio::spawn(async move { (a.next().await, a) });
        tokio::task::yield_now().await;
        // B's header, then the rest of its message: it is not read (it
        // would sit in HTTP/2's window) until A's is decoded.
        let (b_tx, mut b) = started(&budget, &big, 100).await;
        let b_reads = tokio::spawn(async move { b.next().await });
        tokio::task::yield_now().await;
        b_tx.send(Ok(big[100..].to_vec().into())).await.unwrap();
        tokio::time::sleep(DEADLINE / 2).await;
        assert!(!b_reads.is_finished());
        a_tx.send(Ok(big[100..].to_vec().into())).await.unwrap();
        let (got, _a) = a_reads.await.unwrap();
        assert!(matches!(got, Some(Ok(_))), "{got:?}");
        let got = b_reads.await.unwrap();
        let Some(Ok(wire::ExportRequest {
            message: Some(Req::Snapshot(s)),
            ..
        })) = got
        else {
            panic!("B's Snapshot: {got:?}");
        };
        assert_eq!(s.services.len(), 20);
        // Decoded: given back.
        assert_eq!(budget.free(), announced(&big));
        drop(b_tx);
    }

    #[tokio::test(start_paused = true)]
    async fn small_messages_do_not_wait_behind_the_budget() {
        let big = framed(&snapshot(20));
        let budget = tight(announced(&big));
        let (_a_tx, mut a) = started(&budget, &big, 100).await;
        let _a_reads = tokio::spawn(async move { (a.next().await, a) });
        tokio::task::yield_now().await;
        assert_eq!(budget.free(), 0);
        // Another stream's Hello and heartbeats go through meanwhile,
        // each cut after its header (so not whole in one DATA frame).
        let (b_tx, body) = sent_body();
        let mut b = Frames::<wire::ExportRequest>::new(body, 4 << 20, DEADLINE, budget.clone());
        let sent = [hello(), heartbeat(2), heartbeat(3)];
        for message in sent {
            let bytes = framed(&message);
            b_tx.send(Ok(bytes[..HEADER + 1].to_vec().into()))
                .await
                .unwrap();
            let tx = b_tx.clone();
            let rest = bytes[HEADER + 1..].to_vec();
            tokio::spawn(async move { tx.send(Ok(rest.into())).await });
            let got = tokio::time::timeout(DEADLINE / 10, b.next())
                .await
                .expect("a small message does not wait for the budget");
            assert_eq!(got.unwrap().unwrap(), message);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_goes_back_when_the_stream_ends_mid_message() {
        let big = framed(&snapshot(20));
        let budget = tight(announced(&big));
        // The body ends inside the message.
        let (tx, mut a) = started(&budget, &big, 100).await;
        let a_reads = tokio::spawn(async move { (a.next().await, a) });
        tokio::task::yield_now().await;
        assert_eq!(budget.free(), 0);
        drop(tx);
        let (got, a) = a_reads.await.unwrap();
        assert_eq!(got.unwrap().unwrap_err().code(), Code::Internal);
        assert_eq!(budget.free(), announced(&big));
        drop(a);
        // The reader drops the stream mid-message (the client went away,
        // the stream was superseded).
        let (_tx, mut a) = started(&budget, &big, 100).await;
        assert!(
            tokio::time::timeout(DEADLINE / 2, a.next()).await.is_err(),
            "the message is not whole"
        );
        assert_eq!(budget.free(), 0);
        drop(a);
        assert_eq!(budget.free(), announced(&big));
        assert_eq!(budget.metrics().reserved.get(), 0);
    }
}
