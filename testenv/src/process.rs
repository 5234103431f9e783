//! Child processes that cannot outlive the process that started them.
//!
//! Three layers, because a test binary has no teardown hook and may be killed:
//! 1. every child gets `PR_SET_PDEATHSIG=SIGKILL`, spawned from one thread that
//!    lives as long as the process (the signal fires when the *spawning thread*
//!    exits, so spawning from a short-lived test thread would kill it early);
//! 2. an `atexit` handler kills the children and removes their run directories
//!    when the test binary exits normally;
//! 3. each run directory records its owner and children as `pid starttime`, so
//!    the next start can kill what a SIGKILLed owner left behind, verifying
//!    the identity first so we never signal a recycled PID.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, Once, OnceLock, mpsc};

type SpawnJob = Box<dyn FnOnce() -> io::Result<Child> + Send>;

struct Request {
    job: SpawnJob,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static TX: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("testenv-spawner".into())
            .spawn(move || {
                for req in rx {
                    let _ = req.reply.send((req.job)());
                }
                // The sender lives in a static, so this is never reached; if it
                // were, parking keeps the thread (and the children) alive.
                loop {
                    std::thread::park();
                }
            })
            .expect("cannot start the testenv spawner thread");
        Mutex::new(tx)
    })
}

/// Everything this process started and has not stopped yet, for the atexit hook.
static LIVE: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn kill_everything_at_exit() {
    // try_lock: never block process exit on a poisoned or held lock.
    if let Ok(live) = LIVE.try_lock() {
        for (pid, _) in live.iter() {
            // SAFETY: plain syscall on a PID we spawned and have not reaped.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    if let Ok(dirs) = DIRS.try_lock() {
        for d in dirs.iter() {
            remove_unless_kept(d);
        }
    }
}

/// Removes a run directory, unless ECS_OPERATOR_TEST_KEEP_LOGS=1 keeps the logs of
/// every process for a post-mortem.
fn remove_unless_kept(dir: &Path) {
    if std::env::var_os("ECS_OPERATOR_TEST_KEEP_LOGS").is_some() {
        eprintln!("testenv: logs kept in {}", dir.display());
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn install_atexit() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a plain extern "C" fn with libc.
        unsafe {
            libc::atexit(kill_everything_at_exit);
        }
    });
}

/// Marks `dir` as a run directory owned by this process; removed at exit.
pub fn claim_run_dir(dir: &Path) -> io::Result<()> {
    install_atexit();
    std::fs::create_dir_all(dir)?;
    let me = std::process::id();
    let start = start_time(me).unwrap_or(0);
    std::fs::write(dir.join("owner"), format!("{me} {start}\n"))?;
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
    Ok(())
}

pub fn release_run_dir(dir: &Path) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != dir);
    remove_unless_kept(dir);
}

/// Spawns `cmd` so that it dies with this process, and records it in `run_dir`.
pub fn spawn(mut cmd: Command, run_dir: &Path) -> io::Result<Child> {
    install_atexit();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let (reply, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Request {
            job: Box::new(move || cmd.spawn()),
            reply,
        })
        .map_err(|_| io::Error::other("testenv spawner thread is gone"))?;
    let child = rx
        .recv()
        .map_err(|_| io::Error::other("testenv spawner thread is gone"))??;
    let pid = child.id();
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, Some(run_dir.to_path_buf())));
    let start = start_time(pid).unwrap_or(0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("pids"))?;
    writeln!(f, "{pid} {start}")?;
    Ok(child)
}

/// Kills and reaps a child started by [`spawn`].
pub fn stop(child: &mut Child) {
    let pid = child.id();
    let _ = child.kill();
    let _ = child.wait();
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(p, _)| *p != pid);
}

/// The kernel's start time of `pid` (clock ticks since boot), to tell a live
/// process from a recycled PID.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may contain spaces and parentheses; fields after the last
    // ')' start at field 3, so starttime (field 22) is the 20th of those.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn parse_pid_line(line: &str) -> Option<(u32, u64)> {
    let mut it = line.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn is_same_process(pid: u32, start: u64) -> bool {
    start != 0 && start_time(pid) == Some(start)
}

/// Removes run directories under `root` whose owner is dead, killing the
/// children they recorded (only those whose PID still has the recorded start
/// time). Returns how many processes were killed.
pub fn clean_stale(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner"))
            .ok()
            .and_then(|s| parse_pid_line(&s));
        match owner {
            Some((pid, start)) if is_same_process(pid, start) => continue,
            // A directory being created right now has no owner file yet.
            None if recently_modified(&dir) => continue,
            _ => {}
        }
        if let Ok(pids) = std::fs::read_to_string(dir.join("pids")) {
            for (pid, start) in pids.lines().filter_map(parse_pid_line) {
                if is_same_process(pid, start) {
                    // SAFETY: plain syscall; identity checked just above.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
                    killed += 1;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    killed
}

fn recently_modified(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() < 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
    }

    #[test]
    fn pid_lines_parse_and_reject_garbage() {
        assert_eq!(parse_pid_line("123 456\n"), Some((123, 456)));
        assert_eq!(parse_pid_line("123"), None);
        assert_eq!(parse_pid_line("x 1"), None);
    }

    #[test]
    fn stale_run_dir_children_are_killed_and_dir_removed() {
        let root = std::env::temp_dir().join(format!("testenv-stale-{}", std::process::id()));
        let dir = root.join("dead-owner");
        std::fs::create_dir_all(&dir).unwrap();
        // An owner that cannot be alive: PID 1's real start time is never 1.
        std::fs::write(dir.join("owner"), "1 1\n").unwrap();
        let mut child = Command::new("sleep").arg("300").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid).unwrap();
        // A second entry with a wrong start time must be left alone.
        std::fs::write(
            dir.join("pids"),
            format!("{pid} {start}\n{} 1\n", std::process::id()),
        )
        .unwrap();

        assert_eq!(clean_stale(&root), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep should have been killed");
        assert!(!dir.exists());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn live_owner_keeps_its_dir() {
        let root = std::env::temp_dir().join(format!("testenv-live-{}", std::process::id()));
        let dir = root.join("me");
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        std::fs::write(
            dir.join("owner"),
            format!("{me} {}\n", start_time(me).unwrap()),
        )
        .unwrap();
        assert_eq!(clean_stale(&root), 0);
        assert!(dir.exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
