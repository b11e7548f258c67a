//! Links the `tunnelgate` executable position-dependent (not PIE) on Linux when `TUNNELGATE_NO_PIE` is set at
//! build time; by default it stays a PIE.
//!
//! Why the option exists: a position-independent executable is relocated by the dynamic loader at every start.
//! This one carries about 43,000 relative relocations (1 MiB of `.rela.dyn`, read at start and then kept mapped)
//! that rewrite 0.75 MiB of `.data.rel.ro` (vtables, static tables of pointers), so those pages become private
//! copies that stay resident. Linked at a fixed address, neither happens and the process RSS is about 1.3 MiB
//! smaller (issue 7, figures in docs/proxy.md). Why it is not the default: the executable's own code and data
//! would then sit at the same address in every run, which gives up address randomisation of the binary for an
//! internet-facing process; the memory saved is small next to that.
//!
//! Only the link of this package's executables changes: the objects are compiled as before (position
//! independent), so no other crate is rebuilt.

fn main() {
    println!("cargo:rerun-if-env-changed=TUNNELGATE_NO_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && std::env::var_os("TUNNELGATE_NO_PIE").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
