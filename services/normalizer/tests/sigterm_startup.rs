//! A shutdown during start-up is answered: with no broker reachable the normalizer keeps
//! retrying its connection (it used to block in one call for up to a minute, ignoring
//! SIGTERM), and a SIGTERM ends it within seconds, cleanly.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_while_connecting_to_an_absent_broker_stops_the_normalizer_promptly() {
    let (nobody, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall-normalizer"))
        .env("ROLLCALL_KAFKA__BROKERS", format!("127.0.0.1:{nobody}"))
        .env("ROLLCALL_NORMALIZER__HTTP_PORT", http.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its health port is up: it is now connecting (and cannot succeed).
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "the normalizer never came up");
        assert!(child.try_wait().unwrap().is_none(), "it exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The health port is served before the Kafka connection is tried, and nothing can
    // answer on `nobody`: from here on it is in its connection attempts.
    assert!(child.try_wait().unwrap().is_none(), "still connecting");

    let term = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if term.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("SIGTERM not answered within 10 s while connecting");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "stopped {:.1} s after SIGTERM",
        term.elapsed().as_secs_f64()
    );
    assert!(status.success(), "a clean exit: {status:?}");
}
