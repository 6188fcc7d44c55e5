//! Runs the example service until Ctrl-C or SIGTERM, then delivers every trace and score.
//!
//! ```text
//! cargo run -p pandaprobe-axum-example
//! curl 'http://127.0.0.1:3000/ask?q=what+is+rust'
//! curl -H 'x-user-id: ada' 'http://127.0.0.1:3000/ask?q=please+fail'
//! ```
//!
//! With `PANDAPROBE_API_KEY` (and `PANDAPROBE_PROJECT_NAME`) set, traces go to PandaProbe;
//! without, to an embedded test server, as a demo. `ADDR` sets the address (default
//! `127.0.0.1:3000`), `RUST_LOG` the log lines printed (default `info`).

use std::error::Error;
use std::time::Duration;

use pandaprobe::{Client, TracingLayer};
use pandaprobe_testing::TestServer;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

/// How long the client may take to deliver what is queued at exit.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (client, demo_server) = if std::env::var_os("PANDAPROBE_API_KEY").is_some() {
        (Client::from_env()?, None)
    } else {
        let server = TestServer::builder().lenient().start()?;
        let client = Client::builder()
            .api_key(server.api_key())
            .project_name("axum-example")
            .endpoint(server.url())
            .build()?;
        (client, Some(server))
    };

    // The filter applies to the printed lines only, so that it never hides a marked span
    // from the PandaProbe layer.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        .with(TracingLayer::new(client.clone()))
        .try_init()?;

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    if demo_server.is_some() {
        println!("PANDAPROBE_API_KEY is not set: sending to an embedded test server");
    }

    pandaprobe_axum_example::serve(
        listener,
        client.clone(),
        pandaprobe_axum_example::shutdown_signal(),
    )
    .await?;

    // Every request has finished, so every trace is queued: deliver them before exiting.
    if let Err(error) = client.shutdown_async(SHUTDOWN_TIMEOUT).await {
        eprintln!("not everything was delivered: {error}");
    }
    println!("{}", client.stats());
    if let Some(server) = demo_server {
        println!(
            "the embedded server received {} traces and {} scores",
            server.trace_count(),
            server.score_count()
        );
    }
    Ok(())
}
