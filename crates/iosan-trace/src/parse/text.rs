//! The text side of the field collector: how the tokens of a printed body
//! fill a [`Got`], per [`TextLayout`], and the fast paths for the hot
//! events in the kernel's exact layout.
//!
//! The fast paths read the bodies of the events a capture is made of
//! (`mm_page_alloc`/`free`, `iommu:map`/`unmap`, `dma_map_page`,
//! `dma_unmap_page`, `cache_tag_flush_range`, kprobe fields) in one pass
//! without building a [`Got`]; any other layout falls back to the by-name
//! path, and a test checks that both agree.

use super::collect::Got;
use super::event::*;
use super::fields::{Tok, Toks};
use super::kinds::{probe_event, EventSpec, TextLayout, PROBE_FIELDS};
use super::num;
use super::scan::{self, Cur};
use crate::field::FieldValue;

/// A known kind's body, by name.
pub(crate) fn parse_body<'a>(
    spec: &'static EventSpec,
    event: &'static str,
    body: &'a [u8],
) -> Result<Event<'a>, FieldError> {
    let mut g = Got::new(event, spec.fields);
    fill(&mut g, spec, body)?;
    g.check_required()?;
    (spec.build)(&g)
}

fn keyed<'a>(g: &mut Got<'a>, body: &'a [u8]) {
    for Tok { key, val } in Toks::new(body) {
        if !key.is_empty() {
            g.put_key(key, FieldValue::Text(val));
        }
    }
}

/// Blank-separated words.
fn words(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| scan::is_blank(b)).filter(|w| !w.is_empty())
}

/// `key value` word pairs: every word is offered under the word before it.
fn word_pairs<'a>(
    g: &mut Got<'a>,
    words: impl Iterator<Item = &'a [u8]>,
    mut other: impl FnMut(&mut Got<'a>, &'a [u8]),
) {
    let mut prev: &[u8] = &[];
    for w in words {
        match prev {
            b"type" | b"did" | b"pasid" | b"ref" | b"addr" | b"pages" | b"mask" => g.put_key(prev, FieldValue::Text(w)),
            _ => other(g, w),
        }
        prev = w;
    }
}

