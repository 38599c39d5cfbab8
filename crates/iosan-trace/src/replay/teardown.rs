//! Teardown: a domain freed (`iommu_domain_free` kprobe) or its last device
//! removed (`iommu:remove_device_from_group`) with mappings still live is a
//! `leak-at-teardown`; the domain's identities are then released for reuse.

use std::sync::Arc;

use iosan_core::DomainId;

use super::analyzer::Analyzer;
use crate::record::Record;
use crate::report::{Attribution, Doubt};

impl Analyzer {
    /// `iommu:remove_device_from_group`: the device is gone (hot-unplug or
    /// release). When it was the last device of its domain, the domain is
    /// torn down with it (its default domain goes with the group).
    pub(super) fn device_removed(&mut self, ctx: &Record, device: &[u8]) {
        let name: Arc<str> = String::from_utf8_lossy(device).into();
        let Some(i) = self.domains.known_dev(&name) else { return };
        let s = self.domains.find(i);
        self.domains.forget_dev(&name);
        let slot = self.domains.slot_mut(s);
        slot.devices.retain(|d| *d != name);
        if slot.devices.is_empty() && !slot.anonymous {
            self.teardown(ctx, s, None);
        }
    }

    /// A kprobe on `iommu_domain_free` for domain pointer `ptr`.
    pub(super) fn domain_free(&mut self, ctx: &Record, ptr: u64) {
        let Some(s) = self.domains.known_ptr(ptr) else { return };
        self.teardown(ctx, s, Some(ptr));
    }

    fn teardown(&mut self, ctx: &Record, s: usize, ptr: Option<u64>) {
        self.summary.domains_freed += 1;
        let found = self.san.domain_destroyed(DomainId(s as u64), &self.domains.slot(s).shadow);
        let device = self.domains.slot(s).shadow.device().map(|d| d.to_string());
        for f in found {
            let mut tf = self.plain(ctx, f);
            tf.device = device.clone();
            if let Some(ptr) = ptr {
                tf.domain = Some(format!("{ptr:#x}"));
                tf.attribution = Attribution::Kprobe;
            }
            tf.set_doubt(self.lost.iter().any(|w| w.after_ns <= ctx.ts_ns).then_some(Doubt::LostEvents));
            self.findings.push(tf);
        }
        self.domains.forget(s);
        self.lazy.forget_domain(s);
    }
}
