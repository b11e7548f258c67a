//! What every process test of the `tunnelgate` binary needs: the binary with a clean environment, free loopback
//! ports, a child that is killed when the test ends, and a wait for the proxy's `/readyz`.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use tunnelgate_testkit::Client;

/// The `tunnelgate` binary with an empty environment, so only what a test sets reaches it.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tunnelgate"));
    cmd.env_clear();
    cmd
}

/// A loopback address nothing listens on (the port is free once the probe listener is dropped).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `tunnelgate proxy --config FILE` on two free loopback ports: the command, for the test's own variables and
/// stdio, and the data and config-API addresses.
pub fn proxy_with_config(file: &Path) -> (Command, SocketAddr, SocketAddr) {
    let (data, config) = (free_addr(), free_addr());
    let mut cmd = bin();
    cmd.args(["proxy", "--config"])
        .arg(file)
        .env("PROXY_ADDR", data.to_string())
        .env("PROXY_CONFIG_ADDR", config.to_string());
    (cmd, data, config)
}

/// Runs `cmd` with `envs` added and checks that it exits 1 with `needle` in its stderr (a refused setting).
pub fn expect_refusal(mut cmd: Command, envs: &[(&str, &str)], needle: &str) {
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{envs:?}: {stderr}");
    assert!(stderr.contains(needle), "{envs:?}: {stderr}");
}

/// The access-log lines (`"msg":"access"`) among a proxy's JSON log lines.
pub fn access_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "access")
        .collect()
}

/// A child process that is killed and reaped when dropped, also when the test fails.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion with its output captured, as `Command::output` does, but for at most `limit`: a
/// process that should have exited and did not is killed and fails the test instead of hanging it.
pub fn output_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the process did not exit within {limit:?}");
        }
    }
}

/// Polls the proxy's `/readyz` on its config port until it answers 200, for at most 15 s.
pub async fn wait_ready(client: &Client, config: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let req = Client::request(http::Method::GET, config, "x", "/readyz")
            .body(tunnelgate_testkit::empty())
            .unwrap();
        if let Ok(r) = client.send(req).await
            && r.status == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "proxy never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
