//! A GGUF header check: is this file a usable GGUF model, without loading it?
//!
//! [`inspect`] reads the header, the metadata key/values and the tensor infos
//! (format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>), then
//! checks that the file is long enough to hold every tensor. Lengths and counts
//! read from the file are checked against the file size before anything is
//! allocated or skipped, so a hostile file yields an error, never a huge
//! allocation or a panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// The 4 bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The alignment of the tensor data when `general.alignment` is not set.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// String values longer than this are skipped rather than kept in [`GgufInfo::metadata`].
pub const MAX_KEPT_STRING: u64 = 4 << 20;

const MAX_KEY_LEN: u64 = 65_535;
/// Items that run past the end of the file but are at most this long are reported
/// as truncation; longer ones as a malformed (hostile) header.
const PLAUSIBLE_ITEM: u64 = 256 << 20;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: u32 = 8;

/// One metadata value, as kept by [`inspect`]. Arrays are described, not kept.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MetaValue {
    /// Any unsigned integer type (uint8 .. uint64).
    Uint(u64),
    /// Any signed integer type (int8 .. int64).
    Int(i64),
    /// float32 or float64.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// A UTF-8 string (invalid UTF-8 is replaced lossily).
    String(String),
    /// A string longer than [`MAX_KEPT_STRING`], skipped.
    LongString {
        /// Its length in bytes.
        len: u64,
    },
    /// An array, skipped.
    Array {
        /// The GGUF value type of the elements.
        element_type: u32,
        /// The number of elements.
        len: u64,
    },
}

/// What [`inspect`] learned about a GGUF file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GgufInfo {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// `general.architecture`, e.g. `qwen2` or `llama`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// The number of tensors.
    pub tensor_count: u64,
    /// The number of metadata key/values.
    pub kv_count: u64,
    /// The file's size in bytes.
    pub file_size: u64,
    /// The tensor data alignment.
    pub alignment: u64,
    /// Where the tensor data starts.
    pub data_offset: u64,
    /// The least file size that holds all tensors (end of the tensor data).
    pub data_end: u64,
    /// The scalar and string metadata; arrays only as [`MetaValue::Array`].
    pub metadata: BTreeMap<String, MetaValue>,
}

impl GgufInfo {
    /// The metadata value `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(MetaValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The metadata value `key` if it is a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        match self.metadata.get(key) {
            Some(MetaValue::Uint(v)) => Some(*v),
            Some(MetaValue::Int(v)) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// `{architecture}.context_length`, the context the model was trained for.
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture.as_deref()?;
        self.get_u64(&format!("{arch}.context_length"))
    }
}

