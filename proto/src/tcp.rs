//! Fix-ups for frames between v86's network adapter and the guest.
//!
//! v86 0.5.462 opens host-to-guest connections with a SYN that carries no
//! MSS option, so Linux in the guest falls back to 536-byte segments for
//! everything it sends back: nearly three times the packets, each one a
//! trip through the emulated network card. [`add_mss_option`] rewrites such
//! a SYN frame with an MSS option, fixing the lengths and checksums.
//!
//! The same adapter drops the payload of a segment that carries FIN: it
//! takes the FIN and never hands the data on. Linux sends its last data and
//! its FIN in one segment whenever the socket is closed with data still
//! queued, as nginx does when it ends a keep-alive connection (a graceful
//! reload, for one) right after a response: the page then lost the
//! response's last bytes. [`split_fin`] turns such a segment into a data
//! segment followed by a bare FIN, which v86 handles in turn.

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
const FLAG_FIN: u8 = 0x01;
const FLAG_SYN: u8 = 0x02;
const FLAG_PSH: u8 = 0x08;
const FLAG_ACK: u8 = 0x10;
const OPTION_MSS: u8 = 2;

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// The Internet checksum (RFC 1071) of `bytes`, added to `initial`.
fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    for pair in bytes.chunks(2) {
        let word = if pair.len() == 2 {
            be16(pair, 0)
        } else {
            u16::from(pair[0]) << 8
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Returns `frame` (an Ethernet frame) with an MSS option of `mss` added,
/// when it is an IPv4 TCP SYN without ACK and without an MSS option;
/// `None` for anything else, which is to be sent unchanged.
pub fn add_mss_option(frame: &[u8], mss: u16) -> Option<Vec<u8>> {
    let seg = parse(frame)?;
    let (tcp, doff) = (seg.tcp, seg.tcp.len());
    if tcp[13] & FLAG_SYN == 0 || tcp[13] & FLAG_ACK != 0 {
        return None;
    }
    // Walk the options: an MSS option already there means nothing to do.
    let mut at = 20;
    while at < doff {
        match tcp[at] {
            // An end-of-list marker would hide an option added after it.
            0 => return None,
            1 => at += 1,
            kind => {
                if kind == OPTION_MSS {
                    return None;
                }
                let len = usize::from(*tcp.get(at + 1)?);
                if len < 2 {
                    return None;
                }
                at += len;
            }
        }
    }
    if doff + 4 > 60 {
        return None;
    }
    let mut segment = Vec::with_capacity(doff + 4 + seg.payload.len());
    segment.extend_from_slice(tcp);
    segment.extend_from_slice(&[OPTION_MSS, 4]);
    segment.extend_from_slice(&mss.to_be_bytes());
    segment.extend_from_slice(seg.payload);
    segment[12] = (((doff + 4) / 4) as u8) << 4 | (tcp[12] & 0x0f);
    Some(frame_of(seg.eth, seg.ip, segment))
}

/// An IPv4 TCP frame's parts: the IP header, the TCP header and the payload.
struct Segment<'a> {
    eth: &'a [u8],
    ip: &'a [u8],
    tcp: &'a [u8],
    payload: &'a [u8],
}

/// Splits `frame` into its parts when it is an IPv4 TCP frame whose lengths
/// agree with each other.
fn parse(frame: &[u8]) -> Option<Segment<'_>> {
    if frame.len() < ETH_HEADER + 20 || be16(frame, 12) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH_HEADER..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    if ip[0] >> 4 != 4 || ip[9] != PROTO_TCP || ihl < 20 || total > ip.len() || total < ihl + 20 {
        return None;
    }
    let tcp = &ip[ihl..total];
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || doff > tcp.len() {
        return None;
    }
    Some(Segment {
        eth: &frame[..ETH_HEADER],
        ip: &ip[..ihl],
        tcp: &tcp[..doff],
        payload: &tcp[doff..],
    })
}

