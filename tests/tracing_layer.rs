//! The tracing layer end to end: `tracing` spans in, the traces a lenient server received out.
//! Each test sets its subscriber for its own thread only (`with_default`).
#![cfg(feature = "tracing-layer")]

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{client_for, lenient_server, WAIT};
use pandaprobe::{current_trace_id, Client, TracingLayer, Uuid};
use pandaprobe_testing::TestServer;
use serde_json::{json, Value};
use tracing::field::Empty;
use tracing::{info_span, Instrument};
use tracing_subscriber::prelude::*;

/// A lenient server and a client for it.
fn setup() -> (TestServer, Client) {
    let server = lenient_server();
    let client = client_for(&server).build().expect("a client");
    (server, client)
}

/// Runs `f` under a registry with the layer `make` builds, drops the subscriber (ending what
/// is still open), delivers everything, and returns the traces the server received.
fn traces_with<R>(
    make: impl FnOnce(Client) -> TracingLayer,
    f: impl FnOnce(&Client) -> R,
) -> (Vec<Value>, R) {
    let (server, client) = setup();
    let subscriber = tracing_subscriber::registry().with(make(client.clone()));
    let result = tracing::subscriber::with_default(subscriber, || f(&client));
    client.flush(WAIT).expect("everything delivered");
    let traces = server.traces().into_iter().map(|r| r.body).collect();
    (traces, result)
}

fn traces_of<R>(f: impl FnOnce(&Client) -> R) -> (Vec<Value>, R) {
    traces_with(TracingLayer::new, f)
}

fn only(traces: &[Value]) -> &Value {
    assert_eq!(traces.len(), 1, "{traces:#?}");
    &traces[0]
}

/// The span of `trace` named `name`.
fn span<'a>(trace: &'a Value, name: &str) -> &'a Value {
    let spans = trace["spans"].as_array().expect("spans");
    let mut found = spans.iter().filter(|s| s["name"] == name);
    let span = found
        .next()
        .unwrap_or_else(|| panic!("no span {name} in {trace:#}"));
    assert!(found.next().is_none(), "two spans named {name}");
    span
}

fn span_count(trace: &Value) -> usize {
    trace["spans"].as_array().map_or(0, Vec::len)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(future)
}

#[test]
fn a_root_is_a_trace_and_marked_spans_nest_under_the_nearest_marked_ancestor() {
    let (traces, ()) = traces_of(|_| {
        info_span!("run", pandaprobe.trace = "agent-run").in_scope(|| {
            info_span!("plan", pandaprobe.kind = "chain").in_scope(|| {
                info_span!("helper").in_scope(|| {
                    info_span!("search", pandaprobe.kind = "TOOL").in_scope(|| {});
                });
            });
            info_span!("answer", pandaprobe.kind = "Llm").in_scope(|| {});
            info_span!("other", pandaprobe.kind = "planner").in_scope(|| {});
        });
    });
    let trace = only(&traces);
    assert_eq!(trace["name"], "agent-run");
    assert_eq!(trace["status"], "COMPLETED");
    assert_eq!(span_count(trace), 4, "the unmarked helper is no span");
    let (plan, search, answer) = (
        span(trace, "plan"),
        span(trace, "search"),
        span(trace, "answer"),
    );
    assert_eq!(
        (&plan["kind"], &search["kind"], &answer["kind"]),
        (&json!("CHAIN"), &json!("TOOL"), &json!("LLM"))
    );
    assert_eq!(span(trace, "other")["kind"], "OTHER");
    assert!(plan.get("parent_span_id").is_none(), "{plan}");
    assert_eq!(
        search["parent_span_id"], plan["span_id"],
        "through the unmarked helper"
    );
    assert!(answer.get("parent_span_id").is_none());

    // Each span lasts from creation to close, inside its trace (fixed-width UTC timestamps).
    let time = |v: &Value, key: &str| v[key].as_str().expect(key).to_owned();
    for s in [plan, search, answer] {
        assert!(time(s, "started_at") <= time(s, "ended_at"), "{s}");
        assert!(time(trace, "started_at") <= time(s, "started_at"));
        assert!(time(s, "ended_at") <= time(trace, "ended_at"));
    }
    assert!(time(plan, "started_at") <= time(search, "started_at"));
    assert!(time(search, "ended_at") <= time(plan, "ended_at"));
    assert!(time(plan, "ended_at") <= time(answer, "started_at"));
}

