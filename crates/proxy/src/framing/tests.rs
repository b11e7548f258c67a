use super::*;

const AMBIGUOUS_HEADS: [&str; 4] = [
    "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length:5\r\ntransfer-encoding:  gzip, chunked \r\n\r\n",
    "POST /a HTTP/1.1\nHost: x\nContent-Length: 0\nTransfer-Encoding: chunked\n\n",
];

/// Feeds `stream` in pieces cut at `cuts` and returns the absolute index of the refused byte, if any.
fn feed_in_pieces(stream: &[u8], cuts: &[usize]) -> Option<usize> {
    let mut tracker = Tracker::default();
    let mut start = 0;
    for end in cuts.iter().copied().chain([stream.len()]) {
        if let Some(at) = tracker.feed(&stream[start..end]) {
            return Some(start + at);
        }
        start = end;
    }
    None
}

#[test]
fn a_head_with_both_framing_headers_is_refused_at_its_final_line_feed() {
    for head in AMBIGUOUS_HEADS {
        let at = feed_in_pieces(head.as_bytes(), &[]);
        assert_eq!(at, Some(head.len() - 1), "{head:?}");
    }
}

#[test]
fn the_refusal_is_found_wherever_the_reads_split_the_head() {
    for head in AMBIGUOUS_HEADS {
        let bytes = head.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                feed_in_pieces(bytes, &[cut]),
                Some(bytes.len() - 1),
                "{head:?} cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(feed_in_pieces(bytes, &every_byte), Some(bytes.len() - 1));
    }
}

#[test]
fn bodies_are_skipped_so_the_next_head_on_a_keep_alive_connection_is_checked() {
    let bad = AMBIGUOUS_HEADS[0];
    // The bodies themselves contain text that looks like an ambiguous head: it must not be taken for one.
    let decoy = AMBIGUOUS_HEADS[1];
    let chunked_body = format!(
        "{:x};ext=1\r\n{decoy}\r\n3 \r\nabc\r\n0\r\nX-Trailer: {decoy_line}\r\n\r\n",
        decoy.len(),
        decoy_line = "v"
    );
    let preceding = [
        "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        "\r\n\r\nGET /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_string(),
        format!(
            "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{decoy}",
            decoy.len()
        ),
        format!("POST /1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_body}"),
        "POST /1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_string(),
        "POST /1 HTTP/1.0\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello".to_string(),
    ];
    for first in &preceding {
        let stream = format!("{first}{bad}");
        let want = Some(stream.len() - 1);
        assert_eq!(feed_in_pieces(stream.as_bytes(), &[]), want, "{first:?}");
        for cut in 0..stream.len() {
            assert_eq!(
                feed_in_pieces(stream.as_bytes(), &[cut]),
                want,
                "{first:?} cut at {cut}"
            );
        }
        let every_byte: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(feed_in_pieces(stream.as_bytes(), &every_byte), want);
        // Without the bad request at the end, nothing is refused.
        assert_eq!(feed_in_pieces(first.as_bytes(), &[]), None, "{first:?}");
    }
}

#[test]
fn inspection_stops_where_the_stream_is_not_followable_http1() {
    let bad = AMBIGUOUS_HEADS[0];
    for first in [
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
        // hyper refuses these itself; the guard does not try to follow what comes after them.
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    ] {
        let stream = format!("{first}{bad}");
        assert_eq!(feed_in_pieces(stream.as_bytes(), &[]), None, "{first:?}");
    }
}

#[test]
fn a_head_longer_than_hyper_accepts_ends_inspection() {
    let mut tracker = Tracker::default();
    let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
    assert_eq!(tracker.feed(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    while tracker.inspects() {
        assert_eq!(tracker.feed(filler.as_bytes()), None);
        assert!(tracker.head.len() <= MAX_HEAD_BYTES);
    }
    assert!(tracker.head.is_empty(), "buffer kept after giving up");
    assert_eq!(tracker.feed(AMBIGUOUS_HEADS[0].as_bytes()), None);
}

#[test]
fn framing_values_are_read_as_hyper_reads_them() {
    assert_eq!(content_length_value(b"0"), Some(0));
    assert_eq!(content_length_value(b"42"), Some(42));
    assert_eq!(content_length_value(b"7, 7 ,7"), Some(7));
    assert_eq!(content_length_value(b"7, 8"), None);
    assert_eq!(content_length_value(b""), None);
    assert_eq!(content_length_value(b"-1"), None);
    assert_eq!(content_length_value(b"99999999999999999999"), None);
    assert_eq!(
        judge_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"),
        Verdict::Next(Position::Body(3))
    );
    assert_eq!(
        judge_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
        Verdict::Next(Position::Body(3))
    );
    assert_eq!(
        judge_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        Verdict::Next(Position::Off)
    );
    assert_eq!(
        judge_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Verdict::Next(Position::Chunked(Chunk::Size { size: 0, digits: 0 }))
    );
    assert_eq!(
        judge_head(b"GET / HTTP/1.1\r\nX-Content-Length: 3\r\nX-Transfer-Encoding: chunked\r\n\r\n"),
        Verdict::Next(Position::Head)
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_only_refuse_inside_the_input() {
    // A small deterministic generator: the guard sees every byte of hostile input.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let alphabet = b"\r\n:;, 0123456789abcdefABCDEF-GETPOSTHTTP/1.1Content-LengthTransfer-Encodingchunked";
    for _ in 0..2_000 {
        let mut tracker = Tracker::default();
        for _ in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let chunk: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i) % alphabet.len()])
                .collect();
            if let Some(at) = tracker.feed(&chunk) {
                assert!(at < chunk.len());
                assert_eq!(chunk[at], b'\n');
                assert!(!tracker.inspects());
            }
        }
    }
}

/// The one-pass scan of a head that starts in one read must agree with finding its end and then judging it:
/// the same verdict, and the same end wherever inspection goes on after the head.
#[test]
fn the_one_pass_scan_agrees_with_end_then_judge() {
    let mut heads: Vec<Vec<u8>> = AMBIGUOUS_HEADS.iter().map(|h| h.as_bytes().to_vec()).collect();
    for head in [
        "GET / HTTP/1.1\r\nHost: bench.example.com\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\nhello world!",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\nno colon here\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: 1\r\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: 1\r\n",
        "GET / HTTP/1.1",
    ] {
        heads.push(head.as_bytes().to_vec());
    }
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let alphabet = b"\r\n\r\n:: ,0123456789GET / HTTP/1.1Content-LengthTransfer-EncodingUpgradechunkedX-";
    for _ in 0..5_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 96) as usize;
        let mut head = b"POST / HTTP/1.1\r\n".to_vec();
        head.extend((0..len).map(|i| alphabet[((seed >> (i % 50)) as usize + i) % alphabet.len()]));
        heads.push(head);
    }
    for head in &heads {
        let scanned = scan_head(head);
        let two_pass = head_end(&[], head).map(|end| (end, judge_head(&head[..=end])));
        match (&scanned, &two_pass) {
            (Some((_, Verdict::Next(Position::Off))), Some((_, verdict))) => {
                assert_eq!(*verdict, Verdict::Next(Position::Off), "{head:?}")
            }
            // Found off before the end: the two-pass path would have waited for the end, then also stopped.
            (Some((_, Verdict::Next(Position::Off))), None) => {}
            _ => assert_eq!(scanned, two_pass, "{:?}", String::from_utf8_lossy(head)),
        }
    }
}
