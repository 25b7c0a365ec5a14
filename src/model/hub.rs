//! Where a base model's files are: a local directory, or a repo id in the Hugging Face hub
//! cache, read offline through hf-hub's cache API.

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
/// Nothing is downloaded: a repo missing from the cache is an error naming the repo and the
/// cache path.
pub fn resolve_base_model(base_model: &str) -> Result<PathBuf, ModelError> {
    resolve_in(base_model, &hub_cache_dir())
}

fn resolve_in(base_model: &str, cache_dir: &Path) -> Result<PathBuf, ModelError> {
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
                });
            }
        }
    }
    snapshot.ok_or_else(|| ModelError::NotInCache {
        repo: base_model.to_string(),
        cache: cache_dir.to_path_buf(),
        missing: "config.json".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_resolve_through_the_cache_layout_and_fail_clearly_when_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let err = resolve_in("acme/tiny-bert", &cache).unwrap_err().to_string();
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
        assert_eq!(resolve_in("acme/tiny-bert", &cache).unwrap(), snap);
        // A local directory wins and must be complete.
        assert_eq!(resolve_in(snap.to_str().unwrap(), &cache).unwrap(), snap);
        std::fs::remove_file(snap.join("tokenizer.json")).unwrap();
        let err = resolve_in(snap.to_str().unwrap(), &cache).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
