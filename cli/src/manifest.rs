//! Reading and writing Kubernetes manifests: files, directories and stdin; multi-document
//! YAML, JSON and `kind: List`.
//!
//! Every document keeps its original text, so a document the caller does not change can be
//! written back byte for byte. Parsing is all-or-nothing: one malformed document fails
//! the whole input, naming the source, the document's index and the line.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a manifest could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or JSON.
    #[error("{source_name}: document {index} (line {line}): {message}")]
    Parse {
        /// The file name, or `<stdin>`.
        source_name: String,
        /// The document's 1-based index within its source.
        index: usize,
        /// The 1-based line within the source where the problem is.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A document parsed, but is not a Kubernetes object.
    #[error("{source_name}: document {index} (line {line}): {message}")]
    NotAnObject {
        /// The file name, or `<stdin>`.
        source_name: String,
        /// The document's 1-based index within its source.
        index: usize,
        /// The line where the document starts.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The format documents arrive in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML (possibly several `---`-separated documents).
    Yaml,
    /// JSON (one or several concatenated objects).
    Json,
}

/// One document of a manifest: its parsed value and its original text.
#[derive(Clone, Debug)]
pub struct Document {
    /// The parsed object.
    pub value: Value,
    /// The document's text exactly as read (without the `---` separator line).
    pub original: String,
    /// The format it was read in.
    pub format: Format,
    /// Where it came from, e.g. `deploy.yaml`, for reports.
    pub source_name: String,
    /// Its 1-based index within its source.
    pub index: usize,
}

/// Reads every document from `input`: a file, a directory (recursively, `.yaml`, `.yml`
/// and `.json` files in name order), or `-` for stdin.
pub fn read_input(input: &str) -> Result<Vec<Document>, ManifestError> {
    if input == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
            ManifestError::Read {
                path: PathBuf::from("<stdin>"),
                source,
            }
        })?;
        return parse_documents("<stdin>", &text);
    }
    let mut files = Vec::new();
    collect_files(Path::new(input), &mut files, true)?;
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        docs.extend(parse_documents(&file.display().to_string(), &text)?);
    }
    Ok(docs)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, top: bool) -> Result<(), ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        // A file named explicitly is read whatever its extension; inside a directory only
        // manifest extensions are, so that READMEs and the like are not parsed.
        let is_manifest = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if top || is_manifest {
            out.push(path.to_path_buf());
        }
        return Ok(());
    }
    let mut entries = std::fs::read_dir(path)
        .map_err(read_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    entries.sort();
    for entry in entries {
        collect_files(&entry, out, false)?;
    }
    Ok(())
}

/// Parses the documents of one source. JSON is recognised by a leading `{` or `[`.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return parse_json(source_name, text);
    }
    let mut docs = Vec::new();
    for (i, (start_line, chunk)) in split_yaml(text).into_iter().enumerate() {
        let index = i + 1;
        if is_blank(chunk) {
            continue;
        }
        let value: Value = serde_saphyr::from_str(chunk).map_err(|e| {
            let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
            ManifestError::Parse {
                source_name: source_name.to_string(),
                index,
                line: start_line + line.saturating_sub(1),
                message: parser_message(&e),
            }
        })?;
        check_object(source_name, index, start_line, &value)?;
        docs.push(Document {
            value,
            original: chunk.to_string(),
            format: Format::Yaml,
            source_name: source_name.to_string(),
            index,
        });
    }
    Ok(docs)
}

fn parse_json(source_name: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut start = 0;
    while let Some(next) = stream.next() {
        let index = docs.len() + 1;
        let value = next.map_err(|e| ManifestError::Parse {
            source_name: source_name.to_string(),
            index,
            line: e.line(),
            message: json_message(&e),
        })?;
        let end = stream.byte_offset();
        let start_line = text[..start].matches('\n').count() + 1;
        check_object(source_name, index, start_line, &value)?;
        docs.push(Document {
            value,
            original: text[start..end].trim().to_string(),
            format: Format::Json,
            source_name: source_name.to_string(),
            index,
        });
        start = end;
    }
    Ok(docs)
}

/// serde_json appends " at line L column C"; we report the line ourselves.
fn json_message(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// serde-saphyr's message without its own location suffix or source snippet.
fn parser_message(e: &serde_saphyr::Error) -> String {
    let msg = e.to_string();
    let mut first = msg.lines().next().unwrap_or_default().trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    // Its "line L column C: " counts from the document's start; we report the line
    // within the whole source instead.
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        first = after;
    }
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

fn check_object(
    source_name: &str,
    index: usize,
    line: usize,
    value: &Value,
) -> Result<(), ManifestError> {
    let err = |message: &str| ManifestError::NotAnObject {
        source_name: source_name.to_string(),
        index,
        line,
        message: message.to_string(),
    };
    let obj = value
        .as_object()
        .ok_or_else(|| err("a Kubernetes object must be a mapping"))?;
    match obj.get("kind") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(err("field `kind` must be a string")),
        None => return Err(err("missing field `kind`")),
    }
    if obj.get("kind").and_then(Value::as_str) == Some("List") {
        match obj.get("items") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.get("kind").is_some_and(Value::is_string) {
                        return Err(err(&format!("items[{i}] has no string field `kind`")));
                    }
                }
            }
            Some(Value::Null) | None => {}
            Some(_) => return Err(err("field `items` of a List must be a sequence")),
        }
    }
    Ok(())
}

