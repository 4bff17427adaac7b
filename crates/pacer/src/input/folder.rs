//! A folder of text documents and a prompt template.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::error::{FirstSeen, InputError, Place};
use super::prompt::{Prompt, PromptRequests};
use super::seen::SeenIds;
use super::spec::RequestSpec;
use super::split::split_spans;
use crate::tokens::count_text;

/// One document: its path relative to the folder (with `/`, for stable ids
/// on every platform) and where it is on disk.
#[derive(Debug, Clone)]
pub(crate) struct Document {
    pub rel: String,
    pub abs: PathBuf,
}

/// Every regular file under `root`, recursively, sorted by relative path;
/// hidden files and folders (`.name`) and the file at `skip` (the template,
/// when it lives in the folder) are left out.
pub(crate) fn list_documents(
    root: &Path,
    skip: Option<&Path>,
) -> Result<Vec<Document>, InputError> {
    let skip = skip.and_then(|p| p.canonicalize().ok());
    let mut docs = Vec::new();
    let mut dirs = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| InputError::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| InputError::io(&dir, e))?;
            let abs = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(InputError::NotUtf8 {
                    place: Place::file(format!("{} (file name)", abs.display())),
                });
            };
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let file_type = entry.file_type().map_err(|e| InputError::io(&abs, e))?;
            if file_type.is_dir() {
                dirs.push((abs, format!("{rel}/")));
                continue;
            }
            // A symbolic link counts when it leads to a file; links to folders
            // are not followed (they can loop).
            let is_file = file_type.is_file()
                || (file_type.is_symlink()
                    && std::fs::metadata(&abs)
                        .map(|m| m.is_file())
                        .unwrap_or(false));
            if !is_file {
                continue;
            }
            if skip.is_some() && abs.canonicalize().ok() == skip {
                continue;
            }
            docs.push(Document { rel, abs });
        }
    }
    docs.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(docs)
}

/// A prompt template: must hold `{text}`; may hold `{name}` and `{path}`.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub text: String,
}

impl Template {
    pub(crate) fn read(path: &Path) -> Result<Template, InputError> {
        let bytes = std::fs::read(path).map_err(|e| InputError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| InputError::NotUtf8 {
            place: Place::file(path.display().to_string()),
        })?;
        if !text.contains("{text}") {
            return Err(InputError::Template {
                path: path.to_owned(),
                problem: "the template must contain {text}, where each document goes",
            });
        }
        Ok(Template { text })
    }

    /// The template with its placeholders filled, in one pass: a document
    /// that itself contains `{name}` is not rewritten.
    pub(crate) fn fill(&self, text: &str, name: &str, path: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + text.len());
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            let (value, len) = if tail.starts_with("{text}") {
                (text, 6)
            } else if tail.starts_with("{name}") {
                (name, 6)
            } else if tail.starts_with("{path}") {
                (path, 6)
            } else {
                ("{", 1)
            };
            out.push_str(value);
            rest = &tail[len..];
        }
        out.push_str(rest);
        out
    }
}

/// The requests of a folder, one document read at a time.
pub(crate) struct FolderRequests<'a> {
    pub docs: &'a [Document],
    pub root_name: String,
    pub template: &'a Template,
    pub prompts: PromptRequests,
    pub model: &'a str,
    pub split_tokens: Option<u64>,
    pub overlap: u64,
    pub next_doc: usize,
    pub ordinal: u64,
    pub ready: VecDeque<RequestSpec>,
    pub seen: SeenIds,
    pub finished: bool,
}

impl FolderRequests<'_> {
    fn read_next_document(&mut self) -> Result<bool, InputError> {
        let Some(doc) = self.docs.get(self.next_doc) else {
            return Ok(false);
        };
        self.next_doc += 1;
        let place = || {
            Place::file(format!(
                "{}/{}",
                self.root_name.trim_end_matches('/'),
                doc.rel
            ))
        };
        let bytes = std::fs::read(&doc.abs).map_err(|e| InputError::io(&doc.abs, e))?;
        let text = String::from_utf8(bytes).map_err(|_| InputError::NotUtf8 { place: place() })?;
        let name = doc.rel.rsplit('/').next().unwrap_or(&doc.rel);
        let model = self.model;
        let chunks = match self.split_tokens {
            Some(max) => split_spans(&text, max, self.overlap, &|s| count_text(model, s)),
            None => vec![super::split::ChunkSpan {
                range: 0..text.len(),
                body_start: 0,
            }],
        };
        let split = chunks.len() > 1;
        for (k, chunk) in chunks.into_iter().enumerate() {
            self.ordinal += 1;
            let id = if split {
                format!("{}#{}", doc.rel, k + 1)
            } else {
                doc.rel.clone()
            };
            if let Some(first) = self.seen.first_seen(&id, self.ordinal) {
                return Err(InputError::DuplicateId {
                    place: place(),
                    field: "id",
                    id,
                    first: FirstSeen::Request(first),
                });
            }
            let user = self.template.fill(&text[chunk.range], name, &doc.rel);
            self.ready.push_back(self.prompts.request(Prompt {
                id,
                system: None,
                user: &user,
                max_tokens: None,
                priority: 0,
                line: self.ordinal,
            }));
        }
        Ok(true)
    }
}

impl Iterator for FolderRequests<'_> {
    type Item = Result<RequestSpec, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(spec) = self.ready.pop_front() {
                return Some(Ok(spec));
            }
            if self.finished {
                return None;
            }
            match self.read_next_document() {
                Ok(true) => {}
                Ok(false) => self.finished = true,
                Err(e) => {
                    self.finished = true;
                    self.ready.clear();
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once() {
        let t = Template {
            text: "File {name} at {path}:\n{text}\n{unknown} {".into(),
        };
        assert_eq!(
            t.fill("body with {name} inside", "a.txt", "sub/a.txt"),
            "File a.txt at sub/a.txt:\nbody with {name} inside\n{unknown} {"
        );
    }

    #[test]
    fn documents_are_listed_sorted_without_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        for f in [
            "z.txt",
            "a.txt",
            "b/c/d.txt",
            "b/a.txt",
            ".hidden",
            ".git/HEAD",
            "prompt.txt",
        ] {
            std::fs::write(root.join(f), "x").unwrap();
        }
        let docs = list_documents(root, Some(&root.join("prompt.txt"))).unwrap();
        let rels: Vec<_> = docs.iter().map(|d| d.rel.as_str()).collect();
        assert_eq!(rels, ["a.txt", "b/a.txt", "b/c/d.txt", "z.txt"]);
    }
}
