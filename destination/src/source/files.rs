//! The files source (local mode): a directory of Kubernetes YAML, watched for changes.
//!
//! Every `*.yaml`, `*.yml` and `*.json` file under the directory (recursively, hidden
//! files skipped) may hold several `---`-separated documents: Services, EndpointSlices,
//! Pods, SMI objects and Gateway API HTTPRoutes; other kinds are ignored. Changes
//! (create, edit, delete, rename) are picked up through filesystem notifications,
//! debounced, and applied as one batch. A file that fails to parse or convert is
//! reported with its path and line and keeps serving its last good content.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

use crate::index::Index;
use crate::index::objects::{Change, Object, ObjectRef};
use crate::k8s;
use crate::metrics::Metrics;

/// How the files source behaves.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// The directory to read and watch.
    pub dir: PathBuf,
    /// How long to wait for more changes after the first before applying them.
    pub debounce: Duration,
    /// The namespace of documents that name none.
    pub default_namespace: String,
}

impl FilesConfig {
    /// Watches `dir` with a 25 ms debounce and the `default` namespace.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            debounce: Duration::from_millis(25),
            default_namespace: "default".to_string(),
        }
    }
}

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: cannot read")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("{path}:{line}: invalid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the problem.
        line: u64,
        /// What the parser said.
        message: String,
    },
    /// A document is YAML but not a usable object.
    #[error("{path}:{line}: invalid object")]
    Object {
        /// The file.
        path: PathBuf,
        /// The 1-based line where the document starts.
        line: u64,
        /// What is wrong with it.
        #[source]
        source: k8s::ConvertError,
    },
    /// The directory could not be watched.
    #[error("{path}: cannot watch for changes")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
}

/// Reads every object in one file's text. `path` only names the file in errors.
pub fn parse_file(text: &str, path: &Path, default_ns: &str) -> Result<Vec<Object>, FileError> {
    let mut objects = Vec::new();
    for (start_line, doc) in split_documents(text) {
        if doc.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        }) {
            continue;
        }
        let value: serde_json::Value =
            serde_saphyr::from_str(&doc).map_err(|e| FileError::Yaml {
                path: path.to_path_buf(),
                line: start_line + e.location().map_or(1, |l| l.line().max(1)) - 1,
                message: first_line(&e.to_string()),
            })?;
        if value.is_null() {
            continue;
        }
        let obj = k8s::from_value(value, default_ns).map_err(|source| FileError::Object {
            path: path.to_path_buf(),
            line: start_line,
            source,
        })?;
        objects.extend(obj);
    }
    Ok(objects)
}

/// The parser's message without its snippet or its own `error:` prefix.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default().trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// Splits a multi-document stream on `---` lines, with each document's first line.
fn split_documents(text: &str) -> Vec<(u64, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1u64;
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line == "---" || line.starts_with("--- ") || line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = n + 1;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n.ends_with('~'));
    let ext = path.extension().and_then(|e| e.to_str());
    !hidden && matches!(ext, Some("yaml" | "yml" | "json"))
}

fn list_manifests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => list_manifests(&path, out),
            Ok(_) if is_manifest(&path) => out.push(path),
            _ => {}
        }
    }
}

/// The files source: owns the last good objects of every file.
#[derive(Debug)]
pub struct FileSource {
    config: FilesConfig,
    index: Arc<Index>,
    metrics: Metrics,
    files: HashMap<PathBuf, Vec<Object>>,
}

impl FileSource {
    /// A source feeding `index` from `config.dir`.
    pub fn new(config: FilesConfig, index: Arc<Index>, metrics: Metrics) -> Self {
        Self {
            config,
            index,
            metrics,
            files: HashMap::new(),
        }
    }

