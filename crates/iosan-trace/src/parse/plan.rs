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

/// The positions of one field's names, in order of preference.
type Names = [Option<At>; MAX_NAMES];

/// A binary format's event kind and field positions.
#[derive(Clone, Debug)]
pub struct FormatPlan {
    /// The kind its system and name describe, with the name errors use.
    spec: Option<(&'static EventSpec, &'static str)>,
    /// Per field of the spec.
    spec_at: [Names; MAX_FIELDS],
    /// Per field of [`PROBE_FIELDS`] (a record with probe fields is a probe).
    probe_at: [Names; MAX_FIELDS],
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

fn names_of(fields: &[FieldSpec], index_of: &dyn Fn(&str) -> Option<usize>) -> [Names; MAX_FIELDS] {
    let mut out = [[None; MAX_NAMES]; MAX_FIELDS];
    for (f, slot) in fields.iter().zip(out.iter_mut()) {
        for (name, s) in core::iter::once(&f.name).chain(f.also).zip(slot.iter_mut()) {
            *s = at_of(name, index_of);
        }
    }
    out
}

impl FormatPlan {
    /// The plan for event `name` of `system`, whose source finds a field's
    /// position with `index_of` (the first field of that name).
    #[must_use]
    pub fn new(system: Option<&[u8]>, name: &[u8], index_of: &dyn Fn(&str) -> Option<usize>) -> Self {
        let spec = spec(system, name);
        let spec_at = spec.map_or([[None; MAX_NAMES]; MAX_FIELDS], |(k, _)| names_of(k.fields, index_of));
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

fn value<'a>(at: Option<At>, fields: &dyn IndexedFields<'a>) -> Option<FieldValue<'a>> {
    match at? {
        At::Index(i) => fields.at(usize::from(i)),
        At::ProbeFunc(i) => match fields.probe_func() {
            Some(f) => Some(FieldValue::Str(f)),
            None => fields.at(usize::from(i?)),
        },
    }
}

fn fill<'a>(g: &mut Got<'a>, names: &[Names; MAX_FIELDS], n: usize, fields: &dyn IndexedFields<'a>) {
    for (i, names) in names.iter().take(n).enumerate() {
        if let Some(v) = names.iter().find_map(|&at| value(at, fields)) {
            g.put(i, v);
        }
    }
}

/// The event of one binary record, as [`super::event_from_fields`] reads it.
///
/// # Errors
/// As [`super::event_from_fields`].
pub fn event_from_plan<'a>(plan: &FormatPlan, fields: &dyn IndexedFields<'a>) -> Result<Option<Event<'a>>, FieldError> {
    let sites = plan.site_at.map(|at| value(at, fields));
    build_event(
        sites,
        || plan.spec,
        |g, probe| {
            let (names, n) = match (probe, plan.spec) {
                (true, _) => (&plan.probe_at, PROBE_FIELDS.len()),
                (false, Some((kind, _))) => (&plan.spec_at, kind.fields.len()),
                (false, None) => return,
            };
            fill(g, names, n, fields);
        },
    )
}