fn fill<'a>(g: &mut Got<'a>, spec: &EventSpec, body: &'a [u8]) -> Result<(), FieldError> {
    match spec.text {
        TextLayout::Keyed => keyed(g, body),
        TextLayout::IovaRange => {
            let mut after_dash = false;
            for Tok { key, val } in Toks::new(body) {
                if !key.is_empty() {
                    g.put_key(key, FieldValue::Text(val));
                } else if after_dash {
                    g.put_name("iova end", FieldValue::Text(val));
                }
                after_dash = key.is_empty() && val == b"-";
            }
        }
        TextLayout::Device => {
            let (raw, rest) = match body.strip_prefix(b"[FAILED TO PARSE]") {
                Some(r) => (true, r),
                None => (false, body),
            };
            let mut first = true;
            for Tok { key, val } in Toks::new(rest) {
                if !key.is_empty() {
                    g.put_key(key, FieldValue::Text(val));
                } else if first && !raw {
                    g.put_name("device", FieldValue::Text(val));
                } else if val == b"[TRUNCATED]" {
                    g.put_name("truncated", FieldValue::Unsigned(1));
                }
                first = false;
            }
        }
        TextLayout::Fault => {
            let (mut driver, mut device): (Option<&[u8]>, Option<&[u8]>) = (None, None);
            for Tok { key, val } in Toks::new(body) {
                if !key.is_empty() {
                    g.put_key(key, FieldValue::Text(val));
                } else if driver.is_none() {
                    match val.strip_prefix(b"IOMMU:") {
                        Some(d) => driver = Some(d),
                        None => {
                            driver = Some(&[]);
                            device = Some(val);
                        }
                    }
                } else if device.is_none_or(<[u8]>::is_empty) {
                    device = Some(val);
                }
            }
            if let Some(d) = driver {
                g.put_name("driver", FieldValue::Text(d));
            }
            if let Some(d) = device {
                g.put_name("device", FieldValue::Text(d));
            }
        }
        TextLayout::Tag => {
            let mut w = words(body);
            if let Some(first) = w.next() {
                match memchr::memchr(b'/', first) {
                    Some(p) => {
                        g.put_name("iommu", FieldValue::Text(first.get(..p).unwrap_or_default()));
                        g.put_name("dev", FieldValue::Text(first.get(p + 1..).unwrap_or_default()));
                    }
                    None => g.put_name("iommu", FieldValue::Text(first)),
                }
            }
            word_pairs(g, w, |_, _| {});
        }
        TextLayout::FlushRange => {
            let mut w = words(body);
            if let Some(iommu) = w.next() {
                g.put_name("iommu", FieldValue::Text(iommu));
            }
            if let Some(devp) = w.next() {
                match memchr::memchr(b'[', devp) {
                    Some(p) => {
                        let inner = devp.get(p + 1..).unwrap_or_default();
                        g.put_name("dev", FieldValue::Text(devp.get(..p).unwrap_or_default()));
                        g.put_name("pasid", FieldValue::Text(inner.strip_suffix(b"]").unwrap_or(inner)));
                    }
                    None => g.put_name("dev", FieldValue::Text(devp)),
                }
            }
            let mut range = None;
            word_pairs(g, w, |_, w| {
                if w.first() == Some(&b'[') {
                    range = range.or(Some(w));
                }
            });
            if let Some(range) = range {
                let bad = || ferr(g.event, "range", FieldProblem::BadRange, range);
                let inner = range.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")).ok_or_else(bad)?;
                let dash = memchr::memchr(b'-', inner).ok_or_else(bad)?;
                g.put_name("start", FieldValue::Text(inner.get(..dash).unwrap_or_default()));
                g.put_name("last", FieldValue::Text(inner.get(dash + 1..).unwrap_or_default()));
            }
        }
        TextLayout::Message => g.put(0, FieldValue::Text(body)),
        TextLayout::Marker => {
            // `trace-cmd report` prints the writer's symbol first: `tracing_mark_write: msg`.
            let word_end = scan::find_byte(body, b' ');
            let word = body.get(..word_end).unwrap_or_default();
            let msg = if word.last() == Some(&b':') {
                let rest = body.get(word_end..).unwrap_or_default();
                rest.strip_prefix(b" ").unwrap_or(rest)
            } else {
                body
            };
            g.put(0, FieldValue::Text(msg));
        }
        TextLayout::Opaque => {}
    }
    Ok(())
}

// ---------------------------------------------------------------- fast paths

/// A hot event in the kernel's exact print layout, or `None` to take the
/// by-name path.
#[inline]
pub(crate) fn fast_event<'a>(name: &[u8], body: &'a [u8]) -> Option<Event<'a>> {
    match name {
        b"mm_page_alloc" => fast_page_alloc(body).map(Event::PageAlloc),
        b"mm_page_free" => fast_page_block(body).map(Event::PageFree),
        b"mm_page_free_batched" => fast_page_block(body).map(Event::PageFreeBatched),
        b"map" => fast_iommu_map(body).map(Event::IommuMap),
        b"unmap" => fast_iommu_unmap(body).map(Event::IommuUnmap),
        b"dma_map_page" | b"dma_map_phys" => fast_dma_map(body).map(Event::DmaMapPage),
        b"dma_unmap_page" | b"dma_unmap_phys" => fast_dma_unmap(body).map(Event::DmaUnmapPage),
        b"cache_tag_flush_range" => fast_flush_range(body).map(Event::CacheTagFlushRange),
        b"cache_tag_flush_range_np" => fast_flush_range(body).map(Event::CacheTagFlushRangeNp),
        _ => None,
    }
}

/// `IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu`, exactly.
#[inline]
pub(crate) fn fast_iommu_map(body: &[u8]) -> Option<IommuMap> {
    let (mut c, iova, end) = fast_iova_range(body)?;
    c.lit(b" paddr=")?;
    let paddr = c.auto()?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    c.end()?;
    (end == iova.wrapping_add(size)).then_some(IommuMap { iova, paddr, size })
}

