//! Mutual TLS between the roles of a cluster, on every gRPC plane.
//!
//! Every process holds a certificate signed by the cluster's CA that names its role and name
//! in its subject (organizational unit: `master`, `chunkserver`, `client` or `admin`; common
//! name: the chunkserver's id, or any name), with the host names and addresses it serves on
//! as subject alternative names. Both ends of a gRPC connection show their certificates and
//! check the other's against the CA; the server then checks the caller's role against the
//! service called ([`allowed`]) before any of the call is read ([`Authorize`]), and puts the
//! caller's [`Peer`] in the request's extensions for the checks that need the name (a
//! chunkserver registers, heartbeats and reports only as itself).
//!
//! An [`Authority`] issues the certificates (`gfs-cluster` makes a throwaway one on its first
//! start; `gfs-cluster certs` issues them for a real deployment). Without TLS every plane is
//! open to whoever reaches its port: the servers run so only when told `insecure = true`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file could not be read, parsed or issued.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate names no role this cluster knows.
    #[error(
        "{0}: the certificate names no gfs role (its subject needs OU = master, chunkserver, client or admin, and a CN)"
    )]
    NoRole(PathBuf),
    /// A certificate or key does not parse, or could not be made.
    #[error("{what}: {reason}")]
    Bad {
        /// The certificate or key.
        what: String,
        /// Why.
        reason: String,
    },
}

/// What a role may do in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The master: calls the chunkservers' control and replication planes.
    Master,
    /// A chunkserver: registers and reports to the master, replicates to its peers.
    Chunkserver,
    /// A client: the namespace and the data.
    Client,
    /// An operator: what a client may do, and the admin plane.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Master, Role::Chunkserver, Role::Client, Role::Admin];

    /// The role's name in a certificate.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Chunkserver => "chunkserver",
            Role::Client => "client",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is at the other end of a connection, as its certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its role.
    pub role: Role,
    /// Its name (a chunkserver's id).
    pub name: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// The peer a DER certificate names, if it names one.
pub fn peer_of(der: &[u8]) -> Option<Peer> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let role = subject
        .iter_organizational_unit()
        .find_map(|ou| ou.as_str().ok().and_then(Role::parse))?;
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(Peer { role, name })
}

/// Where a process's TLS files are.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
    /// This process's certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files of certificate `name` in `dir`: `ca.pem`, `<name>.pem` and `<name>.key`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// A server's `[tls]` configuration: its files, or an explicit choice to run without TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The cluster CA's certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This server's certificate (PEM), signed by the CA, naming its role.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// Serve and call every gRPC plane without TLS: open to whoever reaches its ports.
    pub insecure: bool,
    /// TLS on the data plane too, with the same certificate: a server takes only TLS there, a
    /// client connects over it. Off, a server takes both (its clients choose) and requests
    /// are still admitted by chunk token only ([`crate::data_tls`]).
    pub data_plane: bool,
}

impl TlsSettings {
    /// The files of certificate `name` in `dir` (see [`TlsFiles::in_dir`]).
    pub fn in_dir(dir: &Path, name: &str) -> TlsSettings {
        let f = TlsFiles::in_dir(dir, name);
        TlsSettings {
            ca: Some(f.ca),
            cert: Some(f.cert),
            key: Some(f.key),
            insecure: false,
            data_plane: false,
        }
    }

