//! Shared helpers for the examples and integration tests of `multiproc`.

/// The next number of a xorshift64 sequence (`state` must not be 0): the
/// cheap, seedable randomness the fault scenarios use to pick what to kill
/// and when, so a failing run can be replayed from its seed.
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
