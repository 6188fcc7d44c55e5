//! The current trace, for code that scores or annotates a trace it was not handed: the trace
//! or span entered on this thread ([`Trace::enter`], [`Span::enter`], their `in_scope`), else
//! the trace of the current `tracing` span when the `TracingLayer` records it.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use uuid::Uuid;

use crate::client::Client;
use crate::trace::{Span, SpanKind, Trace, WeakSpan, WeakTrace};

/// What was entered last on a thread: a trace (new spans open at its top) or a span (new spans
/// open under it). Weak handles, so that an integration can open a span there
/// ([`current_span`]) while the trace lives, and never keeps it open.
#[derive(Clone)]
enum Current {
    Trace(WeakTrace),
    Span(WeakSpan),
}

impl Current {
    fn trace_id(&self) -> Uuid {
        match self {
            Current::Trace(trace) => trace.trace_id(),
            Current::Span(span) => span.trace_id(),
        }
    }
}

thread_local! {
    static ENTERED: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Makes a trace or span current on this thread until dropped, then restores what was.
struct Restore(Option<Current>);

impl Restore {
    fn enter(current: Current) -> Restore {
        // Fails only while the thread's locals are being destroyed: nothing to enter then.
        let previous = ENTERED.try_with(|entered| entered.replace(Some(current)));
        Restore(previous.ok().flatten())
    }

    fn previous_trace_id(&self) -> Option<Uuid> {
        self.0.as_ref().map(Current::trace_id)
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = ENTERED.try_with(|entered| entered.replace(previous));
    }
}

/// The id of the current trace, if any: the trace of what was entered last on this thread
/// ([`Trace::enter`], [`Trace::in_scope`], [`Span::enter`], [`Span::in_scope`]), else (with the `tracing-layer` feature) the trace
/// of the current `tracing` span or of its nearest ancestor that the
/// `TracingLayer` records. An entered trace wins.
///
/// ```
/// use pandaprobe::{Client, Score};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder().enabled(false).build()?;
/// /// Deep inside the agent, with no trace handle at hand.
/// fn rate(client: &Client) -> Result<(), pandaprobe::ScoreError> {
///     match pandaprobe::current_trace_id() {
///         Some(trace_id) => client.score(Score::numeric(trace_id, "relevance", 0.8)),
///         None => Ok(()), // not inside a trace: nothing to score
///     }
/// }
///
/// let trace = client.start_trace("agent");
/// {
///     let _entered = trace.enter();
///     assert_eq!(pandaprobe::current_trace_id(), Some(trace.trace_id()));
///     rate(&client)?;
/// }
/// assert_eq!(pandaprobe::current_trace_id(), None);
/// # Ok(()) }
/// ```
pub fn current_trace_id() -> Option<Uuid> {
    ENTERED
        .try_with(|entered| entered.borrow().as_ref().map(Current::trace_id))
        .ok()
        .flatten()
        .or_else(layer_trace_id)
}

/// A new span in the current trace (the same one [`current_trace_id`] names): at the top of
/// an entered trace, under an entered span, or under the `tracing` span the layer recorded.
/// `None` outside any.
fn current_span(name: &str, kind: SpanKind) -> Option<Span> {
    // Cloned out first: opening the span must not run inside the thread-local's borrow.
    let entered = ENTERED
        .try_with(|entered| entered.borrow().clone())
        .ok()
        .flatten();
    let opened = match entered {
        Some(Current::Trace(trace)) => trace.upgrade().map(|trace| trace.span(name, kind)),
        Some(Current::Span(span)) => span.child(name, kind),
        None => None,
    };
    opened.or_else(|| layer_span(name, kind))
}

#[cfg(feature = "tracing-layer")]
fn layer_trace_id() -> Option<Uuid> {
    crate::tracing_layer::current_span_trace_id()
}

#[cfg(not(feature = "tracing-layer"))]
fn layer_trace_id() -> Option<Uuid> {
    None
}

#[cfg(feature = "tracing-layer")]
fn layer_span(name: &str, kind: SpanKind) -> Option<Span> {
    crate::tracing_layer::current_span_child(name, kind)
}

#[cfg(not(feature = "tracing-layer"))]
fn layer_span(_name: &str, _kind: SpanKind) -> Option<Span> {
    None
}

// Entering is defined here, beside the thread-local it sets, so that the trace module below
// does not import the context above it.
impl Trace {
    /// Makes this the current trace on this thread until the guard is dropped:
    /// [`current_trace_id`](crate::current_trace_id) returns its id, ahead of any `tracing`
    /// span's trace. Guards nest. For async code, use [`in_scope`](Self::in_scope).
    ///
    /// ```
    /// # let client = pandaprobe::Client::disabled();
    /// let trace = client.start_trace("batch-job");
    /// let _entered = trace.enter();
    /// assert_eq!(pandaprobe::current_trace_id(), Some(trace.trace_id()));
    /// ```
    pub fn enter(&self) -> EnteredTrace<'_> {
        EnteredTrace::new(self)
    }

    /// Wraps `future` so that this is the current trace whenever it is polled, on whichever
    /// thread polls it (like `tracing`'s `Instrumented`). The future holds a handle to the
    /// trace.
    ///
    /// ```
    /// # async fn answer() -> String { String::from("42") }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let client = pandaprobe::Client::disabled();
    /// # let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    /// # runtime.block_on(async {
    /// let trace = client.start_trace("agent");
    /// let answer = trace
    ///     .in_scope(async {
    ///         let answer = answer().await;
    ///         // This trace, after every .await, whichever thread resumes the future.
    ///         assert_eq!(pandaprobe::current_trace_id(), Some(trace.trace_id()));
    ///         answer
    ///     })
    ///     .await;
    /// trace.set_output(serde_json::json!({ "answer": answer }));
    /// # });
    /// # Ok(()) }
    /// ```
    pub fn in_scope<F: Future>(&self, future: F) -> InScope<F> {
        InScope::new(self.clone(), future)
    }
}

