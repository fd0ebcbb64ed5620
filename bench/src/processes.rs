//! The systems under test as child processes, and what /proc says about them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The HS256 secret the harness's router uses.
pub const SECRET: &str = "bench-secret-0123456789abcdef0123";

/// A running server process, killed on drop.
pub struct ServerProcess {
    /// Its process.
    pub child: Child,
    /// `host:port`.
    pub addr: String,
    dir: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ServerProcess {
    /// CPU seconds (user + system) so far.
    pub fn cpu_seconds(&self) -> f64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return 0.0;
        };
        // Fields after the ")" of the command name: utime and stime are the 12th and 13th.
        let Some(rest) = stat.rsplit(')').next() else {
            return 0.0;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / 100.0
    }

    /// Current resident set size (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// Peak resident set size (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }
}

/// A `Vm…:` line of /proc/<pid>/status, KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Raises this process's open-files limits (soft and, as root, hard) towards `wanted`, so it and
/// the servers it starts can hold that many connections. Returns the soft limit in force.
pub fn raise_open_files(wanted: u64) -> u64 {
    use rlimit::Resource;
    if let Ok((_, hard)) = Resource::NOFILE.get()
        && hard < wanted
    {
        let _ = Resource::NOFILE.set(wanted, wanted);
    }
    rlimit::increase_nofile_limit(wanted).unwrap_or(0)
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!("er-bench-{name}-{}-{nanos}", std::process::id()))
}

/// Starts the router (`bin`) in all-in-one mode with limits out of the way; `extra` env on top.
pub fn start_router(bin: &Path, extra: &[(&str, &str)]) -> Result<ServerProcess> {
    let dir = temp_dir("router");
    let mut command = Command::new(bin);
    command
        .arg("serve")
        .env_clear()
        .env("DATA_DIR", &dir)
        .env("LISTEN", "127.0.0.1:0")
        .env("JWT_SECRET", SECRET)
        .env("LOG_LEVEL", "warn,envelope_router=info")
        .env("RATE_LIMIT_SENDER_BURST", "100000000")
        .env("RATE_LIMIT_SENDER_PER_SECOND", "100000000")
        .env("RATE_LIMIT_PAIR_BURST", "100000000")
        .env("RATE_LIMIT_PAIR_PER_SECOND", "100000000")
        .env("SESSION_QUEUE", "4096")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in extra {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stderr = child.stderr.take().context("router stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '"')
                    .collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the router did not start listening")?;
    Ok(ServerProcess { child, addr, dir })
}

/// Starts Mosquitto on a free port with a generated config.
pub fn start_mosquitto(bin: &Path) -> Result<ServerProcess> {
    let dir = temp_dir("mosquitto");
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?;
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 1000\nuser {}\n",
            user.trim()
        ),
    )?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("mosquitto did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(ServerProcess {
        child,
        addr: format!("127.0.0.1:{port}"),
        dir,
    })
}
