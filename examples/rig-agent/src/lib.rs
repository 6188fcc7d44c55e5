//! A rig agent with one tool, as an application builds it; nothing in it names PandaProbe.
//! rig describes each run, model call and tool call as `tracing` spans in the OpenTelemetry
//! GenAI conventions, and `pandaprobe::TracingLayer` turns those into a trace with its LLM and
//! TOOL spans: that is the whole integration.

use rig_agent::prelude::*;
use rig_core::providers::openai::{OpenAIConfig, Route};
use rig_core::tool::ToolContext;
use serde::Deserialize;
use serde_json::{json, Value};

/// The tool: the weather in a city, from a table.
pub struct Weather;

/// What the model passes to [`Weather`].
#[derive(Deserialize)]
pub struct WeatherArgs {
    /// The city to look up.
    pub city: String,
}

/// The one way [`Weather`] fails.
#[derive(Debug, thiserror::Error)]
#[error("no weather for {0}")]
pub struct UnknownCity(String);

impl Tool for Weather {
    const NAME: &'static str = "get_weather";
    type Args = WeatherArgs;
    type Output = Value;
    type Error = UnknownCity;

    fn description(&self) -> String {
        "The current weather in a city".to_owned()
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": { "city": { "type": "string" } },
            "required": ["city"],
        })
    }

    async fn call(
        &self,
        _context: &mut ToolContext,
        args: WeatherArgs,
    ) -> Result<Value, UnknownCity> {
        match args.city.as_str() {
            "Paris" => Ok(json!({ "city": "Paris", "celsius": 18, "sky": "sunny" })),
            other => Err(UnknownCity(other.to_owned())),
        }
    }
}

/// The agent, talking to an OpenAI-compatible server at `base_url` over Chat Completions.
/// `record_content` is rig's own switch for prompts and answers in its spans.
pub fn weather_agent(base_url: &str, api_key: &str, model: &str, record_content: bool) -> Agent {
    let model = OpenAIConfig::new(api_key.to_owned())
        .with_base_url(base_url)
        .with_route(Route::Chat)
        .client()
        .completion(model);
    AgentBuilder::new(model)
        .name("weather-agent")
        .preamble("Answer in one sentence.")
        .temperature(0.0)
        .default_max_turns(4)
        .tool(Weather)
        .record_content_telemetry(record_content)
        .build()
}
