//! Calls end to end (SPEC §3.3–3.7, §4 calls): a running `sipedge run` between scripted SIP
//! peers over loopback UDP. The core gateway lives on 127.0.0.1 (any port of it is "core"),
//! PBXs on other loopback addresses (127.0.0.2 a trunk, 127.0.0.3 a registering PBX).

mod api_common;
mod common;

use api_common::Api;
use common::sip_peer::{Outgoing, Peer, SipMsg};
use common::*;
use serde_json::json;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(3);
const PW: &str = "call-Secret.42";
const TRUNK_IP: &str = "127.0.0.2";
const PBX_IP: &str = "127.0.0.3";
/// A number of tenant acme, routed to the trunk.
const TRUNK_NUMBER: &str = "+15551230001";
/// A number of tenant acme, routed to credential alice.
const ALICE_NUMBER: &str = "+15551230002";
const CALLED: &str = "+4930123456";

/// A server with `gateways` (UDP peers on 127.0.0.1) as the core, a trunk for 127.0.0.2, a
/// credential alice, and numbers routed to each.
struct Setup {
    server: Server,
    api: Api,
}

fn setup_with(gateways: &[&Peer], extra: &str) -> Setup {
    setup_qualify(gateways, 0, extra)
}

/// Like `setup_with`, with `core.qualify_s`.
fn setup_qualify(gateways: &[&Peer], qualify_s: u32, extra: &str) -> Setup {
    let gws: Vec<String> = gateways
        .iter()
        .enumerate()
        .map(|(i, g)| {
            format!(
                "{{ uri = \"sip:{}\", priority = {}, weight = 1 }}",
                g.addr(),
                i + 1
            )
        })
        .collect();
    let toml = format!(
        "[core]\ngateways = [{}]\nqualify_s = {qualify_s}\ngateway_timeout_ms = 400\n\
         [limits]\nmax_cps = 1000.0\nmax_calls = 100\n\
         [registrar]\nmin_interval_s = 0\n\
         {extra}",
        gws.join(", ")
    );
    let server = Server::start(&toml);
    let api = Api::new(server.admin, ADMIN_TOKEN);
    api.expect(
        "POST",
        "/api/v1/tenants",
        Some(json!({"name": "acme"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/trunks",
        Some(
            json!({"name": "pbx-trunk", "tenant": "acme", "cidrs": [format!("{TRUNK_IP}/32")],
                    "destination": format!("sip:{TRUNK_IP}:5999")}),
        ),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/credentials",
        Some(json!({"username": "alice", "password": PW, "tenant": "acme"})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": TRUNK_NUMBER, "tenant": "acme", "route": {"trunk": "pbx-trunk"}})),
        201,
    );
    api.expect(
        "POST",
        "/api/v1/numbers",
        Some(
            json!({"number": ALICE_NUMBER, "tenant": "acme", "route": {"credential": "alice"},
                    "headers": {"Account": "A-17"}}),
        ),
        201,
    );
    Setup { server, api }
}

fn sbc(s: &Setup) -> SocketAddr {
    s.server.sip
}

/// Every header line of a message, without the body.
fn head(m: &str) -> &str {
    m.split("\r\n\r\n").next().unwrap_or(m)
}

fn cdrs(s: &Setup, n: usize) -> Vec<serde_json::Value> {
    let path = s.server.data_dir().join("cdr.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("CDR line is JSON"))
            .collect();
        if lines.len() >= n || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PBX on the trunk sends an INVITE; the gateway receives it. Returns (invite, gateway's view).
fn trunk_invite(s: &Setup, pbx: &Peer, gw: &Peer, from: &str, to: &str) -> (Outgoing, SipMsg) {
    let inv = dial(s, pbx, from, to);
    let b = gw
        .recv_request("INVITE", WAIT)
        .unwrap_or_else(|| panic!("gateway got no INVITE for:\n{}", inv.text));
    (inv, b)
}

/// Sends a new INVITE from `peer` through sipedge to `to` (Request-URI and To user), with
/// `from` as the caller.
fn dial(s: &Setup, peer: &Peer, from: &str, to: &str) -> Outgoing {
    let inv = peer.invite(&format!("sip:{to}@{}", sbc(s)), from, to, "sbc.test", &[]);
    peer.send(&inv, sbc(s));
    inv
}

/// The final response on the PBX side for `inv`.
fn final_for(pbx: &Peer) -> SipMsg {
    pbx.recv_response("INVITE", WAIT, |c| c >= 200)
        .expect("final response to the INVITE")
}

/// Gateway answers 180 then 200 with SDP; PBX gets both and ACKs; gateway gets the ACK.
fn answer(s: &Setup, pbx: &Peer, gw: &Peer, inv: &Outgoing, b: &SipMsg) -> SipMsg {
    gw.reply(b, 100, "Trying", &[], "");
    gw.reply(b, 180, "Ringing", &[], "");
    let sdp = common::sip_peer::sdp_offer(gw.addr().ip(), 42000);
    gw.reply(b, 200, "OK", &[], &sdp);
    let ringing = pbx
        .recv_response("INVITE", WAIT, |c| c == 180)
        .expect("180 relayed to the PBX");
    assert!(ringing.to_tag().is_some());
    let ok = final_for(pbx);
    assert_eq!(ok.code(), Some(200), "{}", ok.raw);
    pbx.ack_2xx(inv, &ok, sbc(s));
    gw.recv_request("ACK", WAIT)
        .expect("ACK relayed to the gateway");
    ok
}

#[test]
fn trunk_call_is_relayed_with_topology_hidden_and_ends_with_caller_bye_and_a_cdr() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let (inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);

    // The B leg: E.164 to the gateway, caller in From and PAI, sipedge's own identifiers.
    assert_eq!(
        b.request_uri(),
        Some(format!("sip:{CALLED}@{}", gw.addr()).as_str())
    );
    assert_eq!(
        SipMsg::user_of(b.header("To").unwrap()).as_deref(),
        Some(CALLED)
    );
    assert_eq!(
        SipMsg::user_of(b.header("From").unwrap()).as_deref(),
        Some(TRUNK_NUMBER)
    );
    assert_eq!(
        SipMsg::user_of(b.header("P-Asserted-Identity").expect("PAI")).as_deref(),
        Some(TRUNK_NUMBER)
    );
    assert_ne!(b.call_id(), inv.call_id, "a new Call-ID on the B leg");
    assert_ne!(b.from_tag().as_deref(), Some(inv.from_tag.as_str()));
    assert_eq!(
        b.headers_all("Via").len(),
        1,
        "only sipedge's Via: {}",
        b.raw
    );
    assert!(
        !head(&b.raw).contains(TRUNK_IP),
        "no PBX address toward the core:\n{}",
        b.raw
    );

    let ok = answer(&s, &pbx, &gw, &inv, &b);
    assert!(
        !head(&ok.raw).contains(&gw.addr().to_string()),
        "no core address toward the PBX:\n{}",
        ok.raw
    );
    assert_eq!(ok.headers_all("Via").len(), 1);

    // The call is listed while up.
    // Api::expect also holds the answer to openapi.json's Call schema.
    let calls = s.api.expect("GET", "/api/v1/calls", None, 200);
    let list = calls.as_array().unwrap();
    assert_eq!(list.len(), 1, "{calls}");
    assert_eq!(list[0]["direction"], "termination");
    assert_eq!(list[0]["account"], "pbx-trunk");
    assert_eq!(list[0]["state"], "answered");
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_active{direction=\"termination\"}"),
        1.0
    );

    // Caller hangs up.
    let bye = pbx.in_dialog_uac("BYE", &inv, &ok, "", sbc(&s));
    let b_bye = gw.recv_request("BYE", WAIT).expect("BYE relayed");
    gw.reply(&b_bye, 200, "OK", &[], "");
    let done = pbx
        .recv_response("BYE", WAIT, |c| c >= 200)
        .expect("200 for the BYE");
    assert_eq!(done.code(), Some(200));
    assert_eq!(done.top_branch().as_deref(), Some(bye.branch.as_str()));

    let lines = cdrs(&s, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let c = &lines[0];
    assert_eq!(c["direction"], "termination");
    assert_eq!(c["account"], "pbx-trunk");
    assert_eq!(c["tenant"], "acme");
    assert_eq!(c["from"], TRUNK_NUMBER);
    assert_eq!(c["to"], CALLED);
    assert_eq!(c["final_code"], 200);
    assert_eq!(c["end_reason"], "caller_bye");
    assert!(c["answer"].is_string());
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_total{direction=\"termination\",result=\"answered\"}"),
        1.0
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_active{direction=\"termination\"}"),
        0.0
    );
    // The gateway answered the call's worker on its own core-facing port: nothing of this call
    // crossed between workers.
    let text = s.server.metrics();
    assert_eq!(
        metric_sum(&text, "sipedge_worker_handoffs_total"),
        0.0,
        "{text}"
    );
    assert_ne!(b.from.port(), 0);
    assert!(
        b.header("Via")
            .unwrap()
            .contains(&format!("127.0.0.1:{}", b.from.port())),
        "the B leg's Via names the port it was sent from: {}",
        b.raw
    );
    assert_ne!(b.from, sbc(&s), "B legs leave from the worker's own port");
}

// ---- a registered PBX: digest on INVITE, origination to its binding -----------------------

/// REGISTER -> 401 -> REGISTER with digest -> 200 for `user` from `pbx` (Contact = its socket).
fn register(s: &Setup, pbx: &Peer, user: &str) {
    let realm = &s.server.realm;
    let reg = |cseq: u32, auth: Option<&str>| {
        let mut t = format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{b};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag=reg{cseq}\r\nTo: <sip:{user}@{realm}>\r\n\
             Call-ID: reg-{user}@{a}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{a}>\r\nExpires: 300\r\n",
            a = pbx.addr(),
            b = rand_token()
        );
        if let Some(a) = auth {
            t.push_str(&format!("Authorization: {a}\r\n"));
        }
        t.push_str("Content-Length: 0\r\n\r\n");
        t
    };
    pbx.send_raw(reg(1, None).as_bytes(), sbc(s));
    let r401 = pbx
        .recv_response("REGISTER", WAIT, |c| c >= 200)
        .expect("401");
    assert_eq!(r401.code(), Some(401), "{}", r401.raw);
    let ch = Challenge::parse(r401.header("WWW-Authenticate").unwrap()).unwrap();
    let auth = ch.authorization(user, PW, "REGISTER", &format!("sip:{realm}"), 1, "c1");
    pbx.send_raw(reg(2, Some(&auth)).as_bytes(), sbc(s));
    let ok = pbx
        .recv_response("REGISTER", WAIT, |c| c >= 200)
        .expect("200");
    assert_eq!(ok.code(), Some(200), "{}", ok.raw);
}

/// The INVITE again with credentials answering `challenge` (new branch, CSeq 2).
fn with_proxy_auth(pbx: &Peer, inv: &Outgoing, challenge: &SipMsg, user: &str) -> Outgoing {
    let ch = Challenge::parse(
        challenge
            .header("Proxy-Authenticate")
            .expect("Proxy-Authenticate"),
    )
    .unwrap();
    let uri = inv.request_uri().to_string();
    let auth = ch.authorization(user, PW, "INVITE", &uri, 1, "c2");
    let branch = format!("z9hG4bK{}", rand_token());
    let text = inv
        .text
        .replace(&inv.branch, &branch)
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nProxy-Authorization: {auth}\r\n"),
            1,
        );
    let _ = pbx;
    Outgoing {
        text,
        call_id: inv.call_id.clone(),
        branch,
        from_tag: inv.from_tag.clone(),
        cseq: 2,
    }
}

#[test]
fn registered_pbx_is_challenged_407_then_terminates_and_receives_origination_with_x_headers() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(PBX_IP);
    register(&s, &pbx, "alice");

    // Termination: 407 first (no credentials), then the call goes through.
    let inv = dial(&s, &pbx, ALICE_NUMBER, CALLED);
    let r407 = final_for(&pbx);
    assert_eq!(r407.code(), Some(407), "{}", r407.raw);
    assert!(!r407.headers_all("Proxy-Authenticate").is_empty());
    pbx.ack_non2xx(&inv, &r407, sbc(&s));
    gw.expect_silence(
        Duration::from_millis(200),
        "nothing reaches the core before auth",
    );
    let inv2 = with_proxy_auth(&pbx, &inv, &r407, "alice");
    pbx.send(&inv2, sbc(&s));
    let b = gw
        .recv_request("INVITE", WAIT)
        .expect("authenticated INVITE reaches the core");
    assert!(
        b.header("Proxy-Authorization").is_none(),
        "credentials never leave: {}",
        b.raw
    );
    gw.reply(&b, 486, "Busy Here", &[], "");
    let busy = final_for(&pbx);
    assert_eq!(
        busy.code(),
        Some(486),
        "other finals are relayed as they are"
    );
    gw.recv_request("ACK", WAIT)
        .expect("sipedge ACKs the 486 on the B leg");

    // Wrong password: 403, and it is counted.
    let inv = dial(&s, &pbx, ALICE_NUMBER, CALLED);
    let r407 = final_for(&pbx);
    let ch = Challenge::parse(r407.header("Proxy-Authenticate").unwrap()).unwrap();
    let bad = ch.authorization("alice", "wrong", "INVITE", inv.request_uri(), 1, "c3");
    let mut inv3 = with_proxy_auth(&pbx, &inv, &r407, "alice");
    let good = inv3
        .text
        .lines()
        .find(|l| l.starts_with("Proxy-Authorization"))
        .unwrap()
        .to_string();
    inv3.text = inv3
        .text
        .replace(&good, &format!("Proxy-Authorization: {bad}"));
    pbx.send(&inv3, sbc(&s));
    assert_eq!(final_for(&pbx).code(), Some(403));
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"unknown_source\"}"),
        1.0
    );

    // Origination from the core to alice's number: to her binding, with the number's X-header.
    let inv = dial(&s, &gw, "+12125550100", ALICE_NUMBER);
    let a = pbx
        .recv_request("INVITE", WAIT)
        .expect("origination INVITE at the PBX");
    assert_eq!(
        a.request_uri(),
        Some(format!("sip:alice@{}", pbx.addr()).as_str())
    );
    assert_eq!(a.header("X-Account"), Some("A-17"), "{}", a.raw);
    assert!(
        !head(&a.raw).contains(&gw.addr().to_string()),
        "no core address toward the PBX:\n{}",
        a.raw
    );
    pbx.reply(&a, 180, "Ringing", &[], "");
    let sdp = common::sip_peer::sdp_offer(pbx.addr().ip(), 43000);
    pbx.reply(&a, 200, "OK", &[], &sdp);
    let ok = gw
        .recv_response("INVITE", WAIT, |c| c >= 200)
        .expect("200 at the core");
    assert_eq!(ok.code(), Some(200));
    gw.ack_2xx(&inv, &ok, sbc(&s));
    pbx.recv_request("ACK", WAIT).expect("ACK at the PBX");

    // The callee (PBX) hangs up this time.
    pbx.in_dialog_uas("BYE", &a, "", sbc(&s));
    let bye = gw.recv_request("BYE", WAIT).expect("BYE at the core");
    gw.reply(&bye, 200, "OK", &[], "");
    assert_eq!(
        pbx.recv_response("BYE", WAIT, |c| c >= 200).unwrap().code(),
        Some(200)
    );
    let lines = cdrs(&s, 3);
    let orig = lines
        .iter()
        .find(|c| c["direction"] == "origination")
        .expect("origination CDR");
    assert_eq!(orig["account"], format!("alice@{}", s.server.realm));
    assert_eq!(orig["end_reason"], "callee_bye");
    assert_eq!(orig["to"], ALICE_NUMBER);
    let busy = lines
        .iter()
        .find(|c| c["final_code"] == 486)
        .expect("486 CDR");
    assert_eq!(busy["end_reason"], "failed");
}

