use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

use super::GatewayError;

/// The clients allowed to use the gateway, from a file of lines
/// `name key [budget_usd]` (`#` starts a comment).
///
/// Keys are kept as BLAKE3 hashes and a presented key is hashed and compared
/// with each of them in constant time: the time an answer takes tells
/// nothing of how much of a key was right.
#[derive(Clone)]
pub struct ClientKeys {
    clients: Vec<Client>,
}

#[derive(Clone)]
struct Client {
    name: String,
    hash: [u8; 32],
    budget_usd: Option<f64>,
}

/// A client the gateway knows: its name and its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientId {
    pub name: String,
    pub budget_usd: Option<f64>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: never a key, not even hashed.
        f.debug_list()
            .entries(self.clients.iter().map(|c| &c.name))
            .finish()
    }
}

impl ClientKeys {
    /// Reads and checks the whole file; an error names `file:line`.
    pub fn load(path: &Path) -> Result<ClientKeys, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|e| GatewayError::ClientKeys {
            place: path.display().to_string(),
            problem: format!("could not be read: {e}"),
        })?;
        ClientKeys::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<ClientKeys, GatewayError> {
        let mut clients: Vec<Client> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let place = format!("{file}:{}", i + 1);
            let bad = |problem: String| GatewayError::ClientKeys {
                place: place.clone(),
                problem,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (name, key, budget) = match fields.as_slice() {
                [name, key] => (*name, *key, None),
                [name, key, budget] => (*name, *key, Some(*budget)),
                _ => {
                    return Err(bad(format!(
                        "expected `name key [budget_usd]`, found {} fields",
                        fields.len()
                    )))
                }
            };
            if key.len() < 8 {
                return Err(bad(format!(
                    "the key of `{name}` is shorter than 8 characters"
                )));
            }
            let budget_usd = match budget {
                None => None,
                Some(b) => match b.trim_start_matches('$').parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => Some(v),
                    _ => {
                        return Err(bad(format!(
                            "the budget of `{name}` is not a number of dollars ≥ 0: {b}"
                        )))
                    }
                },
            };
            let hash = *blake3::hash(key.as_bytes()).as_bytes();
            if clients.iter().any(|c| c.name == name) {
                return Err(bad(format!("the name `{name}` appears twice")));
            }
            if clients.iter().any(|c| bool::from(c.hash.ct_eq(&hash))) {
                return Err(bad(format!("the key of `{name}` is also another client's")));
            }
            clients.push(Client {
                name: name.to_string(),
                hash,
                budget_usd,
            });
        }
        if clients.is_empty() {
            return Err(GatewayError::ClientKeys {
                place: file.to_string(),
                problem: "holds no client (lines `name key [budget_usd]`)".into(),
            });
        }
        Ok(ClientKeys { clients })
    }

    /// The client whose key this is. Every stored key is compared, in
    /// constant time, whatever the outcome.
    pub fn find(&self, presented: &str) -> Option<ClientId> {
        let hash = blake3::hash(presented.as_bytes());
        let mut found = None;
        for c in &self.clients {
            if bool::from(c.hash.ct_eq(hash.as_bytes())) {
                found = Some(ClientId {
                    name: c.name.clone(),
                    budget_usd: c.budget_usd,
                });
            }
        }
        found
    }

    /// The budget of the client called `name`, if it has one.
    pub fn budget_of(&self, name: &str) -> Option<f64> {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.budget_usd)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| c.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_value_and_budgets_read() {
        let keys = ClientKeys::parse(
            "# team keys\nocr  sk-ocr-0123456789 25\nclassify sk-cls-0123456789   # no budget\n",
            "keys.txt",
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        let ocr = keys.find("sk-ocr-0123456789").unwrap();
        assert_eq!((ocr.name.as_str(), ocr.budget_usd), ("ocr", Some(25.0)));
        assert_eq!(keys.find("sk-cls-0123456789").unwrap().budget_usd, None);
        assert!(keys.find("sk-ocr-012345678").is_none());
        assert!(keys.find("").is_none());
        // Debug shows names, never keys.
        assert!(!format!("{keys:?}").contains("sk-"));
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let err = |text: &str| ClientKeys::parse(text, "keys.txt").unwrap_err().to_string();
        assert!(
            err("a sk-aaaaaaaaaa\nb\n").contains("keys.txt:2"),
            "{}",
            err("a sk-aaaaaaaaaa\nb\n")
        );
        assert!(err("a short\n").contains("shorter than 8"));
        assert!(err("a sk-aaaaaaaaaa lots\n").contains("budget"));
        assert!(err("a sk-aaaaaaaaaa\na sk-bbbbbbbbbb\n").contains("twice"));
        assert!(err("a sk-aaaaaaaaaa\nb sk-aaaaaaaaaa\n").contains("another client's"));
        assert!(err("# nothing\n").contains("holds no client"));
        // The message never holds the key.
        assert!(!err("a sk-secret-key x\n").contains("sk-secret-key"));
    }
}
