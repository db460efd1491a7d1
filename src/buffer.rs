//! Per-connection byte buffers, taken from a shared free list only while they hold bytes.
//!
//! An idle keep-alive connection holds no buffer at all, which is what keeps ten thousand idle
//! clients cheap; a busy one reuses storage from the free list instead of the allocator; and a
//! few bytes waiting for more (a slow client's partial head) are parked in storage of their own
//! size, so a thousand slow clients do not pin a thousand buffers.

use std::io::{self, Read};

/// Something a buffer reads from: besides the bytes, it tells whether its queue is known to be
/// empty now (a short read from a socket), which spares the read that would say WouldBlock.
pub trait Source {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)>;
}

impl Source for &[u8] {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let n = self.read(buf)?;
        Ok((n, n < buf.len()))
    }
}

/// A fixed-capacity buffer: bytes live in `storage[start..end]`.
#[derive(Debug, Default)]
pub struct Buf {
    storage: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn data(&self) -> &[u8] {
        match &self.storage {
            Some(s) => &s[self.start..self.end],
            None => &[],
        }
    }

    /// Whether another read could add bytes (counting room that compaction would make).
    pub fn is_full(&self, capacity: usize) -> bool {
        self.len() >= capacity
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Keeps only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Reads once from `source` into the free space, taking storage from `pool` if needed.
    /// Returns the bytes read and whether the source is known to be drained.
    pub fn read_from<S: Source>(
        &mut self,
        source: &mut S,
        pool: &mut BufPool,
    ) -> io::Result<(usize, bool)> {
        let storage = self.storage.get_or_insert_with(|| pool.take());
        if storage.len() < pool.size {
            // Parked bytes: back into a full-size buffer before reading more.
            let mut full = pool.take();
            full[..self.end - self.start].copy_from_slice(&storage[self.start..self.end]);
            *storage = full;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == storage.len() && self.start > 0 {
            storage.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == storage.len() {
            // Callers check is_full first; reading into nothing would look like end of stream.
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer full"));
        }
        let (n, drained) = source.read_some(&mut storage[self.end..])?;
        self.end += n;
        Ok((n, drained))
    }

    /// Moves a few bytes that wait for more (a head arriving in pieces, an upload's next bytes)
    /// out of the pooled buffer into storage of their own size, and gives the buffer back: a
    /// client that sends slowly, or a slowloris attack, then costs its bytes, not a buffer.
    pub fn park(&mut self, pool: &mut BufPool) {
        let len = self.len();
        if len == 0 || len > PARK_AT_MOST {
            return;
        }
        if self.storage.as_ref().is_some_and(|s| s.len() == pool.size) {
            let parked: Box<[u8]> = self.data().into();
            if let Some(full) = self.storage.replace(parked) {
                pool.give(full);
            }
            self.start = 0;
            self.end = len;
        }
    }

    /// Gives the storage back to the pool when no byte is left in it.
    pub fn release_if_empty(&mut self, pool: &mut BufPool) {
        if self.is_empty() {
            if let Some(storage) = self.storage.take() {
                pool.give(storage);
            }
        }
    }
}

/// Free list of equally sized buffers.
#[derive(Debug)]
pub struct BufPool {
    size: usize,
    free: Vec<Box<[u8]>>,
    max_free: usize,
    /// Small vectors for rewritten heads, lent the same way.
    free_heads: Vec<Vec<u8>>,
}

/// The most bytes `Buf::park` moves out of a pooled buffer: more than a slow client's partial
/// head usually holds, far less than a buffer.
const PARK_AT_MOST: usize = 2048;

/// Room a rewritten head usually fits in.
const HEAD_CAPACITY: usize = 512;

impl BufPool {
    pub fn new(size: usize, max_free: usize) -> BufPool {
        BufPool {
            size,
            free: Vec::new(),
            max_free,
            free_heads: Vec::new(),
        }
    }

    pub fn buffer_size(&self) -> usize {
        self.size
    }

    fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice())
    }

    /// Lends an empty vector for a head, unless `head` already has room.
    pub fn lend_head(&mut self, head: &mut Vec<u8>) {
        if head.capacity() == 0 {
            *head = self
                .free_heads
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(HEAD_CAPACITY));
        }
    }

    /// Takes back a head vector with nothing left to send; an idle connection keeps none.
    pub fn return_head(&mut self, head: &mut Vec<u8>) {
        if head.is_empty() && head.capacity() > 0 {
            let mut v = std::mem::take(head);
            // A huge head (a big response head) is not worth keeping around.
            if self.free_heads.len() < self.max_free && v.capacity() <= 4 * HEAD_CAPACITY {
                v.clear();
                self.free_heads.push(v);
            }
        }
    }

    fn give(&mut self, storage: Box<[u8]>) {
        if self.free.len() < self.max_free && storage.len() == self.size {
            self.free.push(storage);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compacts_and_releases() {
        let mut pool = BufPool::new(8, 4);
        let mut buf = Buf::default();
        let mut src: &[u8] = b"abcdefghijkl";
        assert_eq!(buf.read_from(&mut src, &mut pool).unwrap(), (8, false));
        assert!(buf.is_full(8));
        buf.consume(6);
        assert_eq!(buf.data(), b"gh");
        // The tail is full: the next read moves "gh" to the front first.
        assert_eq!(buf.read_from(&mut src, &mut pool).unwrap(), (4, true));
        assert_eq!(buf.data(), b"ghijkl");
        buf.consume(6);
        buf.release_if_empty(&mut pool);
        assert!(buf.storage.is_none());
        assert_eq!(pool.free.len(), 1);
    }

    #[test]
    fn parked_bytes_keep_their_place_and_free_the_buffer() {
        let mut pool = BufPool::new(8, 4);
        let mut buf = Buf::default();
        let mut src: &[u8] = b"abc";
        assert_eq!(buf.read_from(&mut src, &mut pool).unwrap(), (3, true));
        buf.consume(1);
        buf.park(&mut pool);
        assert_eq!(buf.data(), b"bc");
        assert_eq!(pool.free.len(), 1, "the full buffer went back");
        assert_eq!(buf.storage.as_ref().map(|s| s.len()), Some(2));
        let mut more: &[u8] = b"defghijk";
        assert_eq!(buf.read_from(&mut more, &mut pool).unwrap(), (6, false));
        assert_eq!(buf.data(), b"bcdefghi");
        assert_eq!(pool.free.len(), 0, "taken again for the read");
        buf.consume(8);
        buf.release_if_empty(&mut pool);
        assert_eq!(pool.free.len(), 1);
    }
}