/// Builds a frame from an Ethernet header, an IP header and a TCP segment
/// (header and payload), setting the IP total length and both checksums.
fn frame_of(eth: &[u8], ip_header: &[u8], mut segment: Vec<u8>) -> Vec<u8> {
    segment[16..18].copy_from_slice(&[0, 0]);
    let pseudo: u32 = [
        be16(ip_header, 12),
        be16(ip_header, 14),
        be16(ip_header, 16),
        be16(ip_header, 18),
    ]
    .iter()
    .map(|w| u32::from(*w))
    .sum::<u32>()
        + u32::from(PROTO_TCP)
        + segment.len() as u32;
    let tcp_sum = checksum(pseudo, &segment);
    segment[16..18].copy_from_slice(&tcp_sum.to_be_bytes());

    let mut header = ip_header.to_vec();
    let total = (header.len() + segment.len()) as u16;
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[10..12].copy_from_slice(&[0, 0]);
    let ip_sum = checksum(0, &header);
    header[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let mut out = Vec::with_capacity(eth.len() + header.len() + segment.len());
    out.extend_from_slice(eth);
    out.extend_from_slice(&header);
    out.extend_from_slice(&segment);
    out
}

/// Splits a TCP segment that carries both data and FIN into two frames:
/// the data without FIN, then a bare FIN whose sequence number follows the
/// data. `None` for any other frame, which is to be passed on unchanged.
pub fn split_fin(frame: &[u8]) -> Option<[Vec<u8>; 2]> {
    let seg = parse(frame)?;
    if seg.tcp[13] & FLAG_FIN == 0 || seg.payload.is_empty() {
        return None;
    }
    let mut data = seg.tcp.to_vec();
    data[13] &= !FLAG_FIN;
    data.extend_from_slice(seg.payload);

    let mut fin = seg.tcp.to_vec();
    let seq =
        u32::from_be_bytes([fin[4], fin[5], fin[6], fin[7]]).wrapping_add(seg.payload.len() as u32);
    fin[4..8].copy_from_slice(&seq.to_be_bytes());
    fin[13] &= !FLAG_PSH;
    Some([
        frame_of(seg.eth, seg.ip, data),
        frame_of(seg.eth, seg.ip, fin),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN from 192.168.86.1:49152 to 192.168.86.100:80 the way v86 writes
    /// it: no options, zero window, checksums filled in.
    fn v86_syn(flags: u8, options: &[u8]) -> Vec<u8> {
        segment(flags, options, &[])
    }

    /// A segment from 192.168.86.1:49152 to 192.168.86.100:80, sequence
    /// number 1337, with valid checksums.
    fn segment(flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&49152u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1337u32.to_be_bytes());
        tcp.extend_from_slice(options);
        tcp[12] = (((20 + options.len()) / 4) as u8) << 4;
        tcp[13] = flags;
        tcp.extend_from_slice(payload);
        let src = [192, 168, 86, 1];
        let dst = [192, 168, 86, 100];
        let pseudo = (u32::from(be16(&src, 0)) + u32::from(be16(&src, 2)))
            + (u32::from(be16(&dst, 0)) + u32::from(be16(&dst, 2)))
            + 6
            + tcp.len() as u32;
        let sum = checksum(pseudo, &tcp);
        tcp[16..18].copy_from_slice(&sum.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip[2..4].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
        let sum = checksum(0, &ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![0x52, 0x54, 0, 1, 2, 3, 0, 0x22, 0x15, 1, 2, 3, 0x08, 0x00];
        frame.extend(ip);
        frame.extend(tcp);
        frame
    }

    #[test]
    fn a_bare_syn_gets_an_mss_with_valid_checksums() {
        let out = add_mss_option(&v86_syn(FLAG_SYN, &[]), 1460).expect("rewritten");
        let ip = &out[ETH_HEADER..];
        assert_eq!(be16(ip, 2), 44, "IP total length grew by 4");
        assert_eq!(checksum(0, &ip[..20]), 0, "IP header checksum verifies");
        let tcp = &ip[20..];
        assert_eq!(tcp[12] >> 4, 6, "data offset is 24 bytes");
        assert_eq!(&tcp[20..24], &[2, 4, 0x05, 0xb4], "MSS 1460");
        let pseudo = [be16(ip, 12), be16(ip, 14), be16(ip, 16), be16(ip, 18)]
            .iter()
            .map(|w| u32::from(*w))
            .sum::<u32>()
            + 6
            + tcp.len() as u32;
        assert_eq!(checksum(pseudo, tcp), 0, "TCP checksum verifies");
        assert_eq!(be16(tcp, 2), 80, "ports untouched");
    }

    #[test]
    fn an_end_of_options_marker_is_not_built_past() {
        assert_eq!(
            add_mss_option(&v86_syn(FLAG_SYN, &[3, 3, 7, 0]), 1460),
            None
        );
    }

    #[test]
    fn other_frames_are_left_alone() {
        assert_eq!(
            add_mss_option(&v86_syn(FLAG_SYN | FLAG_ACK, &[]), 1460),
            None
        );
        assert_eq!(add_mss_option(&v86_syn(FLAG_ACK, &[]), 1460), None);
        assert_eq!(
            add_mss_option(&v86_syn(FLAG_SYN, &[2, 4, 2, 0]), 1460),
            None
        );
        let mut arp = v86_syn(FLAG_SYN, &[]);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(add_mss_option(&arp, 1460), None);
        assert_eq!(add_mss_option(&[0; 10], 1460), None);
        let syn = v86_syn(FLAG_SYN, &[]);
        for cut in 0..syn.len() {
            let _ = add_mss_option(&syn[..cut], 1460);
        }
    }

    #[test]
    fn existing_options_are_kept() {
        // NOP NOP, window scale 7, NOP padding: no MSS yet.
        let out = add_mss_option(&v86_syn(FLAG_SYN, &[1, 1, 3, 3, 7, 1, 1, 1]), 1460).unwrap();
        let tcp = &out[ETH_HEADER + 20..];
        assert_eq!(tcp[12] >> 4, 8);
        assert_eq!(&tcp[20..28], &[1, 1, 3, 3, 7, 1, 1, 1]);
        assert_eq!(&tcp[28..32], &[2, 4, 0x05, 0xb4]);
    }

    /// Checks both checksums of `frame`; returns its TCP header and payload.
    fn verified(frame: &[u8]) -> (&[u8], &[u8]) {
        let ip = &frame[ETH_HEADER..];
        let total = usize::from(be16(ip, 2));
        assert_eq!(total, ip.len(), "IP total length matches the frame");
        assert_eq!(checksum(0, &ip[..20]), 0, "IP header checksum verifies");
        let tcp = &ip[20..total];
        let pseudo = [be16(ip, 12), be16(ip, 14), be16(ip, 16), be16(ip, 18)]
            .iter()
            .map(|w| u32::from(*w))
            .sum::<u32>()
            + 6
            + tcp.len() as u32;
        assert_eq!(checksum(pseudo, tcp), 0, "TCP checksum verifies");
        let doff = usize::from(tcp[12] >> 4) * 4;
        (&tcp[..doff], &tcp[doff..])
    }

    fn seq(tcp: &[u8]) -> u32 {
        u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]])
    }

    #[test]
    fn data_with_fin_becomes_data_then_a_bare_fin() {
        let timestamps = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7];
        let payload: Vec<u8> = (0..304u32).map(|i| (i * 7) as u8).collect();
        let flags = FLAG_FIN | FLAG_PSH | FLAG_ACK;
        let [data, fin] = split_fin(&segment(flags, &timestamps, &payload)).expect("split");

        let (head, body) = verified(&data);
        assert_eq!(body, &payload[..], "the data is all in the first frame");
        assert_eq!(head[13], FLAG_PSH | FLAG_ACK, "without FIN");
        assert_eq!(seq(head), 1337);
        assert_eq!(&head[20..], &timestamps, "options kept");

        let (head, body) = verified(&fin);
        assert!(body.is_empty(), "the FIN carries no data");
        assert_eq!(head[13], FLAG_FIN | FLAG_ACK);
        assert_eq!(seq(head), 1337 + 304, "the FIN follows the data");
        assert_eq!(be16(head, 0), 49152, "ports untouched");
        assert_eq!(be16(head, 2), 80);
    }

    #[test]
    fn a_fin_next_to_the_end_of_sequence_space_wraps() {
        let mut frame = segment(FLAG_FIN | FLAG_ACK, &[], b"tail");
        let at = ETH_HEADER + 20 + 4;
        frame[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        // The checksum is now wrong, which split_fin does not check.
        let [_, fin] = split_fin(&frame).expect("split");
        assert_eq!(seq(verified(&fin).0), 3);
    }

    #[test]
    fn segments_without_both_data_and_fin_pass_unchanged() {
        assert_eq!(split_fin(&segment(FLAG_FIN | FLAG_ACK, &[], &[])), None);
        assert_eq!(split_fin(&segment(FLAG_ACK, &[], b"data")), None);
        assert_eq!(split_fin(&segment(FLAG_SYN, &[], &[])), None);
        let frame = segment(FLAG_FIN | FLAG_ACK, &[], b"data");
        for cut in 0..frame.len() {
            let _ = split_fin(&frame[..cut]);
        }
        // Ethernet padding after the IP packet is not data.
        let mut padded = segment(FLAG_FIN | FLAG_ACK, &[], &[]);
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(split_fin(&padded), None);
    }
}
