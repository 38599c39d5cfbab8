//! The event descriptions against the field lists of a real kernel's
//! format files (`fixtures/formats/`): every required field a binary
//! source must find is there under one of its names, with a compatible
//! C type, and every known event of that kernel builds from values typed
//! as its format file types them.

use std::collections::BTreeMap;

use iosan_trace::field::{FieldLookup, FieldValue, IntArray};
use iosan_trace::parse::kinds::{kinds, PROBE_FIELDS};
use iosan_trace::parse::{event_from_fields, Event, FieldSpec, FieldType};

type Formats = BTreeMap<(String, String), Vec<(String, String)>>;

fn formats() -> Formats {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/formats/fields-6.12-x86.txt");
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut m = Formats::new();
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let mut w = l.splitn(4, ' ');
        let (Some(sys), Some(ev), Some(name), Some(ty)) = (w.next(), w.next(), w.next(), w.next()) else {
            panic!("bad fixture line {l}")
        };
        m.entry((sys.into(), ev.into())).or_default().push((name.into(), ty.into()));
    }
    m
}

/// Fields only text prints (`nents=3/27`, the printed `iova end`).
fn text_only(f: &FieldSpec) -> bool {
    f.ty == FieldType::Counted || f.name.contains(' ')
}

fn names(f: &FieldSpec) -> impl Iterator<Item = &'static str> {
    std::iter::once(f.name).chain(f.also.iter().copied())
}

fn compatible(spec: FieldType, c_type: &str) -> bool {
    let string = c_type.contains("char[]") || c_type.starts_with("char");
    let array = c_type.ends_with("[]") && !string;
    match spec {
        FieldType::Str => string,
        FieldType::Array(w) => array && (w == 8) == (c_type.contains("u64") || c_type.contains("long")),
        // Printed-only values may be anything.
        FieldType::Printed => true,
        _ => !string && !array,
    }
}

#[test]
fn required_fields_exist_with_compatible_types() {
    let f = formats();
    let mut checked = 0;
    for k in kinds() {
        for name in k.names {
            let Some(fields) = f.get(&(k.system.to_string(), name.to_string())) else { continue };
            checked += 1;
            for spec in k.fields.iter().filter(|s| !text_only(s)) {
                let found = fields.iter().find(|(n, _)| names(spec).any(|a| a == n));
                match found {
                    Some((n, ty)) => {
                        assert!(compatible(spec.ty, ty), "{name}: {n} is `{ty}`, described as {:?}", spec.ty)
                    }
                    None => {
                        assert!(!spec.required, "{}:{name}: required field {} not in the format", k.system, spec.name)
                    }
                }
            }
        }
    }
    assert!(checked >= 35, "only {checked} kinds in the fixture");
}

/// A decoder's view of one record: every field of the format, with a
/// value of its C type.
struct Record<'a>(Vec<(String, FieldValue<'a>)>);

impl<'a> FieldLookup<'a> for Record<'a> {
    fn field(&self, name: &str) -> Option<FieldValue<'a>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

const BYTES: &[u8] = &[0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0];

fn value(c_type: &str) -> FieldValue<'static> {
    if c_type.contains("char") {
        FieldValue::Str(b"0000:00:02.0")
    } else if c_type.ends_with("[]") {
        let elem_size = if c_type.contains("u64") || c_type.contains("long") { 8 } else { 4 };
        FieldValue::Array(IntArray { bytes: BYTES, elem_size, big_endian: false, signed: false })
    } else if c_type.starts_with("int") || c_type.starts_with("s32") {
        FieldValue::Signed(1)
    } else {
        // 0 is a valid direction, order and tag type.
        FieldValue::Unsigned(0)
    }
}

#[test]
fn every_known_event_of_the_kernel_builds_from_binary_values() {
    let mut built = 0;
    for ((sys, ev), fields) in formats() {
        let mut rec: Vec<(String, FieldValue<'static>)> = fields.iter().map(|(n, t)| (n.clone(), value(t))).collect();
        if sys == "lab" {
            // The binary source resolves the probed function from `__probe_ip`.
            let func: &'static [u8] = match ev.trim_end_matches("_ret") {
                "iommu_map" => b"__iommu_map",
                "iommu_unmap" => b"__iommu_unmap",
                "iommu_attach" => b"__iommu_attach_device",
                "iommu_domain_free" => b"iommu_domain_free",
                "fq_flush_iotlb" => b"fq_flush_iotlb",
                "fq_flush_timeout" => b"fq_flush_timeout",
                other => panic!("unexpected probe {other}"),
            };
            rec.retain(|(n, _)| n != "__probe_func");
            rec.push(("__probe_func".into(), FieldValue::Str(func)));
            for (n, _) in &fields {
                assert!(n.starts_with("__probe") || PROBE_FIELDS.iter().any(|s| names(s).any(|a| a == n)), "{ev}: {n}");
            }
        }
        let got = event_from_fields(Some(sys.as_bytes()), ev.as_bytes(), &Record(rec));
        let known = sys == "lab" || kinds().iter().any(|k| k.system == sys && k.names.contains(&ev.as_str()));
        match got {
            Ok(Some(e)) => {
                built += 1;
                if sys == "lab" {
                    assert!(e.label().starts_with("kprobe:") || e.label().starts_with("kretprobe:"), "{ev}: {e:?}");
                }
                if let Event::DmaMapSg(sg) = &e {
                    assert_eq!((sg.phys_addrs.len(), sg.sizes.len()), (2, 4));
                }
            }
            Ok(None) => assert!(!known, "{sys}:{ev} not recognised"),
            Err(e) => panic!("{sys}:{ev}: {e}"),
        }
    }
    assert!(built >= 40, "only {built} events built");
}
