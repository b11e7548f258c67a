//! Links the `tunnelgate` executable position-dependent (not PIE) on Linux, unless `TUNNELGATE_PIE` is set at
//! build time.
//!
//! Why: a position-independent executable is relocated by the dynamic loader at every start. This one carries
//! about 43,000 relative relocations (1 MiB of `.rela.dyn`, read at start and then kept mapped) that rewrite
//! 0.75 MiB of `.data.rel.ro` (vtables, static tables of pointers), so those pages become private copies that
//! stay resident. Linked at a fixed address, neither happens: the process RSS is about 1.7 MiB smaller (issue 7,
//! figures in BENCHMARKS.md). The price is that the executable's own code and data are at the same address in
//! every run (the heap, the stacks and the shared libraries are still randomised); Go links its Linux programs
//! the same way by default. `TUNNELGATE_PIE=1 cargo build ...` keeps a PIE.
//!
//! Only the link of this package's executables changes: the objects are compiled as before (position
//! independent), so no other crate is rebuilt.

fn main() {
    println!("cargo:rerun-if-env-changed=TUNNELGATE_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::env::var_os("TUNNELGATE_PIE").is_none() {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