#[test]
fn unmarked_spans_and_kind_spans_outside_a_trace_are_ignored() {
    let (traces, ()) = traces_of(|_| {
        info_span!("hyper::client", uri = "/x").in_scope(|| {
            info_span!("orphan", pandaprobe.kind = "tool").in_scope(|| {});
        });
        info_span!("job", pandaprobe.trace = "job").in_scope(|| {
            info_span!("sqlx::query", db.statement = "SELECT 1").in_scope(|| {});
        });
    });
    let trace = only(&traces);
    assert_eq!(trace["name"], "job");
    assert_eq!(span_count(trace), 0);
}

#[test]
fn every_row_of_the_field_table() {
    let (traces, ()) = traces_of(|_| {
        let root = info_span!(
            "request",
            pandaprobe.trace = true, // not a string: the span's name names the trace
            session_id = "s-1",
            user_id = 7,
            tags = "beta, eu",
            input = r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            output = Empty,
            route = "/ask",
            model = "kept-as-metadata-on-a-trace",
        );
        root.in_scope(|| {
            let llm = info_span!(
                "llm",
                pandaprobe.kind = "llm",
                model = "gpt-x",
                prompt_tokens = 3,
                completion_tokens = Empty,
                cost = 0.25,
                input = "plain text",
                output = Empty,
                temperature = 0.2,
                session_id = "kept-as-metadata-on-a-span",
            );
            llm.record("completion_tokens", 5);
            llm.record("output", "[1,2]");
            llm.record("attempt", 2); // not declared: tracing drops it
            let otel = info_span!(
                "otel",
                pandaprobe.kind = "llm",
                gen_ai.request.model = "gpt-y",
                gen_ai.usage.input_tokens = 4,
                gen_ai.usage.output_tokens = 6,
                cost = "not a number",
            );
            drop((llm, otel));
        });
        root.record("output", "done");
    });
    let trace = only(&traces);
    assert_eq!(trace["name"], "request");
    assert_eq!(trace["session_id"], "s-1");
    assert_eq!(trace["user_id"], "7");
    assert_eq!(trace["tags"], json!(["beta", "eu"]));
    assert_eq!(
        trace["input"],
        json!({"messages": [{"role": "user", "content": "hi"}]})
    );
    assert_eq!(trace["output"], "done");
    let metadata = json!({"route": "/ask", "model": "kept-as-metadata-on-a-trace"});
    assert_eq!(trace["metadata"], metadata);

    let llm = span(trace, "llm");
    assert_eq!(llm["model"], "gpt-x");
    let usage = json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8});
    assert_eq!(llm["token_usage"], usage);
    assert_eq!(llm["cost"], json!({"total": 0.25}));
    assert_eq!(llm["input"], "plain text");
    assert_eq!(llm["output"], json!([1, 2]));
    let metadata = json!({"temperature": 0.2, "session_id": "kept-as-metadata-on-a-span"});
    assert_eq!(llm["metadata"], metadata);
    assert_eq!(llm["status"], "UNSET");

    let otel = span(trace, "otel");
    assert_eq!(otel["model"], "gpt-y");
    let usage = json!({"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10});
    assert_eq!(otel["token_usage"], usage);
    assert!(otel.get("cost").is_none());
    assert_eq!(otel["metadata"], json!({"cost": "not a number"}));
}

#[test]
fn a_root_inside_a_trace_is_a_span_of_it() {
    let (traces, ()) = traces_of(|_| {
        info_span!("outer", pandaprobe.trace = "outer").in_scope(|| {
            info_span!(
                "inner",
                pandaprobe.trace = "sub-agent",
                pandaprobe.kind = "agent"
            )
            .in_scope(|| info_span!("tool", pandaprobe.kind = "tool").in_scope(|| {}));
        });
    });
    let trace = only(&traces);
    let inner = span(trace, "sub-agent");
    assert_eq!(inner["kind"], "AGENT");
    assert_eq!(span(trace, "tool")["parent_span_id"], inner["span_id"]);
}

#[test]
fn an_error_field_marks_the_span_or_the_trace() {
    let (traces, ()) = traces_of(|_| {
        let root = info_span!("run", pandaprobe.trace = "run", error = Empty);
        root.in_scope(|| {
            let tool = info_span!("tool", pandaprobe.kind = "tool", error = Empty);
            tool.record("error", "timeout");
            info_span!("fine", pandaprobe.kind = "tool", error = false).in_scope(|| {});
            info_span!("flagged", pandaprobe.kind = "tool", error = true).in_scope(|| {});
        });
        root.record("error", "gave up");
    });
    let trace = only(&traces);
    assert_eq!(trace["status"], "ERROR");
    assert_eq!(trace["metadata"], json!({"error": "gave up"}));
    let tool = span(trace, "tool");
    assert_eq!(
        (&tool["status"], &tool["error"]),
        (&json!("ERROR"), &json!("timeout"))
    );
    assert_eq!(span(trace, "fine")["status"], "UNSET");
    assert_eq!(span(trace, "flagged")["status"], "ERROR");
    assert!(span(trace, "flagged").get("error").is_none());
}

#[tracing::instrument(err, fields(pandaprobe.kind = "tool"))]
fn failing_tool() -> Result<(), String> {
    Err("no such file".to_owned())
}

#[test]
fn an_error_event_marks_the_nearest_marked_span() {
    let (traces, ()) = traces_of(|_| {
        info_span!("run", pandaprobe.trace = "run").in_scope(|| {
            info_span!("llm", pandaprobe.kind = "llm").in_scope(|| {
                info_span!("http").in_scope(|| tracing::error!(error = "refused", "call failed"));
            });
            info_span!("retry", pandaprobe.kind = "llm")
                .in_scope(|| tracing::error!("rate limited"));
            info_span!("slow", pandaprobe.kind = "llm").in_scope(|| tracing::warn!("slow"));
            let _ = failing_tool();
        });
        info_span!("job", pandaprobe.trace = "job").in_scope(|| tracing::error!("job failed"));
    });
    assert_eq!(traces.len(), 2);
    let run = traces.iter().find(|t| t["name"] == "run").expect("run");
    assert_eq!(
        run["status"], "COMPLETED",
        "errors in spans stay in the spans"
    );
    let llm = span(run, "llm");
    assert_eq!(
        (&llm["status"], &llm["error"]),
        (&json!("ERROR"), &json!("refused"))
    );
    assert_eq!(span(run, "retry")["error"], "rate limited");
    assert_eq!(span(run, "slow")["status"], "UNSET");
    let tool = span(run, "failing_tool");
    assert_eq!(
        (&tool["status"], &tool["error"]),
        (&json!("ERROR"), &json!("no such file"))
    );
    let job = traces.iter().find(|t| t["name"] == "job").expect("job");
    assert_eq!(job["status"], "ERROR");
    assert_eq!(job["metadata"], json!({"error": "job failed"}));
}

#[test]
fn a_panic_marks_the_spans_it_leaves() {
    let (traces, ()) = traces_of(|_| {
        info_span!("survives", pandaprobe.trace = "survives").in_scope(|| {
            let caught = std::panic::catch_unwind(|| {
                info_span!("step", pandaprobe.kind = "tool").in_scope(|| panic!("step failed"));
            });
            assert!(caught.is_err());
            info_span!("after", pandaprobe.kind = "tool").in_scope(|| {});
        });
        let caught = std::panic::catch_unwind(|| {
            info_span!("crashes", pandaprobe.trace = "crashes").in_scope(|| panic!("run failed"));
        });
        assert!(caught.is_err());
        // An instrumented future whose poll panics, as in a tokio task.
        let task = async { panic!("task failed") }
            .instrument(info_span!("task", pandaprobe.trace = "task"));
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| block_on(task)));
        assert!(caught.is_err());
    });
    assert_eq!(traces.len(), 3);
    let by_name = |name: &str| traces.iter().find(|t| t["name"] == name).expect(name);
    let survives = by_name("survives");
    assert_eq!(survives["status"], "COMPLETED");
    let step = span(survives, "step");
    assert_eq!(
        (&step["status"], &step["error"]),
        (&json!("ERROR"), &json!("panicked"))
    );
    assert_eq!(span(survives, "after")["status"], "UNSET");
    assert_eq!(by_name("crashes")["status"], "ERROR");
    assert_eq!(by_name("task")["status"], "ERROR");
}

