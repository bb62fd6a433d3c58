//! At the file-descriptor limit `accept` fails (EMFILE); the server must go on accepting once
//! descriptors are free again (tiny_http left its accept loop for good). Its own test binary:
//! it lowers the process's open-file limit.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;
use rustix::process::{Resource, getrlimit, setrlimit};

fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(64)
}

#[test]
fn accepting_survives_running_out_of_file_descriptors() {
    let srv = start(config());
    let saved = getrlimit(Resource::Nofile);
    let mut low = saved;
    low.current = Some(open_files() + 40);
    setrlimit(Resource::Nofile, low).unwrap();
    // Clients take descriptors until none is left; the server's accepts fail meanwhile.
    let mut clients = Vec::new();
    for _ in 0..200 {
        match TcpStream::connect_timeout(&srv.addr, Duration::from_millis(500)) {
            Ok(s) => clients.push(s),
            Err(_) => break,
        }
    }
    assert!(clients.len() < 200, "the descriptor limit was never reached");
    std::thread::sleep(Duration::from_millis(300));
    drop(clients);
    setrlimit(Resource::Nofile, saved).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(get(srv.addr, "/-/ready").status, 200);
    }
    assert!(self_metric(srv.addr, "ingestor_http_accept_errors_total") >= 1.0);
}
