//! How well the client uses a fixed-window rate limit: requests per delivered score, and how
//! long after the ideal time the last score is delivered. The ideal, for `n` windows' worth of
//! scores, is the start of the n-th window: `(n - 1)` windows after the first request.
//!
//! ```text
//! cargo run --release --example rate_limit_windows                    # 1 client, 5 windows of 60 s
//! cargo run --release --example rate_limit_windows -- --window 2 --clients 3
//! cargo run --release --example rate_limit_windows -- --window 2 --configured
//! ```
//!
//! Against the embedded test server (the real server's limiter: 200 per window, fixed windows
//! that open at the first request, 429 naming the limit), unless `--real` is given: then the
//! `PANDAPROBE_*` variables name the server, and requests are counted on the client's side.
//!
//! The scores are for one trace, which the server must have stored: the first client sends it
//! and one score, and the others start when that score is delivered (it is the first of the
//! run's scores and opens the first window).

use std::error::Error;
use std::thread;
use std::time::{Duration, Instant};

use pandaprobe::{Client, ClientBuilder, Score};
use pandaprobe_testing::{TestServer, SCORES_PATH};

struct Args {
    window: Duration,
    limit: u32,
    windows: u32,
    clients: u32,
    configured: bool,
    real: bool,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        window: Duration::from_secs(60),
        limit: 200,
        windows: 5,
        clients: 1,
        configured: false,
        real: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--window" => args.window = Duration::from_secs_f64(value()?.parse()?),
            "--limit" => args.limit = value()?.parse()?,
            "--windows" => args.windows = value()?.parse()?,
            "--clients" => args.clients = value()?.parse()?,
            "--configured" => args.configured = true,
            "--real" => args.real = true,
            _ => {
                println!(
                    "options: --window SECONDS (60) --limit N (200) --windows N (5) \
                     --clients N (1) --configured --real"
                );
                return Err(format!("unknown option {flag}").into());
            }
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let server = match args.real {
        true => None,
        false => Some(
            TestServer::builder()
                .rate_limit(SCORES_PATH, args.limit, args.window)
                .record_requests(false)
                .start()?,
        ),
    };
    let builder = |server: &Option<TestServer>| -> ClientBuilder {
        let b = match server {
            Some(server) => Client::builder()
                .api_key(server.api_key())
                .project_name("rate-limits")
                .endpoint(server.url()),
            None => ClientBuilder::from_env(),
        };
        match args.configured {
            true => b.scores_rate_limit(args.limit, args.window),
            false => b,
        }
    };
    let total = (args.limit * args.windows) as usize;
    println!(
        "{total} scores ({} windows of {} per {:?}) from {} client(s){}",
        args.windows,
        args.limit,
        args.window,
        args.clients,
        if args.configured {
            ", limit configured"
        } else {
            ""
        }
    );
    let start = Instant::now();
    let clients = (0..args.clients)
        .map(|_| builder(&server).build())
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = args.window * (args.windows + 3);
    let trace = clients[0].start_trace("rate-limits");
    trace.end();
    let trace_id = trace.trace_id();
    clients[0].score(Score::numeric(trace_id, "first", 0.5))?;
    clients[0].flush(timeout)?;
    let mut handles = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        let rest = total - 1;
        let share = rest / args.clients as usize + usize::from(c < rest % args.clients as usize);
        handles.push(thread::spawn(move || {
            for i in 0..share {
                let _ = client.score(Score::numeric(trace_id, format!("c{c}-{i}"), 0.5));
            }
            let flushed = client.flush(timeout);
            (client.stats(), flushed)
        }));
    }
    let mut requests = 0;
    let mut delivered = 0;
    for handle in handles {
        let (stats, flushed) = handle.join().map_err(|_| "a client thread panicked")?;
        println!("client: {stats}; flush {flushed:?}");
        requests += stats.requests - stats.traces.sent - stats.traces.retried;
        delivered += stats.scores.sent;
    }
    let elapsed = start.elapsed();
    let ideal = args.window * (args.windows - 1);
    let refused = server.as_ref().map(|s| s.status_count(429));
    println!(
        "delivered {delivered} of {total} in {elapsed:?} (ideal {ideal:?}: {:+.1}% of a window \
         after it); {requests} score requests, {:.3} per delivered score; 429 answers: {}",
        (elapsed.as_secs_f64() - ideal.as_secs_f64()) / args.window.as_secs_f64() * 100.0,
        requests as f64 / delivered.max(1) as f64,
        refused.map_or("unknown (real server)".into(), |n| n.to_string()),
    );
    Ok(())
}