#[test]
fn current_trace_id_follows_the_spans_and_entered_traces() {
    let (traces, in_root) = traces_of(|client| {
        assert_eq!(current_trace_id(), None);
        assert_eq!(info_span!("library").in_scope(current_trace_id), None);
        let manual = client.start_trace("manual");
        let in_root = info_span!("run", pandaprobe.trace = "run").in_scope(|| {
            let in_root = current_trace_id();
            assert!(in_root.is_some());
            let in_nested = info_span!("llm", pandaprobe.kind = "llm")
                .in_scope(|| info_span!("http").in_scope(current_trace_id));
            assert_eq!(in_nested, in_root);
            {
                let _entered = manual.enter();
                let in_entered =
                    info_span!("tool", pandaprobe.kind = "tool").in_scope(current_trace_id);
                assert_eq!(in_entered, Some(manual.trace_id()), "an entered trace wins");
            }
            assert_eq!(current_trace_id(), in_root);
            in_root
        });
        let in_future = block_on(manual.in_scope(async {
            let first = current_trace_id();
            tokio::task::yield_now().await;
            (first, current_trace_id())
        }));
        let manual_id = Some(manual.trace_id());
        assert_eq!(in_future, (manual_id, manual_id));
        assert_eq!(current_trace_id(), None);
        in_root
    });
    let run = traces
        .iter()
        .find(|t| t["name"] == "run")
        .expect("the run trace");
    let run_id: Option<Uuid> = run["trace_id"].as_str().and_then(|id| id.parse().ok());
    assert_eq!(in_root, run_id);
}

