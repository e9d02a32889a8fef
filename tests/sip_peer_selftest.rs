//! Self-test of the scripted SIP peer (tests/common/sip_peer.rs): two peers talk to each other
//! directly over loopback UDP, no sipedge involved.

mod common;

use common::sip_peer::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(200);

#[test]
fn invite_answer_ack_bye_between_two_peers() {
    let uac = Peer::new();
    let uas = Peer::new();
    assert_ne!(uac.local_tag(), uas.local_tag());

    let ruri = format!("sip:+15557654321@{}", uas.addr());
    let invite = uac.invite(
        &ruri,
        "+15551234567",
        "+15557654321",
        "carrier.test",
        &["X-Test: 1"],
    );
    assert_eq!(invite.cseq, 1);
    assert_eq!(invite.from_tag, uac.local_tag());
    assert_eq!(invite.header("x-test"), Some("1"));
    uac.send(&invite, uas.addr());

    // UAS side: the INVITE as received.
    let inv = uas.recv_request("INVITE", WAIT).expect("INVITE at UAS");
    assert!(inv.is_request());
    assert_eq!(inv.method(), Some("INVITE"));
    assert_eq!(inv.code(), None);
    assert_eq!(inv.request_uri(), Some(ruri.as_str()));
    assert_eq!(inv.from, uac.addr());
    assert_eq!(inv.call_id(), invite.call_id);
    assert_eq!(inv.cseq(), (1, "INVITE".to_string()));
    assert_eq!(inv.from_tag(), Some(uac.local_tag()));
    assert_eq!(inv.to_tag(), None);
    assert_eq!(inv.top_branch(), Some(invite.branch.clone()));
    assert!(invite.branch.starts_with("z9hG4bK"));
    assert_eq!(
        SipMsg::user_of(inv.header("From").unwrap()).as_deref(),
        Some("+15551234567")
    );
    assert_eq!(
        SipMsg::user_of(inv.header("t").unwrap()).as_deref(),
        Some("+15557654321")
    );
    assert_eq!(inv.header("content-type"), Some("application/sdp"));
    assert_eq!(
        inv.header("l").unwrap().parse::<usize>().unwrap(),
        inv.body().len()
    );
    assert!(inv.body().starts_with("v=0\r\n"));
    assert!(inv.body().contains("c=IN IP4 127.0.0.1\r\n"));
    assert!(inv.body().contains("m=audio 40000 RTP/AVP 0 8 101\r\n"));

    let answer = sdp_offer(uas.addr().ip(), 41000);
    uas.reply(&inv, 180, "Ringing", &[], "");
    let sent = uas.reply(&inv, 200, "OK", &["Allow: INVITE, ACK, BYE"], &answer);
    assert!(String::from_utf8(sent)
        .unwrap()
        .starts_with("SIP/2.0 200 OK\r\n"));

    // UAC side: 180 then 200, both in the dialog tagged by the UAS.
    let ringing = uac
        .recv_response("INVITE", WAIT, |c| c == 180)
        .expect("180");
    assert!(!ringing.is_request());
    assert_eq!(ringing.method(), None);
    assert_eq!(ringing.to_tag(), Some(uas.local_tag()));
    assert_eq!(ringing.top_branch(), Some(invite.branch.clone()));
    let ok = uac
        .recv_response("INVITE", WAIT, |c| (200..300).contains(&c))
        .expect("200");
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.from, uas.addr());
    assert_eq!(ok.call_id(), invite.call_id);
    assert_eq!(ok.cseq(), (1, "INVITE".to_string()));
    assert_eq!(ok.from_tag(), Some(uac.local_tag()));
    assert_eq!(ok.to_tag(), Some(uas.local_tag()));
    assert_eq!(
        ok.header("Contact"),
        Some(format!("<sip:peer@{}>", uas.addr()).as_str())
    );
    assert_eq!(ok.header("Allow"), Some("INVITE, ACK, BYE"));
    assert_eq!(ok.headers_all("Via").len(), 1);
    assert_eq!(ok.body(), answer);

    uac.ack_2xx(&invite, &ok, uas.addr());
    let ack = uas.recv_request("ACK", WAIT).expect("ACK at UAS");
    assert_eq!(
        ack.request_uri(),
        Some(format!("sip:peer@{}", uas.addr()).as_str())
    );
    assert_eq!(ack.cseq(), (1, "ACK".to_string()));
    assert_eq!(ack.to_tag(), Some(uas.local_tag()));
    assert_ne!(ack.top_branch(), Some(invite.branch.clone()));
    assert_eq!(ack.body(), "");

    let bye = uac.in_dialog_uac("BYE", &invite, &ok, "", uas.addr());
    assert_eq!(bye.cseq, 2);
    assert_eq!(bye.call_id, invite.call_id);
    assert_eq!(bye.from_tag, uac.local_tag());
    let bye_rcvd = uas.recv_request("BYE", WAIT).expect("BYE at UAS");
    assert_eq!(bye_rcvd.cseq(), (2, "BYE".to_string()));
    assert_eq!(bye_rcvd.call_id(), invite.call_id);
    assert_eq!(bye_rcvd.from_tag(), Some(uac.local_tag()));
    assert_eq!(bye_rcvd.to_tag(), Some(uas.local_tag()));
    assert_eq!(bye_rcvd.top_branch(), Some(bye.branch.clone()));
    uas.reply(&bye_rcvd, 200, "OK", &[], "");

    let bye_ok = uac
        .recv_response("BYE", WAIT, |c| c == 200)
        .expect("200 to BYE");
    assert_eq!(bye_ok.cseq(), (2, "BYE".to_string()));
    assert_eq!(bye_ok.header("Contact"), None);
    assert_eq!(bye_ok.header("Content-Length"), Some("0"));

    uac.expect_silence(QUIET, "UAC after BYE");
    uas.expect_silence(QUIET, "UAS after BYE");
}