#[test]
fn origination_refusals_404_unknown_number_and_480_unregistered() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    dial(&s, &gw, "+12125550100", "+15559999999");
    assert_eq!(final_for(&gw).code(), Some(404));
    dial(&s, &gw, "+12125550100", ALICE_NUMBER);
    let r = final_for(&gw);
    assert_eq!(r.code(), Some(480), "{}", r.raw);
    let lines = cdrs(&s, 2);
    assert!(
        lines.iter().all(|c| c["end_reason"] == "rejected"),
        "{lines:?}"
    );
}

// ---- termination refusals --------------------------------------------------------------------

#[test]
fn termination_refusals_484_403_callerid_and_unknown_source_challenge() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    dial(&s, &pbx, TRUNK_NUMBER, "12ab");
    assert_eq!(final_for(&pbx).code(), Some(484));
    let inv = dial(&s, &pbx, "+12125550100", CALLED);
    let r = final_for(&pbx);
    assert_eq!(r.code(), Some(403));
    assert!(
        r.raw.starts_with("SIP/2.0 403 Caller ID not allowed\r\n"),
        "{}",
        r.raw
    );
    // The refusal is retransmission-safe: the same INVITE again gets the same answer.
    pbx.send(&inv, sbc(&s));
    assert_eq!(final_for(&pbx).raw, r.raw);
    gw.expect_silence(
        Duration::from_millis(200),
        "refused calls never reach the core",
    );

    // Someone else: 407.
    let stranger = Peer::on("127.0.0.9");
    dial(&s, &stranger, TRUNK_NUMBER, CALLED);
    assert_eq!(final_for(&stranger).code(), Some(407));
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"number\"}"),
        1.0
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"callerid\"}"),
        1.0
    );
}

