//! A rig agent turn (a tool call, then the answer) traced with no wrapper and no mark, run
//! offline: the "provider" is the workspace's fake OpenAI-compatible server and PandaProbe is
//! the in-process test server. At the end it prints the trace tree the server stored.
//!
//! ```sh
//! cargo run -p pandaprobe-rig-example
//! ```
//!
//! Against real services, build `probe` with `pandaprobe::Client::from_env()` and the agent on
//! `OpenAIConfig::from_env()`; the layer is installed the same way.

use std::error::Error;
use std::time::Duration;

use pandaprobe::TracingLayer;
use pandaprobe_fake_provider::{FakeProvider, Reply, DEFAULT_MODEL};
use pandaprobe_rig_example::weather_agent;
use pandaprobe_testing::{trace_tree, TestServer};
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let server = TestServer::builder().lenient().start()?;
    let provider = FakeProvider::start()?;
    // What the model will "decide": first the tool, then the answer.
    provider.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    provider.push(Reply::text("It is 18 °C and sunny in Paris."));

    let probe = pandaprobe::Client::builder()
        .endpoint(server.url())
        .api_key(server.api_key())
        .project_name("rig-example")
        .build()?;
    // The whole integration: rig's GenAI spans become PandaProbe traces and spans.
    tracing_subscriber::registry()
        .with(TracingLayer::new(probe.clone()))
        .init();

    let agent = weather_agent(&provider.base_url(), "sk-fake", DEFAULT_MODEL, true);
    let answer = agent.prompt("What is the weather in Paris?").await?;
    println!("answer: {}\n", answer.output());

    probe.flush_async(Duration::from_secs(10)).await?;
    let trace_id = server
        .traces()
        .first()
        .map(|t| t.id)
        .ok_or("no trace reached the test server")?;
    let stored = server
        .wait_for_stored_trace(trace_id, Duration::from_secs(10))
        .ok_or("the test server never stored the trace")?;
    println!("the test server stored:\n{}", trace_tree(&stored));
    Ok(())
}
