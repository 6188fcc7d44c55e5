//! An agent loop of several chat completions and tool calls, traced with no hand-written LLM
//! span, run offline: the "provider" is the workspace's fake OpenAI-compatible server and
//! PandaProbe is the in-process test server. At the end it prints the trace tree the server
//! stored.
//!
//! ```sh
//! cargo run -p pandaprobe-async-openai --example agent_loop
//! ```
//!
//! Against real services, build `probe` with `pandaprobe::Client::from_env()` and the OpenAI
//! client with `async_openai::Client::new()`; the loop is unchanged.

use std::error::Error;
use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionRequestMessage, ChatCompletionTools,
    CreateChatCompletionRequest,
};
use pandaprobe::{Score, SpanKind, SpanStatus};
use pandaprobe_async_openai::OpenAIExt;
use pandaprobe_fake_provider::{FakeProvider, Reply, DEFAULT_MODEL};
use pandaprobe_testing::TestServer;
use serde_json::{json, Value};

const QUESTION: &str = "What is the weather in Paris, and how many people live there?";
const MAX_TURNS: usize = 5;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let server = TestServer::builder().lenient().start()?;
    let provider = FakeProvider::start()?;
    // What the model will "decide", turn by turn.
    provider.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    provider.push(Reply::tool_call("get_population", r#"{"city":"Paris"}"#));
    provider.push(Reply::text(
        "It is 18 °C and sunny in Paris, a city of about 2.1 million people.",
    ));

    let probe = pandaprobe::Client::builder()
        .endpoint(server.url())
        .api_key(server.api_key())
        .project_name("agent-loop-example")
        .build()?;
    let openai = async_openai::Client::with_config(
        OpenAIConfig::new()
            .with_api_base(provider.base_url())
            .with_api_key("sk-fake"),
    )
    .traced(&probe);

    let trace = probe.start_trace("weather-agent");
    trace.set_input(json!({ "messages": [{ "role": "user", "content": QUESTION }] }));
    let answer = trace.in_scope(run_agent(&openai, &trace)).await?;
    trace.set_output(json!({ "messages": [{ "role": "assistant", "content": answer }] }));
    let trace_id = trace.trace_id();
    trace.end();
    drop(trace);
    probe.score(Score::boolean(trace_id, "answered", true))?;
    probe.flush_async(Duration::from_secs(10)).await?;

    println!("answer: {answer}\n");
    let stored = server
        .wait_for_stored_trace(trace_id, Duration::from_secs(10))
        .ok_or("the test server never stored the trace")?;
    println!(
        "the test server stored:\n{}",
        pandaprobe_testing::trace_tree(&stored)
    );
    println!("scores stored: {}", server.score_count());
    Ok(())
}

/// Asks, runs the tools the model calls, and asks again until the model answers.
async fn run_agent(
    openai: &pandaprobe_async_openai::TracedClient<OpenAIConfig>,
    trace: &pandaprobe::Trace,
) -> Result<String, Box<dyn Error>> {
    let mut messages: Vec<ChatCompletionRequestMessage> = vec![serde_json::from_value(
        json!({ "role": "user", "content": QUESTION }),
    )?];
    let tools: Vec<ChatCompletionTools> = serde_json::from_value(json!([
        tool("get_weather", "The current weather in a city"),
        tool("get_population", "How many people live in a city"),
    ]))?;

    for _ in 0..MAX_TURNS {
        let request = CreateChatCompletionRequest {
            model: DEFAULT_MODEL.to_owned(),
            messages: messages.clone(),
            tools: Some(tools.clone()),
            temperature: Some(0.0),
            ..Default::default()
        };
        // The LLM span is recorded by the traced client, inside the trace in scope.
        let response = openai.chat().create(request).await?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err("the model answered with no choice".into());
        };
        let message = choice.message;
        let calls = message.tool_calls.clone().unwrap_or_default();
        if calls.is_empty() {
            return Ok(message.content.unwrap_or_default());
        }
        messages.push(serde_json::from_value(json!({
            "role": "assistant",
            "tool_calls": serde_json::to_value(&calls)?,
        }))?);
        for call in calls {
            let ChatCompletionMessageToolCalls::Function(call) = call else {
                continue;
            };
            // Tools are the application's own code: one span each, by hand.
            let span = trace.span(call.function.name.clone(), SpanKind::Tool);
            let arguments: Value = serde_json::from_str(&call.function.arguments)?;
            span.set_input(arguments.clone());
            let result = run_tool(&call.function.name, &arguments);
            span.set_output(result.clone());
            span.set_status(SpanStatus::Ok);
            span.end();
            messages.push(serde_json::from_value(json!({
                "role": "tool",
                "tool_call_id": call.id,
                "content": result.to_string(),
            }))?);
        }
    }
    Err(format!("no answer after {MAX_TURNS} turns").into())
}

fn tool(name: &str, description: &str) -> Value {
    json!({
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"],
            },
        },
    })
}

fn run_tool(name: &str, arguments: &Value) -> Value {
    let city = arguments["city"].as_str().unwrap_or("?");
    match name {
        "get_weather" => json!({ "city": city, "celsius": 18, "sky": "sunny" }),
        "get_population" => json!({ "city": city, "people": 2_100_000 }),
        other => json!({ "error": format!("unknown tool {other}") }),
    }
}
