//! Certificates for the TLS tests, made with the `openssl` command line in a temp directory: a
//! private CA, leaf certificates for given DNS names signed by it (ECDSA P-256 or RSA 2048,
//! keys in PKCS#8), an expired one, and a key that does not belong to its certificate; and the
//! address of `lb`'s TLS listener from its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ProxyProcess;

/// The kind of key a leaf certificate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A certificate file (PEM, the leaf alone: clients trust the CA) and its key file.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
}

impl Leaf {
    /// The certificate as PEM text, to compare with what a server presented.
    pub fn pem(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("read certificate")
    }

    pub fn cert_path(&self) -> &str {
        self.cert.to_str().expect("utf-8 path")
    }

    pub fn key_path(&self) -> &str {
        self.key.to_str().expect("utf-8 path")
    }
}

/// A private CA in a directory of its own, and the certificates it has signed.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate clients are told to trust (`curl --cacert`, `-CAfile`, `cafile=`).
    pub ca: PathBuf,
    ca_key: PathBuf,
    next_serial: AtomicU64,
}

/// Runs `openssl` with `args` in `dir`; panics with its stderr when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (scripts/install-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl genpkey` options for a key of this kind; genpkey writes PKCS#8.
fn genpkey_args(kind: KeyKind) -> [&'static str; 4] {
    match kind {
        KeyKind::EcdsaP256 => ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyKind::Rsa2048 => ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    }
}

impl Pki {
    /// A fresh CA under the test temp directory; `name` keeps directories of tests apart.
    pub fn new(name: &str) -> Pki {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "tls-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create pki dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "3650",
                "-subj",
                &format!("/CN=lb test CA {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki {
            ca: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            dir,
            // Distinct from any other CA's serials in the same run.
            next_serial: AtomicU64::new(0x1000),
        }
    }

    pub fn ca_path(&self) -> &str {
        self.ca.to_str().expect("utf-8 path")
    }

    /// A path in this CA's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A new key of `kind` in `file`.
    pub fn key(&self, file: &str, kind: KeyKind) -> PathBuf {
        let mut args = vec!["genpkey"];
        args.extend(genpkey_args(kind));
        args.extend(["-out", file]);
        openssl(&self.dir, &args);
        self.dir.join(file)
    }

    /// A leaf for `names` (the first is also the subject's CN), valid from now for 30 days, in
    /// `{stem}.crt` and `{stem}.key`.
    pub fn leaf(&self, stem: &str, names: &[&str], kind: KeyKind) -> Leaf {
        self.sign(stem, names, kind, None)
    }

    /// A leaf that expired long ago (valid through January 2020).
    pub fn expired_leaf(&self, stem: &str, names: &[&str], kind: KeyKind) -> Leaf {
        self.sign(
            stem,
            names,
            kind,
            Some(("20200101000000Z", "20200201000000Z")),
        )
    }

    /// A certificate for `names` whose key file holds another key of the same kind.
    pub fn mismatched_leaf(&self, stem: &str, names: &[&str]) -> Leaf {
        let leaf = self.leaf(stem, names, KeyKind::EcdsaP256);
        self.key(&format!("{stem}.key"), KeyKind::EcdsaP256);
        leaf
    }

    fn sign(&self, stem: &str, names: &[&str], kind: KeyKind, dates: Option<(&str, &str)>) -> Leaf {
        assert!(!names.is_empty(), "a leaf needs a name");
        let serial = self.next_serial.fetch_add(1, Ordering::SeqCst);
        let (key, csr, cert, ext) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
            format!("{stem}.ext"),
        );
        self.key(&key, kind);
        // The serial in the subject too, so two certificates for one name differ visibly.
        let subject = format!("/CN={}/O=lb tests/serialNumber={serial}", names[0]);
        openssl(
            &self.dir,
            &["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr],
        );
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let usage = match kind {
            KeyKind::EcdsaP256 => "digitalSignature",
            KeyKind::Rsa2048 => "digitalSignature,keyEncipherment",
        };
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,{usage}\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .expect("write extensions");
        let ca = self.ca.to_str().expect("utf-8 path");
        let ca_key = self.ca_key.to_str().expect("utf-8 path");
        match dates {
            None => openssl(
                &self.dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    ca,
                    "-CAkey",
                    ca_key,
                    "-set_serial",
                    &serial.to_string(),
                    "-days",
                    "30",
                    "-sha256",
                    "-extfile",
                    &ext,
                    "-out",
                    &cert,
                ],
            ),
            // `openssl x509` (3.0) cannot put the start date in the past; `openssl ca` can, with
            // a throwaway database of its own.
            Some((start, end)) => {
                let db = format!("{stem}.db");
                let db_dir = self.dir.join(&db);
                std::fs::create_dir_all(&db_dir).expect("create ca db");
                std::fs::write(db_dir.join("index.txt"), "").expect("write index");
                std::fs::write(db_dir.join("serial"), format!("{serial:X}\n"))
                    .expect("write serial");
                let cnf = format!("{stem}.cnf");
                std::fs::write(
                    self.dir.join(&cnf),
                    format!(
                        "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = {db}/index.txt\n\
                         new_certs_dir = {db}\nserial = {db}/serial\ndefault_md = sha256\n\
                         policy = any\nunique_subject = no\n[any]\ncommonName = supplied\n"
                    ),
                )
                .expect("write ca config");
                openssl(
                    &self.dir,
                    &[
                        "ca",
                        "-batch",
                        "-notext",
                        "-config",
                        &cnf,
                        "-cert",
                        ca,
                        "-keyfile",
                        ca_key,
                        "-in",
                        &csr,
                        "-out",
                        &cert,
                        "-startdate",
                        start,
                        "-enddate",
                        end,
                        "-extfile",
                        &ext,
                    ],
                );
            }
        }
        Leaf {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
            serial,
        }
    }
}

/// The address in a log line `... tls listener on ADDR`.
pub fn parse_tls_addr(line: &str) -> Option<SocketAddr> {
    line.split("tls listener on ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .trim_end_matches([',', '.', ';'])
        .parse()
        .ok()
}

impl ProxyProcess {
    /// The TLS listener's address, from the startup log (lines before it are consumed).
    pub fn tls_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("tls listener on ");
        parse_tls_addr(&line).unwrap_or_else(|| panic!("no TLS address in {line:?}"))
    }
}