    /// The files, if all three are set; an error if only some are, or if they are set and
    /// `insecure` too.
    pub fn files(&self) -> Result<Option<TlsFiles>, TlsError> {
        let bad = |reason: &str| TlsError::Bad {
            what: "[tls]".into(),
            reason: reason.into(),
        };
        match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) if !self.insecure => Ok(Some(TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })),
            (Some(_), Some(_), Some(_)) => {
                Err(bad("insecure = true with certificate files: choose one"))
            }
            (None, None, None) => Ok(None),
            _ => Err(bad("ca, cert and key go together: set all three")),
        }
    }

    /// The identity these settings name (none without files).
    pub fn load(&self) -> Result<MaybeTls, TlsError> {
        if self.data_plane && self.files()?.is_none() {
            return Err(TlsError::Bad {
                what: "[tls]".into(),
                reason: "data_plane = true needs ca, cert and key".into(),
            });
        }
        self.files()?
            .map(|f| Tls::load(&f).map(|t| Arc::new(t.with_data_plane(self.data_plane))))
            .transpose()
    }

    /// What a server binary requires: certificate files, or `insecure = true` said outright.
    pub fn require(&self) -> Result<(), TlsError> {
        if self.files()?.is_none() && !self.insecure {
            return Err(TlsError::Bad {
                what: "[tls]".into(),
                reason: "no certificates: set tls.ca, tls.cert and tls.key (gfs-cluster certs \
                         issues them), or tls.insecure = true to serve every plane unauthenticated"
                    .into(),
            });
        }
        Ok(())
    }
}

/// A process's TLS identity: its certificate and key, the CA it trusts, and who it is.
#[derive(Clone)]
pub struct Tls {
    ca: Certificate,
    identity: Identity,
    /// Who this process's certificate says it is.
    pub me: Peer,
    /// The data plane's side of the identity.
    pub data: crate::data_tls::DataTls,
    /// TLS on the data plane as well: only TLS taken there (a server), TLS used to connect
    /// (a client).
    pub data_plane: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tls({})", self.me)
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Tls {
    /// Reads `files`.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let (ca, cert, key) = (read(&files.ca)?, read(&files.cert)?, read(&files.key)?);
        Tls::from_pem(&ca, &cert, &key).map_err(|e| match e {
            TlsError::NoRole(_) => TlsError::NoRole(files.cert.clone()),
            TlsError::Bad { reason, .. } => TlsError::Bad {
                what: files.cert.display().to_string(),
                reason,
            },
            e => e,
        })
    }

    /// From the PEM text of the CA's certificate, this process's certificate and its key.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Tls, TlsError> {
        let der = pem_der(cert)?;
        let me = peer_of(&der).ok_or_else(|| TlsError::NoRole(PathBuf::from("certificate")))?;
        KeyPair::from_pem(key).map_err(|e| TlsError::Bad {
            what: "key".into(),
            reason: e.to_string(),
        })?;
        pem_der(ca)?;
        Ok(Tls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
            me,
            data: crate::data_tls::DataTls::from_pem(ca, cert, key)?,
            data_plane: false,
        })
    }

    /// This identity, with TLS on the data plane as `on` says.
    pub fn with_data_plane(mut self, on: bool) -> Tls {
        self.data_plane = on;
        self
    }

    /// What a gRPC server serves with: this certificate, and client certificates required and
    /// checked against the CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// What a gRPC client connects with: the CA to check servers against, and this
    /// certificate to show.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
    }
}

/// The DER bytes of the first certificate in `pem`.
fn pem_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    let bad = |reason: String| TlsError::Bad {
        what: "certificate".into(),
        reason,
    };
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    Ok(p.contents)
}

/// A cluster's certificate authority: issues each role's certificate.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