/// `IOMMU: iova=0x%016llx - 0x%016llx size=%zu unmapped_size=%zu`, exactly.
#[inline]
fn fast_iommu_unmap(body: &[u8]) -> Option<IommuUnmap> {
    let (mut c, iova, end) = fast_iova_range(body)?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    c.lit(b" unmapped_size=")?;
    let unmapped_size = c.dec()?;
    c.end()?;
    (end == iova.wrapping_add(size)).then_some(IommuUnmap { iova, size, unmapped_size })
}

/// `IOMMU: iova=0x.. - 0x..`: the rest, the IOVA and the printed end.
#[inline(always)]
fn fast_iova_range(body: &[u8]) -> Option<(Cur<'_>, u64, u64)> {
    let mut c = Cur::new(body);
    c.lit(b"IOMMU: iova=")?;
    let iova = c.auto()?;
    c.lit(b" - ")?;
    let end = c.auto()?;
    Some((c, iova, end))
}

/// The device: the first word, which the tokenizer must see as a bare word
/// (no `=`), and not libtraceevent's `[FAILED TO PARSE]`.
#[inline]
fn fast_dma_device<'a>(c: &mut Cur<'a>) -> Option<&'a [u8]> {
    if c.s.first() == Some(&b'[') {
        return None;
    }
    let device = c.word();
    (!device.is_empty() && scan::find_byte(device, b'=') == device.len()).then_some(device)
}

/// `%s dir=%s dma_addr=%llx size=%zu phys_addr=%llx attrs=%s`, exactly.
#[inline]
fn fast_dma_map(body: &[u8]) -> Option<DmaMap<'_>> {
    let (mut c, device, dir, dma_addr, size) = fast_dma_head(body)?;
    c.lit(b" phys_addr=")?;
    let phys_addr = c.hex_maybe_0x()?;
    let attrs = fast_dma_attrs(&mut c)?;
    Some(DmaMap { device, dir, dma_addr, size, phys_addr, attrs })
}

/// `%s dir=%s dma_addr=%llx size=%zu attrs=%s`, exactly.
#[inline]
fn fast_dma_unmap(body: &[u8]) -> Option<DmaUnmap<'_>> {
    let (mut c, device, dir, dma_addr, size) = fast_dma_head(body)?;
    let attrs = fast_dma_attrs(&mut c)?;
    Some(DmaUnmap { device, dir, dma_addr, size, attrs })
}

/// `%s dir=%s dma_addr=%llx size=%zu`: the rest and those fields.
#[inline(always)]
fn fast_dma_head(body: &[u8]) -> Option<(Cur<'_>, &[u8], DmaDirection, u64, u64)> {
    let mut c = Cur::new(body);
    let device = fast_dma_device(&mut c)?;
    c.lit(b" dir=")?;
    let dir = super::collect::direction_text(c.word())?;
    c.lit(b" dma_addr=")?;
    let dma_addr = c.hex_maybe_0x()?;
    c.lit(b" size=")?;
    let size = c.dec()?;
    Some((c, device, dir, dma_addr, size))
}

/// ` attrs=%s` and the end of the body.
#[inline(always)]
fn fast_dma_attrs<'a>(c: &mut Cur<'a>) -> Option<&'a [u8]> {
    c.lit(b" attrs=")?;
    let attrs = c.plain_val()?;
    c.end()?;
    Some(attrs)
}

/// `page=%p pfn=0x%lx order=%d migratetype=%d gfp_flags=%s`, exactly, with
/// a non-negative decimal migrate type.
#[inline]
fn fast_page_alloc(body: &[u8]) -> Option<PageAlloc<'_>> {
    let mut c = Cur::new(body);
    c.lit(b"page=")?;
    let page = c.plain_val()?;
    c.lit(b" pfn=")?;
    let pfn = c.auto()?;
    c.lit(b" order=")?;
    let order = fast_order(&mut c)?;
    c.lit(b" migratetype=")?;
    let mt = i64::try_from(c.dec()?).ok()?;
    c.lit(b" gfp_flags=")?;
    let gfp_flags = c.plain_val()?;
    c.end()?;
    Some(PageAlloc { pfn, order, page_is_null: super::kinds::page_is_null(page), migratetype: Some(mt), gfp_flags })
}

