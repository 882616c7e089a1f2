//! Ids: the ones the agent makes and the ones it is given.
//!
//! Trace ids and request ids, fast: a per-thread xoshiro256++ generator seeded once from the OS
//! (via a v4 UUID), instead of one `getrandom` system call per id. These ids name requests; they
//! are not secrets (a rating still needs a valid bearer token).
//!
//! The rule for ids that become label values ([`is_valid_id`]: gateway, plant and equipment
//! ids, Sparkplug names) lives here too, so the config checks and the request handlers that take
//! such ids from a request apply one rule.

use std::cell::RefCell;
use std::fmt::Write as _;

use uuid::Uuid;

struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn seeded() -> Self {
        let (a, b) = Uuid::new_v4().as_u64_pair();
        let (c, d) = Uuid::new_v4().as_u64_pair();
        let mut s = [a, b, c, d];
        if s.iter().all(|x| *x == 0) {
            s[0] = 1;
        }
        Xoshiro(s)
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

thread_local! {
    static RNG: RefCell<Xoshiro> = RefCell::new(Xoshiro::seeded());
}

fn random_u128() -> u128 {
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        (u128::from(r.next()) << 64) | u128::from(r.next())
    })
}

/// A new trace id: 32 lowercase hex digits (the W3C trace-id shape), never all zeros.
pub fn trace_id() -> String {
    let mut v = random_u128();
    if v == 0 {
        v = 1;
    }
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{v:032x}");
    s
}

/// A new random (version 4) UUID.
pub fn uuid() -> Uuid {
    uuid::Builder::from_random_bytes(random_u128().to_be_bytes()).into_uuid()
}

/// The longest id [`is_valid_id`] accepts, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// The id rule, as the config checks state it.
pub const ID_RULE: &str = "must be 1-64 characters of [A-Za-z0-9-_.:]";

/// Is `s` acceptable as a label value we configure ourselves (ids, gateway names)?
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_right_shape_and_differ() {
        let t = trace_id();
        assert_eq!(t.len(), 32);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(trace_id(), t);
        let u = uuid();
        assert_eq!(u.get_version_num(), 4);
        assert_ne!(uuid(), u);
        let set: std::collections::HashSet<String> = (0..10_000).map(|_| trace_id()).collect();
        assert_eq!(set.len(), 10_000);
    }
}
