//! xent_rs: fused, numerically exact cross-entropy kernels over slices.
//!
//! The crate is pure Rust; the Python bindings live in `bindings` behind the `python`
//! feature, which maturin enables. Modules depend one way, bottom up (a test checks it):
//!
//! * [`element`]: the element types (conversions only; imports nothing);
//! * [`rowstats`]: the statistics every softmax-family row computes, and their f64 forms;
//! * [`batch`]: what a softmax-family batch reads (logits in place or not, index or probability
//!   targets) and the label check;
//! * [`simd`]: instruction-set detection, vector math, one generic dispatch (knows no loss);
//! * [`real`]: the row primitives per element type, dispatched to [`simd`];
//! * [`error`]: the core's typed errors (a leaf);
//! * [`parallel`]: the library's pool, deterministic chunking and cancellation (above
//!   [`error`] only);
//! * the kernels, one family per file: [`cce`], [`bce`], [`softmax`], [`calib`], [`losses`]
//!   (the cross-entropy variants), [`bootstrap`] (resampled calibration statistics);
//! * composite kernels built on a row kernel: [`linear`] (fused linear + cross-entropy);
//! * `bindings`: PyO3 only, the one module that names Python.

pub mod batch;
pub mod bce;
pub mod bootstrap;
pub mod calib;
pub mod cce;
pub mod element;
pub mod error;
pub mod linear;
pub mod losses;
pub mod parallel;
pub mod real;
pub mod rowstats;
pub mod simd;
pub mod softmax;
#[cfg(test)]
mod testing;

#[cfg(feature = "python")]
mod bindings;

/// The layering rule, checked on the source text: every `crate::` path in a file names a
/// module strictly below the file's own (or the file's own module).
#[cfg(test)]
mod layering {
    /// (module, layer, sources): lower layers may not name higher ones or their peers.
    const FILES: &[(&str, u8, &str)] = &[
        ("element", 0, include_str!("element.rs")),
        ("error", 0, include_str!("error.rs")),
        ("parallel", 1, include_str!("parallel.rs")),
        ("testing", 0, include_str!("testing.rs")),
        ("rowstats", 1, include_str!("rowstats.rs")),
        ("batch", 1, include_str!("batch.rs")),
        ("simd", 2, include_str!("simd/mod.rs")),
        ("simd", 2, include_str!("simd/vector.rs")),
        ("simd", 2, include_str!("simd/x86.rs")),
        ("simd", 2, include_str!("simd/exp.rs")),
        ("simd", 2, include_str!("simd/exp64.rs")),
        ("simd", 2, include_str!("simd/log1p.rs")),
        ("simd", 2, include_str!("simd/rowops.rs")),
        ("simd", 2, include_str!("simd/softcap.rs")),
        ("simd", 2, include_str!("simd/rowblock.rs")),
        ("real", 3, include_str!("real.rs")),
        ("cce", 4, include_str!("cce.rs")),
        ("bce", 4, include_str!("bce.rs")),
        ("softmax", 4, include_str!("softmax.rs")),
        ("calib", 4, include_str!("calib.rs")),
        ("calib", 4, include_str!("calib/pass.rs")),
        ("calib", 4, include_str!("calib/temperature.rs")),
        ("calib", 4, include_str!("calib/kernel.rs")),
        ("calib", 4, include_str!("calib/onevsrest.rs")),
        // losses (issue 12)
        ("losses", 4, include_str!("losses.rs")),
        // bootstrap (issue 15)
        ("bootstrap", 4, include_str!("bootstrap.rs")),
        // linear (issue 13)
        ("linear", 5, include_str!("linear.rs")),
        ("bindings", 6, include_str!("bindings/mod.rs")),
        ("bindings", 6, include_str!("bindings/args.rs")),
        ("bindings", 6, include_str!("bindings/detach.rs")),
        ("bindings", 6, include_str!("bindings/losses.rs")),
        ("bindings", 6, include_str!("bindings/bootstrap.rs")),
        ("bindings", 6, include_str!("bindings/linear.rs")),
        ("bindings", 6, include_str!("bindings/xla_ffi.rs")),
    ];

    fn layer(module: &str) -> Option<u8> {
        FILES.iter().find(|f| f.0 == module).map(|f| f.1)
    }

    #[test]
    fn no_module_reaches_up_or_sideways() {
        for &(module, own, src) in FILES {
            for (i, _) in src.match_indices("crate::") {
                let rest = &src[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if dep == module {
                    continue;
                }
                let dep_layer = layer(&dep).unwrap_or_else(|| panic!("{module}: unknown {dep}"));
                // The test-only helpers may be used from any test module.
                let ok = dep_layer < own || dep == "testing";
                assert!(
                    ok,
                    "{module} (layer {own}) names crate::{dep} (layer {dep_layer})"
                );
            }
        }
    }

    #[test]
    fn only_the_bindings_name_pyo3() {
        for &(module, _, src) in FILES {
            if module != "bindings" {
                assert!(!src.contains("pyo3"), "{module} names pyo3");
            }
        }
    }

    #[test]
    fn every_source_file_is_listed() {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut sources = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut sources,
        );
        for s in sources {
            let listed = FILES.iter().any(|f| f.2 == s) || s.contains("mod layering {");
            assert!(listed, "a file under src/ is missing from layering::FILES");
        }
    }
}
