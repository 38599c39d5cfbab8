//! The DMA-API layer: live `dma_map_*`/`dma_alloc*` mappings per device, and
//! the check that each unmap matches its map.
//!
//! A `dma_unmap_page` (or `dma_free_*`, `dma_unmap_sg`) whose size, entry
//! count or direction differs from the map it ends is a driver bug the
//! kernel's CONFIG_DMA_API_DEBUG catches (`check_unmap`); here it is a
//! `dma-unmap-mismatch` finding. Devices are keyed by their domain's root
//! slot (see `identity`).

use iosan_core::FindingKind;

use super::identity::Domains;
use crate::parse::event::DmaDirection;
use crate::record::Record;
use crate::report::{fmt_ts, TraceFinding};

/// Keys come from the capture; the map is bounded, so chosen collisions
/// cost time, never memory.
type HashMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<iosan_core::hash::FastHasher>>;

/// Live DMA-API mappings remembered for unmap checks.
const MAX_DMA_LIVE: usize = 1 << 22;

/// Live DMA-API mappings.
#[derive(Default)]
pub(super) struct DmaApi {
    /// (device root, dma address) -> (size, direction, time mapped).
    live: HashMap<(usize, u64), (u64, DmaDirection, u64)>,
    /// Live scatter-gather maps: (device root, first phys) -> (entries, direction, time).
    sg_live: HashMap<(usize, u64), (usize, DmaDirection, u64)>,
}

impl DmaApi {
    /// `dma_map_page`/`dma_alloc*` of `size` bytes at `dma` for domain `dev`.
    pub(super) fn mapped(
        &mut self,
        domains: &mut Domains,
        dev: usize,
        dma: u64,
        size: u64,
        dir: DmaDirection,
        ts: u64,
    ) {
        if self.live.len() < MAX_DMA_LIVE {
            let dev = domains.find(dev);
            self.live.insert((dev, dma), (size, dir, ts));
        }
    }

    /// `dma_unmap_page`/`dma_free*`: the mismatch with its map, if any, as
    /// (device root, note).
    pub(super) fn unmapped(
        &mut self,
        domains: &mut Domains,
        dev: usize,
        dma: u64,
        size: u64,
        dir: DmaDirection,
    ) -> Option<(usize, String)> {
        let dev = domains.find(dev);
        let (msize, mdir, mts) = self.live.remove(&(dev, dma))?;
        (msize != size || mdir != dir).then(|| {
            let note = format!(
                "mapped {msize} bytes {} at {}, unmapped {size} bytes {}",
                dir_name(mdir),
                fmt_ts(mts),
                dir_name(dir)
            );
            (dev, note)
        })
    }

    /// `dma_map_sg` of `entries` entries starting at physical `first`.
    pub(super) fn sg_mapped(&mut self, dev_root: usize, first: u64, entries: usize, dir: DmaDirection, ts: u64) {
        if self.sg_live.len() < MAX_DMA_LIVE {
            self.sg_live.insert((dev_root, first), (entries, dir, ts));
        }
    }

    /// `dma_unmap_sg`: the mismatch with its map, if any, as a note.
    pub(super) fn sg_unmapped(
        &mut self,
        dev_root: usize,
        first: u64,
        entries: usize,
        dir: DmaDirection,
    ) -> Option<String> {
        let (n, mdir, ts) = self.sg_live.remove(&(dev_root, first))?;
        (n != entries || mdir != dir).then(|| {
            format!(
                "mapped {n} entries {} at {}, unmapped {entries} entries {}",
                dir_name(mdir),
                fmt_ts(ts),
                dir_name(dir)
            )
        })
    }
}

/// A `dma-unmap-mismatch` finding at `ctx` for domain `dev`.
pub(super) fn mismatch(
    ctx: &Record,
    comm: std::sync::Arc<str>,
    domains: &Domains,
    dev: usize,
    dma: Option<u64>,
    size: u64,
    note: String,
) -> TraceFinding {
    let mut f = TraceFinding::at(FindingKind::DmaUnmapMismatch, ctx, comm);
    f.device = domains.slot(dev).shadow.device().map(|d| d.to_string());
    f.domain = domains.label(dev);
    f.attribution = domains.slot(dev).via;
    f.iova = dma;
    f.size = size;
    f.note = Some(note);
    f
}

fn dir_name(d: DmaDirection) -> &'static str {
    match d {
        DmaDirection::Bidirectional => "BIDIRECTIONAL",
        DmaDirection::ToDevice => "TO_DEVICE",
        DmaDirection::FromDevice => "FROM_DEVICE",
        DmaDirection::None => "NONE",
    }
}
