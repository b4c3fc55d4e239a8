//! What the side-by-side benchmarks share: the simulated cluster in a child process, CPU
//! time read from `/proc`, and client-go's rounds read from its harness.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// The simulated cluster (the release `tikv-sim` binary) in a child process; dropping it
/// closes its stdin, which stops it.
#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// PD's `host:port`.
    pub pd: String,
}

impl SimProcess {
    /// Starts `tikv-sim` with `args` (plus `--exit-on-stdin-eof`) and waits for it to
    /// print its PD address.
    ///
    /// # Panics
    ///
    /// When the binary cannot start or exits before printing `PD_ENDPOINTS` (a benchmark
    /// cannot go on without its cluster).
    pub fn start(args: &[&str]) -> Self {
        let binary = sim_binary();
        let mut child = Command::new(&binary)
            .args(args)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start {}: {err}; build it first with \
                     `cargo build --release -p tikv-sim` (or set TIKV_SIM_BIN)",
                    binary.display()
                )
            });
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no stdout pipe"));
        // Drain stdout to its end on a thread of its own: closing the pipe early would make
        // the simulator's remaining writes fail, and it stops on that error.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("PD_ENDPOINTS=") {
                    let _ = sender.send(address.to_owned());
                }
            }
        });
        let pd = receiver
            .recv()
            .unwrap_or_else(|_| panic!("tikv-sim exited without printing PD_ENDPOINTS"));
        Self { child, stdin, pd }
    }

    /// The simulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `TIKV_SIM_BIN`, else `tikv-sim` in the release directory of the target directory.
pub fn sim_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TIKV_SIM_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release").join("tikv-sim")
}

/// User + system CPU time of process `pid` (`self` for this one), from `/proc/<pid>/stat`.
///
/// # Panics
///
/// When the file cannot be read (the process is gone).
pub fn process_cpu(pid: &str, ticks_per_second: u64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|err| panic!("reading /proc/{pid}/stat: {err}"));
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .unwrap_or(&[])
        .iter()
        .map(|field| field.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_micros(ticks * 1_000_000 / ticks_per_second)
}

/// Busy CPU time of the whole machine (user, nice, system, irq, softirq) from `/proc/stat`:
/// what is left after the client and the simulator is other load sharing the cores.
pub fn machine_busy(ticks_per_second: u64) -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .enumerate()
        // user, nice, system, (idle, iowait skipped), irq, softirq
        .filter(|(index, _)| matches!(index, 0 | 1 | 2 | 5 | 6))
        .map(|(_, field)| field.parse::<u64>().unwrap_or(0))
        .sum();
    Duration::from_micros(ticks * 1_000_000 / ticks_per_second)
}

/// `getconf CLK_TCK` (the unit of `/proc/<pid>/stat` times), 100 if that fails.
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// One measured run: operations, wall time, and the CPU each party used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Operations done.
    pub ops: u64,
    /// Wall time taken.
    pub wall: Duration,
    /// This process's CPU time.
    pub client_cpu: Duration,
    /// The simulator's CPU time.
    pub sim_cpu: Duration,
    /// CPU time of everything else on the machine.
    pub other_cpu: Duration,
    /// Median latency of one operation (zero when not recorded).
    pub p50: Duration,
    /// 99th-percentile latency of one operation (zero when not recorded).
    pub p99: Duration,
}

impl Measured {
    /// The round as one line for a parent process: `ROUND ops=N wall_us=W client_cpu_us=C
    /// sim_cpu_us=S other_cpu_us=O p50_us=P p99_us=Q` ([`from_round_line`](Self::from_round_line)
    /// reads it back).
    pub fn round_line(&self) -> String {
        let us = |duration: Duration| duration.as_micros();
        format!(
            "ROUND ops={} wall_us={} client_cpu_us={} sim_cpu_us={} other_cpu_us={} p50_us={} p99_us={}",
            self.ops,
            us(self.wall),
            us(self.client_cpu),
            us(self.sim_cpu),
            us(self.other_cpu),
            us(self.p50),
            us(self.p99),
        )
    }

    /// Reads a [`round_line`](Self::round_line) back; `None` when `line` is not one.
    pub fn from_round_line(line: &str) -> Option<Self> {
        let fields = line.strip_prefix("ROUND ")?;
        let field = |name: &str| -> Option<u64> {
            fields
                .split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        let us = |name: &str| field(name).map(Duration::from_micros);
        Some(Self {
            ops: field("ops")?,
            wall: us("wall_us")?,
            client_cpu: us("client_cpu_us")?,
            sim_cpu: us("sim_cpu_us")?,
            other_cpu: us("other_cpu_us")?,
            p50: us("p50_us")?,
            p99: us("p99_us")?,
        })
    }

    /// Throughput.
    #[expect(
        clippy::cast_precision_loss,
        reason = "operation counts far below 2^52"
    )]
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }

    /// Client CPU per operation, in µs.
    #[expect(
        clippy::cast_precision_loss,
        reason = "operation counts far below 2^52"
    )]
    pub fn client_us_per_op(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.ops as f64
    }

    /// Simulator CPU per operation, in µs.
    #[expect(
        clippy::cast_precision_loss,
        reason = "operation counts far below 2^52"
    )]
    pub fn sim_us_per_op(&self) -> f64 {
        self.sim_cpu.as_secs_f64() * 1e6 / self.ops as f64
    }

    /// Cores' worth of CPU used by neither the client nor the simulator during the run.
    pub fn other_cores(&self) -> f64 {
        self.other_cpu.as_secs_f64() / self.wall.as_secs_f64()
    }
}