#[test]
fn limits_503_cps_and_channels() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    s.api.expect(
        "PATCH",
        "/api/v1/trunks/pbx-trunk",
        Some(json!({"max_cps": 1.0, "max_calls": 1})),
        200,
    );
    std::thread::sleep(Duration::from_millis(300));
    let pbx = Peer::on(TRUNK_IP);
    let (_inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    gw.reply(&b, 180, "Ringing", &[], "");
    // Second call at once: the CPS bucket (size 1) is empty.
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let r = pbx.recv_response("INVITE", WAIT, |c| c >= 300).unwrap();
    assert!(r.raw.starts_with("SIP/2.0 503 CPS limit\r\n"), "{}", r.raw);
    assert_eq!(r.header("Retry-After"), Some("1"));
    // A second later a token is back, but the one channel is taken.
    std::thread::sleep(Duration::from_millis(1100));
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let r = pbx.recv_response("INVITE", WAIT, |c| c >= 300).unwrap();
    assert!(
        r.raw.starts_with("SIP/2.0 503 Channel limit\r\n"),
        "{}",
        r.raw
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"cps\"}"),
        1.0
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"channels\"}"),
        1.0
    );
}

// ---- routing: failover and no route ----------------------------------------------------------

#[test]
fn failover_when_the_first_gateway_never_answers_then_503_no_route_when_all_fail() {
    let silent = Peer::new();
    let gw2 = Peer::new();
    let s = setup_with(&[&silent, &gw2], "");
    let pbx = Peer::on(TRUNK_IP);
    let inv = dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let first = silent
        .recv_request("INVITE", WAIT)
        .expect("first choice tried first");
    // The first gateway says nothing; after gateway_timeout_ms (400) the second gets it.
    let b = gw2
        .recv_request("INVITE", WAIT)
        .expect("failover to the second gateway");
    assert_ne!(b.call_id(), first.call_id(), "a new B leg");
    let ok = answer(&s, &pbx, &gw2, &inv, &b);
    pbx.in_dialog_uac("BYE", &inv, &ok, "", sbc(&s));
    let bye = gw2.recv_request("BYE", WAIT).unwrap();
    gw2.reply(&bye, 200, "OK", &[], "");

    // Both fail now: the second answers 503 -> 503 "No route" to the PBX.
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let b = gw2
        .recv_request("INVITE", Duration::from_secs(5))
        .expect("second gateway again");
    gw2.reply(&b, 503, "Service Unavailable", &[], "");
    let r = final_for(&pbx);
    assert!(r.raw.starts_with("SIP/2.0 503 No route\r\n"), "{}", r.raw);
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"no_route\"}"),
        1.0
    );
    // Counted once (a failover's outputs are settled once).
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_total{direction=\"termination\",result=\"failed\"}"),
        1.0
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_active{direction=\"termination\"}"),
        0.0
    );
}