#[test]
fn selectors_pick_spans_other_code_creates() {
    let layer = |client| {
        TracingLayer::new(client)
            .root_if(|meta| meta.name() == "request")
            .span_if(|meta| meta.name().starts_with("db."))
    };
    let (traces, ()) = traces_with(layer, |_| {
        info_span!("request", method = "GET").in_scope(|| {
            info_span!("db.query", pandaprobe.kind = "retriever").in_scope(|| {
                info_span!("db.row").in_scope(|| {});
            });
            info_span!("render").in_scope(|| {});
        });
        info_span!("db.query").in_scope(|| {}); // outside any trace
    });
    let trace = only(&traces);
    assert_eq!(trace["name"], "request");
    assert_eq!(trace["metadata"], json!({"method": "GET"}));
    assert_eq!(span_count(trace), 2);
    let query = span(trace, "db.query");
    assert_eq!(query["kind"], "RETRIEVER");
    let row = span(trace, "db.row");
    assert_eq!(
        (&row["kind"], &row["parent_span_id"]),
        (&json!("OTHER"), &query["span_id"])
    );
}

#[test]
fn a_root_open_too_long_is_sent_when_the_next_root_opens() {
    let (server, client) = setup();
    let layer = TracingLayer::new(client.clone()).max_trace_duration(Duration::ZERO);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let stuck = info_span!("stuck", pandaprobe.trace = "stuck");
        let tool = stuck.in_scope(|| info_span!("tool", pandaprobe.kind = "tool"));
        assert_eq!(server.trace_count(), 0);
        info_span!("next", pandaprobe.trace = "next").in_scope(|| {
            client.flush(WAIT).expect("delivered");
            let traces = server.traces();
            assert_eq!(
                traces.len(),
                1,
                "the stuck trace went while its span is open"
            );
            assert_eq!(traces[0].body["name"], "stuck");
            assert!(traces[0].body["spans"][0]["ended_at"].is_string());
        });
        drop((tool, stuck)); // closing it later sends nothing more
    });
    client.flush(WAIT).expect("delivered");
    let names: Vec<Value> = server
        .traces()
        .into_iter()
        .map(|t| t.body["name"].clone())
        .collect();
    assert_eq!(names, [json!("stuck"), json!("next")]);
}

