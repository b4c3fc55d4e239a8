//! The `tikv-sim` binary: prints its endpoints, serves, exits when its stdin closes, and
//! refuses bad arguments with exit code 2.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_tikv-sim");

#[test]
fn serves_until_stdin_closes() {
    let mut child = Command::new(BINARY)
        .args([
            "--stores",
            "2",
            "--api-version",
            "2",
            "--split-keys",
            "m",
            "--exit-on-stdin-eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pd_line = lines.next().unwrap().unwrap();
    let pd = pd_line.strip_prefix("PD_ENDPOINTS=").unwrap().to_owned();
    let stores: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(stores[0].starts_with("STORE_1=127.0.0.1:"), "{stores:?}");
    assert!(stores[1].starts_with("STORE_2=127.0.0.1:"), "{stores:?}");

    let mut stream = TcpStream::connect(&pd).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /pd/api/v1/regions HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    // API V2: the DEFAULT keyspace's raw and txn ranges are regions of their own (PD's
    // keyspace manager splits them at bootstrap), and "m" splits each of them once more:
    // "", then r0, r0+m, r1, x0, x0+m, x1.
    assert!(reply.contains("{\"count\":7,"), "{reply}");

    let store = stores[0].split_once('=').unwrap().1;
    let mut stream = TcpStream::connect(store).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"GET /config HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    assert!(
        reply.ends_with("{\"storage\":{\"api-version\":2,\"enable-ttl\":true}}"),
        "{reply}"
    );

    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_arguments_exit_with_usage() {
    for args in [
        &["--stores", "zero"][..],
        &["--api-version", "9"],
        &["--what"],
    ] {
        let output = Command::new(BINARY).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("usage: tikv-sim"), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    let help = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: tikv-sim"));
}