// ---- CANCEL, callee BYE, re-INVITE, admin hang-up --------------------------------------------

#[test]
fn cancel_before_answer_reaches_the_gateway_and_the_caller_gets_487() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let (inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    gw.reply(&b, 180, "Ringing", &[], "");
    pbx.recv_response("INVITE", WAIT, |c| c == 180)
        .expect("180");
    pbx.cancel(&inv, sbc(&s));
    let c = gw
        .recv_request("CANCEL", WAIT)
        .expect("CANCEL on the B leg");
    gw.reply(&c, 200, "OK", &[], "");
    gw.reply(&b, 487, "Request Terminated", &[], "");
    assert_eq!(
        pbx.recv_response("CANCEL", WAIT, |c| c >= 200)
            .unwrap()
            .code(),
        Some(200)
    );
    let r = final_for(&pbx);
    assert_eq!(r.code(), Some(487));
    let lines = cdrs(&s, 1);
    assert_eq!(lines[0]["end_reason"], "cancel");
}

#[test]
fn reinvite_is_relayed_both_ways_and_admin_delete_ends_the_call() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let (inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    let ok = answer(&s, &pbx, &gw, &inv, &b);

    // re-INVITE from the PBX (hold), answered by the gateway.
    let hold = common::sip_peer::sdp_offer(pbx.addr().ip(), 40000).replace("sendrecv", "sendonly");
    pbx.in_dialog_uac("INVITE", &inv, &ok, &hold, sbc(&s));
    let re = gw
        .recv_request("INVITE", WAIT)
        .expect("re-INVITE on the B leg");
    assert_eq!(re.call_id(), b.call_id());
    assert!(re.body().contains("sendonly"));
    gw.reply(
        &re,
        200,
        "OK",
        &[],
        &common::sip_peer::sdp_offer(gw.addr().ip(), 42000),
    );
    let ok2 = pbx
        .recv_response("INVITE", WAIT, |c| c >= 200)
        .expect("re-INVITE answered");
    assert_eq!(ok2.code(), Some(200));

    // The operator ends it: BYE on both legs, CDR `admin`.
    let calls = s.api.expect("GET", "/api/v1/calls", None, 200);
    let id = calls[0]["id"].as_str().unwrap().to_string();
    s.api
        .expect("DELETE", &format!("/api/v1/calls/{id}"), None, 204);
    assert!(pbx.recv_request("BYE", WAIT).is_some(), "BYE to the PBX");
    assert!(gw.recv_request("BYE", WAIT).is_some(), "BYE to the gateway");
    let lines = cdrs(&s, 1);
    assert_eq!(lines[0]["end_reason"], "admin");
    s.api
        .expect("DELETE", &format!("/api/v1/calls/{id}"), None, 404);
}

