//! Child processes that cannot outlive their handle or us, and where their binaries are.

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

/// A command (stdin from `/dev/null`) whose child is SIGKILLed when its handle is
/// dropped, and also when this process dies (`PR_SET_PDEATHSIG`), so that nothing a test
/// or the benchmark starts survives it.
pub fn guarded_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command.stdin(Stdio::null()).kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// The program `name` (`mosquitto`, `nats-server`) from `PATH`, else where Debian's
/// package puts it, `/usr/sbin/<name>` (not on a normal user's `PATH`).
pub fn find_binary(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin").join(name))
}
