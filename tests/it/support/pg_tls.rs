//! A PostgreSQL server of the test's own that speaks TLS only: `initdb` into a temp dir, a
//! throwaway CA and a server certificate for 127.0.0.1 (made with the `openssl` CLI), `ssl = on`,
//! `hostssl` only in pg_hba.conf, a spare port, `pg_ctl start`. Stopped when dropped (also when
//! the test panics).
//!
//! Needs PostgreSQL's server binaries (`/usr/lib/postgresql/*/bin`) and `openssl`. When they
//! are missing or the server does not start, [`TlsPg::start`] fails under `CI=true` and
//! otherwise answers `None` (the test then says it skipped). initdb refuses to run as root: as
//! root, the server is run as the `postgres` user, in a directory it owns.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The running server; stopped on drop.
pub(crate) struct TlsPg {
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed the server's certificate (PEM).
    pub ca: PathBuf,
    /// A CA that did not (PEM).
    pub wrong_ca: PathBuf,
    /// Where the server's files are.
    data: PathBuf,
    /// As whom `pg_ctl` runs (`Some("postgres")` when the test runs as root).
    user: Option<&'static str>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

/// Whether a missing prerequisite must fail the test rather than skip it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (`None`) or, under CI, fails.
fn unavailable(why: String) -> Option<TlsPg> {
    assert!(
        !in_ci(),
        "CI=true and the TLS PostgreSQL cannot start: {why}"
    );
    eprintln!("skipped: the TLS PostgreSQL cannot start here: {why}");
    None
}

/// The newest PostgreSQL's server binaries.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `program` run as `user` (through runuser) or as we are.
fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    run(Command::new("openssl").current_dir(dir).args(args))
}

/// A self-signed CA: `{name}.key`, `{name}.crt` in `dir`.
fn make_ca(dir: &Path, name: &str) -> Result<PathBuf, String> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    )?;
    Ok(dir.join(format!("{name}.crt")))
}

/// The server's key and certificate for 127.0.0.1 and localhost, signed by `ca`.
fn make_server_cert(dir: &Path, ca: &str) -> Result<(), String> {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    // PostgreSQL refuses a key others may read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| e.to_string())
}

fn spare_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl TlsPg {
    /// Starts the server, or says why it cannot (see the module's doc).
    pub(crate) fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(pg) => Some(pg),
            Err(why) => unavailable(why),
        }
    }

    fn try_start() -> Result<Self, String> {
        let bin = bin_dir().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
        let user = is_root().then_some("postgres");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let certs = dir.path().join("certs");
        let data = dir.path().join("data");
        std::fs::create_dir(&certs).map_err(|e| e.to_string())?;
        let ca = make_ca(&certs, "payrules-test-ca")?;
        let wrong_ca = make_ca(&certs, "another-ca")?;
        make_server_cert(&certs, "payrules-test-ca")?;
        if let Some(user) = user {
            run(Command::new("chown").arg("-R").arg(user).arg(dir.path()))?;
        }
        run(as_user(user, &bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data))?;
        let port = spare_port()?;
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            data.display(),
            certs.join("server.crt").display(),
            certs.join("server.key").display(),
        );
        let append = |file: &str, text: &str| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(data.join(file))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| format!("{file}: {e}"))
        };
        append("postgresql.conf", &conf)?;
        // TLS or nothing over TCP; the local socket stays for pg_ctl.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .map_err(|e| e.to_string())?;
        if let Some(user) = user {
            run(Command::new("chown").arg("-R").arg(user).arg(dir.path()))?;
        }
        let pg = Self {
            port,
            ca,
            wrong_ca,
            data,
            user,
            bin,
            _dir: dir,
        };
        // Dropped (stopped) on failure from here on.
        run(as_user(pg.user, &pg.bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-D"])
            .arg(&pg.data)
            .arg("-l")
            .arg(pg.data.join("server.log"))
            .arg("start"))
        .map_err(|e| {
            let log = std::fs::read_to_string(pg.data.join("server.log")).unwrap_or_default();
            format!("{e}\n{log}")
        })?;
        Ok(pg)
    }

    /// A URL to this server with `query` (`sslmode=…&sslrootcert=…`).
    pub(crate) fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for TlsPg {
    fn drop(&mut self) {
        let stopped = as_user(self.user, &self.bin.join("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
        if !stopped.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "stopping the TLS PostgreSQL in {} failed",
                self.data.display()
            );
        }
    }
}