#[test]
fn sigterm_drains_calls_refusing_new_invites_with_503_then_exits_once_they_end() {
    let gw = Peer::new();
    let mut s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let (inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    let ok = answer(&s, &pbx, &gw, &inv, &b);

    let pid = s.server.pid().expect("running") as libc::pid_t;
    // SAFETY: kill(2) on the PID of our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(300));
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let r = pbx
        .recv_response("INVITE", WAIT, |c| c >= 300)
        .expect("an answer while draining");
    assert_eq!(r.code(), Some(503), "{}", r.raw);
    assert_eq!(r.header("Retry-After"), Some("30"));
    assert!(s.server.is_running(), "the call up keeps sipedge running");

    pbx.in_dialog_uac("BYE", &inv, &ok, "", sbc(&s));
    let bye = gw
        .recv_request("BYE", WAIT)
        .expect("BYE relayed while draining");
    gw.reply(&bye, 200, "OK", &[], "");
    let status = s.server.terminate();
    assert!(status.success(), "{status:?}");
    let lines = cdrs(&s, 1);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["end_reason"], "caller_bye");
}

#[test]
fn a_retransmitted_authenticated_invite_is_absorbed_not_refused_as_a_replay() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(PBX_IP);
    let inv = dial(&s, &pbx, ALICE_NUMBER, CALLED);
    let r407 = final_for(&pbx);
    pbx.ack_non2xx(&inv, &r407, sbc(&s));
    let inv2 = with_proxy_auth(&pbx, &inv, &r407, "alice");
    pbx.send(&inv2, sbc(&s));
    let b = gw.recv_request("INVITE", WAIT).expect("INVITE at the core");
    pbx.recv_response("INVITE", WAIT, |c| c == 100)
        .expect("100 Trying");
    // The PBX did not hear the 100 in time and sends the very same INVITE again.
    pbx.send(&inv2, sbc(&s));
    let again = pbx
        .recv_response("INVITE", WAIT, |_| true)
        .expect("an answer to the retransmission");
    assert_eq!(again.code(), Some(100), "{}", again.raw);
    gw.reply(
        &b,
        200,
        "OK",
        &[],
        &common::sip_peer::sdp_offer(gw.addr().ip(), 42000),
    );
    let ok = final_for(&pbx);
    assert_eq!(ok.code(), Some(200), "{}", ok.raw);
}

#[test]
fn origination_to_a_trunk_destination_and_to_a_uri_template() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let trunk = Peer::on(TRUNK_IP);
    s.api.expect(
        "PATCH",
        "/api/v1/trunks/pbx-trunk",
        Some(json!({"destination": format!("sip:{}", trunk.addr())})),
        200,
    );
    let far = Peer::on("127.0.0.4");
    s.api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": "+15551230009", "tenant": "acme",
                    "route": {"uri": format!("sip:{{number}}@{}", far.addr())}})),
        201,
    );
    // To the trunk.
    dial(&s, &gw, "+12125550100", TRUNK_NUMBER);
    let a = trunk
        .recv_request("INVITE", WAIT)
        .expect("INVITE at the trunk");
    assert_eq!(
        a.request_uri(),
        Some(format!("sip:{}", trunk.addr()).as_str())
    );
    trunk.reply(&a, 486, "Busy Here", &[], "");
    assert_eq!(final_for(&gw).code(), Some(486));
    // To the URI template, {number} replaced by the E.164 number.
    dial(&s, &gw, "+12125550100", "+15551230009");
    let u = far
        .recv_request("INVITE", WAIT)
        .expect("INVITE at the URI route");
    assert_eq!(
        u.request_uri(),
        Some(format!("sip:+15551230009@{}", far.addr()).as_str())
    );
    far.reply(&u, 603, "Decline", &[], "");
    assert_eq!(final_for(&gw).code(), Some(603));
}

#[test]
fn qualify_marks_a_silent_gateway_down_so_calls_skip_it_and_up_again_when_it_answers() {
    let gw1 = Peer::new();
    let gw2 = Peer::new();
    let s = setup_qualify(&[&gw1, &gw2], 1, "");
    // Both are pinged; only the second answers.
    let ping = gw2
        .recv_request("OPTIONS", WAIT)
        .expect("OPTIONS to gateway 2");
    gw2.reply(&ping, 200, "OK", &[], "");
    gw1.recv_request("OPTIONS", WAIT)
        .expect("OPTIONS to gateway 1");
    // Unanswered for the qualify interval: down. Keep gateway 2 up meanwhile.
    let deadline = Instant::now() + Duration::from_millis(1600);
    while Instant::now() < deadline {
        if let Some(p) = gw2.recv_request("OPTIONS", Duration::from_millis(100)) {
            gw2.reply(&p, 200, "OK", &[], "");
        }
    }
    let pbx = Peer::on(TRUNK_IP);
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let b = gw2
        .recv_request("INVITE", Duration::from_millis(300))
        .expect("straight to gateway 2, without waiting for gateway 1's timeout");
    assert!(
        gw1.recv_request("INVITE", Duration::from_millis(100))
            .is_none(),
        "a gateway marked down is skipped"
    );
    gw2.reply(&b, 480, "Temporarily Unavailable", &[], "");
    assert_eq!(final_for(&pbx).code(), Some(480));

    // Gateway 1 answers its next ping: up again, first choice again.
    let p = gw1
        .recv_request("OPTIONS", Duration::from_secs(3))
        .expect("next ping");
    gw1.reply(&p, 200, "OK", &[], "");
    std::thread::sleep(Duration::from_millis(300));
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    gw1.recv_request("INVITE", WAIT)
        .expect("gateway 1 is routed to again");
}

