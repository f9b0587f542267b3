//! A full disk: memdi-server's data directory on a 1 MiB tmpfs, written to until it fills.
//! Part of the `cluster` test target (`cargo test -p memdi-tests --release --test cluster
//! disk_full`); needs root (it mounts the tmpfs, and unmounts it at the end).
//!
//! What memdi-server promises when its log cannot be written (std-node's disk writer): it
//! acknowledges nothing it has not written, says which file failed and why (in its log, and
//! to each native client, whose waiting requests get an `Internal` error with an unknown
//! outcome), and stops; the other members go on without it. This test holds it to that: with `--fsync always
//! --durability disk`, every write acknowledged before the disk filled is there after the
//! disk is grown and the node restarted. (Redis, with `appendfsync always`, also exits on an
//! AOF write error; refusing writes with an error while serving reads, as Redis's `MISCONF`
//! does for `everysec`, is not built.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use memdi_core::wire::ErrorCode;
use memdi_node::client::{Client, ClientOptions, SetOptions};

use super::process::Server;
use super::temp_dir;

/// A tmpfs mounted at a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("creating the mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs failed");
        Tmpfs(at.to_owned())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("running mount");
        assert!(status.success(), "resizing the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_and_loses_no_acknowledged_write() {
    if !is_root() {
        let message =
            "\n!!!!!!!! SKIPPED: the disk-full test needs root (it mounts a tmpfs) !!!!!!!!\n";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("{message}");
        return;
    }
    let dir = temp_dir();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "1m");
    let mut node = Server::new(
        1,
        disk.0.join("n1"),
        &["--fsync", "always", "--durability", "disk"],
    );
    // The node's own log must not fill the disk it reports on.
    node.log_path = dir.path().join("server.log");
    node.start();
    let options = ClientOptions {
        max_attempts: 1,
        ..ClientOptions::default()
    };
    let client = {
        let started = node.client().await;
        drop(started);
        Client::connect_with(&node.client_addr(), options)
            .await
            .expect("connecting")
    };

    let value = vec![b'v'; 8 * 1024];
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    // 1 MiB holds about 120 such writes: 1000 is a bound, never reached.
    for index in 0..1000 {
        let key = format!("key-{index}");
        match client
            .set(key.as_bytes(), &value, SetOptions::default())
            .await
        {
            Ok(_) => acknowledged.push(key),
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("1000 writes of 8 KiB fitted in 1 MiB");
    assert!(
        refusal.code() == Some(ErrorCode::Internal)
            && refusal.to_string().contains("No space left on device"),
        "the client was not told why: {refusal}"
    );
    assert!(
        acknowledged.len() > 10,
        "only {} writes before the disk was full",
        acknowledged.len()
    );
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node did not stop within 20 s of its disk filling");
    assert!(!status.success(), "the node exited 0 after a disk error");
    let log = node.log();
    assert!(
        log.contains("No space left on device") && log.contains(".memdi"),
        "the log does not name the file and the error:\n{log}"
    );
    eprintln!(
        "disk full after {} acknowledged writes of 8 KiB; the client was told: {refusal}",
        acknowledged.len()
    );

    // More room, and a restart: every acknowledged write is there.
    disk.resize("64m");
    node.start();
    let client = node.client().await;
    for key in &acknowledged {
        let stored = client
            .get(key.as_bytes())
            .await
            .expect("reading after the restart");
        assert_eq!(
            stored.map(|stored| stored.value),
            Some(value.clone()),
            "{key} was acknowledged before the disk filled and is gone\n{}",
            node.log()
        );
    }
    assert_eq!(node.stop().code(), Some(0), "{}", node.log());
}
