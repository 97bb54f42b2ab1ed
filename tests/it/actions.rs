//! The OpenWhisk actions' own tests (`actions/test/*.test.js`, Node's test runner), run
//! from here so that `cargo test` stays the one command that runs every test (README).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use test_support::{find_binary, guarded_command};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Far above what the tests take (about a second); then node and its children are killed.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn the_actions_node_tests_pass() {
    let node = find_binary("node");
    assert!(
        node.is_file(),
        "`node` is not on PATH: install Node 20 (or Debian's nodejs package, which .ci/run \
         installs) to run the actions' tests in actions/test/"
    );
    let files = node_test_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("actions/test"));

    let mut child = guarded_command(&node)
        .arg("--test")
        .arg("--test-reporter=spec")
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills the per-file children too.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", node.display()));
    let pid = child.id().expect("node's pid") as libc::pid_t;
    let stdout = tokio::spawn(read_to_string(child.stdout.take().expect("piped stdout")));
    let stderr = tokio::spawn(read_to_string(child.stderr.take().expect("piped stderr")));
    let status = tokio::time::timeout(DEADLINE, child.wait()).await;
    if status.is_err() {
        // SAFETY: kill(2) on the process group we created; no memory is involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let output = format!(
        "node --test {files:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        stdout.await.expect("stdout reader"),
        stderr.await.expect("stderr reader"),
    );

    let Ok(status) = status else {
        panic!("the actions' Node tests did not finish within {DEADLINE:?}, killed:\n{output}");
    };
    let status = status.expect("wait for node");
    assert!(
        status.success(),
        "the actions' Node tests failed ({status}):\n{output}"
    );
}

/// Every `*.test.js` in `dir`, sorted. Named one by one because, given a directory, Node 20
/// also runs every other `.js` there (the helpers) as a test file, and Node 22 takes
/// globs instead.
fn node_test_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(".test.js"))
        })
        .collect();
    files.sort();
    // Without files, `node --test` would search the current directory for tests.
    assert!(!files.is_empty(), "no *.test.js in {}", dir.display());
    files
}

async fn read_to_string(mut stream: impl AsyncRead + Unpin) -> String {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}