#[test]
fn origination_at_the_targets_max_calls_gets_486_and_drop_unknown_drops_strangers() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "[security]\ndrop_unknown = true\n");
    s.api.expect(
        "PATCH",
        "/api/v1/trunks/pbx-trunk",
        Some(json!({"max_calls": 1})),
        200,
    );
    let trunk = Peer::on(TRUNK_IP);
    s.api.expect(
        "PATCH",
        "/api/v1/trunks/pbx-trunk",
        Some(json!({"destination": format!("sip:{}", trunk.addr())})),
        200,
    );
    // One inbound call up (ringing) takes the trunk's only channel.
    dial(&s, &gw, "+12125550100", TRUNK_NUMBER);
    let a = trunk
        .recv_request("INVITE", WAIT)
        .expect("first call reaches the trunk");
    trunk.reply(&a, 180, "Ringing", &[], "");
    let inv2 = dial(&s, &gw, "+12125550100", TRUNK_NUMBER);
    let r = gw
        .recv_response("INVITE", WAIT, |c| c >= 300)
        .expect("an answer to the second call");
    assert_eq!(r.code(), Some(486), "{}", r.raw);
    assert_eq!(r.call_id(), inv2.call_id);
    assert!(trunk
        .recv_request("INVITE", Duration::from_millis(200))
        .is_none());

    // drop_unknown: an INVITE without credentials from nobody we know gets no answer at all.
    let stranger = Peer::on("127.0.0.9");
    dial(&s, &stranger, TRUNK_NUMBER, CALLED);
    stranger.expect_silence(Duration::from_millis(300), "drop_unknown = true");
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"unknown_source\"}"),
        1.0
    );
}

// ---- media (SPEC §3.8) ---------------------------------------------------------------------

/// The `m=audio` port and the `c=` address of an SDP body.
fn sdp_media(body: &str) -> (String, u16) {
    let c = body
        .lines()
        .find_map(|l| l.strip_prefix("c="))
        .unwrap_or_else(|| panic!("no c= in {body}"))
        .to_string();
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {body}"));
    (c, port)
}

/// A 172-byte RTP packet.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Sends RTP from `from` to 127.0.0.1:`port` until `to` hears it (the media thread opens a
/// call's sockets asynchronously); returns the source it arrived from.
fn rtp_until_heard(from: &UdpSocket, port: u16, to: &UdpSocket) -> SocketAddr {
    to.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        from.send_to(&rtp(1), ("127.0.0.1", port)).unwrap();
        if let Ok((n, src)) = to.recv_from(&mut buf) {
            assert_eq!(&buf[..n], &rtp(1)[..], "relayed byte for byte");
            return src;
        }
    }
    panic!("no RTP relayed through port {port}");
}