#[test]
fn backlog_keeps_unwanted_messages_in_order() {
    let a = Peer::new();
    let b = Peer::new();

    // Garbage and a keepalive are skipped; OPTIONS arrives before BYE.
    b.send_raw(b"\r\n\r\n", a.addr());
    b.send_raw(b"not sip at all", a.addr());
    let mut options = b.invite(&format!("sip:a@{}", a.addr()), "b", "a", "a.test", &[]);
    options.text = options
        .text
        .replacen("INVITE ", "OPTIONS ", 1)
        .replace("1 INVITE", "1 OPTIONS");
    b.send(&options, a.addr());
    let invite = b.invite(&format!("sip:a@{}", a.addr()), "b", "a", "a.test", &[]);
    let bye = b.in_dialog_uas(
        "BYE",
        &SipMsg::parse(invite.text.as_bytes(), b.addr()).unwrap(),
        "",
        a.addr(),
    );
    assert_eq!(bye.cseq, 101);

    let got = a.recv_request("BYE", WAIT).expect("BYE");
    assert_eq!(got.cseq(), (101, "BYE".to_string()));
    assert_eq!(
        got.from_tag(),
        Some(b.local_tag()),
        "UAS side From carries the local tag"
    );
    assert_eq!(
        got.to_tag(),
        Some(b.local_tag()),
        "UAS side To is the received From"
    );
    assert_eq!(
        got.request_uri(),
        Some(format!("sip:b@{}", b.addr()).as_str())
    );

    // The OPTIONS was kept and comes out of the next recv, even though the socket is empty.
    let kept = a.recv(WAIT).expect("OPTIONS from the backlog");
    assert_eq!(kept.method(), Some("OPTIONS"));
    assert_eq!(kept.call_id(), options.call_id);

    // A response waited for by code also leaves other responses in the backlog.
    let req = SipMsg::parse(options.text.as_bytes(), b.addr()).unwrap();
    a.reply(&req, 100, "Trying", &[], "");
    a.reply(&req, 200, "OK", &[], "");
    let ok = b.recv_response("OPTIONS", WAIT, |c| c == 200).expect("200");
    assert_eq!(ok.to_tag(), Some(a.local_tag()));
    let trying = b.recv(WAIT).expect("100 from the backlog");
    assert_eq!(trying.code(), Some(100));
    assert_eq!(trying.to_tag(), None, "no tag on 100");

    a.expect_silence(QUIET, "nothing else sent to a");
    b.expect_silence(QUIET, "nothing else sent to b");
}

#[test]
fn expect_silence_panics_on_backlog() {
    let a = Peer::new();
    let b = Peer::new();
    let invite = b.invite(&format!("sip:a@{}", a.addr()), "b", "a", "a.test", &[]);
    b.send(&invite, a.addr());
    assert!(a.recv_request("BYE", QUIET).is_none());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.expect_silence(QUIET, "backlogged INVITE")
    }));
    let msg = *r.expect_err("must panic").downcast::<String>().unwrap();
    assert!(
        msg.starts_with("backlogged INVITE: expected silence"),
        "{msg}"
    );
    assert!(msg.contains("INVITE sip:a@"), "{msg}");
}

#[test]
fn parse_helpers() {
    let from: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
    assert!(SipMsg::parse(b"\r\n\r\n", from).is_none());
    assert!(SipMsg::parse(b"HTTP/1.1 200 OK\r\n\r\n", from).is_none());
    let m = SipMsg::parse(
        b"SIP/2.0 486 Busy Here\r\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKa, SIP/2.0/UDP 5.6.7.8;branch=z9hG4bKb\r\n\
          Via: SIP/2.0/UDP 9.9.9.9;branch=z9hG4bKc\r\nf: \"A <b>\" <sip:+1555@h>;tag=ft\r\nt: sip:bob@h;tag=tt\r\n\
          i: cid-1\r\nCSeq: 7 INVITE\r\nl: 3\r\n\r\nabcdef",
        from,
    )
    .unwrap();
    assert_eq!(m.code(), Some(486));
    assert_eq!(m.request_uri(), None);
    assert_eq!(m.top_branch().as_deref(), Some("z9hG4bKa"));
    assert_eq!(m.headers_all("VIA").len(), 2);
    assert_eq!(m.from_tag().as_deref(), Some("ft"));
    assert_eq!(m.to_tag().as_deref(), Some("tt"));
    assert_eq!(m.call_id(), "cid-1");
    assert_eq!(m.cseq(), (7, "INVITE".to_string()));
    assert_eq!(m.body(), "abc");
    assert_eq!(
        SipMsg::user_of(m.header("From").unwrap()).as_deref(),
        Some("+1555")
    );
    assert_eq!(
        SipMsg::user_of(m.header("To").unwrap()).as_deref(),
        Some("bob")
    );
    assert_eq!(
        SipMsg::user_of("<sip:+15551234567@1.2.3.4>;tag=x").as_deref(),
        Some("+15551234567")
    );
    assert_eq!(
        SipMsg::user_of("<sip:+15551234567;npdi@1.2.3.4;user=phone>").as_deref(),
        Some("+15551234567")
    );
    assert_eq!(
        SipMsg::user_of("<tel:+15551234567>").as_deref(),
        Some("+15551234567")
    );
    assert_eq!(SipMsg::user_of("<sip:1.2.3.4>"), None);
}
