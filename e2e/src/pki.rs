//! Certificates and kubeconfigs for the e2e control plane, generated fresh for each start.
//!
//! One CA signs everything: the API server's serving certificate, serving certificates for the
//! scheduler's and controller-manager's secure ports, and a client certificate per identity
//! (admin in `system:masters`, `system:kube-scheduler`, `system:kube-controller-manager`). The
//! service-account token signing key pair is separate. All keys are ECDSA P-256, which every
//! Kubernetes component accepts and which generates in microseconds.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::{Error, Result};

/// An identity the API server authenticates by client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIdentity {
    /// `kubernetes-admin` in group `system:masters`: bypasses authorisation.
    Admin,
    /// `system:kube-scheduler`, bound by the API server's default RBAC policy.
    Scheduler,
    /// `system:kube-controller-manager`, bound by the API server's default RBAC policy.
    ControllerManager,
}

impl ClientIdentity {
    /// File stem for the identity's certificate, key and kubeconfig.
    pub fn file_stem(self) -> &'static str {
        match self {
            ClientIdentity::Admin => "admin",
            ClientIdentity::Scheduler => "kube-scheduler",
            ClientIdentity::ControllerManager => "kube-controller-manager",
        }
    }

    fn common_name(self) -> &'static str {
        match self {
            ClientIdentity::Admin => "kubernetes-admin",
            ClientIdentity::Scheduler => "system:kube-scheduler",
            ClientIdentity::ControllerManager => "system:kube-controller-manager",
        }
    }

    fn organization(self) -> Option<&'static str> {
        match self {
            ClientIdentity::Admin => Some("system:masters"),
            _ => None,
        }
    }
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file the control plane needs, under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: CertFiles,
    pub apiserver: CertFiles,
    pub scheduler_serving: CertFiles,
    pub controller_manager_serving: CertFiles,
    pub admin: CertFiles,
    pub scheduler_client: CertFiles,
    pub controller_manager_client: CertFiles,
    /// Service-account token signing key (PKCS#8 PEM) and its public key (SPKI PEM).
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

impl Pki {
    /// Generate the CA, all certificates and the service-account key pair into `dir`.
    /// `service_ip` is the first address of the service CIDR (the `kubernetes` Service's IP),
    /// which the API server's certificate must name.
    pub fn generate(dir: &Path, service_ip: IpAddr) -> Result<Pki> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;

        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = write_pair(dir, "ca", &ca_cert.pem(), &ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let apiserver = serving_cert(
            dir,
            "apiserver",
            "kube-apiserver",
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            &[loopback, service_ip],
            &issuer,
        )?;
        let scheduler_serving = serving_cert(
            dir,
            "kube-scheduler-serving",
            "kube-scheduler",
            &["localhost"],
            &[loopback],
            &issuer,
        )?;
        let controller_manager_serving = serving_cert(
            dir,
            "kube-controller-manager-serving",
            "kube-controller-manager",
            &["localhost"],
            &[loopback],
            &issuer,
        )?;

        let admin = client_cert(dir, ClientIdentity::Admin, &issuer)?;
        let scheduler_client = client_cert(dir, ClientIdentity::Scheduler, &issuer)?;
        let controller_manager_client =
            client_cert(dir, ClientIdentity::ControllerManager, &issuer)?;

        let sa_key = KeyPair::generate()?;
        let service_account_key = dir.join("sa.key");
        let service_account_pub = dir.join("sa.pub");
        write(&service_account_key, &sa_key.serialize_pem())?;
        write(&service_account_pub, &sa_key.public_key_pem())?;

        Ok(Pki {
            ca,
            apiserver,
            scheduler_serving,
            controller_manager_serving,
            admin,
            scheduler_client,
            controller_manager_client,
            service_account_key,
            service_account_pub,
        })
    }

    /// The client certificate of an identity.
    pub fn client(&self, who: ClientIdentity) -> &CertFiles {
        match who {
            ClientIdentity::Admin => &self.admin,
            ClientIdentity::Scheduler => &self.scheduler_client,
            ClientIdentity::ControllerManager => &self.controller_manager_client,
        }
    }

