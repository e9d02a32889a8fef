//! RFC 3261 §17.1 client transactions (INVITE and non-INVITE) as sans-IO state machines.
//!
//! Owns: when a request sipedge sent must be retransmitted, when it has timed out, how a
//! response to it is treated (passed to the transaction user, absorbed as a retransmission, or
//! answered with an ACK), and when the transaction may be forgotten. It holds no bytes and no
//! addresses: the caller keeps the request and performs the returned [`ClientAction`]s. Time is
//! milliseconds passed in; `poll_timeout` says when to call `handle_timeout` next.

use super::transaction::T1_MS;

//= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
//# T2 ... 4s
pub const T2_MS: u64 = 4_000;
//# T4 ... 5s
pub const T4_MS: u64 = 5_000;
//= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
//# Timer B ... 64*T1
pub const TIMER_B_MS: u64 = 64 * T1_MS;
//# Timer D ... at least 32 seconds for unreliable transports
pub const TIMER_D_UDP_MS: u64 = 32_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// INVITE: Calling; non-INVITE: Trying. Nothing heard yet.
    Initial,
    Proceeding,
    Completed,
    Terminated,
}

/// What the caller must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAction {
    /// Send the request again (Timer A or E fired).
    Retransmit,
    /// Timer B or F fired: the transaction failed; act as if a 408 had been received.
    TimedOut,
    /// Hand the response to the transaction user.
    Deliver,
    /// A retransmitted final response: nothing for the transaction user.
    Absorb,
    /// INVITE, 300-699: send the ACK for it (RFC 3261 §17.1.1.3), then deliver it to the
    /// transaction user if `first` (later copies only get the ACK again).
    AckAndDeliver { first: bool },
    /// The transaction may be forgotten.
    Terminated,
}

#[derive(Clone, Debug)]
pub struct ClientTransaction {
    kind: Kind,
    state: State,
    reliable: bool,
    /// Next retransmission (Timer A/E); None when retransmissions stopped.
    retransmit_at: Option<u64>,
    interval_ms: u64,
    /// Timer B/F while nothing final has been heard (none for an INVITE in Proceeding: the
    /// transaction user decides how long to ring); Timer D/K once Completed.
    deadline: Option<u64>,
}

impl ClientTransaction {
    /// The request has just been sent at `now_ms`. Over a reliable transport there are no
    /// retransmissions and Timers D/K are zero.
    pub fn new(kind: Kind, now_ms: u64, reliable: bool) -> ClientTransaction {
        ClientTransaction {
            kind,
            state: State::Initial,
            reliable,
            retransmit_at: (!reliable).then_some(now_ms + T1_MS),
            interval_ms: T1_MS,
            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
            //# Timer F ... 64*T1
            deadline: Some(now_ms + TIMER_B_MS),
        }
    }

    /// The transaction user gives up sooner than Timer B/F if nothing at all is heard by `at`
    /// (SPEC §2 `core.gateway_timeout_ms`: a gateway that does not even send 100 Trying is
    /// skipped). Any response clears it the way it clears Timer B.
    pub fn give_up_unheard_at(&mut self, at: u64) {
        if self.state == State::Initial {
            self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// When `handle_timeout` must next be called (None once terminated).
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.state, self.retransmit_at, self.deadline) {
            (State::Terminated, _, _) => None,
            (_, Some(r), Some(d)) => Some(r.min(d)),
            (_, r, d) => r.or(d),
        }
    }

    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<ClientAction> {
        match self.state {
            State::Terminated => None,
            State::Completed => {
                if self.deadline.is_some_and(|d| now_ms >= d) {
                    self.state = State::Terminated;
                    return Some(ClientAction::Terminated);
                }
                None
            }
            State::Initial | State::Proceeding => {
                if self.deadline.is_some_and(|d| now_ms >= d) {
                    self.state = State::Terminated;
                    return Some(ClientAction::TimedOut);
                }
                match self.retransmit_at {
                    Some(at) if now_ms >= at => {
                        self.interval_ms = match (self.kind, self.state) {
                            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
                            //# the client transaction MUST ... reset the timer with a value of 2*T1
                            (Kind::Invite, _) => self.interval_ms * 2,
                            //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
                            //# the timer is reset ... with a value of MIN(2*T1, T2) ... in the
                            //# "Proceeding" state ... reset with a value of T2
                            (Kind::NonInvite, State::Proceeding) => T2_MS,
                            (Kind::NonInvite, _) => (self.interval_ms * 2).min(T2_MS),
                        };
                        self.retransmit_at = Some(now_ms + self.interval_ms);
                        Some(ClientAction::Retransmit)
                    }
                    _ => None,
                }
            }
        }
    }

