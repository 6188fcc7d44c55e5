//! A genai agent turn, traced with no hand-written LLM span, run offline: the model asks for a
//! tool (a plain call), the tool runs, and the answer is streamed. The "provider" is the
//! workspace's fake OpenAI-compatible server, reached through genai's OpenAI adapter, and
//! PandaProbe is the in-process test server. At the end it prints the trace tree the server
//! stored.
//!
//! ```sh
//! cargo run -p pandaprobe-genai --example tool_use
//! ```
//!
//! Against real services, build `probe` with `pandaprobe::Client::from_env()` and the genai
//! client with `genai::Client::new()?` (it finds each provider's key in its usual variable);
//! the turn is unchanged.

use std::error::Error;
use std::time::Duration;

use futures_util::StreamExt;
use genai::adapter::AdapterKind;
use genai::chat::{ChatMessage, ChatRequest, ChatStreamEvent, Tool, ToolResponse};
use genai::resolver::{AuthData, Endpoint};
use genai::{ModelIden, ServiceTarget};
use pandaprobe::{SpanKind, SpanStatus};
use pandaprobe_fake_provider::{FakeProvider, Reply, DEFAULT_MODEL};
use pandaprobe_genai::GenaiExt;
use pandaprobe_testing::TestServer;
use serde_json::json;

const QUESTION: &str = "What is the weather in Paris?";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let server = TestServer::builder().lenient().start()?;
    let provider = FakeProvider::start()?;
    // What the model will "decide": first a tool call, then the answer.
    provider.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    provider.push(Reply::text("It is 18 °C and sunny in Paris."));

    let probe = pandaprobe::Client::builder()
        .endpoint(server.url())
        .api_key(server.api_key())
        .project_name("genai-example")
        .build()?;
    let endpoint = format!("{}/", provider.base_url());
    let genai = genai::Client::builder()
        .with_service_target_resolver_fn(move |target: ServiceTarget| {
            Ok(ServiceTarget {
                endpoint: Endpoint::from_owned(endpoint.clone()),
                auth: AuthData::from_single("sk-fake"),
                model: ModelIden::new(AdapterKind::OpenAI, target.model.model_name),
            })
        })
        .build()?
        .traced(&probe);

    let trace = probe.start_trace("weather-agent");
    trace.set_input(json!({ "question": QUESTION }));
    let turn = async {
        let mut request =
            ChatRequest::new(vec![ChatMessage::user(QUESTION)]).with_tools(vec![Tool::new(
                "get_weather",
            )
            .with_description("The current weather in a city")
            .with_schema(json!({
                "type": "object",
                "properties": { "city": { "type": "string" } },
                "required": ["city"],
            }))]);
        // The LLM spans are recorded by the traced client, inside the trace in scope.
        let first = genai
            .exec_chat(DEFAULT_MODEL, request.clone(), None)
            .await?;
        let calls = first.into_tool_calls();
        request = request.append_message(ChatMessage::from(calls.clone()));
        for call in calls {
            // Tools are the application's own code: one span each, by hand.
            let span = trace.span(call.fn_name.clone(), SpanKind::Tool);
            span.set_input(call.fn_arguments.clone());
            let result =
                json!({ "city": call.fn_arguments["city"], "celsius": 18, "sky": "sunny" });
            span.set_output(result.clone());
            span.set_status(SpanStatus::Ok);
            span.end();
            request = request.append_message(ToolResponse::new(call.call_id, result.to_string()));
        }
        let mut stream = genai.exec_chat_stream(DEFAULT_MODEL, request, None).await?;
        let mut answer = String::new();
        while let Some(event) = stream.next().await {
            if let ChatStreamEvent::Chunk(chunk) = event? {
                answer.push_str(&chunk.content);
            }
        }
        Ok::<_, Box<dyn Error>>(answer)
    };
    let answer = trace.in_scope(turn).await?;
    trace.set_output(json!({ "answer": answer }));
    let trace_id = trace.trace_id();
    trace.end();
    drop(trace);
    probe.flush_async(Duration::from_secs(10)).await?;

    println!("answer: {answer}\n");
    let stored = server
        .wait_for_stored_trace(trace_id, Duration::from_secs(10))
        .ok_or("the test server never stored the trace")?;
    println!(
        "the test server stored:\n{}",
        pandaprobe_testing::trace_tree(&stored)
    );
    Ok(())
}
