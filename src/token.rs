//! The mapping between mio tokens and what they stand for.
//!
//! A client socket's token carries its session's slab slot; a backend connection's token carries
//! its slot in the pool's table of connections, which says which session (if any) it serves.
//! Reserved tokens sit at the top of the range, where no slab key reaches.

use mio::Token;

/// The client listener.
pub const LISTENER: Token = Token(usize::MAX);
/// The reactor's waker, for messages from other threads.
pub const WAKER: Token = Token(usize::MAX - 1);
/// The HTTPS listener.
pub const TLS_LISTENER: Token = Token(usize::MAX - 2);

const TAG_BITS: u32 = 1;
const TAG_MASK: usize = (1 << TAG_BITS) - 1;
const TAG_CLIENT: usize = 0;
const TAG_BACKEND: usize = 1;

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Listener,
    TlsListener,
    Waker,
    /// The client socket of the session in this slot.
    Client(usize),
    /// The backend connection with this id in the pool's table.
    Backend(usize),
}

pub fn client(slot: usize) -> Token {
    Token((slot << TAG_BITS) | TAG_CLIENT)
}

pub fn backend(id: usize) -> Token {
    Token((id << TAG_BITS) | TAG_BACKEND)
}

pub fn target(token: Token) -> Target {
    match token {
        LISTENER => Target::Listener,
        TLS_LISTENER => Target::TlsListener,
        WAKER => Target::Waker,
        Token(n) => {
            let slot = n >> TAG_BITS;
            if n & TAG_MASK == TAG_CLIENT {
                Target::Client(slot)
            } else {
                Target::Backend(slot)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for slot in [0, 1, 7, 123_456] {
            assert_eq!(target(client(slot)), Target::Client(slot));
            assert_eq!(target(backend(slot)), Target::Backend(slot));
        }
        assert_eq!(target(LISTENER), Target::Listener);
        assert_eq!(target(WAKER), Target::Waker);
        assert_eq!(target(TLS_LISTENER), Target::TlsListener);
    }

    #[test]
    fn reserved_tokens_are_out_of_slab_reach() {
        // The three reserved tokens take the top of the range; a slab would need 2^62 entries
        // to reach them.
        let largest = (usize::MAX >> TAG_BITS) - 2;
        assert!(client(largest).0 < TLS_LISTENER.0);
        assert!(backend(largest).0 < TLS_LISTENER.0);
    }
}
