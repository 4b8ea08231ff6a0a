//! `jielong serve`: the embedded model behind an OpenAI-compatible HTTP API
//! (`jielong-serve`).

use anyhow::Context;
use jielong_serve::{ServeConfig, ServeState};

use crate::cli::{GlobalArgs, ServeArgs};

/// Loads the model, opens its session with one branch per slot, and serves until
/// Ctrl-C.
pub async fn serve(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    // Refuse an exposed server before spending time on the model.
    jielong_serve::check_exposure(&args.host, args.api_key.as_deref())?;
    if global.model.starts_with("openai:") {
        anyhow::bail!(
            "jielong serve serves an embedded model (a catalog name, a .gguf path or hf:…), not a remote one"
        );
    }
    let model = super::load_local_model(global).await?;
    let config = ServeConfig {
        parallel: args.parallel as usize,
        queue: args.queue,
        max_n: args.max_n as usize,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        default_max_tokens: global.max_tokens,
        // The sampling flags are the defaults of requests that leave them out.
        sampling: super::request(global).sampling,
        calls: args.calls.into(),
        fit: args.call_fit.into(),
        ..ServeConfig::new(global.model.clone())
    };
    let options = config.session_options(&super::session_options(global));
    let state = tokio::task::spawn_blocking(move || {
        let session = model.session(&options)?;
        ServeState::open(std::sync::Arc::new(session), config)
    })
    .await
    .context("the session could not be opened")??;
    let address = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr().map_or(address, |a| a.to_string());
    eprintln!(
        "jielong serve: {} on http://{local}/v1 ({} slots, queue {}, context {} tokens{})",
        global.model,
        args.parallel,
        args.queue,
        state.session().context_size(),
        if state.config().api_key.is_some() {
            ", API key required"
        } else {
            ""
        }
    );
    jielong_serve::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("the server failed")?;
    Ok(())
}
