//! The hyper plumbing: the server thread, its runtime and worker threads, the control loop
//! that listens and stops, the accept loops and the connections.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::closing::{CloseSignal, ClosingIo, ReplyBody};
use crate::handler::{handle, CloseWithoutAnswer};
use crate::state::Shared;

/// The listen backlog: the SDK's benchmark opens many connections at once.
const LISTEN_BACKLOG: u32 = 1024;

pub(crate) enum Command {
    /// Stop listening if listening, then listen on this address.
    Listen(SocketAddr, std_mpsc::Sender<io::Result<SocketAddr>>),
    Stop(std_mpsc::Sender<()>),
    Shutdown,
}

/// Tells `Drop for TestServer` that the thread is done, however it ends.
pub(crate) struct ExitSignal(pub(crate) std_mpsc::Sender<()>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

pub(crate) fn server_thread(
    workers: usize,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    addr: SocketAddr,
    listen_now: bool,
    ready: std_mpsc::Sender<io::Result<SocketAddr>>,
) {
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // Extra workers are threads with a current-thread runtime each; every runtime accepts on
    // its own clone of the listening socket. (The crate's tokio has no multi-thread runtime.)
    let mut pool = WorkerPool {
        handles: vec![runtime.handle().clone()],
        workers: Vec::new(),
    };
    for i in 1..workers {
        match Worker::spawn(i) {
            Ok((worker, handle)) => {
                pool.handles.push(handle);
                pool.workers.push(worker);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                pool.shutdown();
                return;
            }
        }
    }
    runtime.block_on(control_loop(
        shared,
        commands,
        &pool.handles,
        addr,
        listen_now,
        ready,
    ));
    pool.shutdown();
    // Dropping the runtime cancels whatever is left (delayed requests).
    drop(runtime);
}

fn current_thread_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The runtimes that serve connections: the server thread's own, then one per extra worker.
struct WorkerPool {
    handles: Vec<tokio::runtime::Handle>,
    workers: Vec<Worker>,
}

impl WorkerPool {
    fn shutdown(self) {
        for worker in self.workers {
            worker.shutdown();
        }
    }
}

/// An extra worker thread driving a current-thread runtime until told to stop.
struct Worker {
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Worker {
    fn spawn(i: usize) -> io::Result<(Worker, tokio::runtime::Handle)> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("pandaprobe-test-server-{i}"))
            .spawn(move || {
                let runtime = match current_thread_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("a test server worker thread died"))??;
        Ok((Worker { stop, thread }, handle))
    }

    fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// The accept tasks of one listening socket and the switches that end them.
struct Listening {
    acceptors: Vec<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Listening {
    async fn shutdown(self) {
        let mut tasks = Vec::with_capacity(self.acceptors.len());
        for (stop, task) in self.acceptors {
            let _ = stop.send(());
            tasks.push(task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

async fn control_loop(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    runtimes: &[tokio::runtime::Handle],
    addr: SocketAddr,
    listen_now: bool,
    ready: std_mpsc::Sender<io::Result<SocketAddr>>,
) {
    let mut active: Option<Listening> = None;
    let first = if listen_now {
        listen(addr, &shared, runtimes).map(|(listening, bound)| {
            active = Some(listening);
            bound
        })
    } else {
        Ok(addr)
    };
    let failed = first.is_err();
    let _ = ready.send(first);
    if failed {
        return;
    }
    while let Some(command) = commands.recv().await {
        match command {
            Command::Listen(addr, reply) => {
                if let Some(listening) = active.take() {
                    listening.shutdown().await;
                }
                let result = listen(addr, &shared, runtimes).map(|(listening, bound)| {
                    active = Some(listening);
                    bound
                });
                let _ = reply.send(result);
            }
            Command::Stop(reply) => {
                if let Some(listening) = active.take() {
                    listening.shutdown().await;
                }
                let _ = reply.send(());
            }
            Command::Shutdown => break,
        }
    }
    if let Some(listening) = active.take() {
        listening.shutdown().await;
    }
}

/// Bind `addr` (with `SO_REUSEADDR`) and start one accept task per runtime.
fn listen(
    addr: SocketAddr,
    shared: &Arc<Shared>,
    runtimes: &[tokio::runtime::Handle],
) -> io::Result<(Listening, SocketAddr)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    let bound = listener.local_addr()?;
    let mut acceptors = Vec::with_capacity(runtimes.len());
    if let [only] = runtimes {
        let (stop, stopped) = oneshot::channel();
        let task = only.spawn(accept_loop(listener, Arc::clone(shared), stopped));
        acceptors.push((stop, task));
    } else {
        let listener = listener.into_std()?;
        for runtime in runtimes {
            let clone = listener.try_clone()?;
            let (stop, stopped) = oneshot::channel();
            let shared = Arc::clone(shared);
            let task = runtime.spawn(async move {
                // Registers the socket with this runtime's reactor.
                if let Ok(listener) = TcpListener::from_std(clone) {
                    accept_loop(listener, shared, stopped).await;
                }
            });
            acceptors.push((stop, task));
        }
    }
    Ok((Listening { acceptors }, bound))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: let the pressure go down a little.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting a connection task drops its socket: the client sees the connection close.
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    match shared.tls().cloned() {
        Some(tls) => {
            if let Ok(stream) = tls.accept(stream).await {
                serve(stream, shared).await;
            }
        }
        None => serve(stream, shared).await,
    }
}

async fn serve<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let close = Arc::new(CloseSignal::default());
    let io = TokioIo::new(ClosingIo::new(stream, Arc::clone(&close)));
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let close = Arc::clone(&close);
        async move {
            let response = handle(shared, req).await?;
            // The real server drops the connection after every 500.
            let closes = response.status() == StatusCode::INTERNAL_SERVER_ERROR;
            Ok::<_, CloseWithoutAnswer>(
                response.map(|body| ReplyBody::new(body, closes.then_some(close))),
            )
        }
    });
    let _ = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service)
        .await;
}
