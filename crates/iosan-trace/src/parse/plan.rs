//! Binary events by field position: which event kind a binary format is,
//! and where each described field sits in it, decided once per format
//! instead of by name for every record.
//!
//! [`event_from_plan`] gives exactly what [`event_from_fields`] gives for
//! the same record (a test checks it on every format of a real 6.12
//! kernel): field names are looked up once, in the same order of
//! preference (the spec's name, then its other names), and a value that
//! does not decode (a record too short for it) still falls to the next name.
//!
//! [`event_from_fields`]: super::event::event_from_fields

use super::collect::{FieldSpec, Got, MAX_FIELDS};
use super::event::{build_event, Event, FieldError};
use super::kinds::{spec, EventSpec, PROBE_FIELDS};
use crate::field::FieldValue;

/// Most names one field is looked up by (its spec name and other names).
const MAX_NAMES: usize = 4;

/// Where one name of a field is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// This position of the source's field list.
    Index(u16),
    /// The `__probe_func` pseudo-field (the symbol of `__probe_ip`), else
    /// the format's own field of that name at this position, if any.
    ProbeFunc(Option<u16>),
}

/// Where one spec field's value is looked for: its position in the spec and
/// one of its names the format has, in order of preference (names the
/// format lacks are dropped when the plan is made).
type Look = (u8, At);

// `fill` keeps which spec fields have a value in a u16.
const _: () = assert!(MAX_FIELDS <= 16);

/// A binary format's event kind and field positions.
#[derive(Clone, Debug)]
pub struct FormatPlan {
    /// The kind its system and name describe, with the name errors use.
    spec: Option<(&'static EventSpec, &'static str)>,
    /// The spec's fields the format has.
    spec_at: Box<[Look]>,
    /// The fields of [`PROBE_FIELDS`] the format has (a record with probe
    /// fields is a probe).
    probe_at: Box<[Look]>,
    /// `__probe_func`, `__probe_ip`, `__probe_ret_ip`.
    site_at: [Option<At>; 3],
}

impl PartialEq for FormatPlan {
    fn eq(&self, other: &Self) -> bool {
        let same_spec = match (self.spec, other.spec) {
            (Some((a, x)), Some((b, y))) => core::ptr::eq(a, b) && x == y,
            (None, None) => true,
            _ => false,
        };
        same_spec && self.spec_at == other.spec_at && self.probe_at == other.probe_at && self.site_at == other.site_at
    }
}

impl Eq for FormatPlan {}

/// A binary record's fields by position.
pub trait IndexedFields<'a> {
    /// The value of field `i` of the source's list; `None` when it does not
    /// decode.
    fn at(&self, i: usize) -> Option<FieldValue<'a>>;
    /// The `__probe_func` pseudo-field, when the source names the probe.
    fn probe_func(&self) -> Option<&'a [u8]>;
}

fn at_of(name: &str, index_of: &dyn Fn(&str) -> Option<usize>) -> Option<At> {
    let i = index_of(name).and_then(|i| u16::try_from(i).ok());
    if name == "__probe_func" {
        Some(At::ProbeFunc(i))
    } else {
        i.map(At::Index)
    }
}

fn names_of(fields: &[FieldSpec], index_of: &dyn Fn(&str) -> Option<usize>) -> Box<[Look]> {
    let mut out = Vec::new();
    for (slot, f) in fields.iter().take(MAX_FIELDS).enumerate() {
        let names = core::iter::once(&f.name).chain(f.also).take(MAX_NAMES);
        // `slot` < MAX_FIELDS, which fits a u8.
        out.extend(names.filter_map(|name| at_of(name, index_of)).map(|at| (slot as u8, at)));
    }
    out.into_boxed_slice()
}

impl FormatPlan {
    /// The plan for event `name` of `system`, whose source finds a field's
    /// position with `index_of` (the first field of that name).
    #[must_use]
    pub fn new(system: Option<&[u8]>, name: &[u8], index_of: &dyn Fn(&str) -> Option<usize>) -> Self {
        let spec = spec(system, name);
        let spec_at = spec.map_or_else(Box::default, |(k, _)| names_of(k.fields, index_of));
        Self {
            spec,
            spec_at,
            probe_at: names_of(PROBE_FIELDS, index_of),
            site_at: [
                at_of("__probe_func", index_of),
                at_of("__probe_ip", index_of),
                at_of("__probe_ret_ip", index_of),
            ],
        }
    }
}

#[inline]
fn value<'a, F: IndexedFields<'a> + ?Sized>(at: Option<At>, fields: &F) -> Option<FieldValue<'a>> {
    match at? {
        At::Index(i) => fields.at(usize::from(i)),
        At::ProbeFunc(i) => match fields.probe_func() {
            Some(f) => Some(FieldValue::Str(f)),
            None => fields.at(usize::from(i?)),
        },
    }
}

/// Puts in each spec field the value of the first of its names that
/// decodes (a later name is not decoded once a field has a value).
#[inline]
fn fill<'a, F: IndexedFields<'a> + ?Sized>(g: &mut Got<'a>, looks: &[Look], fields: &F) {
    let mut done = 0u16;
    for &(slot, at) in looks {
        let bit = 1u16 << (slot % 16);
        if done & bit != 0 {
            continue;
        }
        if let Some(v) = value(Some(at), fields) {
            g.put(usize::from(slot), v);
            done |= bit;
        }
    }
}

/// The event of one binary record, as [`super::event_from_fields`] reads it.
///
/// # Errors
/// As [`super::event_from_fields`].
#[inline]
pub fn event_from_plan<'a, F: IndexedFields<'a> + ?Sized>(
    plan: &FormatPlan,
    fields: &F,
) -> Result<Option<Event<'a>>, FieldError> {
    let sites = plan.site_at.map(|at| value(at, fields));
    build_event(
        sites,
        || plan.spec,
        |g, probe| {
            let looks = match (probe, plan.spec) {
                (true, _) => &plan.probe_at,
                (false, Some(_)) => &plan.spec_at,
                (false, None) => return,
            };
            fill(g, looks, fields);
        },
    )
}