/// A trunk call's media goes through sipedge: each side's SDP names sipedge's address and a
/// port of the call's own (never the other side's), RTP flows both ways through those ports,
/// and the CDR counts it.
#[test]
fn media_is_anchored_with_sdp_rewritten_and_rtp_relayed_both_ways() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let pbx_rtp = UdpSocket::bind((TRUNK_IP, 0)).unwrap();
    let gw_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pbx_port = pbx_rtp.local_addr().unwrap().port();
    let gw_port = gw_rtp.local_addr().unwrap().port();

    let offer = common::sip_peer::sdp_offer(TRUNK_IP.parse().unwrap(), pbx_port);
    let call = anchored_call(&s, &pbx, &gw, &offer, &gw_rtp);
    let (port_a, port_b) = (call.port_a, call.port_b);
    assert!(
        !call.b.body().contains(TRUNK_IP),
        "no PBX address toward the core:\n{}",
        call.b.body()
    );
    let (c_b, _) = sdp_media(call.b.body());
    assert_eq!(c_b, "IN IP4 127.0.0.1");
    assert_ne!(port_b, pbx_port);
    assert!(
        call.b.body().contains("a=rtpmap:101 telephone-event/8000"),
        "the rest is kept"
    );
    let (c_a, _) = sdp_media(call.ok.body());
    assert_eq!(c_a, "IN IP4 127.0.0.1");
    assert_ne!(port_a, gw_port, "no core port toward the PBX");
    assert_ne!(port_a, port_b, "each leg has its own ports");

    let src = rtp_until_heard(&pbx_rtp, port_a, &gw_rtp);
    assert_eq!(src.port(), port_b, "PBX -> core leaves from the B-leg port");
    let src = rtp_until_heard(&gw_rtp, port_b, &pbx_rtp);
    assert_eq!(src.port(), port_a, "core -> PBX leaves from the A-leg port");
    assert!(s.server.metric_or_zero("sipedge_media_sessions_active") >= 1.0);
    assert!(s.server.metric_or_zero("sipedge_media_packets_total") >= 2.0);

    pbx.in_dialog_uac("BYE", &call.inv, &call.ok, "", sbc(&s));
    let b_bye = gw.recv_request("BYE", WAIT).expect("BYE relayed");
    gw.reply(&b_bye, 200, "OK", &[], "");
    let lines = cdrs(&s, 1);
    let c = &lines[0];
    assert!(c["a_packets"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["b_packets"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(
        c["a_bytes"].as_u64().unwrap(),
        172 * c["a_packets"].as_u64().unwrap()
    );
    let deadline = Instant::now() + WAIT;
    while s.server.metric_or_zero("sipedge_media_sessions_active") > 0.0 {
        assert!(Instant::now() < deadline, "the call's ports were not freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `media.xdp_interface = "lo"` (in a network namespace of the test thread's own, so the
/// XDP program never sees the host's lo), a call's RTP reaches sipedge through AF_XDP and
/// leaves frame to frame: relayed byte for byte from the call's ports both ways, counted in
/// `sipedge_media_xdp_packets_total` and in the CDR.
#[test]
fn media_through_af_xdp_is_relayed_both_ways_from_the_calls_ports() {
    if !common::netns::may_run() {
        eprintln!("skipped: no capabilities for a network namespace with XDP");
        return;
    }
    common::netns::on_thread(|| {
        common::netns::enter_for_xdp_on_lo();
        let gw = Peer::new();
        let s = setup_with(&[&gw], "[media]\nxdp_interface = \"lo\"\n");
        let pbx = Peer::on(TRUNK_IP);
        let pbx_rtp = UdpSocket::bind((TRUNK_IP, 0)).unwrap();
        let gw_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let offer = common::sip_peer::sdp_offer(
            TRUNK_IP.parse().unwrap(),
            pbx_rtp.local_addr().unwrap().port(),
        );
        let call = anchored_call(&s, &pbx, &gw, &offer, &gw_rtp);
        let src = rtp_until_heard(&pbx_rtp, call.port_a, &gw_rtp);
        assert_eq!(src, SocketAddr::from(([127, 0, 0, 1], call.port_b)));
        let src = rtp_until_heard(&gw_rtp, call.port_b, &pbx_rtp);
        assert_eq!(src, SocketAddr::from(([127, 0, 0, 1], call.port_a)));
        // Both endpoints have sent: every packet from now on leaves frame to frame.
        let before = s.server.metric_or_zero("sipedge_media_xdp_packets_total");
        let mut buf = [0u8; 2048];
        for seq in 2..12 {
            pbx_rtp
                .send_to(&rtp(seq), ("127.0.0.1", call.port_a))
                .unwrap();
            let (n, _) = gw_rtp.recv_from(&mut buf).expect("PBX -> core");
            assert_eq!(&buf[..n], &rtp(seq)[..]);
            gw_rtp
                .send_to(&rtp(seq), ("127.0.0.1", call.port_b))
                .unwrap();
            let (n, _) = pbx_rtp.recv_from(&mut buf).expect("core -> PBX");
            assert_eq!(&buf[..n], &rtp(seq)[..]);
        }
        let framed = s.server.metric_or_zero("sipedge_media_xdp_packets_total") - before;
        assert_eq!(framed, 20.0, "every packet frame to frame");

        pbx.in_dialog_uac("BYE", &call.inv, &call.ok, "", sbc(&s));
        let b_bye = gw.recv_request("BYE", WAIT).expect("BYE relayed");
        gw.reply(&b_bye, 200, "OK", &[], "");
        let c = &cdrs(&s, 1)[0];
        assert!(c["a_packets"].as_u64().unwrap() >= 11, "{c}");
        assert!(c["b_packets"].as_u64().unwrap() >= 11, "{c}");
    });
}

/// A trunk limited to PCMA: an offer of PCMU only is refused with 488 (and a CDR); an offer
/// with both reaches the core with PCMA (and telephone-event) only.
#[test]
fn codec_filtering_removes_codecs_and_refuses_with_488_when_none_is_left() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    s.api.expect(
        "PATCH",
        "/api/v1/trunks/pbx-trunk",
        Some(json!({"codecs": ["PCMA"]})),
        200,
    );
    std::thread::sleep(Duration::from_millis(300));
    let pbx = Peer::on(TRUNK_IP);
    let pcmu_only = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n\
                     m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
                     a=rtpmap:101 telephone-event/8000\r\n";
    let inv = pbx.invite_with_body(
        &format!("sip:{CALLED}@{}", sbc(&s)),
        TRUNK_NUMBER,
        CALLED,
        "sbc.test",
        &[],
        pcmu_only,
    );
    pbx.send(&inv, sbc(&s));
    let r = final_for(&pbx);
    assert_eq!(r.code(), Some(488), "{}", r.raw);
    gw.expect_silence(Duration::from_millis(200), "no INVITE for a refused codec");
    let lines = cdrs(&s, 1);
    assert_eq!(lines[0]["end_reason"], "rejected");
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"codec\"}"),
        1.0
    );

    let (_inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    let body = b.body();
    let m = body.lines().find(|l| l.starts_with("m=audio")).unwrap();
    assert!(m.ends_with(" 8 101"), "PCMA and telephone-event left: {m}");
    assert!(!body.contains("PCMU"), "{body}");
    assert!(body.contains("a=rtpmap:8 PCMA/8000"), "{body}");
}

/// An answered call without any media for `media.timeout_s` is ended with BYE on both legs
/// (CDR end_reason media_timeout).
#[test]
fn silent_media_ends_the_call_with_bye_on_both_legs() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "[media]\ntimeout_s = 1\n");
    let pbx = Peer::on(TRUNK_IP);
    let (inv, b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    answer(&s, &pbx, &gw, &inv, &b);
    let long = Duration::from_secs(4);
    let a_bye = pbx.recv_request("BYE", long).expect("BYE to the caller");
    pbx.reply(&a_bye, 200, "OK", &[], "");
    let b_bye = gw.recv_request("BYE", long).expect("BYE to the callee");
    gw.reply(&b_bye, 200, "OK", &[], "");
    let lines = cdrs(&s, 1);
    assert_eq!(lines[0]["end_reason"], "media_timeout", "{lines:?}");
}

/// With every media port taken, a new call is refused with 503 "No media ports".
#[test]
fn a_call_without_free_media_ports_gets_503() {
    let gw = Peer::new();
    // One block of four ports and the media thread's own port, above the ephemeral range and
    // the other tests' media ports.
    let base = 61_000 + (std::process::id() % 230) as u16 * 6;
    let s = setup_with(
        &[&gw],
        &format!("[media]\nport_min = {base}\nport_max = {}\n", base + 4),
    );
    let pbx = Peer::on(TRUNK_IP);
    let (_first, _b) = trunk_invite(&s, &pbx, &gw, TRUNK_NUMBER, CALLED);
    dial(&s, &pbx, TRUNK_NUMBER, CALLED);
    let r = final_for(&pbx);
    assert_eq!(r.code(), Some(503), "{}", r.raw);
    assert!(
        r.raw.starts_with("SIP/2.0 503 No media ports\r\n"),
        "{}",
        r.raw
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_calls_rejected_total{reason=\"media_ports\"}"),
        1.0
    );
}

/// An answered trunk call with `offer` from the PBX and the gateway's SDP naming `gw_rtp`.
struct Anchored {
    /// sipedge's media port in the SDP toward the PBX (A leg) and toward the core (B leg).
    port_a: u16,
    port_b: u16,
    /// The PBX's INVITE, the gateway's view of it, the 200 the PBX got.
    inv: Outgoing,
    b: SipMsg,
    ok: SipMsg,
}

fn anchored_call(s: &Setup, pbx: &Peer, gw: &Peer, offer: &str, gw_rtp: &UdpSocket) -> Anchored {
    let inv = pbx.invite_with_body(
        &format!("sip:{CALLED}@{}", sbc(s)),
        TRUNK_NUMBER,
        CALLED,
        "sbc.test",
        &[],
        offer,
    );
    pbx.send(&inv, sbc(s));
    let b = gw
        .recv_request("INVITE", WAIT)
        .expect("INVITE to the gateway");
    let (_, port_b) = sdp_media(b.body());
    let answer_sdp = common::sip_peer::sdp_offer(
        "127.0.0.1".parse().unwrap(),
        gw_rtp.local_addr().unwrap().port(),
    );
    gw.reply(&b, 200, "OK", &[], &answer_sdp);
    let ok = final_for(pbx);
    assert_eq!(ok.code(), Some(200));
    let (_, port_a) = sdp_media(ok.body());
    pbx.ack_2xx(&inv, &ok, sbc(s));
    gw.recv_request("ACK", WAIT).expect("ACK relayed");
    Anchored {
        port_a,
        port_b,
        inv,
        b,
        ok,
    }
}

/// A PBX behind NAT: its SDP names a port nothing listens on, its RTP comes from another; the
/// relay latches that source and the gateway's audio reaches it. Once the latch window (2 s
/// after the SDP) has passed, a packet from a stranger is not relayed and counted as a stray.
#[test]
fn a_natted_endpoint_gets_audio_and_a_stray_source_is_not_latched() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let pbx_rtp = UdpSocket::bind((TRUNK_IP, 0)).unwrap();
    let gw_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The SDP says port 9 (discard); the PBX really sends from pbx_rtp.
    let offer = common::sip_peer::sdp_offer(TRUNK_IP.parse().unwrap(), 9);
    let Anchored { port_a, port_b, .. } = anchored_call(&s, &pbx, &gw, &offer, &gw_rtp);
    rtp_until_heard(&pbx_rtp, port_a, &gw_rtp);
    gw_rtp.send_to(&rtp(2), ("127.0.0.1", port_b)).unwrap();
    pbx_rtp
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = pbx_rtp
        .recv_from(&mut buf)
        .expect("audio back to the NATed source");
    assert_eq!(&buf[..n], &rtp(2)[..]);

    std::thread::sleep(Duration::from_millis(2_200));
    let stray = UdpSocket::bind("127.0.0.5:0").unwrap();
    let before = s
        .server
        .metric_or_zero("sipedge_media_dropped_total{reason=\"stray\"}");
    for seq in 0..3 {
        stray
            .send_to(&rtp(100 + seq), ("127.0.0.1", port_a))
            .unwrap();
    }
    gw_rtp
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        gw_rtp.recv_from(&mut buf).is_err(),
        "a stray is not relayed"
    );
    assert_eq!(
        s.server
            .metric_or_zero("sipedge_media_dropped_total{reason=\"stray\"}")
            - before,
        3.0
    );
    // The latched PBX still gets through.
    pbx_rtp.send_to(&rtp(7), ("127.0.0.1", port_a)).unwrap();
    let (n, _) = gw_rtp
        .recv_from(&mut buf)
        .expect("the latched source still relayed");
    assert_eq!(&buf[..n], &rtp(7)[..]);
}

