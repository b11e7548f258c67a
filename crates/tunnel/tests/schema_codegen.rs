//! The generated capnp code in `src/tunnel_capnp.rs` must match `schema/tunnel.capnp`.
//!
//! Ordinary builds do not need the C++ `capnp` compiler because the generated code is committed. When the
//! compiler is installed this test regenerates into a temporary directory and compares; with
//! `TUNNELGATE_REGEN_CAPNP=1` it rewrites the committed file instead (see `schema/regen.sh`).

use std::path::{Path, PathBuf};

fn capnp_available() -> bool {
    std::process::Command::new("capnp")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn generated_code_matches_schema() {
    if !capnp_available() {
        eprintln!("capnp compiler not installed; skipping the generated-code freshness check");
        return;
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("tunnelgate-capnp-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    capnpc::CompilerCommand::new()
        .src_prefix(crate_dir.join("schema"))
        .file(crate_dir.join("schema/tunnel.capnp"))
        .output_path(&out)
        .run()
        .unwrap();
    let fresh = std::fs::read_to_string(out.join("tunnel_capnp.rs")).unwrap();
    let committed_path: PathBuf = crate_dir.join("src/tunnel_capnp.rs");
    if std::env::var_os("TUNNELGATE_REGEN_CAPNP").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        committed == fresh,
        "src/tunnel_capnp.rs is stale: run crates/tunnel/schema/regen.sh after editing schema/tunnel.capnp"
    );
}
