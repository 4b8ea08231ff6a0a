//! `GET /v1/models`.

use serde::{Deserialize, Serialize};

use crate::{nullable, some_seconds};

/// The list of models a server serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    #[serde(default, deserialize_with = "nullable")]
    pub object: String,
    /// The models.
    pub data: Vec<Model>,
}

impl ModelList {
    /// The list of `models`.
    pub fn of(models: Vec<Model>) -> Self {
        Self {
            object: "list".into(),
            data: models,
        }
    }
}

/// One model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// The id requests name it by.
    pub id: String,
    /// `model`.
    #[serde(default, deserialize_with = "nullable")]
    pub object: String,
    /// Unix seconds.
    #[serde(
        default,
        deserialize_with = "some_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub created: Option<u64>,
    /// Who serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    /// What the server knows of the model (llama-server's and Jielong's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ModelMeta>,
    /// The context length (vLLM's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_model_len: Option<u64>,
    /// The context length (other servers' name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
}

/// A model's `meta`: llama-server's fields (`n_ctx`, …) and Jielong's (`name`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The model's own name (Jielong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its architecture (Jielong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Its parameter count (Jielong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// The context the server runs it with (Jielong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// The context it was trained with (Jielong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length_trained: Option<u64>,
    /// The context the server runs it with (llama-server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<u64>,
    /// The context it was trained with (llama-server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_ctx_train: Option<u64>,
    /// Its parameter count (llama-server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_params: Option<u64>,
    /// Its file size in bytes (llama-server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}
