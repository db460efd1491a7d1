//! The rules of a table of up to 64 routes as bitmasks: for each distinct condition (a host, a
//! path, a method, a header value) the set of rules it lets through. A request is then tested
//! once per distinct condition, skipping those no remaining rule needs, and the first match is
//! the lowest bit left: twenty rules cost about what three or four comparisons do, instead of
//! twenty rule checks in a row.

use super::{Conditions, HostMatch, PathMatch, Request};

/// Rules a table indexes; a longer table is tried rule by rule.
pub const MAX_INDEXED: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Every rule.
    all: u64,
    /// Rules without a host condition, and those of each host condition.
    any_host: u64,
    hosts: Vec<(HostMatch, u64)>,
    any_path: u64,
    paths: Vec<(PathMatch, u64)>,
    any_method: u64,
    methods: Vec<(Box<[u8]>, u64)>,
    any_header: u64,
    /// By header name (lower case): each wanted value and its rules, and all of them.
    headers: Vec<HeaderGroup>,
}

/// One header name (lower case), each value rules want with those rules, and all of them.
type HeaderGroup = (String, Vec<(Box<[u8]>, u64)>, u64);

fn add<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K, bit: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, mask)) => *mask |= bit,
        None => list.push((key, bit)),
    }
}

impl Index {
    /// `None` for more than [`MAX_INDEXED`] rules.
    pub fn build(rules: &[Conditions]) -> Option<Index> {
        if rules.len() > MAX_INDEXED {
            return None;
        }
        let mut x = Index::default();
        for (i, rule) in rules.iter().enumerate() {
            let bit = 1u64 << i;
            x.all |= bit;
            match &rule.host {
                Some(h) => add(&mut x.hosts, h.clone(), bit),
                None => x.any_host |= bit,
            }
            match &rule.path {
                Some(p) => add(&mut x.paths, p.clone(), bit),
                None => x.any_path |= bit,
            }
            match &rule.methods {
                Some(methods) => {
                    for m in methods {
                        add(&mut x.methods, m.as_bytes().into(), bit);
                    }
                }
                None => x.any_method |= bit,
            }
            match &rule.header {
                Some((name, value)) => {
                    let group = match x.headers.iter().position(|(n, _, _)| n == name) {
                        Some(g) => g,
                        None => {
                            x.headers.push((name.clone(), Vec::new(), 0));
                            x.headers.len() - 1
                        }
                    };
                    let (_, values, mask) = &mut x.headers[group];
                    add(values, value.as_bytes().into(), bit);
                    *mask |= bit;
                }
                None => x.any_header |= bit,
            }
        }
        Some(x)
    }

    /// The index of the first rule that matches `req`.
    pub fn first_match(&self, req: &Request<'_>) -> Option<usize> {
        let mut left = self.all & self.any_host;
        if let Some(name) = req.host {
            for (host, mask) in &self.hosts {
                if host.matches(name) {
                    left |= mask;
                }
            }
        }
        left &= self.all;
        left &= self.any_path | self.passing(&self.paths, left, |p| p.matches(req.path));
        if left & !self.any_method != 0 {
            left &= self.any_method | self.passing(&self.methods, left, |m| **m == *req.method);
        }
        if left & !self.any_header != 0 {
            let mut ok = self.any_header;
            for (name, values, group) in &self.headers {
                if left & group == 0 {
                    continue;
                }
                if let Some(value) = (req.header)(name) {
                    for (want, mask) in values {
                        if **want == *value {
                            ok |= mask;
                        }
                    }
                }
            }
            left &= ok;
        }
        (left != 0).then(|| left.trailing_zeros() as usize)
    }

    /// The rules among `left` whose condition in `list` holds; conditions whose rules are all
    /// out already are not tested.
    #[inline]
    fn passing<K>(&self, list: &[(K, u64)], left: u64, holds: impl Fn(&K) -> bool) -> u64 {
        let mut ok = 0;
        for (key, mask) in list {
            if left & mask != 0 && holds(key) {
                ok |= mask;
            }
        }
        ok
    }
}