#[inline]
fn fast_order(c: &mut Cur<'_>) -> Option<u32> {
    u32::try_from(c.dec()?).ok().filter(|&o| o <= MAX_ORDER)
}

/// `page=%p pfn=0x%lx order=%d`, exactly.
#[inline]
fn fast_page_block(body: &[u8]) -> Option<PageBlock> {
    let mut c = Cur::new(body);
    c.lit(b"page=")?;
    c.plain_val()?;
    c.lit(b" pfn=")?;
    let pfn = c.auto()?;
    c.lit(b" order=")?;
    let order = fast_order(&mut c)?;
    c.end()?;
    Some(PageBlock { pfn, order })
}

/// A whole `' '`-separated word as [`num::auto_u64`] reads it.
#[inline]
fn whole_auto(w: &[u8]) -> Option<u64> {
    let mut c = Cur::new(w);
    let v = c.auto()?;
    c.end()?;
    Some(v)
}

/// `%s %s[%d] type %s did %d [0x%lx-0x%lx] addr 0x%lx pages 0x%lx mask 0x%lx`,
/// exactly, with a tag type that the word-pair reader cannot mistake for a
/// key.
#[inline]
pub(crate) fn fast_flush_range(body: &[u8]) -> Option<CacheTagFlushRange<'_>> {
    let mut c = Cur::new(body);
    let iommu = c.word_sp();
    c.lit(b" ")?;
    let devp = c.word_sp();
    if iommu.is_empty() || devp.is_empty() {
        return None;
    }
    let (dev, pasid) = match devp.split_at_checked(scan::find_byte(devp, b'[')) {
        Some((dev, p)) if !p.is_empty() => {
            let inner = p.get(1..)?;
            let inner = inner.strip_suffix(b"]").unwrap_or(inner);
            (dev, u32::try_from(whole_auto(inner)?).ok()?)
        }
        _ => (devp, 0),
    };
    c.lit(b" type ")?;
    let tag_type = c.word_sp();
    if tag_type.is_empty() || matches!(tag_type, b"type" | b"did" | b"pasid" | b"ref" | b"addr" | b"pages" | b"mask") {
        return None;
    }
    c.lit(b" did ")?;
    let did = u32::try_from(whole_auto(c.word_sp())?).ok()?;
    c.lit(b" ")?;
    let range = c.word_sp();
    let inner = range.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let (start, last) = inner.split_at_checked(scan::find_byte(inner, b'-'))?;
    let start = whole_auto(start)?;
    let last = whole_auto(last.get(1..)?)?;
    c.lit(b" addr ")?;
    let addr = whole_auto(c.word_sp())?;
    c.lit(b" pages ")?;
    let pages = whole_auto(c.word_sp())?;
    c.lit(b" mask ")?;
    let mask = whole_auto(c.word_sp())?;
    c.end()?;
    Some(CacheTagFlushRange { iommu, dev, pasid, tag_type, did, start, last, addr, pages: Some(pages), mask })
}

// ---------------------------------------------------------------- probes

fn parse_site(tok: &[u8]) -> ProbeSite<'_> {
    if let Some(site) = fast_site(tok) {
        return site;
    }
    general_site(tok)
}