/// SRTP (RTP/SAVP with a=crypto): the SDP keeps its crypto attribute, only addresses and ports
/// change, and the encrypted packets cross byte for byte.
#[test]
fn srtp_is_relayed_byte_for_byte() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let pbx = Peer::on(TRUNK_IP);
    let pbx_rtp = UdpSocket::bind((TRUNK_IP, 0)).unwrap();
    let gw_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32";
    let offer = format!(
        "v=0\r\no=- 7 7 IN IP4 {TRUNK_IP}\r\ns=-\r\nc=IN IP4 {TRUNK_IP}\r\nt=0 0\r\n\
         m=audio {} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}\r\n",
        pbx_rtp.local_addr().unwrap().port()
    );
    let Anchored { port_a, b, .. } = anchored_call(&s, &pbx, &gw, &offer, &gw_rtp);
    assert!(b.body().contains(&format!("{crypto}\r\n")), "{}", b.body());
    assert!(b.body().contains(" RTP/SAVP 0\r\n"), "{}", b.body());
    // An "encrypted" packet: arbitrary bytes after an RTP header.
    let mut srtp = rtp(1);
    for (i, b) in srtp.iter_mut().enumerate().skip(12) {
        *b = (i * 37 % 251) as u8;
    }
    gw_rtp
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "SRTP not relayed");
        pbx_rtp.send_to(&srtp, ("127.0.0.1", port_a)).unwrap();
        if let Ok((n, _)) = gw_rtp.recv_from(&mut buf) {
            assert_eq!(&buf[..n], &srtp[..], "SRTP bytes unchanged");
            break;
        }
    }
}

/// A route naming a host (here `localhost`) reaches it: the name is resolved when provisioning
/// publishes the snapshot, never on a worker.
#[test]
fn origination_to_a_route_with_a_host_name() {
    let gw = Peer::new();
    let s = setup_with(&[&gw], "");
    let far = Peer::new();
    let port = far.addr().port();
    s.api.expect(
        "POST",
        "/api/v1/numbers",
        Some(json!({"number": "+15551230008", "tenant": "acme",
                    "route": {"uri": format!("sip:{{number}}@localhost:{port}")}})),
        201,
    );
    std::thread::sleep(Duration::from_millis(300));
    dial(&s, &gw, "+12125550100", "+15551230008");
    let u = far
        .recv_request("INVITE", WAIT)
        .expect("INVITE at the host named by the route");
    assert_eq!(
        u.request_uri(),
        Some(format!("sip:+15551230008@localhost:{port}").as_str())
    );
    far.reply(&u, 603, "Decline", &[], "");
    assert_eq!(final_for(&gw).code(), Some(603));
}