impl Client {
    /// Opens a span in the current trace (the one [`current_trace_id`] names: an entered
    /// trace, at its top; an entered span ([`Span::enter`], [`Span::in_scope`]), under it; or
    /// the trace of the nearest `tracing` span the `TracingLayer` records, under that span); outside any trace, in a new trace of its own, named `name`, which ends
    /// when the span ends (with status `ERROR` if the span failed). This is what the
    /// LLM-client integrations call, so that a model call joins the agent run around it with
    /// no handle passed down.
    ///
    /// ```
    /// use pandaprobe::{Client, SpanKind};
    /// # let client = Client::disabled();
    /// let trace = client.start_trace("agent");
    /// let _entered = trace.enter();
    /// let span = client.span("chat gpt-x", SpanKind::Llm);
    /// assert_eq!(span.trace_id(), trace.trace_id());
    /// ```
    pub fn span(&self, name: impl Into<String>, kind: SpanKind) -> Span {
        let name = name.into();
        match current_span(&name, kind) {
            Some(span) => span,
            None => self.start_trace(name.clone()).into_owning_span(name, kind),
        }
    }
}

/// Makes a trace current on this thread until dropped; from [`Trace::enter`].
///
/// Guards nest: dropping one makes the trace or span entered before it current again (drop
/// them in the reverse order of entering, as scopes do). Not `Send`: the trace is current on
/// the thread that entered it only; across `.await` points use [`Trace::in_scope`].
#[must_use = "the trace is current only until the guard is dropped"]
pub struct EnteredTrace<'a> {
    restore: Restore,
    _trace: PhantomData<&'a Trace>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> EnteredTrace<'a> {
    pub(crate) fn new(trace: &'a Trace) -> EnteredTrace<'a> {
        EnteredTrace {
            restore: Restore::enter(Current::Trace(trace.downgrade())),
            _trace: PhantomData,
            _not_send: PhantomData,
        }
    }
}

impl fmt::Debug for EnteredTrace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnteredTrace")
            .field("previous", &self.restore.previous_trace_id())
            .finish()
    }
}

/// Makes a span current on this thread until dropped; from [`Span::enter`]. Nests with
/// [`EnteredTrace`] as entered traces nest; not `Send`.
#[must_use = "the span is current only until the guard is dropped"]
pub struct EnteredSpan<'a> {
    restore: Restore,
    _span: PhantomData<&'a Span>,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for EnteredSpan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnteredSpan")
            .field("previous", &self.restore.previous_trace_id())
            .finish()
    }
}