fn general_site(tok: &[u8]) -> ProbeSite<'_> {
    // Drop a module suffix (`func+0x0/0x10 [nvme]`) or anything after a blank.
    let tok = tok.get(..scan::find_byte(tok, b' ')).unwrap_or(tok);
    if tok.len() >= 8 && tok.len() <= 16 {
        let (a, n) = scan::hex_prefix(tok);
        if n == tok.len() {
            return ProbeSite::Address(a);
        }
    }
    match tok.split_at_checked(scan::find_byte(tok, b'+')) {
        Some((func, off)) if !off.is_empty() => {
            let off = off.get(1..).unwrap_or_default();
            let (o, s) = match off.split_at_checked(scan::find_byte(off, b'/')) {
                Some((o, s)) if !s.is_empty() => (o, s.get(1..)),
                _ => (off, None),
            };
            ProbeSite::Symbol { func, offset: num::auto_u64(o).ok(), size: s.and_then(|s| num::auto_u64(s).ok()) }
        }
        _ => ProbeSite::Symbol { func: tok, offset: None, size: None },
    }
}

/// [`parse_site`] for the kernel's `func+0xOFF/0xSIZE`, nothing after it, at
/// most 16 digits each; `None` for anything else (the general path decides).
#[inline]
fn fast_site(tok: &[u8]) -> Option<ProbeSite<'_>> {
    let (func, rest) = tok.split_at_checked(scan::find_byte(tok, b'+'))?;
    let rest = rest.strip_prefix(b"+0x")?;
    let (offset, n) = scan::hex_prefix(rest);
    if n == 0 || n > 16 {
        return None;
    }
    let rest = rest.get(n..)?.strip_prefix(b"/0x")?;
    let (size, n) = scan::hex_prefix(rest);
    if n == 0 || n > 16 || n != rest.len() {
        return None;
    }
    Some(ProbeSite::Symbol { func, offset: Some(offset), size: Some(size) })
}

/// Probe fields in the kernel's layout: ` key=value` tokens, each after
/// exactly one space, with values the tokenizer returns unchanged. `false`
/// for anything else (bare words, quotes, tabs, runs of blanks); `g` then
/// holds a part and must be refilled.
#[inline]
fn fast_probe_fields<'a>(g: &mut Got<'a>, s: &'a [u8]) -> bool {
    let mut c = Cur::new(s);
    while !c.s.is_empty() {
        let Some((key, val)) = fast_probe_field(&mut c) else { return false };
        g.put_key(key, FieldValue::Text(val));
    }
    true
}

#[inline]
fn fast_probe_field<'a>(c: &mut Cur<'a>) -> Option<(&'a [u8], &'a [u8])> {
    c.lit(b" ")?;
    let (key, rest) = c.s.split_at_checked(scan::find_blank_or_eq(c.s))?;
    c.s = rest.strip_prefix(b"=")?;
    if key.is_empty() {
        return None;
    }
    Some((key, c.plain_val()?))
}

/// The probes `iosan record` sets up, in their exact layout (the hot
/// events of a capture with domain kprobes): `__iommu_map` and
/// `__iommu_unmap` entries with `domain dtype iova paddr size prot`, and
/// their return probes with a non-negative `ret` or `unmapped`.
#[inline]
fn fast_probe<'a>(site: ProbeSite<'a>, caller: Option<ProbeSite<'a>>, rest: &[u8]) -> Option<Event<'a>> {
    let probe = ProbeInfo { site, caller, by_fields: false };
    let mut c = Cur::new(rest);
    let ev = match (site.function()?, caller.is_some()) {
        (b"__iommu_map" | b"iommu_map_nosync", false) => {
            let domain = auto_after(&mut c, b" domain=")?;
            let dtype = auto_after(&mut c, b" dtype=")?;
            let iova = auto_after(&mut c, b" iova=")?;
            let paddr = auto_after(&mut c, b" paddr=")?;
            let size = auto_after(&mut c, b" size=")?;
            let prot = i64::try_from(dec_after(&mut c, b" prot=")?).ok()?;
            Event::ProbeMap(ProbeMap { probe, domain, dtype: Some(dtype), iova, paddr, size, prot: Some(prot) })
        }
        (b"__iommu_unmap", false) => {
            let domain = auto_after(&mut c, b" domain=")?;
            let dtype = auto_after(&mut c, b" dtype=")?;
            let iova = auto_after(&mut c, b" iova=")?;
            let size = auto_after(&mut c, b" size=")?;
            Event::ProbeUnmap(ProbeUnmap { probe, domain, dtype: Some(dtype), iova, size })
        }
        (b"__iommu_map" | b"iommu_map_nosync", true) => {
            let ret = i64::try_from(dec_after(&mut c, b" ret=")?).ok()?;
            Event::ProbeMapReturn(ProbeMapReturn { probe, ret })
        }
        (b"__iommu_unmap", true) => {
            let unmapped = auto_after(&mut c, b" unmapped=")?;
            Event::ProbeUnmapReturn(ProbeUnmapReturn { probe, unmapped })
        }
        _ => return None,
    };
    c.end()?;
    Some(ev)
}

