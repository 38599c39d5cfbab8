//! `/proc/kallsyms` as a capture carries it: symbolise kernel addresses
//! the way `%pS` prints them (the kernel's `sprint_symbol`:
//! `func+0xoff/0xlen [module]`), with a symbol's length taken, as
//! `kallsyms_lookup_size_offset` does, as the distance to the next symbol.

use std::cell::Cell;
use std::io::Write as _;

/// One text symbol.
#[derive(Clone, Copy, Debug)]
struct Sym {
    addr: u64,
    name: (u32, u32),
    module: (u32, u32),
}

/// Text symbols of a kallsyms dump, sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    syms: Vec<Sym>,
    names: Vec<u8>,
}

/// A resolved address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// Symbol name.
    pub name: &'a [u8],
    /// Offset of the address in the symbol.
    pub offset: u64,
    /// The symbol's length (to the next symbol); `None` for the last one.
    pub len: Option<u64>,
    /// Module name, `None` for the core kernel.
    pub module: Option<&'a [u8]>,
}

/// The last address [`Kallsyms::name_cached`] resolved (use it with one
/// `Kallsyms` only).
#[derive(Clone, Debug, Default)]
pub struct SymbolCache(Cell<Option<(u64, Option<NameRange>)>>);

/// A name's range in the string arena.
type NameRange = (u32, u32);

/// Largest distance from the last symbol still attributed to it.
const LAST_SYMBOL_SPAN: u64 = 1 << 20;

impl Kallsyms {
    /// Parses `ADDR TYPE NAME [MODULE]` lines; keeps text symbols
    /// (`t T w W`) with a non-zero address. Other lines are ignored.
    #[must_use]
    pub fn parse(text: &[u8]) -> Self {
        let mut k = Self::default();
        // Hand-rolled: a kernel with modules has ~200k lines, read at open.
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
        for end in ends {
            let line = text.get(start..end).unwrap_or_default();
            start = end + 1;
            let mut f = Fields(line);
            let (Some(addr), Some(ty), Some(name)) = (f.next(), f.next(), f.next()) else { continue };
            if !matches!(ty, b"t" | b"T" | b"w" | b"W") {
                continue;
            }
            let Some(addr) = parse_hex(addr).filter(|&a| a != 0) else { continue };
            let module = f.next().and_then(|m| m.strip_prefix(b"[")).and_then(|m| m.strip_suffix(b"]"));
            let Some(name) = k.intern(name) else { break };
            let Some(module) = k.intern_module(module.unwrap_or_default()) else { break };
            k.syms.push(Sym { addr, name, module });
        }
        k.syms.sort_by_key(|s| s.addr);
        k
    }

    /// Module names repeat on consecutive lines: share the last one.
    fn intern_module(&mut self, m: &[u8]) -> Option<(u32, u32)> {
        if m.is_empty() {
            return Some((0, 0));
        }
        if let Some(last) = self.syms.last() {
            if self.text(last.module) == m {
                return Some(last.module);
            }
        }
        self.intern(m)
    }

    fn intern(&mut self, s: &[u8]) -> Option<(u32, u32)> {
        let start = u32::try_from(self.names.len()).ok()?;
        let end = u32::try_from(self.names.len().checked_add(s.len())?).ok()?;
        self.names.extend_from_slice(s);
        Some((start, end))
    }

    fn text(&self, r: (u32, u32)) -> &[u8] {
        self.names.get(r.0 as usize..r.1 as usize).unwrap_or_default()
    }

    /// Number of text symbols.
    #[must_use]
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    /// No symbols (the capture was made without kallsyms, or as non-root).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// The name of the symbol containing `addr`, with a one-entry cache:
    /// kprobe events repeat the same few `__probe_ip`s.
    #[must_use]
    pub fn name_cached(&self, addr: u64, cache: &SymbolCache) -> Option<&[u8]> {
        if let Some((a, r)) = cache.0.get() {
            if a == addr {
                return r.map(|r| self.text(r));
            }
        }
        let r = self.lookup_index(addr).and_then(|i| self.syms.get(i)).map(|s| s.name);
        cache.0.set(Some((addr, r)));
        r.map(|r| self.text(r))
    }

