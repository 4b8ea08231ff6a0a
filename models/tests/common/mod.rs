//! Test helpers: a tiny GGUF writer, a tiny HTTP server, wheels and a fake pip.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jielong_models::Progress;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- GGUF writer

/// A metadata value for the test writer.
pub enum V {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    ArrStr(Vec<String>),
    ArrI32(Vec<i32>),
}

/// A tensor for the test writer: name, dims, ggml type, byte size.
pub struct T {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub bytes: u64,
}

impl T {
    pub fn f32(name: &str, dims: &[u64]) -> Self {
        T {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: 0,
            bytes: dims.iter().product::<u64>() * 4,
        }
    }

    pub fn q4_0(name: &str, dims: &[u64]) -> Self {
        T {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: 2,
            bytes: dims.iter().product::<u64>() / 32 * 18,
        }
    }

    pub fn q4_k(name: &str, dims: &[u64]) -> Self {
        T {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: 12,
            bytes: dims.iter().product::<u64>() / 256 * 144,
        }
    }
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &V) {
    match v {
        V::U32(x) => {
            out.extend_from_slice(&4u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::I32(x) => {
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::F32(x) => {
            out.extend_from_slice(&6u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::Bool(x) => {
            out.extend_from_slice(&7u32.to_le_bytes());
            out.push(u8::from(*x));
        }
        V::Str(s) => {
            out.extend_from_slice(&8u32.to_le_bytes());
            put_str(out, s);
        }
        V::U64(x) => {
            out.extend_from_slice(&10u32.to_le_bytes());
            out.extend_from_slice(&x.to_le_bytes());
        }
        V::ArrStr(items) => {
            out.extend_from_slice(&9u32.to_le_bytes());
            out.extend_from_slice(&8u32.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for s in items {
                put_str(out, s);
            }
        }
        V::ArrI32(items) => {
            out.extend_from_slice(&9u32.to_le_bytes());
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for x in items {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}

/// Builds a GGUF v3 file: header, kvs, tensor infos, padding, tensor data (a byte pattern).
pub fn gguf_bytes(kvs: &[(&str, V)], tensors: &[T], alignment: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut out, k);
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + t.bytes).next_multiple_of(alignment);
    }
    while out.len() as u64 % alignment != 0 {
        out.push(0);
    }
    let data_start = out.len();
    let mut offset = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        out.resize(data_start + offset as usize, 0);
        out.extend((0..t.bytes).map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8)));
        offset = (offset + t.bytes).next_multiple_of(alignment);
    }
    out
}

/// A small valid model-like GGUF.
pub fn sample_gguf() -> Vec<u8> {
    gguf_bytes(
        &[
            ("general.architecture", V::Str("llama".into())),
            ("general.name", V::Str("Tiny Test".into())),
            ("llama.context_length", V::U32(2048)),
            ("llama.rope.freq_base", V::F32(10000.0)),
            ("tokenizer.add_bos", V::Bool(true)),
            ("general.file_type", V::I32(2)),
            ("general.parameter_count", V::U64(1234)),
            (
                "tokenizer.ggml.tokens",
                V::ArrStr(vec!["<s>".into(), "</s>".into(), "hello".into()]),
            ),
            ("tokenizer.ggml.token_type", V::ArrI32(vec![3, 3, 1])),
            (
                "tokenizer.chat_template",
                V::Str("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
            ),
        ],
        &[
            T::f32("token_embd.weight", &[4, 3]),
            T::q4_0("blk.0.attn_q.weight", &[64, 2]),
            T::q4_k("output.weight", &[256]),
        ],
        32,
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// All files under `root`, relative, sorted (directories not listed).
pub fn files_under(root: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Files under `root` that are not lock files.
pub fn files_but_locks(root: &Path) -> Vec<String> {
    files_under(root)
        .into_iter()
        .filter(|f| !f.starts_with(".locks/"))
        .collect()
}

// ---------------------------------------------------------------- HTTP server

/// How the test server answers a path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body and a correct Content-Length.
    Body(Vec<u8>),
    /// 200 claiming `claimed` bytes, sending only the body, then closing.
    Cut { body: Vec<u8>, claimed: usize },
}

/// A tiny HTTP/1.1 server on 127.0.0.1, one thread, one request per connection.
pub struct Server {
    pub base: String,
    pub hits: Arc<AtomicUsize>,
    pub paths: Arc<Mutex<Vec<String>>>,
}

pub fn serve(routes: HashMap<String, Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (h, p) = (hits.clone(), paths.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let _ = handle(stream, &routes, &p);
        }
    });
    Server { base, hits, paths }
}

fn handle(
    mut stream: TcpStream,
    routes: &HashMap<String, Reply>,
    paths: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    if let Ok(mut p) = paths.lock() {
        p.push(path.clone());
    }
    match routes.get(&path) {
        Some(Reply::Body(body)) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
        Some(Reply::Cut { body, claimed }) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
            )?;
            stream.write_all(body)?;
        }
        None => {
            let body = b"Entry not found";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
    }
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Both)
}

// ---------------------------------------------------------------- wheels and fake pip

/// Writes `<dir>/<package_underscored>-<version>-py3-none-any.whl` holding `members`.
pub fn write_wheel(dir: &Path, package: &str, version: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let name = format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"));
    let path = dir.join(name);
    let file = std::fs::File::create(&path).expect("create wheel");
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (member, data) in members {
        zip.start_file(*member, opts).expect("start member");
        zip.write_all(data).expect("write member");
    }
    zip.finish().expect("finish wheel");
    path
}

/// A fake `python` that emulates `-m pip download ... -d DIR PKG==VER` by copying
/// `<wheels>/<pkg_underscored>-<ver>-py3-none-any.whl` into DIR, logging each call.
pub fn fake_python(dir: &Path, wheels: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("pip-calls.log");
    let script = format!(
        r#"#!/bin/sh
echo "$@" >> '{log}'
dest=""; req=""
while [ $# -gt 0 ]; do
  case "$1" in
    -d) dest="$2"; shift 2 ;;
    *) req="$1"; shift ;;
  esac
done
pkg="${{req%%==*}}"; ver="${{req##*==}}"
name=$(echo "$pkg" | tr '-' '_')
wheel='{wheels}'/"$name-$ver-py3-none-any.whl"
if [ ! -f "$wheel" ]; then
  echo "ERROR: Could not find a version that satisfies the requirement $req" >&2
  echo "ERROR: No matching distribution found for $req" >&2
  exit 1
fi
cp "$wheel" "$dest/"
"#,
        log = log.display(),
        wheels = wheels.display()
    );
    let path = dir.join("fake-python");
    write_script(&path, &script);
    (path, log)
}

pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

pub fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------- progress

/// Records what a fetch reports.
#[derive(Default)]
pub struct Recorder {
    pub bytes: AtomicUsize,
    pub messages: Mutex<Vec<String>>,
    pub begins: Mutex<Vec<(String, Option<u64>)>>,
    pub ends: AtomicUsize,
}

impl Progress for Recorder {
    fn begin(&self, label: &str, total: Option<u64>) {
        if let Ok(mut b) = self.begins.lock() {
            b.push((label.to_string(), total));
        }
    }
    fn advance(&self, bytes: u64) {
        self.bytes.fetch_add(bytes as usize, Ordering::SeqCst);
    }
    fn message(&self, msg: &str) {
        if let Ok(mut m) = self.messages.lock() {
            m.push(msg.to_string());
        }
    }
    fn end(&self) {
        self.ends.fetch_add(1, Ordering::SeqCst);
    }
}
