//! A scripted MQTT 3.1.1 peer, for interleavings a real broker produces only by chance:
//! publishes and a closed connection in one TCP segment, a resumed or a lost session on
//! demand, and a record of every packet the provider sends.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{ConnAck, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_PACKET: usize = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Listens on a free loopback port; each [`ScriptedBroker::accept`] serves one connection.
pub struct ScriptedBroker {
    listener: TcpListener,
}

/// One accepted connection, after CONNECT and CONNACK.
pub struct ScriptedConnection {
    stream: TcpStream,
    read: BytesMut,
    /// Packet ids of every PUBACK read so far, in order.
    pubacks: Vec<u16>,
}

impl ScriptedBroker {
    pub async fn bind() -> ScriptedBroker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the scripted broker");
        ScriptedBroker { listener }
    }

    pub fn url(&self) -> String {
        let port = self.listener.local_addr().expect("local address").port();
        format!("mqtt://127.0.0.1:{port}")
    }

    /// Accepts the next connection, reads its CONNECT and answers CONNACK with
    /// `session_present`.
    pub async fn accept(&self, session_present: bool) -> ScriptedConnection {
        let (stream, _) = tokio::time::timeout(TIMEOUT, self.listener.accept())
            .await
            .expect("the provider connects in time")
            .expect("accept");
        let mut connection = ScriptedConnection {
            stream,
            read: BytesMut::new(),
            pubacks: Vec::new(),
        };
        match connection.next_packet().await {
            Packet::Connect(_) => {}
            other => panic!("expected CONNECT, got {other:?}"),
        }
        let connack = ConnAck::new(ConnectReturnCode::Success, session_present);
        connection.send(&[Packet::ConnAck(connack)]).await;
        connection
    }
}

impl ScriptedConnection {
    /// The next packet from the provider (PUBACKs are also recorded).
    pub async fn next_packet(&mut self) -> Packet {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match Packet::read(&mut self.read, MAX_PACKET) {
                    Ok(packet) => {
                        if let Packet::PubAck(ack) = &packet {
                            self.pubacks.push(ack.pkid);
                        }
                        return packet;
                    }
                    Err(rumqttc::Error::InsufficientBytes(_)) => {}
                    Err(error) => panic!("the provider sent a malformed packet: {error}"),
                }
                let read = self.stream.read_buf(&mut self.read).await.expect("read");
                assert!(read > 0, "the provider closed the connection");
            }
        })
        .await
        .expect("a packet from the provider in time")
    }

    /// Reads the SUBSCRIBE and grants every filter at QoS 1.
    pub async fn grant_subscription(&mut self) {
        loop {
            if let Packet::Subscribe(subscribe) = self.next_packet().await {
                let granted =
                    vec![SubscribeReasonCode::Success(QoS::AtLeastOnce); subscribe.filters.len()];
                self.send(&[Packet::SubAck(SubAck::new(subscribe.pkid, granted))])
                    .await;
                return;
            }
        }
    }

    /// Reads until every packet id of `pkids` was acked; returns the packet ids of every
    /// PUBACK read on this connection so far, in order.
    pub async fn pubacks_until(&mut self, pkids: &[u16]) -> Vec<u16> {
        while !pkids.iter().all(|pkid| self.pubacks.contains(pkid)) {
            self.next_packet().await;
        }
        self.pubacks.clone()
    }

    /// Writes `packets` in one write, so they reach the provider in one segment.
    pub async fn send(&mut self, packets: &[Packet]) {
        self.stream
            .write_all(&encode(packets))
            .await
            .expect("write");
    }

    /// Writes `packets` and closes the connection in the same breath.
    pub async fn send_and_close(mut self, packets: &[Packet]) {
        self.send(packets).await;
        self.stream.shutdown().await.expect("shutdown");
    }
}

/// A QoS 1 publish with a packet id chosen by the script.
pub fn publish(topic: &str, payload: String, pkid: u16, dup: bool) -> Packet {
    let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload);
    publish.pkid = pkid;
    publish.dup = dup;
    Packet::Publish(publish)
}

fn encode(packets: &[Packet]) -> BytesMut {
    let mut out = BytesMut::new();
    for packet in packets {
        packet.write(&mut out, MAX_PACKET).expect("encode a packet");
    }
    out
}
