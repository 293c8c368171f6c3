//! A real object store for the tests: a three-node Garage cluster on loopback, replication
//! factor 3, one key and one bucket, each node in a temporary directory of its own, all three
//! killed when the cluster is dropped.
//!
//! Garage comes from crates.io (`cargo install garage --locked --no-default-features
//! --features bundled-libs,sqlite`: no system libraries); tools/run-tests.sh installs it
//! into ~/.cargo/bin when missing and sets `VDAR_REQUIRE_GARAGE=1`, so CI cannot skip.
//! Without it the tests skip with a reason. `VDAR_GARAGE` names another binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vdar::objstore::sigv4::Credentials;
use vdar::objstore::{Client, PartSizes, S3Config};

use crate::util::tempdir;

/// The key every cluster gets (Garage's format: `GK` + 24 hex digits, a 64-digit secret).
pub const KEY_ID: &str = "GK5eed0123456789abcdef0123";
pub const SECRET: &str = "5ec2e7005ec2e7005ec2e7005ec2e7005ec2e7005ec2e7005ec2e7005ec2e700";
/// Garage's region, set in each node's configuration.
pub const REGION: &str = "garage";

/// One node: its process (None once killed), configuration and S3 port.
struct Node {
    child: Option<Child>,
    config: PathBuf,
}

/// A running cluster; every node is killed on drop.
pub struct Garage {
    nodes: Vec<Node>,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT` of node 0's S3 API: what the clients use.
    pub endpoint: String,
    /// The bucket made for the test.
    pub bucket: String,
    dir: tempfile::TempDir,
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VDAR_GARAGE") {
        return Some(PathBuf::from(p));
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v garage"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path.or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/garage");
        p.is_file().then_some(p)
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts one node's server, its output appended to `log` beside its configuration.
fn spawn(bin: &Path, config: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("log"))
        .unwrap();
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "garage=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start garage")
}

/// Starts a cluster with bucket `vdar`, or says why not (a failure when required).
pub fn start() -> Option<Garage> {
    let Some(bin) = garage_bin() else {
        assert!(
            std::env::var_os("VDAR_REQUIRE_GARAGE").is_none(),
            "VDAR_REQUIRE_GARAGE is set but garage is not installed (tools/run-tests.sh)"
        );
        eprintln!("skipped: no garage (cargo install garage, see tests/garage.rs)");
        return None;
    };
    let dir = tempdir();
    let secret = "0f".repeat(32);
    let mut nodes = Vec::new();
    let mut s3_ports = Vec::new();
    for i in 0..3 {
        let nd = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&nd).unwrap();
        let (rpc, s3) = (free_port(), free_port());
        s3_ports.push(s3);
        let config = nd.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{m}\"\ndata_dir = \"{d}\"\ndb_engine = \"sqlite\"\n\
                 metadata_fsync = false\ndata_fsync = false\nreplication_factor = 3\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                m = nd.join("meta").display(),
                d = nd.join("data").display(),
            ),
        )
        .unwrap();
        let child = spawn(&bin, &config);
        nodes.push(Node {
            child: Some(child),
            config,
        });
    }
    let g = Garage {
        nodes,
        bin,
        endpoint: format!("http://127.0.0.1:{}", s3_ports[0]),
        bucket: "vdar".into(),
        dir,
    };
    let ids: Vec<String> = (0..3)
        .map(|i| g.until_ok(i, &["node", "id", "-q"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .collect();
    for id in &ids[1..] {
        g.until_ok(0, &["node", "connect", id]);
    }
    for (i, id) in ids.iter().enumerate() {
        let short = id.split('@').next().unwrap();
        g.until_ok(
            0,
            &[
                "layout",
                "assign",
                "-z",
                &format!("dc{i}"),
                "-c",
                "1G",
                short,
            ],
        );
    }
    g.until_ok(0, &["layout", "apply", "--version", "1"]);
    g.until_ok(0, &["key", "import", "--yes", "-n", "test", KEY_ID, SECRET]);
    g.make_bucket("vdar");
    Some(g)
}

impl Garage {
    /// Runs `garage -c NODE ARGS`.
    pub fn cli(&self, node: usize, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[node].config)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("run garage")
    }

    /// Runs `garage ARGS` until it succeeds: a node just started, or a layout just applied,
    /// takes a moment to answer.
    fn until_ok(&self, node: usize, args: &[&str]) -> Output {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.cli(node, args);
            if out.status.success() {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?}: {}\nnode log: {}",
                String::from_utf8_lossy(&out.stderr),
                self.log(node)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Node `i`'s log, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{i}/log"))).unwrap_or_default()
    }

    /// Creates `bucket` and gives the test key every right on it.
    pub fn make_bucket(&self, bucket: &str) {
        self.until_ok(0, &["bucket", "create", bucket]);
        self.until_ok(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "test",
            ],
        );
    }

    /// Kills node `i` (SIGKILL: a node that dies, not one that shuts down).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again, on its old data, and waits until node 0 sees all three nodes
    /// healthy.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].child.is_none() {
            self.nodes[i].child = Some(spawn(&self.bin, &self.nodes[i].config));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.cli(0, &["status"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && !text.contains("FAILED NODES") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not come back: {text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The environment a `vdar` process needs to reach the cluster, and nothing from the
    /// host's own AWS setup.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_CONFIG_FILE", "/nonexistent".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent".into()),
        ]
    }

    /// `s3://BUCKET/KEY` in the test bucket.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// A library client of the cluster, first parts of `part` bytes.
    pub fn client_with(&self, part: u64) -> Arc<Client> {
        let mut c = Client::new(S3Config {
            endpoint: self.endpoint.clone(),
            region: REGION.into(),
            credentials: Credentials {
                access_key: KEY_ID.into(),
                secret_key: SECRET.into(),
                session_token: None,
            },
            path_style: true,
            parts: PartSizes { first: part },
            list_keys: None,
        });
        // Tests meet faults on purpose: give up sooner than a backup would.
        c.retry.attempts = 4;
        c.retry.first_delay = Duration::from_millis(100);
        Arc::new(c)
    }

    /// A library client with the default part sizes.
    pub fn client(&self) -> Arc<Client> {
        self.client_with(PartSizes::default().first)
    }

    /// A `vdar` command with the cluster's environment.
    pub fn vdar(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::util::vdar_bin());
        c.args(args);
        for v in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
        ] {
            c.env_remove(v);
        }
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    /// Runs `vdar ARGS` against the cluster, with `extra` environment.
    pub fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut c = self.vdar(args);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("run vdar")
    }

    /// [`Self::run`], panicking with vdar's stderr unless it succeeds.
    pub fn ok(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let out = self.run(args, extra);
        assert!(
            out.status.success(),
            "vdar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}
