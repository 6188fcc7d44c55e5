//! The OpenTelemetry GenAI semantic conventions, as far as the layer reads them without a mark
//! (rig and other crates emit them): which spans are GenAI spans, and their kind. The fields'
//! mapping is in `fields`, with the rest of the table.

use crate::trace::SpanKind;

/// The OpenTelemetry GenAI conventions' operation (`chat`, `execute_tool`, `invoke_agent`, …):
/// a span that has it is a GenAI span (rig and others emit them), taken without a mark.
pub(super) const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
/// Names the trace a GenAI agent span opens.
pub(super) const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";

/// The span kind of a GenAI operation.
pub(super) fn gen_ai_kind(operation: &str) -> SpanKind {
    match operation {
        "chat" | "text_completion" | "generate_content" => SpanKind::Llm,
        "embeddings" => SpanKind::Embedding,
        "execute_tool" => SpanKind::Tool,
        "invoke_agent" | "create_agent" => SpanKind::Agent,
        _ => SpanKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_name_the_span_kind() {
        for (operation, kind) in [
            ("chat", SpanKind::Llm),
            ("execute_tool", SpanKind::Tool),
            ("invoke_agent", SpanKind::Agent),
            ("embeddings", SpanKind::Embedding),
            ("something_new", SpanKind::Other),
        ] {
            assert_eq!(gen_ai_kind(operation), kind, "{operation}");
        }
    }
}
