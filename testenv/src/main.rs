//! `testenv up [--detach] | down | env`: keep the test environment running for
//! manual work (`make env-up` / `make env-down`).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use testenv::{Environment, cache_dir, process};

const USAGE: &str = "usage: testenv up [--detach] | down | env
  up         start kube-apiserver + etcd + the ECS and Application Auto Scaling endpoints;
             print shell exports; Ctrl-C stops
  up --detach  the same, in the background (make env-up); stop it with `testenv down`
  down       stop a detached environment
  env        print the exports of the running detached environment";

fn state_dir() -> PathBuf {
    cache_dir().join("env")
}

/// The detached supervisor's PID if it is still the same process.
fn running_supervisor() -> Option<u32> {
    let text = std::fs::read_to_string(state_dir().join("supervisor")).ok()?;
    let mut it = text.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    (process::start_time(pid) == Some(start)).then_some(pid)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["up"] => up_foreground(),
        ["up", "--detach"] => up_detached(),
        ["down"] => down(),
        ["env"] => match std::fs::read_to_string(state_dir().join("env.sh")) {
            Ok(s) if running_supervisor().is_some() => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("testenv: no environment running (start one with `make env-up`)");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn up_foreground() -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("testenv: cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let started = Instant::now();
        let mut env = match Environment::start().await {
            Ok(env) => env,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let aas = if env.aas_endpoint.is_empty() {
            "none"
        } else {
            env.aas_endpoint.as_str()
        };
        eprintln!(
            "testenv: kube-apiserver {}, ECS endpoint {} and Application Auto Scaling endpoint {} \
             ready in {:.1}s",
            env.server_version,
            env.ecs_endpoint,
            aas,
            started.elapsed().as_secs_f64()
        );
        let exports = env.exports();
        let dir = state_dir();
        if std::env::var_os("TESTENV_SUPERVISOR").is_some() {
            let written = std::fs::create_dir_all(&dir)
                .and_then(|_| std::fs::write(dir.join("env.sh"), &exports));
            if let Err(e) = written {
                eprintln!("testenv: cannot write {}: {e}", dir.display());
                env.stop();
                return ExitCode::FAILURE;
            }
        }
        print!("{exports}");
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("testenv: cannot watch SIGTERM: {e}");
                    env.stop();
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("testenv: stopping");
        env.stop();
        ExitCode::SUCCESS
    })
}

fn up_detached() -> ExitCode {
    let dir = state_dir();
    if running_supervisor().is_some()
        && let Ok(s) = std::fs::read_to_string(dir.join("env.sh"))
    {
        eprintln!("testenv: already running");
        print!("{s}");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("testenv: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let _ = std::fs::remove_file(dir.join("env.sh"));
    let log_path = dir.join("testenv.log");
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("testenv: cannot find my own executable");
        return ExitCode::FAILURE;
    };
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("testenv: cannot create {}: {e}", log_path.display());
            return ExitCode::FAILURE;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("up")
        .env("TESTENV_SUPERVISOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match log.try_clone() {
        Ok(l) => cmd.stderr(l),
        Err(_) => cmd.stderr(Stdio::null()),
    };
    // SAFETY: setsid is async-signal-safe; it detaches from our terminal so
    // the supervisor survives this shell and Ctrl-C in it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("testenv: cannot start the supervisor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = child.id();
    let start = process::start_time(pid).unwrap_or(0);
    if let Err(e) = std::fs::write(dir.join("supervisor"), format!("{pid} {start}\n")) {
        eprintln!("testenv: cannot record the supervisor: {e}");
    }
    // The first run may build kube-apiserver from source: allow for it.
    let deadline = Instant::now() + Duration::from_secs(1200);
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("env.sh"))
            && !s.is_empty()
        {
            print!("{s}");
            // `make run` stops what it started itself on Ctrl-C; only env-up users
            // need to be told how to stop it.
            if std::env::var_os("ECS_OPERATOR_RUN").is_none() {
                eprintln!(
                    "testenv: running in the background (log {}); stop it with `make env-down`",
                    log_path.display()
                );
            }
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            eprintln!("testenv: the environment failed to start ({status}):\n{log}");
            return ExitCode::FAILURE;
        }
        if Instant::now() > deadline {
            eprintln!(
                "testenv: not ready after 20 minutes; see {}",
                log_path.display()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn down() -> ExitCode {
    let dir = state_dir();
    let Some(pid) = running_supervisor() else {
        eprintln!("testenv: no environment running");
        let _ = std::fs::remove_file(dir.join("env.sh"));
        return ExitCode::SUCCESS;
    };
    // SAFETY: plain syscall on a PID whose identity running_supervisor() checked.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while running_supervisor().is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if running_supervisor().is_some() {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(dir.join("env.sh"));
    let _ = std::fs::remove_file(dir.join("supervisor"));
    eprintln!("testenv: stopped");
    ExitCode::SUCCESS
}