fn is_blank(chunk: &str) -> bool {
    chunk.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "..."
    })
}

/// Splits a YAML stream at `---` lines, returning each chunk with the 1-based line its
/// text starts on. A `---` at the start of a line always starts a new document in YAML,
/// even inside a block scalar, so splitting on lines is exact.
fn split_yaml(text: &str) -> Vec<(usize, &str)> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare.starts_with("--- #");
        if is_marker {
            chunks.push((start_line, &text[start..offset]));
            // A document may begin on the marker line itself (`--- {a: 1}`); keep that
            // content by starting the next chunk after the marker.
            start = offset + 3;
            start_line = n + 1;
            if bare.len() <= 3 || bare[3..].trim().starts_with('#') {
                start = offset + line.len();
                start_line = n + 2;
            }
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
}

/// How documents are written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// YAML documents separated by `---`.
    #[default]
    Yaml,
    /// JSON: a single object, or a `v1 List` when there are several.
    Json,
}

/// Why output could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A value could not be serialised as YAML.
    #[error("cannot write {what} as YAML")]
    Yaml {
        /// The object, e.g. `deployment/web`.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::ser_error::Error,
    },
    /// A value could not be serialised as JSON.
    #[error("cannot write the output as JSON")]
    Json(#[source] serde_json::Error),
}

/// An output document: either changed (re-serialised) or unchanged (original text).
#[derive(Debug)]
pub struct OutputDoc<'a> {
    /// The document as read.
    pub doc: &'a Document,
    /// The new value when the document changed.
    pub changed: Option<Value>,
}

/// Writes documents in the requested format. Unchanged YAML documents keep their text.
pub fn render(docs: &[OutputDoc<'_>], format: OutputFormat) -> Result<String, OutputError> {
    match format {
        OutputFormat::Yaml => {
            let mut out = String::new();
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                let text = match (&d.changed, d.doc.format) {
                    (None, Format::Yaml) => d.doc.original.clone(),
                    (changed, _) => {
                        let value = changed.as_ref().unwrap_or(&d.doc.value);
                        to_yaml(value).map_err(|source| OutputError::Yaml {
                            what: object_ref(value),
                            source,
                        })?
                    }
                };
                out.push_str(text.trim_end_matches('\n'));
                out.push('\n');
            }
            Ok(out)
        }
        OutputFormat::Json => {
            let values: Vec<&Value> = docs
                .iter()
                .map(|d| d.changed.as_ref().unwrap_or(&d.doc.value))
                .collect();
            let mut out = if let [one] = values.as_slice() {
                serde_json::to_string_pretty(one)
            } else {
                let list = serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": values,
                });
                serde_json::to_string_pretty(&list)
            }
            .map_err(OutputError::Json)?;
            out.push('\n');
            Ok(out)
        }
    }
}

/// Serialises one value as a YAML document.
pub fn to_yaml(value: &Value) -> Result<String, serde_saphyr::ser_error::Error> {
    serde_saphyr::to_string(value)
}

/// Serialises values as a multi-document YAML stream.
pub fn to_yaml_stream(values: &[Value]) -> Result<String, serde_saphyr::ser_error::Error> {
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(to_yaml(v)?.trim_end_matches('\n'));
        out.push('\n');
    }
    Ok(out)
}

/// `kind/name` in lower case, as reports show objects: `deployment/web`.
pub fn object_ref(value: &Value) -> String {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    format!("{}/{}", kind.to_ascii_lowercase(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_keeps_their_text() {
        let text = "# leading comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\nkind: Secret   # odd spacing\nmetadata:\n    name: b\n";
        let docs = parse_documents("x.yaml", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0].original,
            "# leading comment\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
        );
        assert_eq!(
            docs[1].original,
            "kind: Secret   # odd spacing\nmetadata:\n    name: b\n"
        );
        assert_eq!(docs[1].index, 3, "the empty document still counts");
    }

    #[test]
    fn reports_document_index_and_absolute_line() {
        let text = "kind: A\n---\nkind: B\nmetadata:\n  name: [unclosed\n";
        let err = parse_documents("app.yaml", text).unwrap_err();
        let ManifestError::Parse {
            index,
            line,
            source_name,
            ..
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!((source_name.as_str(), *index), ("app.yaml", 2));
        assert!((5..=6).contains(line), "line {line} in {err}");
    }

    #[test]
    fn rejects_documents_that_are_not_objects() {
        let err = parse_documents("s", "- a\n- b\n").unwrap_err();
        assert!(err.to_string().contains("must be a mapping"), "{err}");
        let err = parse_documents("s", "metadata: {name: a}\n").unwrap_err();
        assert!(err.to_string().contains("missing field `kind`"), "{err}");
    }

    #[test]
    fn json_streams_report_lines() {
        let docs = parse_documents("j", "{\"kind\": \"A\"}\n{\"kind\": \"B\"}\n").unwrap();
        assert_eq!(docs.len(), 2);
        let err = parse_documents("j", "{\"kind\": \"A\"}\n{\"kind\":\n  \"B\",,}\n").unwrap_err();
        assert!(
            err.to_string().starts_with("j: document 2 (line 3)"),
            "{err}"
        );
    }
}