/// The `q` quantile of `sorted` latencies (zero for none).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an index into a slice, q in [0, 1]"
    )]
    let index = ((sorted.len() - 1) as f64 * q) as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Measures `run` (which does `ops` operations and returns its wall time and, when it
/// records them, each operation's latency) with the CPU of this process, the simulator
/// `sim_pid` and the machine read around it, once both have gone quiet
/// ([`wait_until_quiet`]) before and after.
pub fn measure(
    sim_pid: u32,
    ops: u64,
    ticks: u64,
    run: impl FnOnce() -> (Duration, Vec<Duration>),
) -> Measured {
    let sim_pid = sim_pid.to_string();
    wait_until_quiet(&sim_pid, ticks);
    let machine_before = machine_busy(ticks);
    let client_before = process_cpu("self", ticks);
    let sim_before = process_cpu(&sim_pid, ticks);
    let (wall, mut latencies) = run();
    wait_until_quiet(&sim_pid, ticks);
    let client_cpu = process_cpu("self", ticks).saturating_sub(client_before);
    let sim_cpu = process_cpu(&sim_pid, ticks).saturating_sub(sim_before);
    let machine = machine_busy(ticks).saturating_sub(machine_before);
    Measured {
        ops,
        wall,
        client_cpu,
        sim_cpu,
        other_cpu: machine.saturating_sub(client_cpu + sim_cpu),
        p50: {
            latencies.sort_unstable();
            percentile(&latencies, 0.50)
        },
        p99: percentile(&latencies, 0.99),
    }
}

/// Waits until this process and the simulator `sim_pid` are idle together (under a fifth
/// of a core over 100 ms; at most 60 s).
///
/// Every client commits secondaries in the background after `commit` returns (client-rust
/// and client-go as we do), and client-rust leaves a heartbeat task per transaction. Waiting
/// before and after a round charges that work to the round that caused it rather than to
/// whichever client runs next in the same process; the round's wall time (its throughput)
/// still ends when its last commit returned.
pub fn wait_until_quiet(sim_pid: &str, ticks: u64) {
    const WINDOW: Duration = Duration::from_millis(100);
    const LIMIT: Duration = Duration::from_secs(60);
    let busy = || process_cpu("self", ticks) + process_cpu(sim_pid, ticks);
    let started = std::time::Instant::now();
    let mut before = busy();
    while started.elapsed() < LIMIT {
        std::thread::sleep(WINDOW);
        let now = busy();
        if now.saturating_sub(before) < WINDOW / 5 {
            return;
        }
        before = now;
    }
}

/// Of several rounds, the one with the least client CPU per operation (the least disturbed
/// by other load on the machine), and the fastest round's throughput.
///
/// # Panics
///
/// When `rounds` is empty.
pub fn best(rounds: &[Measured]) -> (Measured, f64) {
    let fastest = rounds
        .iter()
        .map(Measured::ops_per_second)
        .fold(0.0, f64::max);
    let leanest = rounds
        .iter()
        .copied()
        .min_by(|a, b| a.client_us_per_op().total_cmp(&b.client_us_per_op()))
        .unwrap_or_else(|| panic!("no rounds"));
    (leanest, fastest)
}

/// One round of the client-go harness's `bench` (`benches/client-go`), run as its own
/// process with `args` (the harness reads its own CPU time, the simulator's and the
/// machine's from `/proc`, in clock ticks): its first `ROUND` line as a [`Measured`].
///
/// # Panics
///
/// When the harness cannot start or prints no round (a failed client-go run stops the
/// bench, as a failed run of ours does).
pub fn client_go_round(binary: &Path, args: &[String], ticks: u64) -> Measured {
    let run = tikv_tests::client_go::run(binary, args)
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", binary.display()));
    let round = run
        .other
        .iter()
        .find_map(|line| line.strip_prefix("ROUND "))
        .unwrap_or_else(|| panic!("client-go bench printed no round:\n{}", run.describe()));
    let field = |name: &str| -> u64 {
        round
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in client-go's round `{round}`"))
    };
    let from_ticks = |count: u64| Duration::from_micros(count * 1_000_000 / ticks);
    let client_cpu = from_ticks(field("client_cpu_ticks"));
    let sim_cpu = from_ticks(field("sim_cpu_ticks"));
    Measured {
        ops: field("ops"),
        wall: Duration::from_micros(field("wall_us")),
        client_cpu,
        sim_cpu,
        other_cpu: from_ticks(field("machine_ticks")).saturating_sub(client_cpu + sim_cpu),
        p50: Duration::from_micros(field("p50_us")),
        p99: Duration::from_micros(field("p99_us")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_line_reads_back_as_the_round_it_came_from() {
        let round = Measured {
            ops: 16_384,
            wall: Duration::from_micros(812_345),
            client_cpu: Duration::from_micros(540_000),
            sim_cpu: Duration::from_micros(700_000),
            other_cpu: Duration::from_micros(10_000),
            p50: Duration::from_micros(25_000),
            p99: Duration::from_micros(48_000),
        };
        let line = round.round_line();
        assert_eq!(Measured::from_round_line(&line), Some(round));
        assert_eq!(Measured::from_round_line("PANICKED"), None);
        assert_eq!(Measured::from_round_line("ROUND ops=3"), None);
    }
}
