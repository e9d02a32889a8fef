//! RFC 3261 §17.2.1 INVITE server transaction, plus the §13.3.1.4 retransmission of a 2xx
//! until its ACK, as one sans-IO state machine.
//!
//! Owns: what to do with a retransmitted INVITE, when to retransmit a final response, when to
//! give up waiting for the ACK, and when the transaction may be forgotten. The caller keeps the
//! last response's bytes and performs the returned [`ServerAction`]s. Time is milliseconds passed
//! in; `poll_timeout` says when to call `handle_timeout` next.

use super::client_transaction::{T2_MS, T4_MS};
use super::transaction::T1_MS;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// 100 Trying (or a later provisional) sent; waiting for the transaction user's final answer.
    Proceeding,
    /// A 300-699 was sent; waiting for the ACK (Timers G and H).
    Completed,
    /// A 2xx was sent; retransmitting it until the ACK arrives (RFC 3261 §13.3.1.4).
    Accepted,
    /// The ACK arrived for a 300-699; absorbing ACK retransmissions (Timer I).
    Confirmed,
    Terminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerAction {
    /// Send the last response again (a retransmitted INVITE, or Timer G / the 2xx timer).
    ResendResponse,
    /// Timer H or the 2xx timer (64·T1) fired with no ACK: the dialog failed (RFC 3261 §13.3.1.4:
    /// the UAS should then send a BYE).
    AckTimeout,
    /// An ACK for a 2xx: hand it to the dialog (the B2BUA relays it to the other leg).
    DeliverAck,
    /// Nothing to do (a retransmitted ACK).
    Absorb,
    /// The transaction may be forgotten.
    Terminated,
}

#[derive(Clone, Debug)]
pub struct InviteServerTransaction {
    state: State,
    reliable: bool,
    resend_at: Option<u64>,
    interval_ms: u64,
    deadline: Option<u64>,
}

impl InviteServerTransaction {
    /// The INVITE has arrived and the caller has sent (or is sending) 100 Trying.
    pub fn new(reliable: bool) -> InviteServerTransaction {
        InviteServerTransaction {
            state: State::Proceeding,
            reliable,
            resend_at: None,
            interval_ms: T1_MS,
            deadline: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.resend_at, self.deadline) {
            (Some(r), Some(d)) => Some(r.min(d)),
            (r, d) => r.or(d),
        }
    }

    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
    //# If a request retransmission is received while in the "Proceeding" state, the most recent
    //# provisional response that was received from the TU MUST be passed to the transport layer
    //# for retransmission. ... while in the "Completed" state, the server SHOULD pass the
    //# response to the transport for retransmission.
    pub fn on_invite_retransmission(&self) -> ServerAction {
        match self.state {
            State::Proceeding | State::Completed | State::Accepted => ServerAction::ResendResponse,
            State::Confirmed | State::Terminated => ServerAction::Absorb,
        }
    }

    /// The transaction user sent a final response at `now_ms`.
    pub fn on_final_sent(&mut self, code: u16, now_ms: u64) {
        if self.state != State::Proceeding {
            return;
        }
        self.interval_ms = T1_MS;
        // Both a 2xx (§13.3.1.4) and a 300-699 (Timer G) are retransmitted over UDP, first after
        // T1, doubling up to T2, until the ACK; both give up after 64·T1 (Timer H).
        self.resend_at = (!self.reliable).then_some(now_ms + T1_MS);
        self.deadline = Some(now_ms + 64 * T1_MS);
        self.state = if code < 300 {
            State::Accepted
        } else {
            State::Completed
        };
    }

    pub fn on_ack(&mut self, now_ms: u64) -> ServerAction {
        match self.state {
            State::Completed => {
                //= https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1
                //# If an ACK is received while the server transaction is in the "Completed"
                //# state, the server transaction MUST transition to the "Confirmed" state. ...
                //# Timer I is set to fire in T4 seconds for unreliable transports, and zero
                //# seconds for reliable transports.
                self.state = State::Confirmed;
                self.resend_at = None;
                self.deadline = Some(now_ms + if self.reliable { 0 } else { T4_MS });
                ServerAction::Absorb
            }
            State::Accepted => {
                self.state = State::Terminated;
                self.resend_at = None;
                self.deadline = None;
                ServerAction::DeliverAck
            }
            _ => ServerAction::Absorb,
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<ServerAction> {
        if let Some(d) = self.deadline {
            if now_ms >= d {
                self.resend_at = None;
                self.deadline = None;
                let was = self.state;
                self.state = State::Terminated;
                return Some(match was {
                    State::Completed | State::Accepted => ServerAction::AckTimeout,
                    _ => ServerAction::Terminated,
                });
            }
        }
        match self.resend_at {
            Some(at) if now_ms >= at => {
                //# Timer G ... MIN(2*T1, T2)
                self.interval_ms = (self.interval_ms * 2).min(T2_MS);
                self.resend_at = Some(now_ms + self.interval_ms);
                Some(ServerAction::ResendResponse)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut InviteServerTransaction, until: u64) -> Vec<(u64, ServerAction)> {
        let mut out = Vec::new();
        while let Some(at) = t.poll_timeout() {
            if at > until {
                break;
            }
            if let Some(a) = t.handle_timeout(at) {
                out.push((at, a));
            }
        }
        out
    }

    #[test]
    fn proceeding_answers_retransmissions_with_the_last_provisional() {
        let t = InviteServerTransaction::new(false);
        assert_eq!(t.on_invite_retransmission(), ServerAction::ResendResponse);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn error_response_retransmits_until_ack_then_absorbs_for_timer_i() {
        let mut t = InviteServerTransaction::new(false);
        t.on_final_sent(486, 1_000);
        assert_eq!(
            run(&mut t, 4_000),
            vec![
                (1_500, ServerAction::ResendResponse),
                (2_500, ServerAction::ResendResponse)
            ]
        );
        assert_eq!(t.on_ack(4_000), ServerAction::Absorb);
        assert_eq!(t.state(), State::Confirmed);
        assert_eq!(t.on_invite_retransmission(), ServerAction::Absorb);
        assert_eq!(run(&mut t, 20_000), vec![(9_000, ServerAction::Terminated)]);
    }

    #[test]
    fn no_ack_gives_up_at_timer_h() {
        let mut t = InviteServerTransaction::new(false);
        t.on_final_sent(503, 0);
        let acts = run(&mut t, 60_000);
        let resends = acts
            .iter()
            .filter(|(_, a)| *a == ServerAction::ResendResponse)
            .count();
        // 0.5, 1.5, 3.5, 7.5, then every 4 s up to 32 s
        assert_eq!(resends, 4 + 6);
        assert_eq!(acts.last(), Some(&(32_000, ServerAction::AckTimeout)));
    }

    #[test]
    fn ok_is_retransmitted_until_its_ack_which_is_delivered() {
        let mut t = InviteServerTransaction::new(false);
        t.on_final_sent(200, 0);
        assert_eq!(
            run(&mut t, 1_000),
            vec![(500, ServerAction::ResendResponse)]
        );
        assert_eq!(t.on_invite_retransmission(), ServerAction::ResendResponse);
        assert_eq!(t.on_ack(1_200), ServerAction::DeliverAck);
        assert_eq!(t.state(), State::Terminated);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn reliable_transport_does_not_resend() {
        let mut t = InviteServerTransaction::new(true);
        t.on_final_sent(404, 0);
        assert_eq!(
            run(&mut t, 40_000),
            vec![(32_000, ServerAction::AckTimeout)]
        );
    }
}