    /// A response matching this transaction arrived.
    pub fn on_response(&mut self, code: u16, now_ms: u64) -> ClientAction {
        let provisional = code < 200;
        match (self.kind, self.state) {
            (_, State::Terminated) => ClientAction::Absorb,
            (Kind::Invite, State::Initial | State::Proceeding) => {
                if provisional {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1.2
                    //# If the client transaction receives a provisional response while in the
                    //# "Calling" state, it transitions to the "Proceeding" state. ... the client
                    //# transaction SHOULD NOT retransmit the request any longer.
                    // Timer B guards the "Calling" state only.
                    self.state = State::Proceeding;
                    self.retransmit_at = None;
                    self.deadline = None;
                    ClientAction::Deliver
                } else if code < 300 {
                    //# When in either the "Calling" or "Proceeding" states, reception of a 2xx
                    //# response MUST cause the client transaction to enter the "Terminated" state
                    self.state = State::Terminated;
                    ClientAction::Deliver
                } else {
                    //# reception of a response with status code from 300-699 MUST cause the
                    //# client transaction to transition to "Completed". ... MUST pass the
                    //# received response up to the TU, and the client transaction MUST generate
                    //# an ACK request
                    self.state = State::Completed;
                    self.retransmit_at = None;
                    self.deadline = Some(now_ms + if self.reliable { 0 } else { TIMER_D_UDP_MS });
                    ClientAction::AckAndDeliver { first: true }
                }
            }
            //# Any retransmissions of the final response that are received while in the
            //# "Completed" state MUST cause the ACK to be re-passed to the transport layer
            (Kind::Invite, State::Completed) if !provisional => {
                ClientAction::AckAndDeliver { first: false }
            }
            (Kind::NonInvite, State::Initial | State::Proceeding) => {
                if provisional {
                    self.state = State::Proceeding;
                    ClientAction::Deliver
                } else {
                    //= https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2.2
                    //# Once the client transaction enters the "Completed" state, it MUST set
                    //# Timer K to fire in T4 seconds for unreliable transports, and zero seconds
                    //# for reliable transports.
                    self.state = State::Completed;
                    self.retransmit_at = None;
                    self.deadline = Some(now_ms + if self.reliable { 0 } else { T4_MS });
                    ClientAction::Deliver
                }
            }
            (_, State::Completed) => ClientAction::Absorb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs timers up to `until`, collecting (time, action).
    fn run(t: &mut ClientTransaction, until: u64) -> Vec<(u64, ClientAction)> {
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
    fn invite_retransmits_with_doubling_until_timer_b() {
        let mut t = ClientTransaction::new(Kind::Invite, 0, false);
        let acts = run(&mut t, 40_000);
        let retransmits: Vec<u64> = acts
            .iter()
            .filter(|(_, a)| *a == ClientAction::Retransmit)
            .map(|(at, _)| *at)
            .collect();
        // Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s
        assert_eq!(retransmits, vec![500, 1_500, 3_500, 7_500, 15_500, 31_500]);
        assert_eq!(acts.last(), Some(&(32_000, ClientAction::TimedOut)));
        assert_eq!(t.state(), State::Terminated);
    }

    #[test]
    fn provisional_stops_every_invite_timer_ringing_is_for_the_caller_to_bound() {
        let mut t = ClientTransaction::new(Kind::Invite, 0, false);
        assert_eq!(run(&mut t, 600), vec![(500, ClientAction::Retransmit)]);
        assert_eq!(t.on_response(180, 700), ClientAction::Deliver);
        assert_eq!(t.state(), State::Proceeding);
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(t.on_response(200, 120_000), ClientAction::Deliver);
        assert_eq!(t.state(), State::Terminated);
    }

    #[test]
    fn invite_error_is_acked_and_retransmissions_reacked_until_timer_d() {
        let mut t = ClientTransaction::new(Kind::Invite, 0, false);
        t.on_response(180, 100);
        assert_eq!(
            t.on_response(486, 200),
            ClientAction::AckAndDeliver { first: true }
        );
        assert_eq!(
            t.on_response(486, 700),
            ClientAction::AckAndDeliver { first: false }
        );
        assert_eq!(run(&mut t, 32_199), vec![]);
        assert_eq!(
            run(&mut t, 32_200),
            vec![(32_200, ClientAction::Terminated)]
        );
        assert_eq!(t.on_response(486, 40_000), ClientAction::Absorb);
    }

    #[test]
    fn invite_2xx_terminates_at_once() {
        let mut t = ClientTransaction::new(Kind::Invite, 0, false);
        assert_eq!(t.on_response(200, 10), ClientAction::Deliver);
        assert_eq!(t.state(), State::Terminated);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn non_invite_backs_off_to_t2_and_times_out_at_timer_f() {
        let mut t = ClientTransaction::new(Kind::NonInvite, 0, false);
        let acts = run(&mut t, 40_000);
        let retransmits: Vec<u64> = acts
            .iter()
            .filter(|(_, a)| *a == ClientAction::Retransmit)
            .map(|(at, _)| *at)
            .collect();
        // Timer E: 0.5, 1.5, 3.5, 7.5, then every 4 s
        assert_eq!(
            &retransmits[..6],
            &[500, 1_500, 3_500, 7_500, 11_500, 15_500]
        );
        assert_eq!(acts.last(), Some(&(32_000, ClientAction::TimedOut)));
    }

    #[test]
    fn non_invite_proceeding_retransmits_every_t2_then_completes_with_timer_k() {
        let mut t = ClientTransaction::new(Kind::NonInvite, 0, false);
        assert_eq!(t.on_response(100, 100), ClientAction::Deliver);
        assert_eq!(run(&mut t, 600), vec![(500, ClientAction::Retransmit)]);
        assert_eq!(run(&mut t, 4_600), vec![(4_500, ClientAction::Retransmit)]);
        assert_eq!(t.on_response(200, 5_000), ClientAction::Deliver);
        assert_eq!(t.on_response(200, 5_100), ClientAction::Absorb);
        assert_eq!(
            run(&mut t, 20_000),
            vec![(10_000, ClientAction::Terminated)]
        );
    }

    #[test]
    fn reliable_transports_do_not_retransmit() {
        let mut t = ClientTransaction::new(Kind::Invite, 0, true);
        assert_eq!(run(&mut t, 40_000), vec![(32_000, ClientAction::TimedOut)]);
        let mut t = ClientTransaction::new(Kind::Invite, 0, true);
        assert_eq!(
            t.on_response(503, 5),
            ClientAction::AckAndDeliver { first: true }
        );
        assert_eq!(run(&mut t, 5), vec![(5, ClientAction::Terminated)]);
    }
}
