use std::fmt;

use super::meter::format_usd;

/// Rounding slack, in USD, so that reserving exactly what is left fits.
const EPSILON_USD: f64 = 1e-9;

/// The `--max-cost` cap, enforced at admission.
///
/// Each request reserves its worst-case cost (its prompt at the input price
/// plus its `max_tokens` at the output price) before it is sent; nothing is
/// admitted once `spent + reserved + worst case` would pass the cap. The real
/// cost replaces the reservation when the answer comes back. So the cap can
/// only be passed by what in-flight requests really cost beyond their worst
/// case (none, when the estimates are true upper bounds), and a run that stops
/// on the cap resumes with a higher one via [`Budget::with_spent`].
#[derive(Debug, Clone)]
pub struct Budget {
    cap: f64,
    spent: f64,
    reserved: f64,
    outstanding: u64,
}

/// Admission's claim on the budget for one in-flight request. Hand it back
/// with [`Budget::settle`] or [`Budget::release`]; a dropped reservation stays
/// reserved (the safe side of the cap).
#[derive(Debug, PartialEq)]
#[must_use = "a reservation must be settled or released, or it holds budget forever"]
pub struct Reservation {
    amount: f64,
}

impl Reservation {
    /// The USD this reservation holds.
    pub fn amount(&self) -> f64 {
        self.amount
    }
}

/// Admission refused: this request's worst case does not fit under the cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetExceeded {
    pub cap: f64,
    pub spent: f64,
    pub reserved: f64,
    /// The refused request's worst-case cost.
    pub needed: f64,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the cost cap of {} is reached: {} spent, {} reserved by requests in flight, and the next request may cost up to {}",
            format_usd(self.cap),
            format_usd(self.spent),
            format_usd(self.reserved),
            format_usd(self.needed)
        )
    }
}

impl std::error::Error for BudgetExceeded {}

impl Budget {
    /// A fresh budget of `cap_usd`.
    pub fn new(cap_usd: f64) -> Budget {
        Budget::with_spent(cap_usd, 0.0)
    }

    /// A budget of `cap_usd` of which `spent_usd` was already spent (a resumed
    /// run carries its earlier spend over).
    pub fn with_spent(cap_usd: f64, spent_usd: f64) -> Budget {
        Budget {
            cap: cap_usd,
            spent: spent_usd.max(0.0),
            reserved: 0.0,
            outstanding: 0,
        }
    }

    /// Reserve `worst_case_usd` for a request about to be sent, or refuse when
    /// it would not fit under the cap beside what is spent and reserved. A
    /// worst case that is not known (NaN or infinite, e.g. a model with no
    /// price) never fits.
    pub fn try_reserve(&mut self, worst_case_usd: f64) -> Result<Reservation, BudgetExceeded> {
        let needed = if worst_case_usd.is_nan() {
            f64::INFINITY
        } else {
            worst_case_usd.max(0.0)
        };
        if self.spent + self.reserved + needed > self.cap + EPSILON_USD {
            return Err(BudgetExceeded {
                cap: self.cap,
                spent: self.spent,
                reserved: self.reserved,
                needed,
            });
        }
        self.reserved += needed;
        self.outstanding += 1;
        Ok(Reservation { amount: needed })
    }

    /// Reserve `usd` that is committed already and cannot be refused: a
    /// provider batch submitted by an earlier run, still running. It may
    /// take the budget past its cap (the cap was lowered since); nothing
    /// more is admitted until it settles.
    pub fn reserve_committed(&mut self, usd: f64) -> Reservation {
        let amount = if usd.is_finite() { usd.max(0.0) } else { 0.0 };
        self.reserved += amount;
        self.outstanding += 1;
        Reservation { amount }
    }

    /// The request was answered and cost `actual_usd`.
    pub fn settle(&mut self, r: Reservation, actual_usd: f64) {
        self.give_back(r);
        self.spent += actual_usd.max(0.0);
    }

    /// The request was not charged (it failed with no usage): free its
    /// reservation.
    pub fn release(&mut self, r: Reservation) {
        self.give_back(r);
    }