// ---------------------------------------------------------------------------------------------
// Spans that follow the OpenTelemetry GenAI conventions (rig and others), taken unmarked
// ---------------------------------------------------------------------------------------------

/// An agent run as rig describes it: an `invoke_agent` span around `chat` and `execute_tool`
/// spans, with the conventions' fields and no PandaProbe mark.
fn gen_ai_agent_run() {
    let agent = info_span!(
        "invoke_agent researcher",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = "researcher",
        gen_ai.provider.name = "openai",
    );
    let _agent = agent.enter();
    let chat = info_span!(
        "chat gpt-4o",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = "openai",
        gen_ai.request.model = "gpt-4o",
        gen_ai.request.temperature = 0.2,
        gen_ai.request.max_tokens = 256,
        gen_ai.input.messages =
            r#"[{"role":"user","parts":[{"type":"text","content":"What is PandaProbe?"}]}]"#,
        gen_ai.output.messages = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    chat.in_scope(|| {
        let tool = info_span!(
            "execute_tool search",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = "search",
            gen_ai.tool.call.arguments = r#"{"q":"pandaprobe"}"#,
            gen_ai.tool.call.result = "an observability platform",
        );
        drop(tool.enter());
        // rig names the tool only once it runs, and records a failure as its error class.
        let failing = info_span!(
            "execute_tool",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = Empty,
            gen_ai.tool.error.type = Empty,
        );
        failing.record("gen_ai.tool.name", "fetch");
        failing.record("gen_ai.tool.error.type", "timeout");
    });
    chat.record(
        "gen_ai.output.messages",
        r#"[{"role":"assistant","parts":[{"type":"text","content":"An observability platform."}],"finish_reason":"stop"}]"#,
    );
    chat.record("gen_ai.usage.input_tokens", 12);
    chat.record("gen_ai.usage.output_tokens", 5);
}

#[test]
fn gen_ai_spans_become_an_agent_trace_with_llm_and_tool_spans_without_marks() {
    let (traces, ()) = traces_of(|_| gen_ai_agent_run());
    let trace = only(&traces);
    assert_eq!(trace["name"], "researcher", "named by gen_ai.agent.name");
    let chat = span(trace, "chat gpt-4o");
    assert_eq!(chat["kind"], "LLM");
    assert_eq!(chat["model"], "gpt-4o");
    assert_eq!(
        chat["input"],
        json!({"messages": [{"role": "user", "content": "What is PandaProbe?"}]}),
        "the conventions' parts in PandaProbe's message shape"
    );
    assert_eq!(
        chat["output"],
        json!({"role": "assistant", "content": "An observability platform.", "finish_reason": "stop"})
    );
    assert_eq!(chat["status"], "OK", "closed without an error");
    assert_eq!(chat["token_usage"]["prompt_tokens"], 12);
    assert_eq!(chat["token_usage"]["completion_tokens"], 5);
    assert_eq!(
        chat["model_parameters"],
        json!({"temperature": 0.2, "max_tokens": 256})
    );
    assert_eq!(chat["metadata"]["gen_ai.provider.name"], "openai");
    let tool = span(trace, "search");
    assert_eq!(tool["kind"], "TOOL");
    assert_eq!(tool["status"], "OK");
    assert_eq!(tool["input"], json!({"q": "pandaprobe"}));
    assert_eq!(tool["output"], "an observability platform");
    assert_eq!(tool["parent_span_id"], chat["span_id"], "nested as emitted");
    let failed = span(trace, "fetch");
    assert_eq!(failed["status"], "ERROR");
    assert_eq!(failed["error"], "timeout");
}

#[test]
fn gen_ai_spans_can_be_left_alone() {
    let (traces, ()) = traces_with(
        |c| TracingLayer::new(c).gen_ai(false),
        |_| gen_ai_agent_run(),
    );
    assert!(traces.is_empty(), "{traces:#?}");
}

// ---------------------------------------------------------------------------------------------
// `#[instrument]`: arguments, return values and errors
// ---------------------------------------------------------------------------------------------

#[tracing::instrument(fields(pandaprobe.kind = "tool"), ret)]
fn lookup(city: &str) -> String {
    format!("sunny in {city}")
}

#[tracing::instrument(fields(pandaprobe.kind = "tool"), ret, err)]
fn forecast(days: u32) -> Result<Vec<String>, String> {
    if days > 7 {
        return Err(format!("{days} days is too far"));
    }
    Ok(vec!["sun".into(); days as usize])
}

#[test]
fn instrument_ret_is_the_spans_output_err_its_error_and_arguments_its_input() {
    let (traces, ()) = traces_of(|_| {
        let root = info_span!("weather", pandaprobe.trace = "weather-agent");
        let _root = root.enter();
        lookup("Paris");
        let _ = forecast(2);
        let _ = forecast(30);
    });
    let trace = only(&traces);
    let lookup = span(trace, "lookup");
    assert_eq!(lookup["output"], "sunny in Paris", "unquoted: {lookup:#}");
    assert_eq!(lookup["input"], json!({"city": "Paris"}), "the arguments");
    let spans = trace["spans"].as_array().expect("spans");
    let forecasts: Vec<&Value> = spans.iter().filter(|s| s["name"] == "forecast").collect();
    assert_eq!(forecasts.len(), 2);
    assert_eq!(
        forecasts[0]["output"],
        json!(["sun", "sun"]),
        "the Ok value, its Debug read as JSON"
    );
    assert_eq!(forecasts[1]["status"], "ERROR");
    assert_eq!(forecasts[1]["error"], "30 days is too far");
}

#[tracing::instrument(fields(pandaprobe.trace = "answer-agent", metadata.release = "r1"))]
fn answer(question: &str, attempt: u32) {
    search("pandaprobe");
}

#[tracing::instrument(fields(pandaprobe.kind = "retriever", input = Empty))]
fn search(query: &str) {
    tracing::Span::current().record("input", r#"{"q": "pandaprobe", "top_k": 3}"#);
}

#[test]
fn a_marked_functions_arguments_are_its_input_unless_it_records_one() {
    let (traces, ()) = traces_of(|_| answer("What is PandaProbe?", 2));
    let trace = only(&traces);
    assert_eq!(trace["name"], "answer-agent");
    assert_eq!(
        trace["input"],
        json!({"question": "What is PandaProbe?", "attempt": 2}),
        "Python's @trace: the arguments"
    );
    assert_eq!(trace["metadata"], json!({"release": "r1"}), "by its prefix");
    let search = span(trace, "search");
    assert_eq!(search["input"], json!({"q": "pandaprobe", "top_k": 3}));
    assert_eq!(
        search["metadata"],
        json!({"query": "pandaprobe"}),
        "an argument, kept once the recorded input replaced it"
    );
}

/// `Client::span` (what LLM-client integrations call) inside a recorded `tracing` span opens
/// its span under that one, in its trace.
#[test]
fn client_span_goes_under_the_nearest_recorded_tracing_span() {
    let (traces, ()) = traces_of(|client| {
        let root = tracing::info_span!("agent", pandaprobe.trace = "agent");
        let _root = root.enter();
        let step = tracing::info_span!("plan", pandaprobe.kind = "CHAIN");
        let _step = step.enter();
        let llm = client.span("chat gpt-x", pandaprobe::SpanKind::Llm);
        llm.set_model("gpt-x");
    });
    let trace = only(&traces);
    let plan = span(trace, "plan");
    let chat = span(trace, "chat gpt-x");
    assert!(plan["span_id"].is_string(), "{plan:#}");
    assert_eq!(chat["parent_span_id"], plan["span_id"]);
    assert_eq!(chat["model"], "gpt-x");
}