    /// A kubeconfig for `who` against the API server at `server`, referring to the PEM files by
    /// absolute path.
    pub fn kubeconfig(&self, who: ClientIdentity, server: &str) -> String {
        self.kubeconfig_for(who.file_stem(), self.client(who), server)
    }

    /// Issue a kubelet client certificate for node `node` into `dir` (`<node>.crt`,
    /// `<node>.key`): `CN=system:node:<node>`, `O=system:nodes`, signed by the control plane's
    /// CA, so the API server's Node authorizer and NodeRestriction admission treat its holder as
    /// that node's kubelet.
    pub fn issue_node_client(&self, dir: &Path, node: &str) -> Result<CertFiles> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let ca_key_pem = fs::read_to_string(&self.ca.key)
            .map_err(|e| Error::io(format!("reading {}", self.ca.key.display()), e))?;
        // The issuer is the CA's own parameters (same subject, same key identifier method) with
        // its key, so certificates issued now chain to the CA certificate generated at start.
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(&ca_key_pem)?);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("system:node:{node}"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        write_pair(dir, node, &cert.pem(), &key)
    }

    /// A kubeconfig for the holder of `client` (named `user`) against the API server at
    /// `server`, referring to the PEM files by absolute path.
    pub fn kubeconfig_for(&self, user: &str, client: &CertFiles, server: &str) -> String {
        // JSON strings are YAML strings, and quote any path or name safely.
        let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("string");
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: ryzanstein-e2e\n  \
               cluster:\n    \
                 server: {server}\n    \
                 certificate-authority: {ca}\n\
             users:\n\
             - name: {user}\n  \
               user:\n    \
                 client-certificate: {cert}\n    \
                 client-key: {key}\n\
             contexts:\n\
             - name: ryzanstein-e2e\n  \
               context:\n    \
                 cluster: ryzanstein-e2e\n    \
                 user: {user}\n\
             current-context: ryzanstein-e2e\n",
            user = serde_json::to_string(user).expect("string"),
            ca = q(&self.ca.cert),
            cert = q(&client.cert),
            key = q(&client.key),
        )
    }
}

/// The CA's parameters; [`Pki::issue_node_client`] rebuilds the issuer from them.
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ryzanstein-e2e-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn serving_cert(
    dir: &Path,
    stem: &str,
    common_name: &str,
    dns_names: &[&str],
    ips: &[IpAddr],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<CertFiles> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for name in dns_names {
        params
            .subject_alt_names
            .push(SanType::DnsName((*name).try_into()?));
    }
    params
        .subject_alt_names
        .extend(ips.iter().copied().map(SanType::IpAddress));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer)?;
    write_pair(dir, stem, &cert.pem(), &key)
}

fn client_cert(dir: &Path, who: ClientIdentity, issuer: &Issuer<'_, KeyPair>) -> Result<CertFiles> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, who.common_name());
    if let Some(org) = who.organization() {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer)?;
    write_pair(dir, who.file_stem(), &cert.pem(), &key)
}

fn write_pair(dir: &Path, stem: &str, cert_pem: &str, key: &KeyPair) -> Result<CertFiles> {
    let files = CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    write(&files.cert, cert_pem)?;
    write(&files.key, &key.serialize_pem())?;
    Ok(files)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_file_and_kubeconfigs_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path(), "10.96.0.1".parse().unwrap()).unwrap();
        for f in [
            &pki.ca,
            &pki.apiserver,
            &pki.admin,
            &pki.scheduler_client,
            &pki.controller_manager_client,
        ] {
            assert!(fs::read_to_string(&f.cert)
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----"));
            assert!(fs::read_to_string(&f.key)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----"));
        }
        assert!(fs::read_to_string(&pki.service_account_pub)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));

        let kubeconfig = pki.kubeconfig(ClientIdentity::Admin, "https://127.0.0.1:6443");
        let parsed: kube::config::Kubeconfig =
            kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
        assert_eq!(parsed.current_context.as_deref(), Some("ryzanstein-e2e"));
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some(pki.ca.cert.to_str().unwrap())
        );
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.client_key.as_deref(),
            Some(pki.admin.key.to_str().unwrap())
        );
    }
}