    fn give_back(&mut self, r: Reservation) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.reserved = if self.outstanding == 0 {
            0.0 // no float drift survives an idle moment
        } else {
            (self.reserved - r.amount).max(0.0)
        };
    }

    /// USD spent by answered requests.
    pub fn spent(&self) -> f64 {
        self.spent
    }

    /// USD held by requests in flight.
    pub fn reserved(&self) -> f64 {
        self.reserved
    }

    /// The cap.
    pub fn cap(&self) -> f64 {
        self.cap
    }

    /// What is left to reserve: `cap - spent - reserved`, never below 0.
    pub fn remaining(&self) -> f64 {
        (self.cap - self.spent - self.reserved).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_until_the_cap_then_refuses() {
        let mut b = Budget::new(1.0);
        let r1 = b.try_reserve(0.4).unwrap();
        let r2 = b.try_reserve(0.4).unwrap();
        assert!((b.reserved() - 0.8).abs() < 1e-12);
        let refused = b.try_reserve(0.3).unwrap_err();
        assert_eq!(refused.cap, 1.0);
        assert_eq!(refused.spent, 0.0);
        assert!((refused.reserved - 0.8).abs() < 1e-12);
        assert_eq!(refused.needed, 0.3);
        // Exactly what is left fits (float rounding included: 0.4 + 0.4 + 0.2).
        let r3 = b.try_reserve(0.2).unwrap();
        assert!(b.try_reserve(0.000_001).is_err());

        // The real cost replaces the reservation.
        b.settle(r1, 0.1);
        assert!((b.spent() - 0.1).abs() < 1e-12);
        assert!((b.reserved() - 0.6).abs() < 1e-12);
        assert!((b.remaining() - 0.3).abs() < 1e-12);
        let r4 = b.try_reserve(0.3).unwrap();
        b.release(r2);
        b.release(r3);
        b.settle(r4, 0.25);
        assert_eq!(b.reserved(), 0.0);
        assert!((b.spent() - 0.35).abs() < 1e-12);
    }

    #[test]
    fn a_released_request_costs_nothing() {
        let mut b = Budget::new(0.5);
        let r = b.try_reserve(0.5).unwrap();
        assert!(b.try_reserve(0.1).is_err());
        b.release(r);
        assert_eq!((b.spent(), b.reserved()), (0.0, 0.0));
        assert!(b.try_reserve(0.5).is_ok());
    }

    #[test]
    fn carried_over_spend_counts_and_unknown_worst_cases_never_fit() {
        let mut b = Budget::with_spent(10.0, 9.5);
        assert!(b.try_reserve(0.6).is_err());
        assert!(b.try_reserve(0.5).is_ok());
        let mut b = Budget::new(1e9);
        assert!(b.try_reserve(f64::INFINITY).is_err());
        assert!(b.try_reserve(f64::NAN).is_err());
        assert_eq!(b.reserved(), 0.0);
        // A request bigger than the whole cap is refused even with nothing spent.
        assert!(Budget::new(0.01).try_reserve(0.02).is_err());
    }

    #[test]
    fn money_committed_earlier_is_reserved_even_past_the_cap() {
        // A batch submitted by an earlier run, with the cap lowered since.
        let mut b = Budget::with_spent(1.0, 0.5);
        let open = b.reserve_committed(0.8);
        assert!((b.reserved() - 0.8).abs() < 1e-12);
        assert_eq!(b.remaining(), 0.0);
        assert!(b.try_reserve(0.01).is_err());
        b.settle(open, 0.3);
        assert!((b.spent() - 0.8).abs() < 1e-12);
        assert!(b.try_reserve(0.2).is_ok());
        // A worst case that is not a number reserves nothing.
        let r = Budget::new(1.0).reserve_committed(f64::NAN);
        assert_eq!(r.amount(), 0.0);
    }

    #[test]
    fn the_refusal_says_why() {
        let text = BudgetExceeded {
            cap: 5.0,
            spent: 4.8,
            reserved: 0.15,
            needed: 0.1,
        }
        .to_string();
        assert!(
            text.contains("$5.00") && text.contains("$4.80") && text.contains("$0.1500"),
            "{text}"
        );
    }
}