/// `lit` then a `0x`-hex or decimal number.
#[inline(always)]
fn auto_after(c: &mut Cur<'_>, lit: &[u8]) -> Option<u64> {
    c.lit(lit)?;
    c.auto()
}

/// `lit` then a decimal number.
#[inline(always)]
fn dec_after(c: &mut Cur<'_>, lit: &[u8]) -> Option<u64> {
    c.lit(lit)?;
    c.dec()
}

/// The first ` <- ` in `s` (a `memmem` searcher costs more to build than
/// this short scan).
#[inline]
fn find_arrow(s: &[u8]) -> Option<usize> {
    let mut from = 0;
    loop {
        let hay = s.get(from..)?;
        let lt = scan::find_byte(hay, b'<');
        if lt == hay.len() {
            return None;
        }
        let at = from + lt;
        if at >= 1 && s.get(at - 1) == Some(&b' ') && s.get(at + 1..at + 3) == Some(b"- ") {
            return Some(at - 1);
        }
        from = at + 1;
    }
}

/// A kprobe or kretprobe body: `(site) key=value ...`, where the site is
/// `func+0x0/0x280`, `ret_ip <- func` (the kernel), or raw addresses
/// (`trace-cmd report`, which prints `func <- ret_ip`).
pub(crate) fn parse_probe(body: &[u8]) -> Result<Option<Event<'_>>, FieldError> {
    let close = scan::find_byte(body, b')');
    if close == body.len() {
        return Ok(None);
    }
    let inside = body.get(1..close).unwrap_or_default();
    let rest = body.get(close + 1..).unwrap_or_default();
    let (site, caller) = match find_arrow(inside) {
        Some(p) => {
            let left = parse_site(inside.get(..p).unwrap_or_default());
            let right = parse_site(inside.get(p + 4..).unwrap_or_default());
            match (left, right) {
                (ProbeSite::Address(_), ProbeSite::Address(_)) => (left, Some(right)),
                _ => (right, Some(left)),
            }
        }
        None => (parse_site(inside), None),
    };
    if let Some(ev) = fast_probe(site, caller, rest) {
        return Ok(Some(ev));
    }
    let mut g = Got::new("kprobe", PROBE_FIELDS);
    if !fast_probe_fields(&mut g, rest) {
        g = Got::new("kprobe", PROBE_FIELDS);
        keyed(&mut g, rest);
    }
    probe_event(site, caller, &mut g)
}

#[cfg(test)]
mod site_tests {
    use super::*;

    /// The fast path says `Some` only where the general path agrees.
    #[test]
    fn fast_site_agrees_with_the_general_path() {
        let cases: &[&[u8]] = &[
            b"__iommu_map+0x0/0x280",
            b"iommu_map+0x42/0xd0",
            b"f+0xABC/0x1F",
            b"+0x0/0x1",
            b"f+0x/0x1",
            b"f+0x1/0x",
            b"f+0x1/0x2 [nvme]",
            b"f+0x1/0x2x",
            b"f+1/0x2",
            b"f+0x1",
            b"f+0x11112222333344445/0x1",
            b"f+0x1111222233334444/0x1",
            b"ffffffff81000000",
            b"f",
            b"",
        ];
        for &c in cases {
            let general = general_site(c);
            if let Some(fast) = fast_site(c) {
                assert_eq!(fast, general, "{}", String::from_utf8_lossy(c));
            }
        }
        assert!(fast_site(b"__iommu_map+0x0/0x280").is_some());
    }
}