// Entering a span is defined here too, beside the thread-local it sets.
impl Span {
    /// Makes this the current span on this thread until the guard is dropped: a span an
    /// integration opens ([`Client::span`]: an LLM call through `pandaprobe-async-openai`, say)
    /// becomes its child, and [`current_trace_id`] names its trace. The manual counterpart of
    /// a `tracing` span the `TracingLayer` records. For async code, use
    /// [`in_scope`](Self::in_scope).
    ///
    /// ```
    /// use pandaprobe::{Client, SpanKind};
    /// # let client = Client::disabled();
    /// let trace = client.start_trace("agent");
    /// let step = trace.span("plan", SpanKind::Agent);
    /// let _entered = step.enter();
    /// let llm = client.span("chat gpt-x", SpanKind::Llm); // what an integration calls
    /// assert_eq!(llm.trace_id(), trace.trace_id()); // a child of `step`
    /// ```
    pub fn enter(&self) -> EnteredSpan<'_> {
        EnteredSpan {
            restore: Restore::enter(Current::Span(self.downgrade())),
            _span: PhantomData,
            _not_send: PhantomData,
        }
    }

    /// Wraps `future` so that this is the current span whenever it is polled, on whichever
    /// thread polls it. The future keeps the span's ids, not the span: ending or dropping the
    /// span while the future runs ends it as usual, and later children still name it as their
    /// parent.
    pub fn in_scope<F: Future>(&self, future: F) -> InScope<F> {
        InScope {
            scope: Scope::Span(self.downgrade()),
            future: Box::pin(future),
        }
    }
}

/// A future that makes its trace or span current whenever it is polled; from
/// [`Trace::in_scope`] or [`Span::in_scope`].
///
/// From a trace, it holds a handle to the trace, so the trace does not end (by its last handle
/// dropping) before the future is done or dropped.
#[must_use = "futures do nothing unless polled"]
pub struct InScope<F> {
    scope: Scope,
    // Boxed so that `InScope` is `Unpin` and needs no unsafe pin projection.
    future: Pin<Box<F>>,
}

enum Scope {
    Trace(Trace),
    Span(WeakSpan),
}

impl<F: Future> InScope<F> {
    pub(crate) fn new(trace: Trace, future: F) -> InScope<F> {
        InScope {
            scope: Scope::Trace(trace),
            future: Box::pin(future),
        }
    }
}

impl<F> InScope<F> {
    /// The id of the trace this future runs in.
    pub fn trace_id(&self) -> Uuid {
        match &self.scope {
            Scope::Trace(trace) => trace.trace_id(),
            Scope::Span(span) => span.trace_id(),
        }
    }
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _restore = Restore::enter(match &this.scope {
            Scope::Trace(trace) => Current::Trace(trace.downgrade()),
            Scope::Span(span) => Current::Span(span.clone()),
        });
        this.future.as_mut().poll(cx)
    }
}

impl<F> fmt::Debug for InScope<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InScope")
            .field("trace_id", &self.trace_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(future)
    }

    #[test]
    fn entered_traces_nest_and_restore() {
        let client = Client::disabled();
        let (outer, inner) = (client.start_trace("outer"), client.start_trace("inner"));
        assert_eq!(current_trace_id(), None);
        {
            let _outer = outer.enter();
            assert_eq!(current_trace_id(), Some(outer.trace_id()));
            {
                let _inner = inner.enter();
                assert_eq!(current_trace_id(), Some(inner.trace_id()));
            }
            assert_eq!(current_trace_id(), Some(outer.trace_id()));
        }
        assert_eq!(current_trace_id(), None);
    }

    #[test]
    fn entered_trace_is_per_thread() {
        let trace = Client::disabled().start_trace("here");
        let _entered = trace.enter();
        let elsewhere = std::thread::spawn(current_trace_id)
            .join()
            .expect("no panic");
        assert_eq!(elsewhere, None);
        assert_eq!(current_trace_id(), Some(trace.trace_id()));
    }

    #[test]
    fn in_scope_sets_the_trace_on_every_poll_only() {
        let trace = Client::disabled().start_trace("task");
        let id = trace.trace_id();
        let seen = block_on(trace.in_scope(async {
            let before = current_trace_id();
            tokio::task::yield_now().await; // a second poll
            (before, current_trace_id())
        }));
        assert_eq!(seen, (Some(id), Some(id)));
        assert_eq!(current_trace_id(), None);
    }
}