    /// Loads the directory, marks the index synced, then applies changes until
    /// `shutdown` completes. Fails only when the directory cannot be watched.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), FileError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let handler = move |event: notify::Result<notify::Event>| {
            // The receiver only goes away at shutdown.
            let _ = tx.send(event);
        };
        let mut watcher =
            notify::recommended_watcher(handler).map_err(|source| FileError::Watch {
                path: self.config.dir.clone(),
                source,
            })?;
        watcher
            .watch(&self.config.dir, notify::RecursiveMode::Recursive)
            .map_err(|source| FileError::Watch {
                path: self.config.dir.clone(),
                source,
            })?;
        self.rescan();
        self.index.mark_synced();
        tracing::info!(dir = %self.config.dir.display(), files = self.files.len(), "loaded manifests");

        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let first = tokio::select! {
                ev = rx.recv() => ev,
                () = &mut shutdown => return Ok(()),
            };
            let Some(first) = first else {
                return Ok(());
            };
            tokio::time::sleep(self.config.debounce).await;
            let mut events = vec![first];
            while let Ok(ev) = rx.try_recv() {
                events.push(ev);
            }
            self.handle(events);
        }
    }

    fn handle(&mut self, events: Vec<notify::Result<notify::Event>>) {
        let mut paths = HashSet::new();
        let mut rescan = false;
        for ev in events {
            match ev {
                Ok(ev) if ev.need_rescan() => rescan = true,
                Ok(ev) => {
                    if !matches!(ev.kind, notify::EventKind::Access(_)) {
                        paths.extend(ev.paths);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, dir = %self.config.dir.display(), "file watch error; rescanning");
                    self.metrics.error("files", "watch");
                    rescan = true;
                }
            }
        }
        if rescan || paths.iter().any(|p| p.is_dir()) {
            self.rescan();
            return;
        }
        let mut changes = Vec::new();
        for path in paths {
            if path.is_file() && is_manifest(&path) {
                self.reload(&path, &mut changes);
            } else if !path.exists() {
                // A deleted file, or a deleted directory holding files.
                let gone: Vec<PathBuf> = self
                    .files
                    .keys()
                    .filter(|p| p.starts_with(&path))
                    .cloned()
                    .collect();
                for p in gone {
                    self.replace(&p, None, &mut changes);
                }
            }
        }
        self.index.apply(changes);
    }

    /// Reloads every file and forgets files that are gone.
    fn rescan(&mut self) {
        let mut found = Vec::new();
        list_manifests(&self.config.dir, &mut found);
        let mut changes = Vec::new();
        let found_set: HashSet<&PathBuf> = found.iter().collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !found_set.contains(p))
            .cloned()
            .collect();
        for p in gone {
            self.replace(&p, None, &mut changes);
        }
        for p in &found {
            self.reload(p, &mut changes);
        }
        self.index.apply(changes);
    }

    fn reload(&mut self, path: &Path, changes: &mut Vec<Change>) {
        let parsed = std::fs::read_to_string(path)
            .map_err(|source| FileError::Read {
                path: path.to_path_buf(),
                source,
            })
            .and_then(|text| parse_file(&text, path, &self.config.default_namespace));
        match parsed {
            Ok(objects) => self.replace(path, Some(objects), changes),
            Err(error) => {
                self.metrics.error("files", "parse");
                tracing::warn!(
                    error = %crate::error_chain(&error),
                    "keeping the last good state of the file"
                );
            }
        }
    }

    /// Replaces a file's objects (`None` removes the file), queueing the changes.
    fn replace(&mut self, path: &Path, objects: Option<Vec<Object>>, changes: &mut Vec<Change>) {
        let old = match &objects {
            Some(new) => self.files.insert(path.to_path_buf(), new.clone()),
            None => self.files.remove(path),
        }
        .unwrap_or_default();
        let new = objects.unwrap_or_default();
        let kept: HashSet<ObjectRef> = new.iter().map(Object::object_ref).collect();
        for obj in old {
            let r = obj.object_ref();
            if kept.contains(&r) {
                continue;
            }
            // Another file may define the same object; it then stays, as that file has it.
            let elsewhere = self
                .files
                .values()
                .flatten()
                .find(|o| o.object_ref() == r)
                .cloned();
            changes.push(match elsewhere {
                Some(o) => Change::Upsert(o),
                None => Change::Delete(r),
            });
        }
        changes.extend(new.into_iter().map(Change::Upsert));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_with_their_first_lines() {
        let docs = split_documents("a: 1\n---\nb: 2\nc: 3\n--- \nd: 4\n");
        let starts: Vec<u64> = docs.iter().map(|(l, _)| *l).collect();
        assert_eq!(starts, vec![1, 3, 6]);
        assert_eq!(docs[1].1, "b: 2\nc: 3\n");
    }

    #[test]
    fn yaml_errors_carry_the_line_in_the_file() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Service\nmetadata: [unclosed\n";
        let err = parse_file(text, Path::new("svc.yaml"), "default").unwrap_err();
        match &err {
            FileError::Yaml { line, .. } => assert!((8..=9).contains(line), "line {line}: {err}"),
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().starts_with("svc.yaml:"), "{err}");
    }

    #[test]
    fn invalid_objects_name_the_document_line() {
        let text = "# services\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: 0\n";
        let err = parse_file(text, Path::new("svc.yaml"), "default").unwrap_err();
        assert!(matches!(err, FileError::Object { line: 3, .. }), "{err}");
        let chain = crate::error_chain(&err);
        assert!(chain.contains("spec.ports[0].port"), "{chain}");
        assert!(chain.contains("default/a"), "{chain}");
    }

    #[test]
    fn other_kinds_and_empty_documents_are_skipped() {
        let text = "---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        assert!(
            parse_file(text, Path::new("x.yaml"), "default")
                .unwrap()
                .is_empty()
        );
    }
}
