//! What a proxy costs, read from `/proc`: CPU time and memory summed over a process
//! and all its descendants (nginx's workers, HAProxy's or Pingora's threads are
//! covered by the per-process figures), and the file-descriptor limit the harness
//! raises for its many connections.

use std::collections::{HashMap, HashSet};

/// `root` and every process below it, found by parent id.
pub fn tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(stat) = Stat::read(pid) {
                children.entry(stat.ppid).or_default().push(pid);
            }
        }
    }
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    // Bounded by the number of processes on the machine: each pid is visited once.
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten().copied());
        }
    }
    let mut all: Vec<u32> = seen.into_iter().collect();
    all.sort_unstable();
    all
}

/// The fields of `/proc/PID/stat` the bench uses.
struct Stat {
    ppid: u32,
    /// utime + stime, all threads of the process, in clock ticks.
    ticks: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses; the fields start after
        // the last `)`. Field 3 (state) is index 0 here.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            ppid: u32::try_from(field(4)?).ok()?,
            ticks: field(14)? + field(15)?,
        })
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU seconds (user + system) used so far by `root` and its descendants.
pub fn cpu_seconds(root: u32) -> f64 {
    let ticks: u64 = tree(root)
        .into_iter()
        .filter_map(Stat::read)
        .map(|s| s.ticks)
        .sum();
    ticks as f64 / ticks_per_second()
}

/// Resident memory of `root` and its descendants, in MiB: now (`VmRSS`) and the peak
/// of each process since it started (`VmHWM`), summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_mib: f64,
}

pub fn memory(root: u32) -> Memory {
    let mut total = Memory::default();
    for pid in tree(root) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        for line in status.lines() {
            let kib = |prefix: &str| {
                line.strip_prefix(prefix)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            };
            if let Some(v) = kib("VmRSS:") {
                total.rss_mib += v / 1024.0;
            }
            if let Some(v) = kib("VmHWM:") {
                total.peak_mib += v / 1024.0;
            }
        }
    }
    total
}

/// Raises this process's open-file limit to its hard limit (children inherit it) and
/// returns the new soft limit: 2,000 streams need about 4,000 descriptors in a proxy.
pub fn raise_fd_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    // The hard limit may be "unlimited", which the kernel refuses as a soft limit.
    let wanted = limit.rlim_max.min(1 << 16);
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(format!("setrlimit: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(limit.rlim_cur)
}

/// `/proc/loadavg`'s one-minute figure: how busy the machine was around a run.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
