//! The endpoint's UDP socket: its receive buffer, and the datagrams the kernel dropped
//! because that buffer was full.
//!
//! Every QUIC datagram a node receives waits in its socket's receive buffer until the
//! endpoint reads it. Linux's default buffer (`net.core.rmem_default`, 208 KiB) holds a
//! few hundred small datagrams, or a couple of dozen large ones: a burst of replica
//! messages, or a multi-megabyte value arriving while the node is busy, overflows it, and
//! every datagram dropped there is a loss QUIC must detect and resend, shrinking its
//! congestion window. So the endpoint asks for a larger buffer
//! ([`TransportConfig::udp_receive_buffer_bytes`](crate::TransportConfig)), and the drops
//! the kernel counted for the socket are readable
//! ([`Endpoint::udp_receive_drops`](crate::Endpoint::udp_receive_drops)) so that an
//! operator sees when the buffer is still too small.
//!
//! It also bounds quinn's segmentation-offload batches ([`BoundedBatches`]): one send
//! of a batch carries at most a UDP datagram's 64 KiB.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use socket2::Socket;

/// The most bytes one `sendmsg` of a segmentation-offload batch may carry: the UDP
/// length field's 65,535 less the UDP and IPv4 headers (Linux refuses more with
/// `EMSGSIZE`).
const MAX_BATCH_BYTES: usize = 65_535 - 8 - 20;

/// How many datagrams of at most `max_datagram_bytes` one offloaded send may carry.
pub(crate) fn batch_segments(max_datagram_bytes: u16) -> usize {
    (MAX_BATCH_BYTES / usize::from(max_datagram_bytes).max(1)).max(1)
}

/// The runtime's UDP socket with quinn's segmentation-offload batches bounded to what one
/// send carries.
///
/// quinn builds batches of up to 10 datagrams of the path's MTU. With datagrams larger
/// than 6,550 bytes (`transport.max_udp_payload_bytes` raised for loopback or jumbo
/// frames) a full batch is over 64 KiB, the kernel refuses it with `EMSGSIZE`, and
/// quinn's socket layer counts that as sent (it expects the error only from MTU probes):
/// the batch's datagrams are lost, resent after a loss timeout with a smaller congestion
/// window, and the losses of large datagrams make path MTU discovery fall back to 1,200
/// bytes. Bounding the batch (7 datagrams of 9,000 bytes) keeps every send whole.
#[derive(Debug)]
pub(crate) struct BoundedBatches {
    inner: Arc<dyn AsyncUdpSocket>,
    max_segments: usize,
}

impl BoundedBatches {
    /// Wraps `inner`, whose datagrams are at most `max_datagram_bytes` long.
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, max_datagram_bytes: u16) -> BoundedBatches {
        BoundedBatches {
            inner,
            max_segments: batch_segments(max_datagram_bytes),
        }
    }
}

impl AsyncUdpSocket for BoundedBatches {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Asks the kernel for a receive buffer of `bytes` on `socket`. Where the process may
/// (Linux, `CAP_NET_ADMIN`), `SO_RCVBUFFORCE` is used, which is not capped by
/// `net.core.rmem_max`; else `SO_RCVBUF`, which is. Linux then reports
/// (`Socket::recv_buffer_size`) twice what it was asked for (the other half is its
/// bookkeeping).
pub(crate) fn size_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    if force_receive_buffer(socket, bytes) {
        return Ok(());
    }
    socket.set_recv_buffer_size(bytes)
}

#[cfg(target_os = "linux")]
fn force_receive_buffer(socket: &Socket, bytes: usize) -> bool {
    rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, bytes).is_ok()
}

#[cfg(not(target_os = "linux"))]
fn force_receive_buffer(_: &Socket, _: usize) -> bool {
    false
}

/// The inode number of `socket`, which names it in `/proc/net/udp` (Linux).
pub(crate) fn socket_inode(socket: &Socket) -> Option<u64> {
    rustix::fs::fstat(socket).ok().map(|stat| stat.st_ino)
}

/// The datagrams the kernel dropped for the UDP socket with `inode` (its receive buffer
/// was full), read from `/proc/self/net/udp` and `udp6`; `None` where those files cannot
/// be read or do not list the socket.
pub(crate) fn receive_drops(inode: u64) -> Option<u64> {
    ["/proc/self/net/udp", "/proc/self/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|table| parse_drops(&table, inode))
}

/// The `drops` column of the row of `table` (the text of `/proc/net/udp` or `udp6`) whose
/// `inode` column is `inode`. Columns, split on whitespace (proc(5), `udp4_format_sock`):
/// `sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops`.
pub(crate) fn parse_drops(table: &str, inode: u64) -> Option<u64> {
    const INODE: usize = 9;
    const DROPS: usize = 12;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(INODE)?.parse::<u64>().ok()? != inode {
            return None;
        }
        fields.get(DROPS)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    /// A batch of the bound's datagrams fits one send: 45 of Ethernet's 1,452 bytes
    /// (quinn asks for at most 10), 7 of 9,000, and 1 of the largest (sent alone).
    #[test]
    fn a_batch_of_the_bounds_datagrams_fits_one_send() {
        for (bound, segments) in [(1200, 54), (1452, 45), (6550, 10), (9000, 7), (65507, 1)] {
            assert_eq!(super::batch_segments(bound), segments, "bound {bound}");
            assert!(segments * usize::from(bound) <= 65_507, "bound {bound}");
        }
        assert_eq!(super::batch_segments(65527), 1);
    }

    use super::*;

    /// Rows as Linux 6.x prints them: the drops column of the row whose inode matches.
    #[test]
    fn drops_are_read_from_the_row_of_the_socket_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1234: 0100007F:6B25 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48151 2 0000000000000000 0\n\
  1235: 0100007F:6B26 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 48152 2 0000000000000000 917\n";
        assert_eq!(parse_drops(table, 48151), Some(0));
        assert_eq!(parse_drops(table, 48152), Some(917));
        assert_eq!(parse_drops(table, 1), None, "no row for another inode");
        assert_eq!(parse_drops("header only\n", 48151), None);
        assert_eq!(
            parse_drops("h\n 1: a b c d e f g h 48151 2 p not-a-number\n", 48151),
            None,
            "a malformed drops column is not a number"
        );
    }
}
