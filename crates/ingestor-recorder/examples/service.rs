//! A service counting its own work through the durable recorder; run it twice and the
//! totals continue where the first run left them, even after `kill -9`.
//!
//! `cargo run -p ingestor-recorder --example service -- /tmp/service-metrics`
//! (add a port, `-- /tmp/service-metrics 9898`, to serve `/metrics` while it runs).

use std::sync::Arc;
use std::time::Duration;

use ingestor::{Config, Ingestor};
use ingestor_recorder::IngestorRecorder;
use metrics::{counter, describe_counter, gauge, histogram};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "service-metrics".to_owned());
    let port: Option<u16> = args.next().map(|p| p.parse()).transpose()?;
    let (db, report) = Ingestor::open(&dir, Config::default())?;
    println!("opened {dir}: {} series recovered", db.memstore().len());
    drop(report);
    let recorder = IngestorRecorder::builder(Arc::new(db))
        .flush_interval(Duration::from_millis(100))
        .global_label("service", "example")
        .build()?;
    recorder.install()?;
    let server = port.map(|p| recorder.serve(("127.0.0.1", p))).transpose()?;
    if let Some(server) = &server {
        println!("serving http://{}/metrics", server.local_addr());
    }

    describe_counter!("jobs_done", "Jobs completed, across restarts.");
    let done = counter!("jobs_done");
    for job in 0..50u32 {
        gauge!("jobs_in_flight").set(1.0);
        std::thread::sleep(Duration::from_millis(10));
        histogram!("job_seconds").record(0.01 + f64::from(job % 5) / 1000.0);
        done.increment(1);
        gauge!("jobs_in_flight").set(0.0);
    }
    recorder.flush()?;
    print!("{}", recorder.render());
    drop(server);
    recorder.shutdown()?;
    Ok(())
}