    fn lookup_index(&self, addr: u64) -> Option<usize> {
        let i = self.syms.partition_point(|s| s.addr <= addr).checked_sub(1)?;
        let s = self.syms.get(i)?;
        let next = self.syms.get(i + 1..)?.iter().find(|n| n.addr > s.addr);
        if next.is_none() && addr - s.addr > LAST_SYMBOL_SPAN {
            return None;
        }
        Some(i)
    }

    /// The symbol containing `addr`.
    #[must_use]
    pub fn lookup(&self, addr: u64) -> Option<Symbol<'_>> {
        let i = self.syms.partition_point(|s| s.addr <= addr).checked_sub(1)?;
        let s = self.syms.get(i)?;
        // Aliases share an address; the length runs to the next distinct one.
        let next = self.syms.get(i + 1..)?.iter().find(|n| n.addr > s.addr).map(|n| n.addr);
        let offset = addr - s.addr;
        let len = next.map(|n| n - s.addr);
        if len.is_none() && offset > LAST_SYMBOL_SPAN {
            return None;
        }
        let module = self.text(s.module);
        Some(Symbol { name: self.text(s.name), offset, len, module: (!module.is_empty()).then_some(module) })
    }

    /// Appends `addr` as `%pS` prints it, or `0x…` when unknown.
    pub fn format(&self, addr: u64, out: &mut Vec<u8>) {
        match self.lookup(addr) {
            Some(s) => {
                out.extend_from_slice(s.name);
                let _ = write!(out, "+{:#x}", s.offset);
                if let Some(len) = s.len {
                    let _ = write!(out, "/{len:#x}");
                }
                if let Some(m) = s.module {
                    out.extend_from_slice(b" [");
                    out.extend_from_slice(m);
                    out.push(b']');
                }
            }
            None => {
                let _ = write!(out, "{addr:#x}");
            }
        }
    }
}

/// Whitespace-separated fields of a line.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let s = self.0;
        let start = s.iter().position(|&c| c != b' ' && c != b'\t')?;
        let rest = s.get(start..)?;
        let len = rest.iter().position(|&c| c == b' ' || c == b'\t').unwrap_or(rest.len());
        self.0 = rest.get(len..)?;
        rest.get(..len)
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] = b"ffff800080010000 T _stext\n\
ffff800080010000 t __alias\n\
ffff8000804a0000 T __iommu_map\n\
ffff8000804a02c0 T iommu_map\n\
ffff8000804a0400 D some_data\n\
0000000000000000 T zeroed\n\
ffff800079000000 t lab_init\t[lab_mod]\n\
garbage\n";

    #[test]
    fn resolves_like_percent_ps() {
        let k = Kallsyms::parse(TEXT);
        assert_eq!(k.len(), 5);
        let cache = SymbolCache::default();
        for _ in 0..2 {
            assert_eq!(k.name_cached(0xffff_8000_804a_01a4, &cache), Some(&b"__iommu_map"[..]));
        }
        assert_eq!(k.name_cached(0x10, &cache), None);
        assert_eq!(k.name_cached(0xffff_8000_7900_0010, &cache), Some(&b"lab_init"[..]));
        let mut out = Vec::new();
        k.format(0xffff_8000_804a_01a4, &mut out);
        assert_eq!(out, b"__iommu_map+0x1a4/0x2c0");
        out.clear();
        k.format(0xffff_8000_7900_0010, &mut out);
        assert_eq!(out, b"lab_init+0x10/0x7010000 [lab_mod]");
        out.clear();
        k.format(0x10, &mut out);
        assert_eq!(out, b"0x10");
        let last = k.lookup(0xffff_8000_804a_02c8).unwrap();
        assert_eq!((last.name, last.offset, last.len), (&b"iommu_map"[..], 8, None));
        assert!(k.lookup(0xffff_8000_904a_02c8).is_none());
    }
}
