//! Where a base model's files are: a local directory, or a repo id in the Hugging Face hub
//! cache, read through hf-hub's cache API. Builds with the `hub-download` feature fetch a repo
//! missing from the cache unless `HF_HUB_OFFLINE` is set; other builds never touch the network.

use std::path::{Path, PathBuf};

use super::ModelError;

/// The files a base model directory must hold.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (the same rules as huggingface_hub).
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".cache").join("huggingface").join("hub")
}

/// Resolves `base_model` to a directory holding config.json, tokenizer.json and
/// model.safetensors: an existing directory is used as is; anything else is taken as a hub
/// repo id (`owner/name`, revision `main`) and looked up in the local cache ([`hub_cache_dir`]).
/// A repo missing from the cache is downloaded into it when the build has the `hub-download`
/// feature and `HF_HUB_OFFLINE` is not set; otherwise it is an error naming the repo, the cache
/// path and the reason.
pub fn resolve_base_model(base_model: &str) -> Result<PathBuf, ModelError> {
    let cache = hub_cache_dir();
    let why = offline_reason();
    let found = resolve_in(base_model, &cache, why);
    #[cfg(feature = "hub-download")]
    if why.is_none() && matches!(found, Err(ModelError::NotInCache { .. })) {
        return download(base_model, &cache);
    }
    found
}

/// True when `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`, any case), as
/// huggingface_hub reads it.
fn hub_offline_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// Why a repo missing from the cache is not downloaded, or `None` when it will be.
fn offline_reason() -> Option<&'static str> {
    if !cfg!(feature = "hub-download") {
        Some("this build reads the hub cache offline only (build with --features hub-download to fetch)")
    } else if hub_offline_env() {
        Some("HF_HUB_OFFLINE is set, so nothing is downloaded")
    } else {
        None
    }
}

#[cfg(feature = "hub-download")]
fn download(base_model: &str, cache: &Path) -> Result<PathBuf, ModelError> {
    use hf_hub::api::sync::ApiBuilder;
    let fail = |file: &str, msg: String| ModelError::Download {
        repo: base_model.to_string(),
        file: file.to_string(),
        cache: cache.to_path_buf(),
        msg,
    };
    let mut builder = ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf())).with_progress(true);
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().map_err(|e| fail("(client)", e.to_string()))?;
    let repo = api.model(base_model.to_string());
    let mut snapshot = None;
    for f in REQUIRED_FILES.iter().chain(["tokenizer_config.json", "vocab.txt"].iter()) {
        match repo.get(f) {
            Ok(p) => {
                if snapshot.is_none() {
                    snapshot = p.parent().map(Path::to_path_buf);
                }
            }
            // The optional files may be absent from a repo; the required ones may not.
            Err(e) if REQUIRED_FILES.contains(f) => return Err(fail(f, e.to_string())),
            Err(_) => {}
        }
    }
    snapshot.ok_or_else(|| fail("config.json", "no snapshot directory".to_string()))
}

fn resolve_in(base_model: &str, cache_dir: &Path, why: Option<&'static str>) -> Result<PathBuf, ModelError> {
    let why = why.unwrap_or("it will be downloaded");
    let local = Path::new(base_model);
    if local.is_dir() {
        for f in REQUIRED_FILES {
            if !local.join(f).is_file() {
                return Err(ModelError::Checkpoint {
                    path: local.join(f),
                    msg: "not found in the base model directory".to_string(),
                });
            }
        }
        return Ok(local.to_path_buf());
    }
    let looks_like_repo = base_model.split('/').count() == 2
        && !base_model.starts_with('.')
        && !base_model.starts_with('/')
        && base_model.split('/').all(|p| !p.is_empty());
    if !looks_like_repo {
        return Err(ModelError::Checkpoint {
            path: local.to_path_buf(),
            msg: "base_model is neither a directory nor a hub repo id (owner/name)".to_string(),
        });
    }
    let cache = hf_hub::Cache::new(cache_dir.to_path_buf());
    let repo = cache.model(base_model.to_string());
    let mut snapshot: Option<PathBuf> = None;
    for f in REQUIRED_FILES {
        match repo.get(f) {
            Some(p) => {
                if snapshot.is_none() {
                    snapshot = p.parent().map(Path::to_path_buf);
                }
            }
            None => {
                return Err(ModelError::NotInCache {
                    repo: base_model.to_string(),
                    cache: cache_dir.to_path_buf(),
                    missing: f.to_string(),
                    why,
                });
            }
        }
    }
    snapshot.ok_or_else(|| ModelError::NotInCache {
        repo: base_model.to_string(),
        cache: cache_dir.to_path_buf(),
        missing: "config.json".to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_resolve_through_the_cache_layout_and_fail_clearly_when_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let err = resolve_in("acme/tiny-bert", &cache, offline_reason()).unwrap_err().to_string();
        assert!(err.contains("'acme/tiny-bert'") && err.contains(cache.to_str().unwrap()), "{err}");
        assert!(err.contains("fetch-model.sh"), "{err}");

        let repo = cache.join("models--acme--tiny-bert");
        let snap = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123").unwrap();
        for f in REQUIRED_FILES {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        assert_eq!(resolve_in("acme/tiny-bert", &cache, None).unwrap(), snap);
        // A local directory wins and must be complete.
        assert_eq!(resolve_in(snap.to_str().unwrap(), &cache, None).unwrap(), snap);
        std::fs::remove_file(snap.join("tokenizer.json")).unwrap();
        let err = resolve_in(snap.to_str().unwrap(), &cache, None).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
