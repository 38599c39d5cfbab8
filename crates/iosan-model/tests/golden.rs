//! Golden test of the trace writer: a small simulation's ftrace text is
//! compared with a checked-in file. Set `UPDATE_GOLDEN=1` to rewrite it
//! after an intended change, and review the diff.

use iosan_model::{simulate, SimSpec};

fn golden(name: &str, spec: &SimSpec) {
    let mut out = Vec::new();
    simulate(spec, Some(&mut out)).unwrap();
    let text = String::from_utf8(out).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text == want, "trace differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff", path.display());
}

#[test]
fn nvme_strict_small() {
    golden("nvme-strict.trace.txt", &SimSpec { workload: "nvme".into(), iterations: 2, seed: 1, ..SimSpec::default() });
}

#[test]
fn sg_lazy_bug_small() {
    golden(
        "gpu-sg-lazy-bug.trace.txt",
        &SimSpec { bug: Some("sg-wrong-total".into()), iterations: 1, seed: 3, strict: false, ..SimSpec::default() },
    );
}
