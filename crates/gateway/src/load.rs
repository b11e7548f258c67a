//! File mode input: Kubernetes YAML (one file, or a directory tree of them, multi-document) into a [`Snapshot`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Snapshot;

/// Why file mode input could not be read. Every variant names the file (and document) at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML, or not an object of a kind we read, or does not fit its kind's schema.
    /// `document` counts from 1 within the file.
    #[error("{}: document {document}: {message}", path.display())]
    Document {
        path: PathBuf,
        document: usize,
        message: String,
    },
}

/// Reads `path`: a YAML file, or a directory whose `*.yaml`, `*.yml` and `*.json` files (recursively, in
/// lexical path order) are read one after the other. Entries whose name starts with `.` are skipped, which also
/// skips the `..data` indirection of mounted ConfigMaps while reading the symlinks that point into it.
pub fn load_path(path: &Path) -> Result<Snapshot, LoadError> {
    let mut snapshot = Snapshot::default();
    for file in input_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
            path: file.clone(),
            source,
        })?;
        add_documents(&mut snapshot, &text, &file)?;
    }
    Ok(snapshot)
}

/// The files [`load_path`] reads for `path`, in reading order: `path` itself when it is a file. File mode
/// watches exactly these for changes.
pub fn input_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let meta = std::fs::metadata(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    files.sort();
    Ok(files)
}

/// Reads YAML text holding any number of `---`-separated documents. Errors name the source `<input>`.
pub fn load_yaml_documents(text: &str) -> Result<Snapshot, LoadError> {
    let mut snapshot = Snapshot::default();
    add_documents(&mut snapshot, text, Path::new("<input>"))?;
    Ok(snapshot)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let read_err = |source| LoadError::Read {
        path: dir.to_owned(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn add_documents(snapshot: &mut Snapshot, text: &str, path: &Path) -> Result<(), LoadError> {
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let fail = |message: String| LoadError::Document {
            path: path.to_owned(),
            document: index + 1,
            message,
        };
        let value = Value::deserialize(document).map_err(|e| fail(format!("invalid YAML: {e}")))?;
        add_object(snapshot, value).map_err(fail)?;
    }
    Ok(())
}

fn add_object(snapshot: &mut Snapshot, value: Value) -> Result<(), String> {
    if value.is_null() {
        // An empty document, e.g. after a trailing `---`.
        return Ok(());
    }
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("missing apiVersion")?
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("missing kind")?
        .to_owned();
    let gateway_api = matches!(
        api_version.as_str(),
        "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1"
    );
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err("List: items must be a sequence".to_owned()),
            };
            for (i, item) in items.into_iter().enumerate() {
                add_object(snapshot, item).map_err(|e| format!("items[{i}]: {e}"))?;
            }
        }
        (_, "GatewayClass") if gateway_api => snapshot.gateway_classes.push(typed(value, &kind)?),
        (_, "Gateway") if gateway_api => snapshot.gateways.push(typed(namespaced(value), &kind)?),
        (_, "HTTPRoute") if gateway_api => snapshot.http_routes.push(typed(namespaced(value), &kind)?),
        ("gateway.networking.k8s.io/v1", "GRPCRoute") => {
            snapshot.grpc_routes.push(typed(namespaced(value), &kind)?)
        }
        (_, "ReferenceGrant") if gateway_api => {
            snapshot.reference_grants.push(typed(namespaced(value), &kind)?)
        }
        ("v1", "Service") => snapshot.services.push(typed(namespaced(value), &kind)?),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            snapshot.endpoint_slices.push(typed(namespaced(value), &kind)?)
        }
        ("v1", "Namespace") => snapshot.namespaces.push(typed(value, &kind)?),
        ("gateway.networking.k8s.io/v1", "BackendTLSPolicy") => snapshot
            .backend_tls_policies
            .push(typed(namespaced(value), &kind)?),
        ("v1", "ConfigMap") => snapshot.config_maps.push(typed(namespaced(value), &kind)?),
        ("v1", "Secret") => snapshot.secrets.push(typed(namespaced(value), &kind)?),
        _ => {
            return Err(format!(
                "{api_version} {kind} is not a kind tunnelgate reads (GatewayClass, Gateway, HTTPRoute, GRPCRoute, \
                 ReferenceGrant, BackendTLSPolicy of gateway.networking.k8s.io/v1; v1 Service, Namespace, \
                 ConfigMap, Secret, List; discovery.k8s.io/v1 EndpointSlice)"
            ));
        }
    }
    Ok(())
}

/// Objects in files often omit the namespace, as `kubectl apply` would fill it in; we do the same.
fn namespaced(mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let missing = meta
            .get("namespace")
            .is_none_or(|n| n.as_str().is_none_or(str::is_empty));
        if missing {
            meta.insert("namespace".to_owned(), Value::String("default".to_owned()));
        }
    }
    value
}

fn typed<T: DeserializeOwned>(value: Value, kind: &str) -> Result<Arc<T>, String> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(format!("{kind}: missing metadata.name"));
    };
    serde_path_to_error::deserialize(value)
        .map(Arc::new)
        .map_err(|e| {
            let path = e.path().to_string();
            format!("{kind} {name}: {} at {path}", e.into_inner())
        })
}