fn rc(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Bad {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

impl Authority {
    /// A new CA, named `name`.
    pub fn generate(name: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::generate().map_err(rc("CA key"))?;
        let mut params = CertificateParams::new(Vec::new()).map_err(rc("CA"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(rc("CA"))?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            key_pem,
        })
    }

    /// The CA of `ca.pem` and `ca.key` in `dir`.
    pub fn load(dir: &Path) -> Result<Authority, TlsError> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        let key_pem = read(&dir.join("ca.key"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(rc("ca.key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rc("ca.pem"))?;
        Ok(Authority {
            issuer,
            cert_pem,
            key_pem,
        })
    }

    /// Writes `ca.pem` and `ca.key` (readable by the owner only) to `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        write(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write(&dir.join("ca.key"), &self.key_pem, true)
    }

    /// The CA's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate (PEM) and its key (PEM) for `role` named `name`, valid for the host
    /// names and IP addresses `hosts` (what peers connect to it by).
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        hosts: &[String],
    ) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(rc("key"))?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(rc("certificate"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, role.as_str());
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rc("certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Issues a certificate for `role` named `name` into `dir` as `<file>.pem` and
    /// `<file>.key`, and returns where the files are.
    pub fn issue_into(
        &self,
        dir: &Path,
        file: &str,
        role: Role,
        name: &str,
        hosts: &[String],
    ) -> Result<TlsFiles, TlsError> {
        let (cert, key) = self.issue(role, name, hosts)?;
        let files = TlsFiles::in_dir(dir, file);
        if !files.ca.exists() {
            write(&files.ca, &self.cert_pem, false)?;
        }
        write(&files.cert, &cert, false)?;
        write(&files.key, &key, true)?;
        Ok(files)
    }
}

/// Writes `text` to `path`, readable by the owner only if `secret`.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// The roles that may call the gRPC method at `path` (`/gfs.v1.Service/Method`): the master
/// alone calls a chunkserver's control plane; chunkservers (and the master, to read and seal)
/// its replication plane; chunkservers alone the master's membership plane and its
/// `ReportSealed`; clients and admins the namespace; admins alone the admin plane.
pub fn allowed(path: &str) -> &'static [Role] {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (service, method) {
        ("gfs.v1.Master", "ReportSealed") => &[Role::Chunkserver],
        ("gfs.v1.Master", _) => &[Role::Client, Role::Admin],
        ("gfs.v1.MasterControl", _) => &[Role::Chunkserver],
        ("gfs.v1.Admin", _) => &[Role::Admin],
        ("gfs.v1.ChunkControl", _) => &[Role::Master],
        ("gfs.v1.Replication", _) => &[Role::Chunkserver, Role::Master],
        ("gfs.v1.MasterRaft", _) => &[Role::Master],
        _ => &[],
    }
}

/// The caller's certificate in a request's extensions (put there by tonic's TLS), as a peer.
pub fn caller(ext: &http::Extensions) -> Option<Peer> {
    let certs = ext.get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    peer_of(certs.first()?.as_ref())
}

/// Refuses, with `PERMISSION_DENIED`, every gRPC call whose caller's certificate does not name
/// a role [`allowed`] to make it, before the call reaches its service; puts the caller's
/// [`Peer`] in the request's extensions. Off (every call passes) on a server without TLS.
#[derive(Clone, Copy, Debug)]
pub struct Authorize {
    on: bool,
}

impl Authorize {
    /// Checks calls if `on` (the server serves TLS).
    pub fn new(on: bool) -> Authorize {
        Authorize { on }
    }
}

impl<S> tower::Layer<S> for Authorize {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized { inner, on: self.on }
    }
}

/// The service [`Authorize`] wraps.
#[derive(Clone, Debug)]
pub struct Authorized<S> {
    inner: S,
    on: bool,
}

impl<S, B, R> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.on {
            return Box::pin(self.inner.call(req));
        }
        let path = req.uri().path().to_string();
        let peer = caller(req.extensions());
        let allowed = allowed(&path);
        match peer {
            Some(p) if allowed.contains(&p.role) => {
                req.extensions_mut().insert(p);
                Box::pin(self.inner.call(req))
            }
            other => {
                let who = other.map_or_else(
                    || "a caller without a gfs role".to_string(),
                    |p| p.to_string(),
                );
                tracing::warn!(%path, caller = %who, "call refused: the caller's role may not make it");
                let status = tonic::Status::permission_denied(format!(
                    "{path}: {who} may not call this (allowed: {})",
                    allowed
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// Checks that a call's caller is the chunkserver `id` when the server serves TLS (the
/// [`Peer`] [`Authorize`] put in `ext`); without TLS, anyone is anyone.
#[allow(clippy::result_large_err)]
pub fn check_chunkserver(ext: &http::Extensions, id: &str) -> Result<(), tonic::Status> {
    match ext.get::<Peer>() {
        None => Ok(()),
        Some(p) if p.role == Role::Chunkserver && p.name == id => Ok(()),
        Some(p) => {
            tracing::warn!(caller = %p, claimed = id, "a chunkserver call in another's name refused");
            Err(tonic::Status::permission_denied(format!(
                "{p} may not act as chunkserver {id}"
            )))
        }
    }
}

/// A shared TLS identity, or none.
pub type MaybeTls = Option<Arc<Tls>>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_issued_certificate_names_its_role_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA").unwrap();
        ca.save(dir.path()).unwrap();
        let files = ca
            .issue_into(
                dir.path(),
                "cs3",
                Role::Chunkserver,
                "cs3",
                &["localhost".into()],
            )
            .unwrap();
        let tls = Tls::load(&files).unwrap();
        assert_eq!(
            tls.me,
            Peer {
                role: Role::Chunkserver,
                name: "cs3".into()
            }
        );
        // The CA loads back from its files and issues certificates the same CA checks.
        let again = Authority::load(dir.path()).unwrap();
        let (cert, key) = again.issue(Role::Admin, "ops", &[]).unwrap();
        let admin = Tls::from_pem(again.cert_pem(), &cert, &key).unwrap();
        assert_eq!(admin.me.role, Role::Admin);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "a key is the owner's alone");
    }

    #[test]
    fn a_certificate_without_a_role_is_refused() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "x");
        let cert = params.self_signed(&key).unwrap();
        assert!(matches!(
            Tls::from_pem(&cert.pem(), &cert.pem(), &key.serialize_pem()),
            Err(TlsError::NoRole(_))
        ));
        assert!(Tls::from_pem("junk", "junk", "junk").is_err());
    }

    #[test]
    fn tls_settings_are_files_or_an_explicit_insecure() {
        let none = TlsSettings::default();
        assert!(none.files().unwrap().is_none());
        assert!(none.require().is_err(), "neither files nor insecure");
        let insecure = TlsSettings {
            insecure: true,
            ..TlsSettings::default()
        };
        assert!(insecure.require().is_ok());
        let d = Path::new("/certs");
        let files = TlsSettings::in_dir(d, "master");
        assert_eq!(files.files().unwrap(), Some(TlsFiles::in_dir(d, "master")));
        let half = TlsSettings {
            key: None,
            ..files.clone()
        };
        assert!(half.files().is_err());
        let both = TlsSettings {
            insecure: true,
            ..files
        };
        assert!(both.files().is_err());
        let parsed: TlsSettings = toml::from_str("insecure = true").unwrap();
        assert!(parsed.insecure);
    }

    #[test]
    fn each_plane_admits_only_its_roles() {
        use Role::*;
        assert_eq!(allowed("/gfs.v1.Master/Create"), &[Client, Admin]);
        assert_eq!(allowed("/gfs.v1.Master/ReportSealed"), &[Chunkserver]);
        assert_eq!(allowed("/gfs.v1.MasterControl/Register"), &[Chunkserver]);
        assert_eq!(allowed("/gfs.v1.Admin/Decommission"), &[Admin]);
        assert_eq!(allowed("/gfs.v1.ChunkControl/CloneChunk"), &[Master]);
        assert_eq!(
            allowed("/gfs.v1.Replication/Replicate"),
            &[Chunkserver, Master]
        );
        assert!(allowed("/grpc.reflection.v1.ServerReflection/X").is_empty());
        assert!(allowed("").is_empty());
    }

    #[test]
    fn a_chunkserver_acts_only_in_its_own_name() {
        let mut ext = http::Extensions::new();
        assert!(check_chunkserver(&ext, "cs1").is_ok(), "without TLS");
        ext.insert(Peer {
            role: Role::Chunkserver,
            name: "cs1".into(),
        });
        assert!(check_chunkserver(&ext, "cs1").is_ok());
        assert_eq!(
            check_chunkserver(&ext, "cs2").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