/// Checks that `path` is a complete, parseable GGUF file and returns its header facts.
///
/// Errors: [`ModelError::NotFound`], [`ModelError::NotAFile`], [`ModelError::NotGguf`]
/// (bad magic), [`ModelError::UnsupportedVersion`], [`ModelError::Malformed`] (hostile
/// or inconsistent header), [`ModelError::Truncated`] (file shorter than its tensors).
pub fn inspect(path: impl AsRef<Path>) -> Result<GgufInfo> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => ModelError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ModelError::io(path, e),
    })?;
    if !meta.is_file() {
        return Err(ModelError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut r = Reader {
        inner: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        size: meta.len(),
        path: path.to_path_buf(),
    };
    parse(&mut r)
}

fn parse(r: &mut Reader) -> Result<GgufInfo> {
    let mut magic = [0u8; 4];
    if r.size < 4 {
        return Err(ModelError::NotGguf {
            path: r.path.clone(),
        });
    }
    r.read_exact(&mut magic)?;
    if magic != GGUF_MAGIC {
        return Err(ModelError::NotGguf {
            path: r.path.clone(),
        });
    }
    let version = r.u32()?;
    if version != 2 && version != 3 {
        return Err(ModelError::UnsupportedVersion {
            path: r.path.clone(),
            version,
        });
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;

    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key_len = r.u64()?;
        if key_len > MAX_KEY_LEN {
            return Err(r.malformed(format!(
                "metadata key of {key_len} bytes at offset {}",
                r.pos - 8
            )));
        }
        let key = r.string(key_len)?;
        let ty = r.u32()?;
        let value = r.value(ty, &key, 0)?;
        metadata.insert(key, value);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::Uint(a)) if *a > 0 && a.is_power_of_two() => *a,
        Some(other) => {
            return Err(r.malformed(format!("bad general.alignment {other:?}")));
        }
    };

    let mut needed_rel: u64 = 0;
    for i in 0..tensor_count {
        let name_len = r.u64()?;
        let name = r.string(name_len)?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.malformed(format!("tensor {i} `{name}` has {n_dims} dimensions")));
        }
        let mut dims = [1u64; MAX_DIMS as usize];
        for d in dims.iter_mut().take(n_dims as usize) {
            *d = r.u64()?;
        }
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        if offset % alignment != 0 {
            return Err(r.malformed(format!(
                "tensor `{name}` offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        let end = match type_block(ggml_type) {
            Some((block, type_size)) => {
                let bytes = tensor_bytes(&dims, block, type_size).ok_or_else(|| {
                    r.malformed(format!(
                        "tensor `{name}` has impossible dimensions {:?} for ggml type {ggml_type}",
                        &dims[..n_dims as usize]
                    ))
                })?;
                offset.checked_add(bytes)
            }
            // Unknown type: all we can say is that its data starts inside the file.
            None => offset.checked_add(1),
        }
        .ok_or_else(|| r.malformed(format!("tensor `{name}` extends past 2^64 bytes")))?;
        needed_rel = needed_rel.max(end);
    }

    let header_end = r.pos;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| r.malformed("header too large".to_string()))?;
    let data_end = if tensor_count == 0 {
        header_end
    } else {
        data_offset
            .checked_add(needed_rel)
            .ok_or_else(|| r.malformed("tensor data extends past 2^64 bytes".to_string()))?
    };
    if data_end > r.size {
        return Err(ModelError::Truncated {
            path: r.path.clone(),
            size: r.size,
            needed: data_end,
        });
    }

    let get = |key: &str| match metadata.get(key) {
        Some(MetaValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    Ok(GgufInfo {
        version,
        architecture: get("general.architecture"),
        name: get("general.name"),
        chat_template: get("tokenizer.chat_template"),
        tensor_count,
        kv_count,
        file_size: r.size,
        alignment,
        data_offset,
        data_end,
        metadata,
    })
}

/// The byte size of a tensor of `dims` in blocks of `block` elements of `type_size` bytes.
fn tensor_bytes(dims: &[u64; MAX_DIMS as usize], block: u64, type_size: u64) -> Option<u64> {
    if dims[0] % block != 0 {
        return None;
    }
    let mut bytes = (dims[0] / block).checked_mul(type_size)?;
    for d in &dims[1..] {
        bytes = bytes.checked_mul(*d)?;
    }
    Some(bytes)
}

/// (elements per block, bytes per block) of a ggml tensor type, when known.
fn type_block(ggml_type: u32) -> Option<(u64, u64)> {
    const QK_K: u64 = 256;
    Some(match ggml_type {
        0 => (1, 4),       // F32
        1 => (1, 2),       // F16
        2 => (32, 18),     // Q4_0
        3 => (32, 20),     // Q4_1
        6 => (32, 22),     // Q5_0
        7 => (32, 24),     // Q5_1
        8 => (32, 34),     // Q8_0
        9 => (32, 36),     // Q8_1
        10 => (QK_K, 84),  // Q2_K
        11 => (QK_K, 110), // Q3_K
        12 => (QK_K, 144), // Q4_K
        13 => (QK_K, 176), // Q5_K
        14 => (QK_K, 210), // Q6_K
        15 => (QK_K, 292), // Q8_K
        16 => (QK_K, 66),  // IQ2_XXS
        17 => (QK_K, 74),  // IQ2_XS
        18 => (QK_K, 98),  // IQ3_XXS
        19 => (QK_K, 50),  // IQ1_S
        20 => (32, 18),    // IQ4_NL
        21 => (QK_K, 110), // IQ3_S
        22 => (QK_K, 82),  // IQ2_S
        23 => (QK_K, 136), // IQ4_XS
        24 => (1, 1),      // I8
        25 => (1, 2),      // I16
        26 => (1, 4),      // I32
        27 => (1, 8),      // I64
        28 => (1, 8),      // F64
        29 => (QK_K, 56),  // IQ1_M
        30 => (1, 2),      // BF16
        34 => (QK_K, 54),  // TQ1_0
        35 => (QK_K, 66),  // TQ2_0
        39 => (32, 17),    // MXFP4
        40 => (64, 36),    // NVFP4
        41 => (128, 18),   // Q1_0
        42 => (64, 18),    // Q2_0
        _ => return None,
    })
}

/// The byte size of a fixed-size GGUF value type.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    size: u64,
    path: PathBuf,
}

impl Reader {
    fn malformed(&self, reason: String) -> ModelError {
        ModelError::Malformed {
            path: self.path.clone(),
            reason,
        }
    }

    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    /// An item of `len` bytes at the current position runs past the end of the file:
    /// a plausible length means the file was cut short, an absurd one a hostile header.
    fn past_end(&self, len: u64, what: &str, key: &str, at: u64) -> ModelError {
        if len <= PLAUSIBLE_ITEM {
            return self.truncated(len);
        }
        let key = if key.is_empty() {
            String::new()
        } else {
            format!(" for key `{key}`")
        };
        self.malformed(format!(
            "{what} of {len} bytes at offset {at}{key} exceeds the file size {}",
            self.size
        ))
    }

    fn truncated(&self, n: u64) -> ModelError {
        ModelError::Truncated {
            path: self.path.clone(),
            size: self.size,
            needed: self.pos.saturating_add(n),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        let n = buf.len() as u64;
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += n;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(self.truncated(n)),
            Err(e) => Err(ModelError::io(&self.path, e)),
        }
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        if n > self.remaining() {
            return Err(self.truncated(n));
        }
        let delta = i64::try_from(n).map_err(|_| self.truncated(n))?;
        self.inner
            .seek_relative(delta)
            .map_err(|e| ModelError::io(&self.path, e))?;
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a string of `len` bytes, refusing lengths beyond the end of the file.
    fn string(&mut self, len: u64) -> Result<String> {
        if len > self.remaining() {
            return Err(self.past_end(len, "string", "", self.pos.saturating_sub(8)));
        }
        let len_usize =
            usize::try_from(len).map_err(|_| self.malformed(format!("string length {len}")))?;
        let mut buf = vec![0u8; len_usize];
        self.read_exact(&mut buf)?;
        Ok(String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::Uint(u64::from(u8::from_le_bytes(self.array()?))),
            1 => MetaValue::Int(i64::from(i8::from_le_bytes(self.array()?))),
            2 => MetaValue::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => MetaValue::Uint(u64::from(u32::from_le_bytes(self.array()?))),
            5 => MetaValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => MetaValue::Bool(self.array::<1>()?[0] != 0),
            8 => {
                let len = self.u64()?;
                if len > self.remaining() {
                    return Err(self.past_end(len, "string", key, self.pos - 8));
                }
                if len > MAX_KEPT_STRING {
                    self.skip(len)?;
                    MetaValue::LongString { len }
                } else {
                    MetaValue::String(self.string(len)?)
                }
            }
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.malformed(format!("arrays nested too deep in key `{key}`")));
                }
                let element_type = self.u32()?;
                let len = self.u64()?;
                self.skip_array(element_type, len, key, depth)?;
                MetaValue::Array { element_type, len }
            }
            10 => MetaValue::Uint(self.u64()?),
            11 => MetaValue::Int(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            other => {
                return Err(self.malformed(format!(
                    "unknown metadata value type {other} for key `{key}`"
                )))
            }
        })
    }

    fn skip_array(&mut self, element_type: u32, len: u64, key: &str, depth: u32) -> Result<()> {
        let at = self.pos;
        let what = format!("array of {len} elements");
        if let Some(size) = fixed_size(element_type) {
            let total = len.saturating_mul(size);
            if total > self.remaining() {
                return Err(self.past_end(total, &what, key, at));
            }
            return self.skip(total);
        }
        // Strings take at least 8 bytes each, arrays at least 12.
        let min = if element_type == 8 { 8 } else { 12 };
        let total = len.saturating_mul(min);
        if total > self.remaining() {
            return Err(self.past_end(total, &what, key, at));
        }
        match element_type {
            8 => {
                for _ in 0..len {
                    let n = self.u64()?;
                    if n > self.remaining() {
                        return Err(self.past_end(n, "string in array", key, self.pos - 8));
                    }
                    self.skip(n)?;
                }
                Ok(())
            }
            9 => {
                for _ in 0..len {
                    self.value(9, key, depth + 1)?;
                }
                Ok(())
            }
            other => Err(self.malformed(format!(
                "unknown array element type {other} for key `{key}`"
            ))),
        }
    }
}
